"""TensorFlow's own tools and TF Serving's client contract against an exported SavedModel:
`saved_model_cli show` lists both signatures, `saved_model_cli run` computes what the Keras model
does (pixels and image bytes) and refuses bad tensors, and the example clients' requests
(export/client_grpc.py, export/client_rest.py) match the signatures TF Serving would serve. On
a small classifier holding a LambdaLayer (split from tests/test_export_api.py).
"""

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from sklearn.datasets import load_sample_images

from lambda_keras import data, export, weights
from export_helpers import SERVING_TIMEOUT_S, jpeg, load_client, png, tiny_classifier


@pytest.fixture(scope="module")
def tiny_model():
    """A small classifier holding a LambdaLayer."""
    return tiny_classifier()


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
    jpegs = [jpeg(load_sample_images().images[0]), png(np.full((20, 30, 3), 120))]
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

    request = load_client("client_grpc").build_request(jpegs, "lambda_resnet")
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

    body = load_client("client_rest").build_body(jpegs)
    definition = signatures[body["signature_name"]]
    (key,) = definition.inputs  # one input: TF Serving takes bare row-format instances
    assert definition.inputs[key].dtype == tf.string.as_datatype_enum
    assert [base64.b64decode(instance["b64"]) for instance in body["instances"]] == jpegs

    images = signatures["serving_default"].inputs["images"]
    _check_tensor_against(tf.make_tensor_proto(pixels), images)
    assert images.dtype == tf.float32.as_datatype_enum
