"""Tests for the LambdaResNet builders' arguments: every bad or wrongly typed argument raises an
error that names it and the received value, before any layer is built; the package imports light
and its public names load on use (split from tests/test_models.py).
"""

import numpy as np
import pytest

import lambda_keras
from helpers import CLASSES, SIZE, SMALL, images, small_model


# -------------------------------------------------------------------------- bad arguments
def _raises(argument, builder=lambda_keras.LambdaResNet50, received=None, **kwargs):
    with pytest.raises(ValueError) as info:
        builder(**kwargs)
    message = str(info.value)
    assert argument in message, message
    if received is not None:
        assert received in message, message
    return message


@pytest.mark.parametrize("kwargs,argument,received", [
    (dict(layout="CCC"), "layout", "'CCC'"),
    (dict(layout="CCXL"), "layout", "'CCXL'"),
    (dict(layout=(1, 2, 3)), "layout", "(1, 2, 3)"),
    (dict(layout=(0, 0, 7, 3)), "layout", "(0, 0, 7, 3)"),  # c4 of ResNet-50 has 6 blocks
    (dict(layout=(0, 0, -1, 3)), "layout", "(0, 0, -1, 3)"),
    (dict(layout=((), (), (6,), ())), "stage c4 has 6 blocks (0..5)", "(6,)"),
    (dict(layout=((), (), (1, 1), ())), "repeated indices", "(1, 1)"),
    (dict(layout=((), (), (True,), ())), "layout", "(True,)"),
    (dict(layout=((), (), (), "some")), "layout", "'some'"),
    (dict(layout=((), (), 2.5, ())), "layout", "2.5"),
    (dict(input_shape=(31, 64, 3)), "input_shape", "(31, 64, 3)"),
    (dict(input_shape=(64, 16, 3), include_top=False), "input_shape", "(64, 16, 3)"),
    (dict(input_shape=(64, 64)), "input_shape", "(64, 64)"),
    (dict(pooling="min", include_top=False), "pooling", "'min'"),
    (dict(position="relative", input_shape=(None, None, 3), include_top=False), "position", None),
    (dict(position="global", input_shape=(None, None, 3), include_top=False), "position", None),
    (dict(stem="vgg"), "stem", "'vgg'"),
    (dict(shortcut="max"), "shortcut", "'max'"),
    (dict(se_ratio=1.5), "se_ratio", "1.5"),
    (dict(drop_rate=-0.1), "drop_rate", "-0.1"),
    (dict(classes=0), "classes", "0"),
    (dict(features=True), "include_top", None),
    (dict(features=True, include_top=False, pooling="avg"), "pooling", "'avg'"),
    (dict(input_shape=64), "input_shape", "input_shape=64"),
    (dict(input_shape="64x64"), "input_shape", "'64x64'"),
    (dict(weights="imagenet", classifier_activation="relu"), "classifier_activation", "'relu'"),
    (dict(bottleneck_ratio=4), "bottleneck_ratio", None),  # unknown override
])
def test_bad_arguments_raise(kwargs, argument, received):
    _raises(argument, received=received, **kwargs)


def test_input_shape_and_input_tensor_must_agree_and_numpy_sizes_build():
    import keras

    tensor = keras.Input((SIZE, SIZE, 3))
    _raises("`input_shape` and `input_tensor` disagree", builder=lambda_keras.LambdaResNet26T,
            received=f"input_shape=(96, 96, 3), input_tensor.shape=(None, {SIZE}, {SIZE}, 3)",
            input_tensor=tensor, input_shape=(96, 96, 3), weights=None)
    agreeing = small_model(input_tensor=tensor, input_shape=(SIZE, SIZE, 3))
    numpy_sized = small_model(input_shape=(np.int64(SIZE), np.int32(SIZE), 3))
    assert agreeing.input_shape == numpy_sized.input_shape == (None, SIZE, SIZE, 3)


@pytest.mark.parametrize("kwargs,received", [
    # Lambda overrides were checked only by the lambda layers: no lambda layer, no check.
    (dict(layout="CCCC", key_dim=-1), "key_dim=-1"),
    (dict(layout="CCCC", implementation="bogus"), "implementation='bogus'"),
    (dict(layout="CCCC", position=None, position_bias=True), "position_bias=True"),
    (dict(num_heads=2**17), "num_heads=131072"),  # the layer's MAX_DIM
    (dict(stem_width=10**9), "stem_width=1000000000"),  # was an out-of-memory error
    # Were Keras' "Could not interpret activation identifier", naming no argument (the
    # classifier's only after the whole network was built).
    (dict(activation="nope"), "activation='nope'"),
    (dict(activation=5), "activation=5"),
    (dict(classifier_activation="nope"), "classifier_activation='nope'"),
    (dict(input_tensor=[1, 2], input_shape=None), "input_tensor=[1, 2] of type list"),  # was
    # AttributeError: 'list' object has no attribute 'shape'
    (dict(input_tensor=np.zeros((1, 32, 32, 3)), input_shape=None), "input_tensor=array("),
])
def test_bad_values_are_refused_before_any_layer_is_built(kwargs, received, monkeypatch):
    from lambda_keras import blocks

    def no_stem(*args, **kwargs):
        raise AssertionError("the network was being built")

    monkeypatch.setattr(blocks, "stem", no_stem)
    kwargs = {"weights": None, "input_shape": (32, 32, 3), "classes": 3, **kwargs}
    with pytest.raises(ValueError) as info:
        lambda_keras.LambdaResNet50(**kwargs)
    message = str(info.value)
    assert f"`{received.split('=')[0]}`" in message and f"Received: {received}" in message, \
        message


def test_non_bool_flag_is_a_type_error():
    with pytest.raises(TypeError, match=r"`se_in_lambda_blocks` must be a bool.*'yes'"):
        small_model(se_in_lambda_blocks="yes")


def test_relative_position_accepts_a_static_size():
    # The counterpart of the error above: a defined size builds (and runs).
    model = small_model(position="relative", include_top=False, pooling="avg")
    assert model(images()).shape == (2, 2048)


def test_non_rgb_input_builds_without_weights():
    model = small_model(input_shape=(SIZE, SIZE, 1))
    assert model(np.zeros((1, SIZE, SIZE, 1), "float32")).shape == (1, CLASSES)


# The weights checks go through lambda_keras.weights (validate_weights), raised before any layer
# is built or any download starts.
def test_unknown_weights_string():
    _raises("weights", weights="imagenet21k", received="imagenet21k")


def test_missing_weights_path(tmp_path):
    path = str(tmp_path / "missing.weights.h5")
    _raises("weights", weights=path, received=path)


def test_non_rgb_input_with_weights():
    _raises("input_shape", builder=lambda_keras.LambdaResNet26T, weights="imagenet",
            input_shape=(SIZE, SIZE, 1), include_top=False, received="(64, 64, 1)")


@pytest.mark.parametrize("depth", [50, 101, 420])
def test_imagenet_weights_for_a_depth_without_them(depth):
    message = _raises("weights", builder=getattr(lambda_keras, f"LambdaResNet{depth}"),
                      weights="imagenet", received="imagenet")
    for builder in ("LambdaResNet26T", "LambdaResNet50TS", "LambdaResNet26RPT256"):
        assert builder in message, message


# ------------------------------------------------------------------------ package imports
def _fresh_python(code):
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_package_import_is_light_and_public_names_load_on_use():
    out = _fresh_python(
        "import sys, lambda_keras\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'lambda_keras.weights', "
        "'lambda_keras.models') if m in sys.modules))\n"
        "import lambda_keras.models\n"
        "print('lambda_keras.weights' in sys.modules)\n"  # models needs no weights code
        "from lambda_keras import (LambdaLayer, LambdaResNet50, export, data, training,\n"
        "    convert_timm, preprocess_input, decode_predictions, resolve_preprocessing)\n"
        "print(LambdaLayer.__name__, LambdaResNet50.__name__, convert_timm.__module__)\n")
    assert out.splitlines() == ["[]", "False",
                                "LambdaLayer LambdaResNet50 lambda_keras.weights.loading"]


def test_get_model_uses_the_names_default_weights():
    # A paper name: no weights (a timm name would download "imagenet": test_weights_download.py).
    model = lambda_keras.get_model("LambdaResNet50", **SMALL)
    assert model.name == "lambda_resnet50" and model.output_shape == (None, CLASSES)
    with pytest.raises(ValueError, match=r"Unknown model name.*LambdaResNet26T.*resnet9"):
        lambda_keras.get_model("resnet9")


# --- issue 19: reliability ------------------------------------------------------------------
# Arguments of the wrong type are refused (no bool-as-int, no string-as-bool), before any layer
# is built; the message names the argument and the received value.
@pytest.mark.parametrize("kwargs,error,received", [
    (dict(classes=True), TypeError, "classes=True"),  # was a 1-class model
    (dict(classes=3.0), TypeError, "classes=3.0"),
    (dict(layout=(True, 0, 0, 0)), ValueError, "layout=(True, 0, 0, 0)"),
    (dict(input_shape=(32, 32, 0)), ValueError, "input_shape=(32, 32, 0)"),
    (dict(input_shape=(32, 32, True)), ValueError, "input_shape=(32, 32, True)"),
    (dict(input_shape=(32.0, 32, 3)), ValueError, "input_shape=(32.0, 32, 3)"),
    (dict(include_top="false"), TypeError, "include_top='false'"),
    (dict(weights=True), TypeError, "weights=True"),
    (dict(drop_rate=float("nan")), ValueError, "drop_rate=nan"),
])
def test_wrongly_typed_builder_arguments_are_refused(kwargs, error, received):
    kwargs = {"weights": None, "input_shape": (32, 32, 3), "classes": 3, **kwargs}
    with pytest.raises(error) as info:
        lambda_keras.LambdaResNet50(**kwargs)
    assert received in str(info.value), str(info.value)
