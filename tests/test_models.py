"""Tests for the contracts of a built LambdaResNet (lambda_keras.models, blocks): gradients,
round trips, precision, XLA; and the model-level functions `models.outputs_logits` and
`lambda_keras.load_model`.

Independent expectations:
- every trainable weight gets a finite, non-zero gradient (tf.GradientTape);
- round trips (config, `.keras` file, `load_model` in a fresh process): the same outputs;
- eager execution (for XLA) and float32 (for mixed_bfloat16), within stated tolerances;
- the last layer or operation of hand-made heads (for `outputs_logits`).

(What each builder argument builds: tests/test_models_options.py; the full-size paper models and
the family's parameter counts and lambda placement: tests/test_models_family.py; every bad
argument raises a ValueError that names it: tests/test_model_arguments.py.)

Everything that runs uses the small LambdaResNet-50 of tests/helpers.py: 64x64 inputs (c4 is
4x4, c5 2x2) and 10 classes.
"""

import numpy as np
import keras
import pytest
import tensorflow as tf

import lambda_keras
from helpers import (
    activate_residual_branches,
    assert_all_weights_get_gradients,
    assert_close,
    assert_config_round_trip,
    assert_keras_save_reload,
    images,
    lambda_layers,
    small_model,
)
from lambda_keras import models


# ----------------------------------------------------------- generic checks, depth 50, 64x64
def test_every_trainable_weight_gets_a_gradient():
    model = activate_residual_branches(small_model())
    assert_all_weights_get_gradients(model, images(), training=True)


def test_keras_save_reload(tmp_path):
    model = activate_residual_branches(small_model())
    reloaded = assert_keras_save_reload(model, images(), tmp_path)
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]


def test_config_round_trip():
    model = activate_residual_branches(small_model())
    clone = assert_config_round_trip(model, images())
    assert [type(layer) for layer in clone.layers] == [type(layer) for layer in model.layers]


def test_mixed_bfloat16_forward_is_finite_and_close_to_float32():
    reference = activate_residual_branches(small_model(classifier_activation=None))
    x = images()
    expected = keras.ops.convert_to_numpy(reference(x))
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")  # conftest restores float32
    model = small_model(classifier_activation=None)
    model.set_weights(reference.get_weights())
    for layer in lambda_layers(model):
        assert layer.compute_dtype == "bfloat16"
    logits = model(x)
    assert logits.dtype == "float32"  # the classifier runs in float32
    logits = keras.ops.convert_to_numpy(logits)
    assert np.all(np.isfinite(logits))
    # bfloat16 keeps ~3 significant digits; 16 blocks of rounding stay well inside 5%.
    assert_close(logits, expected, atol=0.05, what="mixed_bfloat16 vs float32")


def test_xla_forward_matches_eager():
    model = activate_residual_branches(small_model(classifier_activation=None))
    x = images()
    eager = keras.ops.convert_to_numpy(model(x))
    compiled = tf.function(lambda t: model(t), jit_compile=True)(tf.constant(x)).numpy()
    assert np.abs(eager).max() > 1e-3  # the comparison sees non-trivial logits
    assert_close(compiled, eager, atol=1e-4, what="XLA vs eager")


# ------------------------------------------------ outputs_logits, load_model
def test_outputs_logits_is_the_one_rule_for_training_and_export():
    """models.outputs_logits decides from the last layer; training (from_logits) and export
    (softmax in-graph) both call it."""
    from lambda_keras.export import serving
    from lambda_keras.training import model_setup

    def head(*last):
        return keras.Sequential([keras.Input((4,)), *last])

    assert models.outputs_logits(head(keras.layers.Dense(3))) is True
    assert models.outputs_logits(head(keras.layers.Dense(3, activation="softmax"))) is False
    assert models.outputs_logits(head(keras.layers.Dense(3), keras.layers.Softmax())) is False
    with pytest.raises(ValueError, match="activation='sigmoid'"):
        models.outputs_logits(head(keras.layers.Dense(3, activation="sigmoid")))
    # keras.ops calls in a functional graph are operations, not layers (not in model.layers,
    # whose last is then the linear Dense): what makes the output decides.
    inputs = keras.Input((4,))
    logits = keras.layers.Dense(3)(inputs)
    assert models.outputs_logits(keras.Model(inputs, keras.ops.softmax(logits))) is False
    with pytest.raises(ValueError, match=r"\(Sigmoid\) with activation=None"):
        models.outputs_logits(keras.Model(inputs, keras.ops.sigmoid(logits)))
    assert serving.models.outputs_logits is model_setup.outputs_logits is models.outputs_logits


def test_load_model_registers_the_package_layers_in_a_fresh_process(tmp_path):
    """`import lambda_keras` imports no Keras, so Keras' own loader does not know the package's
    layers in a fresh process; `lambda_keras.load_model` loads them (round trip: same outputs)."""
    import subprocess
    import sys

    model = lambda_keras.LambdaResNet50(weights=None, input_shape=(32, 32, 3), classes=3,
                                        layout="CCCL")
    activate_residual_branches(model)  # else the lambda blocks add zero: their weights unseen
    path = str(tmp_path / "model.keras")
    model.save(path)
    x = np.random.default_rng(0).random((1, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, lambda_keras, keras\n"
        "try:\n"
        "    keras.saving.load_model(sys.argv[1])\n"
        "    print('keras: loaded')\n"
        "except Exception as error:\n"
        "    print('keras:', type(error).__name__)\n"
        "model = lambda_keras.load_model(sys.argv[1])\n"
        "np.save(sys.argv[2], keras.ops.convert_to_numpy(model(np.load(sys.argv[3]))))\n")
    result = subprocess.run(
        [sys.executable, "-c", script, path, str(tmp_path / "y.npy"), str(tmp_path / "x.npy")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "keras: TypeError" in result.stdout  # what the function is for
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-6)
