"""Tests for lambda_keras.export's API and files: versions, overwrite and refusal, argument
errors, nothing half-written after a failure, int8 calibration data and results, and the LiteRT
runner. All on a small classifier holding a LambdaLayer (`tiny_model`); TensorFlow's own
`saved_model_cli` and the clients' requests against its signatures are
tests/test_export_signatures.py, the exported LambdaResNets and the TF Serving contract
tests/test_export.py.
"""

import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import keras
import pytest
import tensorflow as tf
from keras import ops

from lambda_keras import export, utils, weights
from lambda_keras.data.transforms import _eval_resize_size  # timm's eval resize rule
from lambda_keras.export import images as image_ops
from lambda_keras.export import litert, serving
from export_helpers import PREPROCESSING, SIZE, tflite_run, tiny_classifier


def _varied_images(count, seed):
    """Noise images with a colour offset each: the random tiny classifier's probabilities
    vary across them (on plain noise they all lie within ~0.05 of the same class's)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((count, 32, 32, 3)) + rng.uniform(-2, 2, (count, 1, 1, 3))
    return images.astype("float32")


def _assert_int8_close(probs, expected, tolerance=0.1):
    """Within `tolerance` of the float model's probabilities, on inputs whose expected
    probabilities vary by clearly more than the tolerance (a file ignoring its input could not
    pass), with its top-1 wherever the float model's top two are not a near-tie (> 0.05 apart,
    2.5x the int8 files' largest error here), over more than one class."""
    assert np.ptp(expected, axis=0).max() > 3 * tolerance, np.ptp(expected, axis=0)
    assert np.abs(probs - expected).max() < tolerance, np.abs(probs - expected).max()
    top_two = np.sort(expected, axis=-1)[:, -2:]  # [images, 2]
    clear = top_two[:, 1] - top_two[:, 0] > 0.05
    assert len(set(expected.argmax(-1)[clear])) > 1, (expected, clear)
    np.testing.assert_array_equal(probs.argmax(-1)[clear], expected.argmax(-1)[clear])


@pytest.fixture(scope="module")
def tiny_model():
    """A small classifier holding a LambdaLayer, for the fast API tests."""
    return tiny_classifier()


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


def test_failed_export_removes_every_directory_it_created(tiny_model, tmp_path, monkeypatch):
    """Was: only the last created parent (`base`) was removed, `a/` and `a/b/` stayed."""
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(serving, "warmup_requests", fail)  # fails after the SavedModel is written
    with pytest.raises(RuntimeError, match="disk full"):
        export.saved_model(tiny_model, tmp_path / "a" / "b" / "base")
    assert list(tmp_path.iterdir()) == []
    existing = tmp_path / "existing"
    existing.mkdir()  # an empty directory that was there before: kept
    with pytest.raises(RuntimeError, match="disk full"):
        export.saved_model(tiny_model, existing / "c" / "base")
    assert list(tmp_path.iterdir()) == [existing] and list(existing.iterdir()) == []


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


def _backbone_and_head():
    """The tiny classifier as a fine-tuning model holds it: a nested backbone model."""
    backbone = tiny_classifier()
    features = keras.Model(backbone.input, backbone.get_layer("predictions").input,
                           name="backbone")
    return keras.Sequential([keras.Input((32, 32, 3)), features,
                             keras.layers.Dense(3, activation="softmax", name="predictions")])


@pytest.mark.parametrize("policy, build", [("mixed_bfloat16", _backbone_and_head),
                                           ("mixed_float16", tiny_classifier)])
def test_mixed_precision_model_exports_to_tflite_and_saved_model(tmp_path, policy, build):
    """A model trained under a mixed-precision policy: the TFLite file (no bfloat16 kernels in
    TFLite) computes the same weights in float32, as an independently built float32 model does;
    the SavedModel serves float32 probabilities within the policy's precision."""
    with utils.dtype_policy(policy):
        mixed = build()
    float32 = build()
    float32.set_weights(mixed.get_weights())
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    expected = np.asarray(mixed.predict(x, verbose=0), "float32")

    got = export.LiteRTRunner(export.tflite(mixed, tmp_path / "model.tflite"))(x)
    np.testing.assert_allclose(got, float32.predict(x, verbose=0), atol=1e-6)
    np.testing.assert_allclose(got, expected, atol=2e-2)  # the policy's own round-off
    assert {layer.compute_dtype for layer in mixed.layers} == {policy.split("_")[1]}

    path = export.saved_model(mixed, tmp_path / "served", warmup=False)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    mean, std = (np.array(getattr(weights.DEFAULT_PREPROCESSING, name)) for name in ("mean", "std"))
    probabilities = tf.saved_model.load(path).signatures["serving_default"](
        images=pixels)["probabilities"]
    assert probabilities.dtype == tf.float32
    np.testing.assert_allclose(probabilities.numpy(), float32.predict(
        ((pixels / 255 - mean) / std).astype("float32"), verbose=0), atol=2e-2)


def test_mixed_precision_subclassed_model_is_refused_with_the_way_out(tmp_path):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.dense = keras.layers.Dense(3, dtype="mixed_bfloat16")

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match="mixed precision.*float32 policy.*'subclassed'"):
        export.tflite(model, tmp_path / "model.tflite")
    assert not (tmp_path / "model.tflite").exists()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(labels=["a", "b"]), ValueError, r"`labels` must be 3 strings"),
    (dict(labels=["a", "b\nc", "d"]), ValueError,
     r"must not contain line breaks.*Received: 'b\\nc' at index 1 of labels=\['a', 'b\\nc', 'd'\]"),
    (dict(labels=["a", "b\r", "d"]), ValueError, r"line breaks.*Received: 'b\\r' at index 1"),
    (dict(labels=["a", "b\u2028c", "d"]), ValueError, r"line breaks.*at index 1 of labels="),
    (dict(labels=["", "", ""]), ValueError, r"`labels` must not hold empty names \(labels.txt "
     r"would have an empty line.*Received: an empty name at index 0 of labels=\['', '', ''\]"),
    (dict(labels=["a", "b", ""]), ValueError, r"empty names.*at index 2 of labels="),
    (dict(labels=5), TypeError, r"`labels` must be a sequence of 3 class names or a labels.txt "
     r"path. Received: labels=5 of type int"),
    (dict(labels={"a", "b", "c"}), TypeError, r"`labels` must be a sequence.*of type set"),
    (dict(labels=b"abc"), TypeError, r"`labels` must be a sequence.*labels=b'abc' of type bytes"),
    (dict(labels=[1, 2, 3]), ValueError, r"`labels` must be 3 strings.*\[1, 2, 3\]"),
    (dict(top_k=0), ValueError, r"Received: top_k=0"),
    (dict(version=-1), ValueError, r"Received: version=-1"),
    (dict(preprocessing=weights.DEFAULT_PREPROCESSING), ValueError,
     r"must match the model's input size \(32, 32\)"),
    (dict(preprocessing={"input_size": (32, 32)}), TypeError, "must be a lambda_keras"),
    (dict(version="1"), TypeError, r"`version` must be an int >= 0. Received: version='1'"),
    (dict(preprocessing=weights.Preprocessing(input_size=(32, 32), crop_pct=1.5)), ValueError,
     r"`preprocessing.crop_pct` must be in \(0, 1\]. Received: preprocessing.crop_pct=1.5"),
    (dict(preprocessing=weights.Preprocessing(input_size=(32, 32), interpolation="area")),
     ValueError, r"Received: preprocessing.interpolation='area'"),
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
    with pytest.raises(ValueError, match=r'`float_ops` is only used with quantization="int8"\. '
                                         r"Received: quantization='float16', float_ops=\('MUL',\)"):
        export.tflite(tiny_model, path, quantization="float16", float_ops=("MUL",))
    with pytest.raises(ValueError, match=r"Received: quantization=None, float_ops=\(\)"):
        export.tflite(tiny_model, path, float_ops=())
    with pytest.raises(TypeError, match="`overwrite` must be a bool. Received: overwrite=1"):
        export.tflite(tiny_model, path, overwrite=1)
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"kept")
    with pytest.raises(FileExistsError, match="m.tflite' exists; pass overwrite=True"):
        export.tflite(tiny_model, path, overwrite=False)
    assert path.read_bytes() == b"kept"


def test_tflite_refuses_an_empty_path_before_converting(tiny_model, tmp_path, monkeypatch):
    """Was: converted, then FileNotFoundError: '' from the final rename."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(litert, "_convert", _no_conversion)
    with pytest.raises(ValueError,
                       match=r"`path` must be a non-empty file path. Received: path=''"):
        export.tflite(tiny_model, "")
    assert list(tmp_path.iterdir()) == []


def test_exports_under_a_file_are_refused_before_writing(tiny_model, tmp_path, monkeypatch):
    """A path whose existing part is a file (a typo of a directory) cannot be created: refused
    naming the argument and the file, before converting (were the OS's NotADirectoryError from
    its makedirs, the SavedModel after tracing the model)."""
    monkeypatch.setattr(litert, "_convert", _no_conversion)
    blocker = tmp_path / "model.keras"
    blocker.write_bytes(b"keep me")
    for call, name, path in ((export.saved_model, "export_dir", blocker / "serving"),
                             (export.tflite, "path", blocker / "deeper" / "m.tflite")):
        with pytest.raises(ValueError, match=re.escape(
                f"`{name}` lies under {str(blocker)!r}, an existing file, not a directory. "
                f"Received: {name}={str(path)!r}")):
            call(tiny_model, path)
    assert blocker.read_bytes() == b"keep me" and sorted(tmp_path.iterdir()) == [blocker]


def _no_conversion(*args, **kwargs):
    raise AssertionError("the converter must not run on refused arguments")


def test_tflite_int8_from_a_labelled_dataset(tiny_model, tmp_path):
    images = _varied_images(16, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(16, "int64"))).batch(4)
    path = export.tflite(tiny_model, tmp_path / "m.tflite", quantization="int8",
                         representative_data=dataset)
    probs, _ = tflite_run(path, images)
    expected = ops.convert_to_numpy(tiny_model(images))
    assert probs.shape == (16, 3)
    _assert_int8_close(probs, expected)
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


# ----------------------------------------------------------------- SavedModel: bad paths, leftovers
def test_saved_model_refuses_a_file_as_export_dir(tiny_model, tmp_path):
    target = tmp_path / "not_a_directory"
    target.write_bytes(b"keep me")
    with pytest.raises(ValueError, match=r"`export_dir` must be a directory.*an existing file"):
        export.saved_model(tiny_model, target, warmup=False)
    assert target.read_bytes() == b"keep me"
    with pytest.raises(TypeError, match=r"`export_dir` must be a path"):
        export.saved_model(tiny_model, 3, warmup=False)


def test_saved_model_refuses_an_empty_export_dir(tiny_model, tmp_path, monkeypatch):
    """Was: FileNotFoundError: '' (naming no argument)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"`export_dir` must be a non-empty path \(the TF Serving "
                                         r"model base path\). Received: export_dir=''"):
        export.saved_model(tiny_model, "", warmup=False)
    assert list(tmp_path.iterdir()) == []


def test_automatic_version_over_a_file_says_it_was_chosen(tiny_model, tmp_path):
    """Was: "'.../1' exists and is not a directory.", not saying that `version` was picked."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "1").write_bytes(b"not a version")
    with pytest.raises(FileExistsError, match=r"1' exists and is not a directory: version 1 was "
                                              r"chosen automatically \(`version` not given.*pass "
                                              r"`version` to choose another version or remove "
                                              r"the file"):
        export.saved_model(tiny_model, base, warmup=False)
    assert [p.name for p in base.iterdir()] == ["1"]
    assert (base / "1").read_bytes() == b"not a version"
    with pytest.raises(FileExistsError, match=r"1' exists and is not a directory; choose another "
                                              r"`version` or remove the file"):
        export.saved_model(tiny_model, base, version=1, warmup=False)
    assert export.saved_model(tiny_model, base, version=2, warmup=False) == str(base / "2")


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
    images = _varied_images(16, seed=0)
    # TensorFlow before 2.21 quantizes the lambda layer's BATCH_MATMULs inaccurately: there, and
    # only there, a full-integer file comes with a warning (and is not held to the tolerance).
    inaccurate = litert._tf_version() < litert.INT8_BATCH_MATMUL_MIN_TF  # noqa: SLF001
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        strict = export.tflite(tiny_model, tmp_path / "strict.tflite", quantization="int8",
                               representative_data=images, float_ops=())
    assert any("BATCH_MATMUL" in str(w.message) for w in caught) == inaccurate, caught
    assert export.float_operators(Path(strict).read_bytes()) == []
    default = export.tflite(tiny_model, tmp_path / "default.tflite", quantization="int8",
                            representative_data=images)
    floats = {name for _, name, _ in export.float_operators(Path(default).read_bytes())}
    assert "BATCH_MATMUL" in floats  # the lambda layer's activation x activation products
    assert floats <= {"BATCH_MATMUL", "MUL", "QUANTIZE", "DEQUANTIZE", "SHAPE"}, floats
    expected = ops.convert_to_numpy(tiny_model(images))
    for path in (default,) if inaccurate else (strict, default):
        probs, _ = tflite_run(path, images)
        _assert_int8_close(probs, expected)

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
    ({"MUL": 1}, TypeError, "sequence of TFLite operator names"),
    (("BATCHMATMUL",), ValueError, r"unknown \['BATCHMATMUL'\]"),
])
def test_int8_float_ops_argument(tiny_model, tmp_path, float_ops, error, match):
    with pytest.raises(error, match=match):
        export.tflite(tiny_model, tmp_path / "m.tflite", quantization="int8",
                      representative_data=np.zeros((2, 32, 32, 3), "float32"), float_ops=float_ops)
    assert list(tmp_path.iterdir()) == []


def test_int8_float_ops_none_means_the_default(tiny_model, tmp_path, monkeypatch):
    seen = []

    def convert(model, quantization, samples, float_ops):
        seen.append(float_ops)
        raise RuntimeError("stopped before converting")

    monkeypatch.setattr(litert, "_convert", convert)
    for kwargs in ({}, {"float_ops": None}):
        with pytest.raises(RuntimeError, match="stopped before converting"):
            export.tflite(tiny_model, tmp_path / "m.tflite", quantization="int8",
                          representative_data=np.zeros((2, 32, 32, 3), "float32"), **kwargs)
    assert seen == [litert.INT8_FLOAT_OPS] * 2


# ------------------------------------------------------------------------- the one LiteRT runner
def test_litert_runner_batches_and_integer_io(tiny_model, tmp_path):
    images = _varied_images(5, seed=1)
    expected = ops.convert_to_numpy(tiny_model(images))
    runner = export.LiteRTRunner(export.tflite(tiny_model, tmp_path / "f.tflite"), num_threads=1)
    np.testing.assert_allclose(runner(images), expected, atol=1e-5)
    np.testing.assert_allclose(runner.predict(images, batch_size=2), expected, atol=1e-5)
    np.testing.assert_allclose(runner(images[:1]), expected[:1], atol=1e-5)  # resized back
    assert "FULLY_CONNECTED" in runner.ops
    # Another size, no batch axis: a clear error (LiteRT itself: XNNPack's "failed to reshape
    # runtimeNode"), and the runner stays usable.
    for wrong in (images[:, :16], images[0]):
        with pytest.raises(ValueError, match=r"`inputs` must have shape \[batch, 32, 32, 3\] "
                                             rf"for this model. Received: inputs shape "
                                             rf"{re.escape(str(wrong.shape))}"):
            runner(wrong)
    # An empty batch (was LiteRT's RuntimeError from its RESHAPE kernel).
    with pytest.raises(ValueError, match=re.escape(
            "`inputs` must hold at least one example. Received: inputs shape (0, 32, 32, 3)")):
        runner(images[:0])
    np.testing.assert_allclose(runner(images), expected, atol=1e-5)

    # A file with int8 input/output tensors (converted here directly): the runner (de)quantizes.
    # A convolutional classifier: every TensorFlow version quantizes it accurately (not the
    # lambda layer's BATCH_MATMULs before 2.21, see litert.INT8_BATCH_MATMUL_MIN_TF).
    keras.utils.set_random_seed(0)
    conv = keras.Sequential([keras.Input((32, 32, 3)),
                             keras.layers.Conv2D(8, 3, activation="relu"),
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(3, activation="softmax")])
    expected = ops.convert_to_numpy(conv(images))
    converter = tf.lite.TFLiteConverter.from_keras_model(conv)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    quantized = export.LiteRTRunner(converter.convert())
    assert quantized.input_details["dtype"] == np.int8
    probs = quantized.predict(images, batch_size=1)
    assert probs.dtype == np.float32
    _assert_int8_close(probs, expected)
    with pytest.raises(TypeError, match="`model` must be a .tflite path or flatbuffer bytes"):
        export.LiteRTRunner(np.zeros(3))


def test_litert_runner_refuses_missing_files_and_unreadable_content(tmp_path, monkeypatch):
    """Was: LiteRT's own ValueErrors ("Could not open ...", "The model is not a valid Flatbuffer
    buffer", "`model_path` or `model_content` must be specified."), naming no argument."""
    missing = tmp_path / "missing.tflite"
    with pytest.raises(FileNotFoundError, match=r"`model` must be a .tflite path or flatbuffer "
                                                r"bytes; no file is at the path. Received: "
                                                rf"model={re.escape(repr(str(missing)))}"):
        export.LiteRTRunner(missing)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"garbage" * 10)
    for model, received in [(b"garbage" * 10, r"model=b'garbagegarbagega'\.\.\. \(70 bytes\)"),
                            (bytearray(b"\0" * 8), r"model=b'\\x00.*' \(8 bytes\)"),
                            (garbage, rf"model={re.escape(repr(str(garbage)))}"),
                            (tmp_path, rf"model={re.escape(repr(str(tmp_path)))}")]:
        with pytest.raises(ValueError, match=r"`model` must be a LiteRT \(.tflite\) flatbuffer, "
                                             rf"which LiteRT could not read .*Received: {received}"
                           ) as caught:
            export.LiteRTRunner(model)
        assert isinstance(caught.value.__cause__, ValueError)  # LiteRT's own message
        assert " ".join(str(caught.value.__cause__).split()) in str(caught.value)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"`model` must be a non-empty .tflite path or flatbuffer "
                                         r"bytes. Received: model=''"):
        export.LiteRTRunner("")
    with pytest.raises(ValueError, match=r"Received: model=b'' \(no bytes\)"):
        export.LiteRTRunner(b"")


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
