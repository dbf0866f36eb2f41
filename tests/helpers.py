"""Shared checks for Keras layers and models, used by the layer and model tests.

Each helper asserts one contract against an independent expectation (a rebuilt copy, a reloaded
file, eager execution) and works for a single layer as well as a whole `keras.Model`:

- `assert_config_round_trip`: serialize -> deserialize, same weights -> identical outputs;
- `assert_keras_save_reload`: `.keras` file save and safe-mode reload -> identical outputs;
- `assert_all_weights_get_gradients`: every trainable variable gets a finite, non-zero gradient;
- `assert_xla_matches_eager`: `tf.function(jit_compile=True)` outputs and gradients equal eager;
- `assert_mixed_precision_dtypes`: every sublayer follows the policy and keeps float32 variables;
- `graph_op_dtypes`: the dtypes of one op type in a traced TensorFlow graph (e.g. "Softmax").

And shared fixtures: `tiny_lambda_net` (a few thousand weights around a real LambdaLayer),
`weights_by_path` and `max_relative_diff` (training and weight tests), `TINY` (the train()
arguments of the tiny runs); `small_model` and `images` (LambdaResNet-50 at 64x64, 10 classes:
the model and argument tests), `activate_residual_branches` and the structure read off layer
names (`lambda_layers`, `lambda_blocks_per_stage`, `blocks_per_stage`: the model tests);
`SMALL_DATA` and `dataset_batches` (the data and augmentation tests).

Gradients use `tf.GradientTape`: TensorFlow is the tested backend (DESIGN.md). Losses are
`sum(output * P)` with a fixed random P, so that no gradient vanishes by symmetry (the plain sum of
a batch-normalised output has zero gradient).
"""

import copy
import re

import numpy as np
import keras
import tensorflow as tf

import lambda_keras
from lambda_keras import LambdaLayer


def max_abs_diff(a, b):
    """Largest absolute difference of two arrays (compared in float64)."""
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _scale(expected):
    return max(1.0, float(np.max(np.abs(np.asarray(expected, "float64")), initial=0.0)))


def assert_close(actual, expected, atol, what="output"):
    """max |actual - expected| <= atol * max(1, max |expected|): absolute for O(1) values,
    relative for large ones (float32 round-off grows with the magnitude). Returns the error."""
    error, scale = max_abs_diff(actual, expected), _scale(expected)
    if not error <= atol * scale:
        raise AssertionError(
            f"{what}: max abs diff {error:.3g} > {atol:.1g} x scale {scale:.3g}")
    return error


def _outputs(model, x, **call_kwargs):
    return keras.ops.convert_to_numpy(model(x, **call_kwargs))


def _projection(shape, seed=1234):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _build_like(clone, original, x):
    if not clone.built or not clone.weights:
        clone(x)
    if len(clone.weights) != len(original.weights):
        raise AssertionError(
            f"rebuilt object has {len(clone.weights)} weights, original {len(original.weights)}")
    clone.set_weights(original.get_weights())


def assert_config_round_trip(layer_or_model, x, atol=0.0, **call_kwargs):
    """Serialize -> deserialize: equal config; with the same weights, the same outputs on x.

    Works for layers (registered serializable) and for Sequential/Functional models. Returns the
    rebuilt object.
    """
    config = keras.saving.serialize_keras_object(layer_or_model)
    clone = keras.saving.deserialize_keras_object(copy.deepcopy(config))  # Keras empties it
    if type(clone) is not type(layer_or_model):
        raise AssertionError(f"rebuilt {type(clone).__name__}, not {type(layer_or_model).__name__}")
    _build_like(clone, layer_or_model, x)
    if keras.saving.serialize_keras_object(clone) != config:
        raise AssertionError("get_config() of the rebuilt object differs from the original's")
    assert_close(_outputs(clone, x, **call_kwargs), _outputs(layer_or_model, x, **call_kwargs),
                 atol, "config round trip")
    return clone


def assert_keras_save_reload(model, x, tmp_path, atol=0.0):
    """`model.save(*.keras)` then `keras.saving.load_model` (safe mode): same inference outputs.

    Returns the reloaded model.
    """
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)  # safe_mode=True is the default
    if type(reloaded) is not type(model):
        raise AssertionError(f"reloaded {type(reloaded).__name__}, not {type(model).__name__}")
    assert_close(_outputs(reloaded, x, training=False), _outputs(model, x, training=False),
                 atol, ".keras save/reload")
    return reloaded


def _loss_and_gradients(fn, x, variables):
    """sum(fn(x) * P) and its gradients with respect to `variables` and x."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = fn(x)
        loss = tf.reduce_sum(tf.cast(out, "float32") * _projection(out.shape))
    grads = tape.gradient(loss, list(variables) + [x])
    return out, grads


def assert_all_weights_get_gradients(model, x, training=True, nonzero=True):
    """Every trainable variable receives a finite gradient, not all zero (unless nonzero=False:
    e.g. saturated softmaxes of huge inputs legitimately give zero key gradients)."""
    if not model.built:
        model(x)
    variables = model.trainable_variables
    if not variables:
        raise AssertionError("the model has no trainable variables")
    _, grads = _loss_and_gradients(lambda t: model(t, training=training), x, variables)
    for variable, grad in zip(variables, grads):
        if grad is None:
            raise AssertionError(f"{variable.path}: no gradient (not connected to the output)")
        grad = keras.ops.convert_to_numpy(tf.convert_to_tensor(grad))
        if not np.all(np.isfinite(grad)):
            raise AssertionError(f"{variable.path}: non-finite gradient")
        if nonzero and not np.any(grad != 0):
            raise AssertionError(f"{variable.path}: gradient is all zero")
    return grads


def assert_xla_matches_eager(fn_or_model, x, atol=1e-5, variables=None):
    """XLA (`tf.function(jit_compile=True)`) equals eager: the output and the gradients of
    sum(output * P) with respect to `variables` (default: the model's trainable variables) and x.

    Tolerance: `atol` times max(1, max |eager value|) per tensor (see `assert_close`). Returns the
    largest error seen in those units (error / max(1, max |eager value|)).
    """
    if variables is None:
        variables = getattr(fn_or_model, "trainable_variables", [])

    def step(t):
        out, grads = _loss_and_gradients(fn_or_model, t, variables)
        return [out] + [tf.convert_to_tensor(g) for g in grads]

    eager = step(x)
    compiled = tf.function(step, jit_compile=True)(tf.convert_to_tensor(x))
    names = ["output"] + [v.path for v in variables] + ["d/dx"]
    return max(assert_close(c.numpy(), e.numpy(), atol, f"XLA vs eager, {name}") / _scale(e)
               for name, c, e in zip(names, compiled, eager))


def assert_mixed_precision_dtypes(layer_or_model, policy):
    """Every (sub)layer uses `policy` and every variable stays float32 (mixed precision keeps
    float32 weights and BN statistics)."""
    policy = keras.DTypePolicy(policy) if isinstance(policy, str) else policy
    for layer in layer_or_model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer.dtype_policy.name != policy.name:
            raise AssertionError(
                f"{layer.name}: dtype policy {layer.dtype_policy.name}, expected {policy.name}")
    for variable in layer_or_model.variables:
        if variable.dtype != "float32":
            raise AssertionError(f"{variable.path}: dtype {variable.dtype}, expected float32")


def graph_op_dtypes(fn, x, op_type):
    """dtypes of every `op_type` op (e.g. "Softmax") in the TF graph of fn traced on x."""
    graph = tf.function(fn).get_concrete_function(tf.TensorSpec(x.shape, x.dtype)).graph
    return [op.get_attr("T").name for op in graph.get_operations() if op.type == op_type]


# ------------------------------------------------------------------ small models and weights
def tiny_lambda_net(input_shape, classes, **unused):
    """Conv stem (32 -> 8 px) -> LambdaLayer (r=5) -> BN -> pool -> classifier "predictions"."""
    bn = dict(momentum=0.9, epsilon=1e-5)
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="conv1_bn", **bn)(x))
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="conv2")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="conv2_bn", **bn)(x))
    x = LambdaLayer(output_dim=32, key_dim=8, num_heads=4, receptive_field=5, name="lambda")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="lambda_bn", **bn)(x))
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", dtype="float32",
                                 name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny_lambda_net")


TINY = dict(image_size=32, seed=0, verbose=0)  # train() arguments of the tiny runs


def weights_by_path(model):
    """{variable path: a NumPy copy of its value} of every weight of `model`."""
    return {v.path: np.array(keras.ops.convert_to_numpy(v)) for v in model.weights}


def max_relative_diff(a, b):
    """Largest difference over same-named arrays, relative to max(1, max |b|) per array
    (absolute for O(1) weights; float32 round-off grows with magnitude, e.g. BN variances)."""
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype("float64") - b[k]))
                     / max(1.0, float(np.max(np.abs(b[k]), initial=0.0)))) for k in a)


# --------------------------------------------- the small LambdaResNet-50 of the model tests
SIZE, CLASSES = 64, 10  # 64x64 inputs: c4 is 4x4, c5 2x2
SMALL = dict(input_shape=(SIZE, SIZE, 3), classes=CLASSES)


def images(batch=2, height=SIZE, width=SIZE, seed=0):
    """Random float32 RGB images [batch, height, width, 3]."""
    return np.random.default_rng(seed).standard_normal((batch, height, width, 3)).astype("float32")


def small_model(**kwargs):
    """LambdaResNet-50 on 64x64 images with 10 classes (default paper placement)."""
    return lambda_keras.LambdaResNet50(**{**SMALL, **kwargs})


def activate_residual_branches(model, low=0.1, high=0.3, seed=1):
    """Sets the zero-initialised last BN gamma of every block to non-zero values.

    At initialisation `conv3_bn` gamma is 0 (ResNet-RS), so every residual branch outputs exactly
    zero: nothing behind it (conv1, conv2 / lambda, conv3, squeeze-excitation) gets a gradient,
    and eager/XLA or float32/bfloat16 comparisons would not see those layers at all. Gammas of
    0.1-0.3 keep the inference-mode activations O(1) (BN moving statistics are still 0/1, so
    gamma 1 grows the activations by orders of magnitude over 16 blocks).
    """
    rng = np.random.default_rng(seed)
    layers = [layer for layer in model.layers
              if re.fullmatch(r"stage\d_block\d+_conv3_bn", layer.name)]
    assert layers, "no block-final BN found"
    for layer in layers:
        layer.gamma.assign(rng.uniform(low, high, layer.gamma.shape))
    return model


def lambda_layers(model):
    """The LambdaLayers of `model`, in layer order."""
    return [layer for layer in model.layers if isinstance(layer, LambdaLayer)]


def lambda_blocks_per_stage(model):
    """Number of LambdaLayers per stage c2..c5, read off their names stage{s}_block{b}_lambda."""
    counts = [0, 0, 0, 0]
    for layer in lambda_layers(model):
        match = re.fullmatch(r"stage(\d)_block(\d+)_lambda", layer.name)
        assert match, f"unexpected LambdaLayer name {layer.name}"
        counts[int(match.group(1)) - 1] += 1
    return tuple(counts)


def blocks_per_stage(model):
    """Number of residual blocks per stage c2..c5, read off their names stage{s}_block{b}_out."""
    counts = [0, 0, 0, 0]
    for layer in model.layers:
        match = re.fullmatch(r"stage(\d)_block(\d+)_out", layer.name)
        if match:
            counts[int(match.group(1)) - 1] += 1
    return tuple(counts)


# ----------------------------------------------------------------- the data pipeline tests
SMALL_DATA = dict(image_size=32, batch_size=16)  # make_dataset arguments of a small pipeline


def dataset_batches(ds):
    """[(images, labels), ...] of a tf.data dataset, as NumPy."""
    return [(x.numpy(), y.numpy()) for x, y in ds]
