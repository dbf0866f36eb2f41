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
with 10 classes (the digits), made "trained-ish" first (see `_trained_ish`). The API's arguments
and files are tests/test_export_api.py, TensorFlow's own tools and the clients' requests
tests/test_export_signatures.py (a small model, fast).
"""

import base64
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

from lambda_keras import data, export
from lambda_keras.layers import LambdaLayer
from lambda_keras.models import LambdaResNet26T, LambdaResNet50

from export_helpers import (PREPROCESSING, SERVING_TIMEOUT_S, SIZE, jpeg, load_client, png,
                            tflite_run)
from reference import force_plan

LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
BUILDERS = {
    "lambda_resnet50": lambda: LambdaResNet50(input_shape=(SIZE, SIZE, 3), classes=10),
    "lambda_resnet26t": lambda: LambdaResNet26T(weights=None, input_shape=(SIZE, SIZE, 3),
                                                classes=10),
}
FIT = slice(0, 300)  # digits the last stage is trained on
EVAL = slice(300, 500)  # digits the exported models are compared on
CALIBRATION = slice(0, 256)  # int8 calibration images (from the training digits)
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


def _forged_png(width, height):
    """A PNG signature + IHDR chunk claiming width x height, then IEND: no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\0\0\0\0IEND\xaeB`\x82"


def _forged_jpeg(width, height):
    """A real small JPEG whose SOF0 header is patched to claim width x height."""
    encoded = bytearray(jpeg(np.full((16, 16, 3), 128)))
    sof = encoded.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    encoded[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(encoded)


def _sample_jpegs():
    """Real photos as JPEG bytes: landscape 427x640, a portrait crop, a small (upscaled) crop."""
    china, flower = load_sample_images().images
    return [jpeg(china), jpeg(flower[50:350, 200:380]), jpeg(china[100:150, 300:370])]


# The serving process: TensorFlow and the tensorflow-serving-api protos only, like TF Serving.
SERVING_SCRIPT = r'''
import base64, json, sys
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
    try:
        batch = np.array([base64.b64decode(encoded)], dtype=object)
        outputs = run("serving_bytes", image_bytes=batch)
        keep(f"bad_{name}", outputs)
        outcome = {"ok": True}
    except tf.errors.InvalidArgumentError as error:
        outcome = {"ok": False, "message": error.message}
    result["bad"][name] = outcome

result["lambda_keras_imported"] = any(m.split(".")[0] == "lambda_keras" for m in sys.modules)
np.savez(spec["out_arrays"], **arrays)
with open(spec["out_json"], "w") as f:
    json.dump(result, f)
'''


def _bad_inputs():
    gray = np.linspace(0, 255, 40 * 30).reshape(40, 30, 1).astype("uint8")
    rgba = np.dstack([np.full((20, 20, 3), 90), np.full((20, 20, 1), 255)])
    truncated = jpeg(load_sample_images().images[0])
    return {
        "empty": b"",
        "not_an_image": b"hello, this is not an image",
        "truncated_jpeg": truncated[:len(truncated) // 3],
        "png_bomb": _forged_png(20000, 20000),
        "png_overflow": _forged_png(2 ** 32 - 1, 2 ** 32 - 1),
        "jpeg_bomb": _forged_jpeg(60000, 60000),
        "extreme_aspect": png(np.zeros((1, 20000, 3))),
        # 73 x 876000 float32 pixels (767 MB) after the eval resize at 64 px: within the former
        # pixel budget (8192^2), over the byte budget.
        "aspect_over_byte_budget": png(np.zeros((1, 12000, 3))),
        # 73 x 48666 pixels, 42.6 MB as float32: under the byte budget, classified.
        "aspect_under_byte_budget": png(np.zeros((3, 2000, 3))),
        "one_pixel": png(np.full((1, 1, 3), 200)),
        "gray_png": png(gray),
        "gray_as_rgb_png": png(np.repeat(gray, 3, axis=-1)),
        "rgba_png": png(rgba),
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
    grpc_request = load_client("client_grpc").build_request(c.jpegs, "lambda_resnet")
    spec = {
        "saved_model": c.export_path, "arrays": str(work / "inputs.npz"),
        "jpegs": [base64.b64encode(j).decode() for j in c.jpegs],
        "rest_body": load_client("client_rest").build_body(c.jpegs),
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
    rest = load_client("client_rest")
    text = rest.format_predictions(["a.jpg"], [{"top_k_labels": ["cat", "dog"],
                                                 "top_k_scores": [0.75, 0.25]}])
    assert text == "a.jpg\n   0.7500  cat\n   0.2500  dog"
    body = rest.build_body([b"\xff\xd8\xffJPEG"])
    assert body == {"signature_name": "serving_bytes",
                    "instances": [{"b64": base64.b64encode(b"\xff\xd8\xffJPEG").decode()}]}


@pytest.mark.parametrize("client, flag, address", [
    ("client_rest", "--url", "http://127.0.0.1:{port}"),
    ("client_grpc", "--address", "127.0.0.1:{port}"),
])
def test_client_without_a_server_says_how_to_start_one(client, flag, address, tmp_path):
    """Was a URLError (REST) or RpcError (gRPC) traceback."""
    with socket.socket() as closed:  # a port nobody listens on: connection refused, at once
        closed.bind(("127.0.0.1", 0))
        address = address.format(port=closed.getsockname()[1])
    image = tmp_path / "a.jpg"
    image.write_bytes(b"\xff\xd8\xffJPEG")
    with pytest.raises(SystemExit) as info:
        load_client(client).main([str(image), flag, address])
    message = str(info.value.code)  # printed on stderr, exit status 1
    assert "\n" not in message and f"answered at {address}" in message, message
    assert "export/serve.sh" in message and flag in message, message


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
    """The "decompression bomb" message is the header check's (export/images.py): the decode op
    runs only once it passes (a control dependency), so a bomb is refused without decoding."""
    outcome = case.served["bad"][name]
    assert outcome["ok"] is False and expected in outcome["message"], outcome


@pytest.mark.parametrize("name", ["one_pixel", "gray_png", "rgba_png",
                                  "aspect_under_byte_budget"])
def test_odd_images_are_classified(case, name):
    outcome = case.served["bad"][name]
    assert outcome["ok"] is True
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
    probs, ops_used = tflite_run(path, _normalise(case.eval_pixels))
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
    probs, ops_used = tflite_run(path, _normalise(case.eval_pixels))
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
    """Query windows with 3 query columns per block and blocks of half a scope of query rows
    (4 blocks of 7 rows here; what TensorFlow takes on a CPU without AVX-512,
    formulations.window_blocks), whatever this machine's rule says."""
    force_plan(monkeypatch, block_columns=3, block_scopes=0.5)
    _check_tflite_conversion(tmp_path, "query_windows", 26,
                             dict(receptive_field=13, implementation="query_windows"))


def test_exports_of_a_layer_whose_serving_graph_loops(tmp_path, monkeypatch):
    """Where a lambda layer's forward pass of a batch of unknown size runs its images in a loop
    (TensorFlow without oneDNN, query windows with r > 11: `formulations.Plan.image_loop`),
    whatever this machine's oneDNN state: the SavedModel's serving signature keeps the loop and
    serves the model's probabilities; the LiteRT export traces without it
    (`traced_without_loops`): the int8 file has no WHILE (it would stay float, and the export
    refuse to write the file) and agrees with the model."""
    from lambda_keras.layers import formulations
    from test_formulation_rule import NO_ONEDNN

    monkeypatch.setattr(formulations, "current_runtime", lambda *args, **kwargs: NO_ONEDNN)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((26, 26, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = LambdaLayer(key_dim=16, num_heads=4, receptive_field=13,
                    implementation="query_windows")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    pixels = np.random.default_rng(0).uniform(0, 255, (16, 26, 26, 3)).astype("float32")
    images = _normalise(pixels)
    expected = ops.convert_to_numpy(model(images[:4]))

    served = tf.saved_model.load(export.saved_model(model, tmp_path / "served", warmup=False))
    signature = served.signatures["serving_default"]
    library = signature.graph.as_graph_def().library.function
    assert any("While" in node.op for function in library for node in function.node_def)
    probabilities = signature(images=tf.constant(pixels[:4]))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)

    path = export.tflite(model, tmp_path / "m.tflite", quantization="int8",
                         representative_data=images)
    outputs, ops_used = tflite_run(path, images[:4])  # (the export checked its float ops)
    assert "WHILE" not in ops_used, ops_used
    assert np.abs(outputs - expected).max() <= 0.1


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
    outputs, ops_used = tflite_run(export.tflite(model, tmp_path / "m.tflite"), images)
    assert np.abs(outputs - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops_used), ops_used


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

