"""Tests of lambda_keras.weights without a timm checkpoint (so without timm's subprocess): the
`weights` argument and the files it names. Refused: pickle checkpoints (never unpickled), corrupt
and hostile safetensors files, paths that are not regular files, `weights` strings that name
nothing and values of another type. Keras .weights.h5 files: non-finite or non-floating-point
tensors refused, the model left unchanged; a file holding tensors no weight takes refused; the file
of a fitted model (optimizer state beside the weights) loads without its optimizer and as strictly
as any.

timm's checkpoints (parity, mapping, strict loading, conversion, preprocessing): test_weights.py;
the downloads and the cache: test_weights_download.py.
"""

import inspect
import json
import os
import pickle

import numpy as np
import pytest
import keras

import lambda_keras
from lambda_keras import weights as W

from helpers import weights_by_path
from timm_checkpoints import SIZE, small_26t


# ------------------------------------------------------------------ refused inputs
class _Payload:
    """Unpickling this creates a file: the proof that a pickle ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".pt", ".ckpt"])
def test_pickle_checkpoints_are_refused_without_unpickling(suffix, tmp_path):
    marker = tmp_path / "pickle_ran"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ValueError, match=r"\.safetensors.*Received: weights="):
        lambda_keras.LambdaResNet26T(weights=str(path), input_shape=(SIZE, SIZE, 3))
    with pytest.raises(ValueError, match=r"\.safetensors"):
        W.load_weights(keras.Sequential(), path, "lambda_resnet26t")  # a pathlib.Path
    assert not marker.exists()


def test_corrupt_file_is_named(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(ValueError, match="Could not read .*broken.safetensors"):
        small_26t(weights=str(path))


def _header_file(path, header, declared_length=None, payload=b""):
    raw = json.dumps(header).encode()
    length = len(raw) if declared_length is None else declared_length
    path.write_bytes(length.to_bytes(8, "little") + raw + payload)
    return str(path)


@pytest.mark.parametrize("case", ["huge-header-length", "tensor-beyond-file", "huge-shape"])
def test_hostile_safetensors_headers_are_refused(case, tmp_path):
    header = {"stem.conv1.conv.weight": {"dtype": "F32", "shape": [24, 3, 3, 3],
                                         "data_offsets": [0, 24 * 27 * 4]}}
    path = tmp_path / f"{case}.safetensors"
    if case == "huge-header-length":
        _header_file(path, header, declared_length=2**62)
    elif case == "tensor-beyond-file":
        _header_file(path, header, payload=b"\0" * 16)  # header claims 2592 bytes
    else:
        header["stem.conv1.conv.weight"] = {"dtype": "F32", "shape": [2**31, 2**31],
                                            "data_offsets": [0, 16]}
        _header_file(path, header, payload=b"\0" * 16)
    model = small_26t()
    with pytest.raises(ValueError, match=f"Could not read .*{case}.safetensors"):
        W.load_weights(model, str(path), "lambda_resnet26t")


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_weights_path_that_is_not_a_regular_file(kind, tmp_path):
    path = tmp_path / "model.safetensors"
    if kind == "directory":
        path.mkdir()
        expected = "is a directory"
    else:
        os.mkfifo(path)  # reading it would block forever
        expected = "not a regular file"
    with pytest.raises(ValueError, match=expected) as info:
        W.validate_weights(str(path), "lambda_resnet26t")
    assert "does not exist" not in str(info.value)
    assert f"Received: weights={str(path)!r}" in str(info.value)


@pytest.mark.parametrize("weights,message", [
    ("imagenet21k", "`weights` must be"),
    ("no/such/file.safetensors", "does not exist"),
    ("lambda_resnet50ts.a1h_in1k", "No pretrained weights"),  # preset of another architecture
])
def test_bad_weights_strings(weights, message):
    with pytest.raises(ValueError, match=message) as info:
        W.validate_weights(weights, "lambda_resnet26t")
    assert f"Received: weights={weights!r}" in str(info.value)


def test_imagenet_without_a_preset_lists_the_builders():
    with pytest.raises(ValueError) as info:
        W.validate_weights("imagenet", "lambda_resnet152")
    for builder in ("LambdaResNet26T", "LambdaResNet50TS", "LambdaResNet26RPT256"):
        assert builder in str(info.value)


def test_validate_weights_names_the_callers_argument():
    """`arg` names `weights` as the caller does (the CLI's `--weights`); `include_top` and
    `classes`, which it never checked, are no longer its parameters."""
    with pytest.raises(ValueError, match=r"No pretrained weights.*Received: --weights='imagenet'"):
        W.validate_weights("imagenet", "lambda_resnet50", arg="--weights")
    with pytest.raises(ValueError, match=r"Received: --weights='x\.pth'"):
        W.validate_weights("x.pth", "lambda_resnet50", arg="--weights")
    assert list(inspect.signature(W.validate_weights).parameters) == [
        "weights", "arch_name", "arg"]


def test_weights_of_a_wrong_type():
    with pytest.raises(TypeError, match="Received: weights=3"):
        W.validate_weights(3, "lambda_resnet26t")


# -------------------------------------------------------------- Keras .weights.h5 files
def _tiny_model(weights=None):
    return lambda_keras.LambdaResNet50(weights=weights, input_shape=(32, 32, 3), classes=3,
                                       layout="CCCL")


def test_non_finite_keras_weights_are_refused_naming_the_weight(tmp_path):
    source = _tiny_model()
    variable = source.get_layer("stem_conv1").kernel
    variable.assign(np.full(variable.shape, np.nan, "float32"))
    path = str(tmp_path / "nan.weights.h5")
    source.save_weights(path)
    model = _tiny_model()
    before = weights_by_path(model)
    with pytest.raises(ValueError, match="non-finite") as info:
        W.load_weights(model, path, "lambda_resnet50")
    assert "stem_conv1/kernel" in str(info.value)
    assert str(info.value).count("The model was left unchanged.") == 1, str(info.value)
    for key, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_keras_weights_of_a_wrong_dtype_are_refused(tmp_path):
    import h5py

    path = str(tmp_path / "int.weights.h5")
    _tiny_model().save_weights(path)
    with h5py.File(path, "r+") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        shape = f[names[0]].shape
        del f[names[0]]
        f.create_dataset(names[0], data=np.full(shape, 7, "int64"))  # Keras would cast it
    model = _tiny_model()
    before = weights_by_path(model)
    with pytest.raises(ValueError, match="non-floating-point") as info:
        W.load_weights(model, path, "lambda_resnet50")
    assert f"{names[0]} (int64)" in str(info.value)
    for key, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


@pytest.fixture(scope="module")
def head_files(tmp_path_factory):
    """(plain, extra): a tiny model's weights file, and that of the same model with one more
    Dense layer after its classifier (layers/dense_1 in the file)."""
    folder = tmp_path_factory.mktemp("heads")
    source = _tiny_model()
    plain, extra = str(folder / "plain.weights.h5"), str(folder / "extra.weights.h5")
    source.save_weights(plain)
    keras.Model(source.input, keras.layers.Dense(7)(source.output)).save_weights(extra)
    return plain, extra


# The three ways the classifier rule loads a file: all of it (the same classes), the backbone
# only (other classes: a new classifier) and everything but the classifier (include_top=False).
HEADS = [dict(classes=3), dict(classes=5), dict(include_top=False)]


@pytest.mark.parametrize("head", HEADS, ids=["same-classes", "new-classifier", "headless"])
def test_keras_file_with_unused_tensors_is_refused(head_files, head):
    # Keras' load_weights ignores the groups of a file that no layer reads: the extra Dense
    # loaded silently (README: a checkpoint that adds any tensor raises an error).
    plain, extra = head_files
    kwargs = dict(input_shape=(32, 32, 3), layout="CCCL", **head)
    model = lambda_keras.LambdaResNet50(weights=None, **kwargs)
    before = weights_by_path(model)
    with pytest.raises(ValueError) as info:
        W.load_weights(model, extra, "lambda_resnet50")
    message = str(info.value)
    assert (f"Cannot load {extra!r} into model 'lambda_resnet50': 2 unexpected checkpoint "
            "tensors (the model has no weights for them): layers/dense_1/vars/0, "
            "layers/dense_1/vars/1. The model was left unchanged.") == message, message
    for key, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    with pytest.raises(ValueError, match="layers/dense_1/vars/0"):
        lambda_keras.LambdaResNet50(weights=extra, **kwargs)
    # The file without the extra layer loads each way (the classifier rule skips its classifier).
    lambda_keras.LambdaResNet50(weights=plain, **kwargs)


TINY_X = np.random.default_rng(3).random((2, 32, 32, 3)).astype("float32")


def _outputs(model):
    return keras.ops.convert_to_numpy(model(TINY_X, training=False))


@pytest.fixture(scope="module", params=["adam", "sgd-ema"])
def fitted_file(request, tmp_path_factory):
    """(path, source model): save_weights of a compiled model after one fit step.

    Keras writes the optimizer under "optimizer/": its int iteration counter, learning rate and
    slot variables (Adam's moments; momentum and EMA copies for "sgd-ema").
    """
    import h5py

    source = _tiny_model()
    optimizer = (keras.optimizers.Adam() if request.param == "adam"
                 else keras.optimizers.SGD(momentum=0.9, use_ema=True))
    source.compile(optimizer, "sparse_categorical_crossentropy", run_eagerly=True)  # no tracing
    source.fit(TINY_X, np.array([0, 2]), batch_size=2, epochs=1, verbose=0)
    path = str(tmp_path_factory.mktemp("fitted") / f"{request.param}.weights.h5")
    source.save_weights(path)
    with h5py.File(path, "r") as f:  # what the test is about: the file holds optimizer state
        assert f["optimizer/vars/0"].dtype.kind == "i"
        assert len(f["optimizer/vars"]) > 2 * len(source.trainable_weights)
    return path, source


def test_keras_file_of_a_fitted_model_loads_without_its_optimizer(fitted_file):
    path, source = fitted_file
    expected = _outputs(source)
    assert np.abs(_outputs(_tiny_model()) - expected).max() > 1e-3  # not equal by chance
    model = _tiny_model(weights=path)
    saved = weights_by_path(source)
    for key, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, saved[key], err_msg=key)
    np.testing.assert_array_equal(_outputs(model), expected)
    # A compiled model takes the weights too; its own optimizer is left alone.
    compiled = _tiny_model()
    compiled.compile(keras.optimizers.Adam(), "sparse_categorical_crossentropy")
    W.load_weights(compiled, path, "lambda_resnet50")
    np.testing.assert_array_equal(_outputs(compiled), expected)
    assert int(compiled.optimizer.iterations.numpy()) == 0


@pytest.mark.parametrize("fitted_file", ["adam"], indirect=True)
@pytest.mark.parametrize("fault", ["missing", "mis-shaped"])
def test_keras_file_of_a_fitted_model_is_still_strict(fitted_file, fault, tmp_path):
    import h5py

    path = str(tmp_path / "broken.weights.h5")
    with open(fitted_file[0], "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    with h5py.File(path, "r+") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        name = next(n for n in names if n.startswith("layers/batch_normalization/"))  # stem BN
        shape = f[name].shape
        del f[name]
        if fault == "mis-shaped":
            f.create_dataset(name, data=np.ones((shape[0] + 1,), "float32"))
    model = _tiny_model()
    before = weights_by_path(model)
    with pytest.raises(ValueError, match="left unchanged") as info:
        W.load_weights(model, path, "lambda_resnet50")
    assert "stem_conv1_bn" in str(info.value)  # Keras' own error, naming the layer
    for key, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
