"""Tests for lambda_keras.export: the TF Serving contract and the LiteRT (TFLite) conversions.

No TF Serving binary runs in CI, so the contract the server relies on is tested directly:
- the SavedModel is loaded by a fresh Python process that imports TensorFlow only (never
  lambda_keras), which lists the signatures, runs them, replays the warmup file and decodes a REST
  `{"b64": ...}` body and a gRPC PredictRequest as the clients in export/ build them;
- independent expectations: the Keras model on pixels normalised here with NumPy; the same JPEG
  decoded here and passed through data.eval_transform; a grayscale PNG against the same pixels
  saved as RGB; TF Serving's JSON decoding rule (a {"b64": s} object is the bytes base64(s));
- LiteRT files run in ai-edge-litert's interpreter against the Keras model.

Models: LambdaResNet-50 (paper layout) and the timm-compatible LambdaResNet-26T, both at 64 x 64
with 10 classes (the digits), made "trained-ish" first (see `_trained_ish`).
"""

import base64
import importlib.util
import json
import os
import re
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import keras
import pytest
import tensorflow as tf
from keras import ops
from sklearn.datasets import load_digits, load_sample_images

from lambda_keras import data, export, weights
from lambda_keras.data.transforms import _eval_resize_size  # timm's eval resize rule
from lambda_keras.export import images as image_ops
from lambda_keras.export import litert, serving
from lambda_keras.layers import LambdaLayer, formulations
from lambda_keras.models import LambdaResNet26T, LambdaResNet50

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PREPROCESSING = weights.replace_input_size(weights.DEFAULT_PREPROCESSING, (SIZE, SIZE))
BUILDERS = {
    "lambda_resnet50": lambda: LambdaResNet50(input_shape=(SIZE, SIZE, 3), classes=10),
    "lambda_resnet26t": lambda: LambdaResNet26T(weights=None, input_shape=(SIZE, SIZE, 3),
                                                classes=10),
}
FIT = slice(0, 300)  # digits the last stage is trained on
EVAL = slice(300, 500)  # digits the exported models are compared on
CALIBRATION = slice(0, 256)  # int8 calibration images (from the training digits)
SERVING_TIMEOUT_S = 600
METRICS = {}  # measured numbers, printed at the end of the module (pytest -s)


# ------------------------------------------------------------------------------------ helpers
def _digit_pixels(index):
    """sklearn digits as RGB pixels 0..255, upscaled 8x (nearest): float32 [n, 64, 64, 3]."""
    digits = load_digits()
    images = np.kron(digits.images[index], np.ones((8, 8))) * (255.0 / 16.0)  # [n, 64, 64]
    return np.repeat(images[..., None], 3, axis=-1).astype("float32"), digits.target[index]


def _normalise(pixels):
    """NumPy reference of the models' input normalisation."""
    mean, std = np.array(PREPROCESSING.mean), np.array(PREPROCESSING.std)
    return ((pixels / 255.0 - mean) / std).astype("float32")


def _batch_norms(model):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer
        if isinstance(layer, LambdaLayer):
            yield from (layer.query_norm, layer.value_norm)


def _trained_ish(model, pixels, labels):
    """Turns a randomly initialised classifier into one with meaningful, confident predictions.

    With random weights the outputs are near-uniform (and the zero-initialised last BN of every
    block switches the residual branches, lambda layers included, off), so "top-1 agreement"
    between a quantized file and Keras would compare near-ties. Training the whole network is too
    slow for CI on two cores, so: the residual branches are switched on (gamma 0 -> 0.1), the BN
    statistics are set from the data (one training-mode pass with momentum 0), and the last stage
    (c5, all lambda blocks) and the classifier are trained for a few epochs on cached c4 features
    (c5 is 2 x 2 at 64 px: seconds). The result is several times more accurate than chance on
    held-out digits (asserted), so agreement >= 95% means the quantized files keep the class
    decisions, not that the outputs are flat.
    """
    for norm in _batch_norms(model):
        if not np.any(keras.ops.convert_to_numpy(norm.gamma)):
            norm.gamma.assign(np.full(norm.gamma.shape, 0.1, "float32"))
    norms = list(_batch_norms(model))
    for norm in norms:
        norm.momentum = 0.0
    model(_normalise(pixels[:64]), training=True)
    for norm in norms:
        norm.momentum = 0.9
    c4 = max((layer.name for layer in model.layers
              if re.fullmatch(r"stage3_block\d+_out", layer.name)),
             key=lambda name: int(re.search(r"block(\d+)", name).group(1)))
    features = keras.Model(model.inputs, model.get_layer(c4).output).predict(
        _normalise(pixels), batch_size=50, verbose=0)  # [n, 4, 4, 1024]
    head = keras.Model(model.get_layer(c4).output, model.output)  # c5 + classifier, shared weights
    head.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", jit_compile=False)
    head.fit(features, labels, batch_size=32, epochs=12, verbose=0)


def _jpeg(image, quality=95):
    return tf.io.encode_jpeg(np.asarray(image, "uint8"), quality=quality).numpy()


def _png(image):
    return tf.io.encode_png(np.asarray(image, "uint8")).numpy()


def _forged_png(width, height):
    """A PNG signature + IHDR chunk claiming width x height, then IEND: no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\0\0\0\0IEND\xaeB`\x82"


def _forged_jpeg(width, height):
    """A real small JPEG whose SOF0 header is patched to claim width x height."""
    encoded = bytearray(_jpeg(np.full((16, 16, 3), 128)))
    sof = encoded.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    encoded[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(encoded)


def _sample_jpegs():
    """Real photos as JPEG bytes: landscape 427x640, a portrait crop, a small (upscaled) crop."""
    china, flower = load_sample_images().images
    return [_jpeg(china), _jpeg(flower[50:350, 200:380]), _jpeg(china[100:150, 300:370])]


def _load_client(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "export" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tflite_run(path, inputs):
    """Runs a .tflite file on a batch with the package's one LiteRT runner (XNNPACK on)."""
    runner = export.LiteRTRunner(path)
    return runner(inputs), runner.ops


# The serving process: TensorFlow and the tensorflow-serving-api protos only, like TF Serving.
SERVING_SCRIPT = r'''
import base64, json, sys, time
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

spec = json.load(open(sys.argv[1]))
loaded = tf.saved_model.load(spec["saved_model"])
result = {"signatures": {}, "warmup": [], "bad": {}}
arrays = {}

for name, fn in loaded.signatures.items():
    shape = lambda v: None if v.shape.rank is None else v.shape.as_list()
    result["signatures"][name] = {
        "inputs": {k: [v.dtype.name, shape(v)]
                   for k, v in fn.structured_input_signature[1].items()},
        "outputs": {k: [v.dtype.name, shape(v)] for k, v in fn.structured_outputs.items()},
    }

def run(signature, **inputs):
    outputs = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}

def keep(prefix, outputs):  # strings as fixed-width bytes: the .npz loads without pickle
    arrays.update({f"{prefix}/{k}": v.astype("S") if v.dtype == object else v
                   for k, v in outputs.items()})

inputs = np.load(spec["arrays"])
keep("images", run("serving_default", images=inputs["images"]))
keep("resized", run("serving_default", images=inputs["other_size"]))
jpegs = np.array([base64.b64decode(s) for s in spec["jpegs"]], dtype=object)
keep("bytes", run("serving_bytes", image_bytes=jpegs))

# REST row format as TF Serving decodes it: one instance per example; a {"b64": s} object is the
# bytes base64(s); a signature with one input takes the bare instances.
body = spec["rest_body"]
signature = body.get("signature_name", "serving_default")
(input_name,) = loaded.signatures[signature].structured_input_signature[1]
def from_json(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    return value
column = [from_json(instance) for instance in body["instances"]]
keep("rest", run(signature, **{input_name: np.array(column, dtype=object)}))

request = predict_pb2.PredictRequest.FromString(base64.b64decode(spec["grpc_request"]))
keep("grpc", run(request.model_spec.signature_name,
                 **{k: tf.make_ndarray(v) for k, v in request.inputs.items()}))

for record in tf.data.TFRecordDataset(spec["warmup"]):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    outputs = run(request.model_spec.signature_name,
                  **{k: tf.make_ndarray(v) for k, v in request.inputs.items()})
    result["warmup"].append({"signature": request.model_spec.signature_name,
                             "batch": int(outputs["probabilities"].shape[0]),
                             "finite": bool(np.isfinite(outputs["probabilities"]).all())})

nan = np.full((1, 64, 64, 3), np.nan, "float32")
inf = np.where(inputs["images"][:1] > 100, np.inf, 0).astype("float32")
for name, run_bad in {
        "nan_pixels": lambda: run("serving_default", images=nan),
        "inf_pixels": lambda: run("serving_default", images=inf),
        "bytes_2d": lambda: run("serving_bytes", image_bytes=jpegs[:1].reshape(1, 1)),
        "bytes_scalar": lambda: run("serving_bytes", image_bytes=jpegs[0]),
}.items():
    try:
        keep(name, run_bad())
        result["bad"][name] = {"ok": True}
    except tf.errors.InvalidArgumentError as error:
        result["bad"][name] = {"ok": False, "message": error.message}

for name, encoded in spec["bad"].items():
    start = time.time()
    try:
        batch = np.array([base64.b64decode(encoded)], dtype=object)
        outputs = run("serving_bytes", image_bytes=batch)
        keep(f"bad_{name}", outputs)
        outcome = {"ok": True}
    except tf.errors.InvalidArgumentError as error:
        outcome = {"ok": False, "message": error.message}
    outcome["seconds"] = time.time() - start
    result["bad"][name] = outcome

result["lambda_keras_imported"] = any(m.split(".")[0] == "lambda_keras" for m in sys.modules)
np.savez(spec["out_arrays"], **arrays)
with open(spec["out_json"], "w") as f:
    json.dump(result, f)
'''


def _bad_inputs():
    gray = np.linspace(0, 255, 40 * 30).reshape(40, 30, 1).astype("uint8")
    rgba = np.dstack([np.full((20, 20, 3), 90), np.full((20, 20, 1), 255)])
    truncated = _jpeg(load_sample_images().images[0])
    return {
        "empty": b"",
        "not_an_image": b"hello, this is not an image",
        "truncated_jpeg": truncated[:len(truncated) // 3],
        "png_bomb": _forged_png(20000, 20000),
        "png_overflow": _forged_png(2 ** 32 - 1, 2 ** 32 - 1),
        "jpeg_bomb": _forged_jpeg(60000, 60000),
        "extreme_aspect": _png(np.zeros((1, 20000, 3))),
        # 73 x 876000 float32 pixels (767 MB) after the eval resize at 64 px: within the former
        # pixel budget (8192^2), over the byte budget.
        "aspect_over_byte_budget": _png(np.zeros((1, 12000, 3))),
        # 73 x 48666 pixels, 42.6 MB as float32: under the byte budget, classified.
        "aspect_under_byte_budget": _png(np.zeros((3, 2000, 3))),
        "one_pixel": _png(np.full((1, 1, 3), 200)),
        "gray_png": _png(gray),
        "gray_as_rgb_png": _png(np.repeat(gray, 3, axis=-1)),
        "rgba_png": _png(rgba),
    }


# ----------------------------------------------------------------------------------- fixtures
class Case:
    """One exported model, its reference outputs and what the serving process saw."""


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def case(request, tmp_path_factory):
    keras.utils.set_random_seed(0)
    c = Case()
    c.name = request.param
    c.model = BUILDERS[c.name]()
    pixels, labels = _digit_pixels(slice(0, 500))
    _trained_ish(c.model, pixels[FIT], labels[FIT])
    c.eval_pixels, c.eval_labels = pixels[EVAL], labels[EVAL]
    c.eval_probs = c.model.predict(_normalise(c.eval_pixels), batch_size=50, verbose=0)
    c.calibration = _normalise(pixels[CALIBRATION])

    c.base = tmp_path_factory.mktemp(c.name) / "serving"
    c.export_path = export.saved_model(c.model, c.base, preprocessing=PREPROCESSING, labels=LABELS)
    c.jpegs = _sample_jpegs()
    c.other_size = np.random.default_rng(1).uniform(0, 255, (2, 80, 96, 3)).astype("float32")
    c.bad = _bad_inputs()
    work = c.base.parent
    np.savez(work / "inputs.npz", images=c.eval_pixels[:8], other_size=c.other_size)
    grpc_request = _load_client("client_grpc").build_request(c.jpegs, "lambda_resnet")
    spec = {
        "saved_model": c.export_path, "arrays": str(work / "inputs.npz"),
        "jpegs": [base64.b64encode(j).decode() for j in c.jpegs],
        "rest_body": _load_client("client_rest").build_body(c.jpegs),
        "grpc_request": base64.b64encode(grpc_request.SerializeToString()).decode(),
        "warmup": os.path.join(c.export_path, export.WARMUP_FILE),
        "bad": {k: base64.b64encode(v).decode() for k, v in c.bad.items()},
        "out_arrays": str(work / "served.npz"), "out_json": str(work / "served.json"),
    }
    (work / "spec.json").write_text(json.dumps(spec))
    (work / "serve.py").write_text(SERVING_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.run([sys.executable, "serve.py", "spec.json"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=SERVING_TIMEOUT_S)
    assert process.returncode == 0, process.stderr[-3000:]
    c.served = json.loads((work / "served.json").read_text())
    c.arrays = dict(np.load(work / "served.npz"))
    c.tflite = {}
    return c


def _tflite_file(case, quantization):
    """Converts once per (model, quantization); returns the path."""
    if quantization not in case.tflite:
        path = case.base.parent / f"model_{quantization or 'float32'}.tflite"
        representative = case.calibration if quantization == "int8" else None
        case.tflite[quantization] = export.tflite(case.model, path, quantization=quantization,
                                                  representative_data=representative)
    return case.tflite[quantization]


@pytest.fixture(scope="module", autouse=True)
def _report_metrics():
    yield
    for key, value in sorted(METRICS.items()):
        print(f"[export] {key}: {value}")


@pytest.fixture(scope="module")
def tiny_model():
    """A small classifier holding a LambdaLayer, for the fast API tests."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    x = LambdaLayer(key_dim=8, num_heads=4, receptive_field=5)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


# ------------------------------------------------------------------- SavedModel: the contract
def test_servable_layout(case):
    assert Path(case.export_path) == case.base / "1"
    root = Path(case.export_path)
    for relative in ("saved_model.pb", "variables/variables.index", "assets/labels.txt",
                     "assets.extra/tf_serving_warmup_requests"):
        assert (root / relative).is_file(), relative
    assert (root / "assets" / "labels.txt").read_text().splitlines() == LABELS
    assert sorted(p.name for p in case.base.iterdir()) == ["1"]  # no temporary directory left


def test_served_without_lambda_keras(case):
    assert case.served["lambda_keras_imported"] is False


def test_signatures(case):
    outputs = {"probabilities": ["float32", [None, 10]], "top_k_scores": ["float32", [None, 5]],
               "top_k_indices": ["int32", [None, 5]], "top_k_labels": ["string", [None, 5]]}
    assert case.served["signatures"] == {
        "serving_default": {"inputs": {"images": ["float32", [None, None, None, 3]]},
                            "outputs": outputs},
        # Unknown rank: a tensor of another rank reaches the graph and is refused there.
        "serving_bytes": {"inputs": {"image_bytes": ["string", None]}, "outputs": outputs},
    }


def test_trained_ish_model_is_meaningful(case):
    accuracy = float(np.mean(case.eval_probs.argmax(-1) == case.eval_labels))
    METRICS[f"{case.name} held-out accuracy"] = round(accuracy, 3)
    assert accuracy >= 0.4  # chance is 0.1: the predictions carry class information


def test_serving_default_matches_keras(case):
    served = case.arrays["images/probabilities"]
    error = float(np.abs(served - case.eval_probs[:8]).max())
    METRICS[f"{case.name} serving_default max abs"] = f"{error:.2e}"
    assert error <= 1e-4


def test_serving_default_resizes_other_sizes(case):
    resized = tf.clip_by_value(tf.image.resize(case.other_size, (SIZE, SIZE), method="bicubic",
                                               antialias=True), 0.0, 255.0).numpy()
    expected = case.model.predict(_normalise(resized), verbose=0)
    assert np.abs(case.arrays["resized/probabilities"] - expected).max() <= 1e-4


def test_serving_bytes_matches_keras_on_the_same_pixels(case):
    decoded = [tf.io.decode_jpeg(j, channels=3, dct_method="INTEGER_ACCURATE") for j in case.jpegs]
    images = np.stack([data.eval_transform(d, PREPROCESSING).numpy() for d in decoded])
    expected = case.model.predict(images, verbose=0)
    error = float(np.abs(case.arrays["bytes/probabilities"] - expected).max())
    METRICS[f"{case.name} serving_bytes max abs"] = f"{error:.2e}"
    assert error <= 1e-4


def test_top_k_outputs_agree_with_probabilities(case):
    probs = case.arrays["images/probabilities"]
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :5]
    np.testing.assert_array_equal(case.arrays["images/top_k_indices"], order)
    np.testing.assert_allclose(case.arrays["images/top_k_scores"],
                               np.take_along_axis(probs, order, axis=-1), rtol=0, atol=0)
    labels = case.arrays["images/top_k_labels"].astype(str)
    np.testing.assert_array_equal(labels, np.array(LABELS)[order])


def test_warmup_requests_run(case):
    warmup = case.served["warmup"]
    assert {w["signature"] for w in warmup} == {"serving_default", "serving_bytes"}
    assert all(w["finite"] for w in warmup) and [w["batch"] for w in warmup] == [1, 1, 2]


def test_rest_and_grpc_client_requests_run(case):
    for client in ("rest", "grpc"):
        np.testing.assert_allclose(case.arrays[f"{client}/probabilities"],
                                   case.arrays["bytes/probabilities"], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(case.arrays[f"{client}/top_k_labels"],
                                      case.arrays["bytes/top_k_labels"])


def test_client_output_formatting():
    rest = _load_client("client_rest")
    text = rest.format_predictions(["a.jpg"], [{"top_k_labels": ["cat", "dog"],
                                                 "top_k_scores": [0.75, 0.25]}])
    assert text == "a.jpg\n   0.7500  cat\n   0.2500  dog"
    body = rest.build_body([b"\xff\xd8\xffJPEG"])
    assert body == {"signature_name": "serving_bytes",
                    "instances": [{"b64": base64.b64encode(b"\xff\xd8\xffJPEG").decode()}]}


@pytest.mark.parametrize("name, expected", [
    ("empty", "JPEG or PNG"),
    ("not_an_image", "JPEG or PNG"),
    ("truncated_jpeg", "JPEG"),
    ("png_bomb", "decompression bomb"),
    ("png_overflow", "decompression bomb"),
    ("jpeg_bomb", "decompression bomb"),
    ("extreme_aspect", "aspect ratio"),
    ("aspect_over_byte_budget", "float image over"),
    ("nan_pixels", "must be finite"),
    ("inf_pixels", "must be finite"),
    ("bytes_2d", "expected a tensor of shape [batch]"),
    ("bytes_scalar", "expected a tensor of shape [batch]"),
])
def test_bad_bytes_are_refused(case, name, expected):
    outcome = case.served["bad"][name]
    assert outcome["ok"] is False and expected in outcome["message"], outcome
    assert outcome.get("seconds", 0) < 10


@pytest.mark.parametrize("name", ["one_pixel", "gray_png", "rgba_png",
                                  "aspect_under_byte_budget"])
def test_odd_images_are_classified(case, name):
    outcome = case.served["bad"][name]
    assert outcome["ok"] is True and outcome["seconds"] < 10
    probs = case.arrays[f"bad_{name}/probabilities"]
    assert probs.shape == (1, 10) and np.isfinite(probs).all()
    assert abs(float(probs.sum()) - 1.0) < 1e-5


def test_grayscale_png_equals_its_rgb_copy(case):
    np.testing.assert_allclose(case.arrays["bad_gray_png/probabilities"],
                               case.arrays["bad_gray_as_rgb_png/probabilities"], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------ LiteRT conversions
@pytest.mark.slow
@pytest.mark.parametrize("quantization, atol", [(None, 1e-4), ("float16", 1e-2)])
def test_tflite_float_parity(case, quantization, atol):
    path = _tflite_file(case, quantization)
    probs, ops_used = _tflite_run(path, _normalise(case.eval_pixels))
    error = float(np.abs(probs - case.eval_probs).max())
    METRICS[f"{case.name} tflite {quantization or 'float32'} max abs"] = f"{error:.2e}"
    METRICS[f"{case.name} tflite {quantization or 'float32'} MB"] = round(
        os.path.getsize(path) / 2 ** 20, 1)
    assert error <= atol
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops_used), ops_used


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["dynamic", "int8"])
def test_tflite_quantized_agreement(case, quantization):
    path = _tflite_file(case, quantization)
    probs, ops_used = _tflite_run(path, _normalise(case.eval_pixels))
    agreement = float(np.mean(probs.argmax(-1) == case.eval_probs.argmax(-1)))
    size = os.path.getsize(path)
    METRICS[f"{case.name} tflite {quantization} top-1 agreement"] = agreement
    METRICS[f"{case.name} tflite {quantization} MB"] = round(size / 2 ** 20, 1)
    # Measured: int8 99.0% (26T) / 98.5% (50), dynamic 100% / 97.5% of 200 held-out digits.
    assert agreement >= 0.975
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops_used), ops_used
    if quantization == "int8":
        assert size <= 0.3 * os.path.getsize(_tflite_file(case, None))
        assert export.tflite_custom_ops(Path(path).read_bytes()) == []


# Every formulation of the lambda layer's position term, forced through `implementation`.
FORMULATIONS = [
    ("queries_first", 4, dict(receptive_field=7, implementation="queries_first")),
    ("lambdas_first", 12, dict(receptive_field=7, implementation="lambdas_first")),
    ("row_windows", 30, dict(receptive_field=7, implementation="row_windows")),
    ("query_windows", 30, dict(receptive_field=7, implementation="query_windows")),
    ("query_windows", 21, dict(receptive_field=5, intra_depth=2, strides=2,
                               implementation="query_windows")),
    ("conv", 20, dict(receptive_field=7, implementation="conv")),
    ("lambdas_first", 12, dict(position="relative")),
    ("lambdas_first", 6, dict(position="global")),
    (None, 8, dict(position=None)),
    ("lambdas_first", 8, dict(receptive_field=7, intra_depth=4, strides=2, pool_size=2,
                              position_bias=True, implementation="lambdas_first")),
]


@pytest.mark.parametrize("formulation, size, kwargs", FORMULATIONS)
def test_tflite_converts_every_lambda_formulation(tmp_path, formulation, size, kwargs):
    _check_tflite_conversion(tmp_path, formulation, size, kwargs)


def test_tflite_converts_grouped_query_windows(tmp_path, monkeypatch):
    """Query windows with 3 query columns per block (what TensorFlow without oneDNN takes on a CPU
    without AVX-512, formulations.block_columns), whatever this machine's rule says."""
    monkeypatch.setattr(formulations, "block_columns", lambda *args, **kwargs: 3)
    _check_tflite_conversion(tmp_path, "query_windows", 26,
                             dict(receptive_field=13, implementation="query_windows"))


def _check_tflite_conversion(tmp_path, formulation, size, kwargs):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(32, 3, padding="same")(inputs)
    layer = LambdaLayer(key_dim=16, num_heads=4, **kwargs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(layer(x)))
    if formulation is not None:  # the branch under test is the one inference takes
        assert layer._formulation(size, size, training=False) == formulation
    images = np.random.default_rng(0).standard_normal((3, size, size, 3)).astype("float32")
    expected = ops.convert_to_numpy(model(images))
    outputs, ops_used = _tflite_run(export.tflite(model, tmp_path / "m.tflite"), images)
    assert np.abs(outputs - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops_used), ops_used


# ---------------------------------------------------------------------- API and file handling
def test_versions_overwrite_and_refusal(tiny_model, tmp_path):
    base = tmp_path / "models" / "tiny"
    first = export.saved_model(tiny_model, base, labels=["a", "b", "c"], warmup=False)
    second = export.saved_model(tiny_model, base, warmup=False)
    assert (Path(first).name, Path(second).name) == ("1", "2")
    assert not (Path(first) / "assets.extra").exists()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.saved_model(tiny_model, base, version=1)
    assert (Path(first) / "assets" / "labels.txt").read_text().split() == ["a", "b", "c"]
    export.saved_model(tiny_model, base, version=1, labels=["x", "y", "z"], overwrite=True)
    assert (Path(first) / "assets" / "labels.txt").read_text().split() == ["x", "y", "z"]
    (base / "7").mkdir()  # an empty version directory is filled
    assert export.saved_model(tiny_model, base, version=7, warmup=False) == str(base / "7")
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "7"]


def test_failed_export_leaves_nothing(tiny_model, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(serving, "warmup_requests", fail)  # fails after the SavedModel is written
    with pytest.raises(RuntimeError, match="disk full"):
        export.saved_model(tiny_model, tmp_path / "new_base")
    assert not (tmp_path / "new_base").exists()
    (tmp_path / "base").mkdir()
    with pytest.raises(RuntimeError, match="disk full"):
        export.saved_model(tiny_model, tmp_path / "base", version=3)
    assert list((tmp_path / "base").iterdir()) == []


def test_missing_serving_api_is_explained(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_serving", None)
    monkeypatch.setitem(sys.modules, "tensorflow_serving.apis", None)
    with pytest.raises(ImportError, match=r"lambda-keras\[serving\].*warmup=False"):
        export.saved_model(tiny_model, tmp_path / "base")
    assert not (tmp_path / "base").exists()


def test_logits_model_serves_probabilities_and_default_labels(tiny_model, tmp_path):
    logits = keras.Model(tiny_model.input, keras.layers.Dense(3, name="logits")(
        tiny_model.get_layer("predictions").input))
    path = export.saved_model(logits, tmp_path / "base", top_k=10, warmup=False)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    mean, std = np.array(weights.DEFAULT_PREPROCESSING.mean), np.array(
        weights.DEFAULT_PREPROCESSING.std)
    expected = ops.convert_to_numpy(ops.softmax(logits((pixels / 255 - mean) / std), axis=-1))
    outputs = tf.saved_model.load(path).signatures["serving_default"](images=pixels)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-6)
    assert outputs["top_k_labels"].shape == (2, 3)  # top_k capped at the number of classes
    assert set(outputs["top_k_labels"].numpy().ravel().astype(str)) == {"0", "1", "2"}


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(labels=["a", "b"]), ValueError, r"`labels` must be 3 strings"),
    (dict(labels=["a", "b\nc", "d"]), ValueError, "line breaks"),
    (dict(top_k=0), ValueError, r"Received: top_k=0"),
    (dict(version=-1), ValueError, r"Received: version=-1"),
    (dict(preprocessing=weights.DEFAULT_PREPROCESSING), ValueError,
     r"must match the model's input size \(32, 32\)"),
    (dict(preprocessing={"input_size": (32, 32)}), TypeError, "must be a lambda_keras"),
])
def test_saved_model_argument_errors(tiny_model, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        export.saved_model(tiny_model, tmp_path / "base", **kwargs)
    assert not (tmp_path / "base").exists()


def test_saved_model_refuses_non_classifiers(tiny_model, tmp_path):
    with pytest.raises(TypeError, match="keras.Model"):
        export.saved_model(lambda x: x, tmp_path)
    two_outputs = keras.Model(tiny_model.inputs, [tiny_model.output, tiny_model.output])
    with pytest.raises(ValueError, match=r"one output \[batch, classes\]"):
        export.saved_model(two_outputs, tmp_path)
    sigmoid = keras.Model(tiny_model.input, keras.layers.Dense(3, activation="sigmoid")(
        tiny_model.get_layer("predictions").input))
    with pytest.raises(ValueError, match="activation='sigmoid'"):
        export.saved_model(sigmoid, tmp_path)


def test_tflite_argument_errors(tiny_model, tmp_path):
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=r"one of \(None, 'float16', 'dynamic', 'int8'\)\. "
                                         r"Received: quantization='int4'"):
        export.tflite(tiny_model, path, quantization="int4")
    with pytest.raises(ValueError, match="needs `representative_data`"):
        export.tflite(tiny_model, path, quantization="int8")
    with pytest.raises(ValueError, match='only used with quantization="int8"'):
        export.tflite(tiny_model, path, quantization="dynamic", representative_data=np.zeros(3))
    with pytest.raises(ValueError, match=r"array of shape \(3, 32\)"):
        export.tflite(tiny_model, path, quantization="int8", representative_data=np.zeros((3, 32)))
    assert list(tmp_path.iterdir()) == []


def test_tflite_int8_from_a_labelled_dataset(tiny_model, tmp_path):
    images = np.random.default_rng(0).standard_normal((16, 32, 32, 3)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(16, "int64"))).batch(4)
    path = export.tflite(tiny_model, tmp_path / "m.tflite", quantization="int8",
                         representative_data=dataset)
    probs, _ = _tflite_run(path, images)
    expected = ops.convert_to_numpy(tiny_model(images))
    assert np.abs(probs - expected).max() < 0.1 and probs.shape == (16, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


def test_tflite_refuses_unbounded_int8_ranges_and_keeps_the_old_file(tmp_path):
    """-inf padding before a max pool (PyTorch-style pooling) gives an infinite int8 scale."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="silu")(inputs)
    x = keras.layers.Lambda(lambda t: ops.max_pool(ops.pad(
        t, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=float("-inf")), 3, strides=2))(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "m.tflite"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match="unbounded range"):
        export.tflite(model, path, quantization="int8",
                      representative_data=np.random.default_rng(0).standard_normal((4, 16, 16, 3)))
    assert path.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


def test_resize_budget_counts_the_bytes_of_the_resized_float_image():
    """`resized_bytes` against timm's eval resize rule computed here, and the budget's verdicts."""
    short = int(SIZE / PREPROCESSING.crop_pct)  # 73: shorter side after the eval resize
    for height, width in [(1, 12000), (3, 2000), (2000, 3), (427, 640), (1, 1), (8192, 8192)]:
        longer = int(short * max(height, width) / min(height, width))  # floor, as timm
        expected = short * longer * 3 * 4  # float32 RGB
        got = float(image_ops.resized_bytes(height, width, PREPROCESSING))
        assert expected <= got <= expected + short * 3 * 4, (height, width)
        resize_to = _eval_resize_size(height, width, (SIZE, SIZE), PREPROCESSING.crop_pct)
        assert int(np.prod(resize_to.numpy())) * 12 == expected
    assert float(image_ops.resized_bytes(1, 12000, PREPROCESSING)) > export.MAX_RESIZED_BYTES
    assert float(image_ops.resized_bytes(3, 2000, PREPROCESSING)) < export.MAX_RESIZED_BYTES


# ----------------------------------------------------------- SavedModel size: weights stored once
def _directory_bytes(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def test_saved_model_stores_each_weight_once(case):
    root = Path(case.export_path)
    # The weights (a dropout's seed-generator state is a variable, not a weight, and serving
    # does not use it).
    weight_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
                       for v in case.model.weights)
    stored = tf.train.load_checkpoint(str(root / "variables" / "variables"))
    shapes = stored.get_variable_to_shape_map()
    values = {k: v for k, v in shapes.items() if k.endswith("VARIABLE_VALUE")}
    assert len(values) == len(case.model.weights)  # one entry per weight
    assert sum(int(np.prod(s)) for s in values.values()) == case.model.count_params()
    variables_bytes = _directory_bytes(root / "variables")
    graph_bytes = (root / "saved_model.pb").stat().st_size
    total = _directory_bytes(root)
    METRICS[f"{case.name} SavedModel MB (weights MB)"] = (
        f"{total / 2 ** 20:.1f} ({weight_bytes / 2 ** 20:.1f})")
    assert weight_bytes <= variables_bytes <= 1.05 * weight_bytes
    assert total <= 1.05 * (weight_bytes + graph_bytes) + 200_000  # + labels and warmup records


# --------------------------------------------------- TensorFlow's own tools: saved_model_cli
def _saved_model_cli(*args, cwd):
    """Runs TensorFlow's `saved_model_cli` in its own process (no lambda_keras on the path)."""
    cli = Path(sys.executable).with_name("saved_model_cli")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run([str(cli), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=SERVING_TIMEOUT_S)


@pytest.fixture(scope="module")
def cli_export(tiny_model, tmp_path_factory):
    """The tiny model exported once, its inputs as .npy files for `saved_model_cli run`."""
    work = tmp_path_factory.mktemp("cli")
    path = export.saved_model(tiny_model, work / "base", labels=["a", "b", "c"])
    pixels = np.random.default_rng(3).uniform(0, 255, (2, 40, 48, 3)).astype("float32")
    jpegs = [_jpeg(load_sample_images().images[0]), _png(np.full((20, 30, 3), 120))]
    np.save(work / "pixels.npy", pixels)
    np.save(work / "nan.npy", np.where(pixels > 250, np.nan, pixels).astype("float32"))
    np.save(work / "bytes.npy", np.array(jpegs, dtype="S"))  # fixed-width bytes: no pickle
    np.save(work / "bytes_2d.npy", np.array([jpegs[:1]], dtype="S"))
    return work, path, pixels, jpegs


def test_saved_model_cli_show_lists_both_signatures(cli_export):
    work, path, _, _ = cli_export
    shown = _saved_model_cli("show", "--dir", path, "--all", cwd=work)
    assert shown.returncode == 0, shown.stderr[-2000:]
    text = shown.stdout
    for signature, key, dtype, shape in [
            ("serving_default", "images", "DT_FLOAT", "(-1, -1, -1, 3)"),
            ("serving_bytes", "image_bytes", "DT_STRING", "unknown_rank")]:
        block = text.split(f"signature_def['{signature}']:")[1].split("signature_def[")[0]
        assert re.search(rf"inputs\['{key}'\] tensor_info:\s+dtype: {dtype}\s+shape: "
                         rf"{re.escape(shape)}", block), block
        for output, out_dtype in [("probabilities", "DT_FLOAT"), ("top_k_indices", "DT_INT32"),
                                  ("top_k_labels", "DT_STRING"), ("top_k_scores", "DT_FLOAT")]:
            assert re.search(rf"outputs\['{output}'\] tensor_info:\s+dtype: {out_dtype}\s+"
                             r"shape: \(-1, 3\)", block), (signature, output)
        assert "Method name is: tensorflow/serving/predict" in block


def _cli_run(work, path, signature, inputs, outdir):
    return _saved_model_cli("run", "--dir", path, "--tag_set", "serve", "--signature_def",
                            signature, "--inputs", inputs, "--outdir", str(work / outdir),
                            "--overwrite", cwd=work)


def test_saved_model_cli_run_serving_default(cli_export, tiny_model):
    work, path, pixels, _ = cli_export
    ran = _cli_run(work, path, "serving_default", "images=pixels.npy", "out_images")
    assert ran.returncode == 0, ran.stderr[-2000:]
    resized = tf.clip_by_value(tf.image.resize(pixels, (32, 32), method="bicubic", antialias=True),
                               0.0, 255.0).numpy()
    mean, std = np.array(weights.DEFAULT_PREPROCESSING.mean), np.array(
        weights.DEFAULT_PREPROCESSING.std)
    expected = ops.convert_to_numpy(tiny_model((resized / 255 - mean) / std))
    np.testing.assert_allclose(np.load(work / "out_images" / "probabilities.npy"), expected,
                               atol=1e-5)
    np.testing.assert_array_equal(np.load(work / "out_images" / "top_k_indices.npy"),
                                  np.argsort(-expected, axis=-1, kind="stable"))


def test_saved_model_cli_run_serving_bytes(cli_export, tiny_model):
    work, path, _, jpegs = cli_export
    ran = _cli_run(work, path, "serving_bytes", "image_bytes=bytes.npy", "out_bytes")
    assert ran.returncode == 0, ran.stderr[-2000:]
    preprocessing = weights.replace_input_size(weights.DEFAULT_PREPROCESSING, (32, 32))
    decoded = [tf.io.decode_jpeg(jpegs[0], channels=3, dct_method="INTEGER_ACCURATE"),
               tf.io.decode_png(jpegs[1], channels=3)]
    images = np.stack([data.eval_transform(d, preprocessing).numpy() for d in decoded])
    expected = ops.convert_to_numpy(tiny_model(images))
    np.testing.assert_allclose(np.load(work / "out_bytes" / "probabilities.npy"), expected,
                               atol=1e-5)


@pytest.mark.parametrize("signature, inputs, message", [
    ("serving_default", "images=nan.npy", "images: the pixels must be finite"),
    ("serving_bytes", "image_bytes=bytes_2d.npy", "image_bytes: expected a tensor of shape"),
])
def test_saved_model_cli_run_refuses_bad_tensors(cli_export, signature, inputs, message):
    work, path, _, _ = cli_export
    ran = _cli_run(work, path, signature, inputs, "out_bad")
    assert ran.returncode != 0
    assert "InvalidArgumentError" in ran.stderr and message in ran.stderr, ran.stderr[-2000:]
    assert not (work / "out_bad" / "probabilities.npy").exists()


# ------------------------------------ client requests against the signature, as TF Serving sees it
def _signature_def_map(path):
    """The SignatureDefMap TF Serving's GetModelMetadata returns, from saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved = saved_model_pb2.SavedModel.FromString((Path(path) / "saved_model.pb").read_bytes())
    (meta_graph,) = [m for m in saved.meta_graphs if "serve" in m.meta_info_def.tags]
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for name, definition in meta_graph.signature_def.items():
        if not name.startswith("__"):
            signatures.signature_def[name].CopyFrom(definition)
    return signatures


def _check_tensor_against(tensor_proto, info):
    """A TensorProto matches a signature TensorInfo: dtype, and the shape if the rank is known."""
    assert tensor_proto.dtype == info.dtype
    if not info.tensor_shape.unknown_rank:
        dims = [d.size for d in info.tensor_shape.dim]
        shape = [d.size for d in tensor_proto.tensor_shape.dim]
        assert len(shape) == len(dims) and all(e in (-1, g) for e, g in zip(dims, shape))


def test_client_requests_match_the_signatures(cli_export):
    from google.protobuf import json_format
    from tensorflow_serving.apis import predict_pb2

    work, path, pixels, jpegs = cli_export
    signatures = _signature_def_map(path).signature_def
    assert set(signatures) == {"serving_default", "serving_bytes"}

    request = _load_client("client_grpc").build_request(jpegs, "lambda_resnet")
    assert isinstance(request, predict_pb2.PredictRequest)
    definition = signatures[request.model_spec.signature_name]
    assert definition.method_name == "tensorflow/serving/predict"
    assert set(request.inputs) == set(definition.inputs)
    for key, tensor_proto in request.inputs.items():
        _check_tensor_against(tensor_proto, definition.inputs[key])
    # what the gRPC server decodes: the same bytes
    assert list(tf.make_ndarray(request.inputs["image_bytes"])) == jpegs
    assert predict_pb2.PredictRequest.FromString(request.SerializeToString()) == request
    json_format.Parse(json_format.MessageToJson(request), predict_pb2.PredictRequest())

    body = _load_client("client_rest").build_body(jpegs)
    definition = signatures[body["signature_name"]]
    (key,) = definition.inputs  # one input: TF Serving takes bare row-format instances
    assert definition.inputs[key].dtype == tf.string.as_datatype_enum
    assert [base64.b64decode(instance["b64"]) for instance in body["instances"]] == jpegs

    images = signatures["serving_default"].inputs["images"]
    _check_tensor_against(tf.make_tensor_proto(pixels), images)
    assert images.dtype == tf.float32.as_datatype_enum


# ----------------------------------------------------------------- SavedModel: bad paths, leftovers
def test_saved_model_refuses_a_file_as_export_dir(tiny_model, tmp_path):
    target = tmp_path / "not_a_directory"
    target.write_bytes(b"keep me")
    with pytest.raises(ValueError, match=r"`export_dir` must be a directory.*an existing file"):
        export.saved_model(tiny_model, target, warmup=False)
    assert target.read_bytes() == b"keep me"
    with pytest.raises(TypeError, match=r"`export_dir` must be a path"):
        export.saved_model(tiny_model, 3, warmup=False)


def test_a_killed_exports_staging_directory_is_removed_later(tiny_model, tmp_path):
    host = socket.gethostname()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead = int(finished.stdout)  # a process that has exited: its staging directory is stale
    base = tmp_path / "base"
    stale = base / f".tmp-1-{host}-{dead}-k1ll3d_x"
    (stale / "variables").mkdir(parents=True)
    (stale / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * 1000)
    retired = base / f".old-4-{host}-{dead}-r3t1r3d"
    retired.mkdir()
    running = base / f".tmp-2-{host}-{os.getpid()}-l1v3"  # this live process: left alone
    running.mkdir()
    other_host = base / f".tmp-3-elsewhere.example-{dead}-0th3r"  # unknown process: left alone
    other_host.mkdir()
    path = export.saved_model(tiny_model, base, warmup=False)
    assert Path(path).name == "1"
    assert sorted(p.name for p in base.iterdir()) == sorted(
        ["1", running.name, other_host.name])


# --------------------------------------------------------- int8: calibration data and the result
def _no_conversion(*args, **kwargs):
    raise AssertionError("the converter must not run on refused calibration data")


@pytest.mark.parametrize("make, error, match", [
    (lambda: np.zeros((0, 32, 32, 3), "float32"), ValueError, "at least one image"),
    (lambda: np.full((4, 32, 32, 3), np.nan, "float32"), ValueError,
     r"must be finite.*12288 non-finite"),
    (lambda: np.where(np.arange(4 * 32 * 32 * 3).reshape(4, 32, 32, 3) == 7, np.inf, 0.5),
     ValueError, r"must be finite.*1 non-finite"),
    (lambda: np.zeros((4, 32, 32, 1), "float32"), ValueError,
     r"\[samples, 32, 32, 3\].*shape \(4, 32, 32, 1\)"),
    (lambda: np.zeros((4, 16, 16, 3), "float32"), ValueError, r"shape \(4, 16, 16, 3\)"),
    (lambda: np.zeros((4, 32, 32), "float32"), ValueError, r"shape \(4, 32, 32\)"),
    (lambda: tf.data.Dataset.from_tensor_slices(np.zeros((0, 32, 32, 3), "float32")),
     ValueError, "at least one image"),
    (lambda: tf.data.Dataset.from_tensor_slices(
        (np.full((3, 32, 32, 3), np.nan, "float32"), np.zeros(3))).batch(2),
     ValueError, r"dataset element 0 with 6144 non-finite"),
    (lambda: tf.data.Dataset.from_tensor_slices(np.zeros((3, 8, 8, 3), "float32")),
     ValueError, r"dataset element 0 of shape \(8, 8, 3\)"),
    (lambda: np.array(["a", "b"]), TypeError, "numeric images"),
    (lambda: "images/", TypeError, "an array .* or a tf.data.Dataset"),
])
def test_int8_refuses_unusable_calibration_data_before_converting(
        tiny_model, tmp_path, monkeypatch, make, error, match):
    monkeypatch.setattr(litert, "_convert", _no_conversion)
    path = tmp_path / "m.tflite"
    path.write_bytes(b"previous")
    with pytest.raises(error, match="`representative_data`") as raised:
        export.tflite(tiny_model, path, quantization="int8", representative_data=make())
    assert re.search(match, str(raised.value)), str(raised.value)
    assert path.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


def test_int8_result_is_checked_integer_and_failures_keep_the_old_file(tiny_model, tmp_path,
                                                                       monkeypatch):
    images = np.random.default_rng(0).standard_normal((16, 32, 32, 3)).astype("float32")
    strict = export.tflite(tiny_model, tmp_path / "strict.tflite", quantization="int8",
                           representative_data=images, float_ops=())
    assert export.float_operators(Path(strict).read_bytes()) == []
    default = export.tflite(tiny_model, tmp_path / "default.tflite", quantization="int8",
                            representative_data=images)
    floats = {name for _, name, _ in export.float_operators(Path(default).read_bytes())}
    assert "BATCH_MATMUL" in floats  # the lambda layer's activation x activation products
    assert floats <= {"BATCH_MATMUL", "MUL", "QUANTIZE", "DEQUANTIZE", "SHAPE"}, floats
    expected = ops.convert_to_numpy(tiny_model(images))
    for path in (strict, default):
        probs, _ = _tflite_run(path, images)
        assert np.abs(probs - expected).max() < 0.1

    # A conversion that comes back mostly float (what empty calibration produced) is refused.
    float_model = export.tflite(tiny_model, tmp_path / "float.tflite")
    monkeypatch.setattr(litert, "_convert", lambda *args: Path(float_model).read_bytes())
    for float_ops in [(), ("BATCH_MATMUL",)]:
        with pytest.raises(ValueError, match=r"left \d+ operators computing in float.*CONV_2D"):
            export.tflite(tiny_model, default, quantization="int8", representative_data=images,
                          float_ops=float_ops)
    assert export.float_operators(Path(default).read_bytes()) != []  # still the int8 file
    assert Path(default).read_bytes() != Path(float_model).read_bytes()

    def broken(*args):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(litert, "_convert", broken)
    before = Path(strict).read_bytes()
    with pytest.raises(RuntimeError, match="converter crashed"):
        export.tflite(tiny_model, strict, quantization="int8", representative_data=images)
    assert Path(strict).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "default.tflite", "float.tflite", "strict.tflite"]


@pytest.mark.parametrize("float_ops, error, match", [
    ("BATCH_MATMUL", TypeError, "sequence of TFLite operator names"),
    (None, TypeError, "sequence of TFLite operator names"),
    (("BATCHMATMUL",), ValueError, r"unknown \['BATCHMATMUL'\]"),
])
def test_int8_float_ops_argument(tiny_model, tmp_path, float_ops, error, match):
    with pytest.raises(error, match=match):
        export.tflite(tiny_model, tmp_path / "m.tflite", quantization="int8",
                      representative_data=np.zeros((2, 32, 32, 3), "float32"), float_ops=float_ops)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------- the one LiteRT runner
def test_litert_runner_batches_and_integer_io(tiny_model, tmp_path):
    images = np.random.default_rng(1).standard_normal((5, 32, 32, 3)).astype("float32")
    expected = ops.convert_to_numpy(tiny_model(images))
    runner = export.LiteRTRunner(export.tflite(tiny_model, tmp_path / "f.tflite"), num_threads=1)
    np.testing.assert_allclose(runner(images), expected, atol=1e-5)
    np.testing.assert_allclose(runner.predict(images, batch_size=2), expected, atol=1e-5)
    np.testing.assert_allclose(runner(images[:1]), expected[:1], atol=1e-5)  # resized back
    assert "FULLY_CONNECTED" in runner.ops

    # A file with int8 input/output tensors (converted here directly): the runner (de)quantizes.
    converter = tf.lite.TFLiteConverter.from_keras_model(tiny_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    quantized = export.LiteRTRunner(converter.convert())
    assert quantized.input_details["dtype"] == np.int8
    probs = quantized.predict(images, batch_size=1)
    assert probs.dtype == np.float32 and np.abs(probs - expected).max() < 0.1
    with pytest.raises(TypeError, match="`model` must be a .tflite path or flatbuffer bytes"):
        export.LiteRTRunner(np.zeros(3))


QUANTIZE_SCRIPT = """
import sys
import numpy as np, keras
from lambda_keras import export
model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                          keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
data = np.random.default_rng(0).standard_normal((8, 8, 8, 3)).astype("float32")
export.tflite(model, sys.argv[1], quantization="int8", representative_data=data)
"""


@pytest.mark.parametrize("level, printed", [("3", False), ("1", True)])
def test_int8_conversion_prints_no_cpp_lines_when_tensorflow_logging_is_silenced(
        tmp_path, level, printed):
    """The quantizer's C++ "fully_quantize: ..." lines ignore TF_CPP_MIN_LOG_LEVEL; export
    silences them where that variable is 3 (the CLI's default) and keeps them otherwise."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": level, "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run([sys.executable, "-c", QUANTIZE_SCRIPT, str(tmp_path / "m.tflite")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("fully_quantize" in result.stderr) is printed
    assert (tmp_path / "m.tflite").stat().st_size > 0
