"""Tests for lambda_keras.layers.LambdaLayer.

The expectation for the forward pass is the NumPy reference of the paper's equations in
tests/reference.py (PAPER.md section 1.1-1.5), independent of the layer's helpers: the position
embeddings E[n, m] are built by explicit loops over query and context positions. Each
formulation of the position term, forced through `implementation`, is checked against the same
reference in tests/test_formulations.py; tests/test_backends.py repeats both on JAX and PyTorch.
The other tests check properties (shift equivariance, XLA == eager, non-zero gradients, finite
mixed precision), round trips (config, `.keras`) and shapes; tests/test_layer_arguments.py
checks every argument's and input's error message.
"""

import re
import warnings

import numpy as np
import keras
import pytest
import tensorflow as tf

from helpers import (
    assert_all_weights_get_gradients,
    assert_close,
    assert_config_round_trip,
    assert_keras_save_reload,
    assert_mixed_precision_dtypes,
    assert_xla_matches_eager,
    graph_op_dtypes,
    max_abs_diff,
)
from lambda_keras.layers import formulations
from reference import (
    BATCH,
    CHANNELS,
    COLS,
    ROWS,
    as_float64,
    make_layer,
    random_input,
    randomize_statistics,
    reference_lambda_layer,
)

# id: (layer arguments, training). Every mode, |u| 1 and 4, strides 1/2 x pools 3/2, bias, and
# formulations of "local" (also with the paper's 23 x 23 scope, larger than the map);
# tests/test_formulations.py forces every formulation in every mode.
REFERENCE_CASES = {
    "local-lambdas_first": (dict(position="local", implementation="lambdas_first",
                                 receptive_field=5), False),
    "local-conv": (dict(position="local", implementation="conv", receptive_field=5), False),
    "local-row_windows-r23": (dict(position="local", implementation="row_windows"), False),
    "local-conv-r23": (dict(position="local", implementation="conv"), False),
    "local-auto-bias": (dict(position="local", receptive_field=3, position_bias=True), False),
    "local-row_windows-u4-s2p3-bias": (dict(position="local", implementation="row_windows",
                                            intra_depth=4, receptive_field=7, strides=2,
                                            position_bias=True), False),
    "local-conv-u4-s2p3-bias": (dict(position="local", implementation="conv", intra_depth=4,
                                     receptive_field=7, strides=2, position_bias=True), False),
    "local-lambdas_first-u4-s2p2": (dict(position="local", implementation="lambdas_first",
                                         intra_depth=4, receptive_field=3, strides=2,
                                         pool_size=2), False),
    "local-conv-u4-s2p2": (dict(position="local", implementation="conv", intra_depth=4,
                                receptive_field=3, strides=2, pool_size=2), False),
    "local-conv-training": (dict(position="local", implementation="conv", receptive_field=5), True),
    "relative": (dict(position="relative"), False),
    "relative-u4-s2p3-bias": (dict(position="relative", intra_depth=4, strides=2,
                                   position_bias=True), False),
    "relative-s2p2": (dict(position="relative", strides=2, pool_size=2), False),
    "relative-training": (dict(position="relative", intra_depth=4), True),
    "global-bias": (dict(position="global", position_bias=True), False),
    "global-u4-s2p2": (dict(position="global", intra_depth=4, strides=2, pool_size=2), False),
    "none": (dict(position=None), False),
    "none-u4-s2p3": (dict(position=None, intra_depth=4, strides=2), False),
    "none-default-output-dim": (dict(position=None, output_dim=None, num_heads=3), False),
}


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_matches_numpy_reference(case):
    kwargs, training = REFERENCE_CASES[case]
    layer = make_layer(**kwargs)
    x = random_input()
    layer.build(x.shape)
    randomize_statistics(layer)
    expected = reference_lambda_layer(layer, x, training=training)
    actual = keras.ops.convert_to_numpy(layer(x, training=training))
    error = assert_close(actual, expected, atol=1e-5, what=f"reference {case}")
    print(f"\n[reference] {case}: max abs diff {error:.2e}, max |y| {np.abs(expected).max():.2f}")


@pytest.mark.parametrize("training", [False, True])
def test_one_position_map_matches_the_reference_without_warnings(training):
    """A 1 x 1 map (c5 of a 32 px input): the keys' softmax over one position is 1; the layer
    gives the reference's outputs and Keras' size-1 softmax warning is not raised."""
    layer = make_layer(position="local", receptive_field=3)
    x = random_input((BATCH, 1, 1, CHANNELS))
    layer.build(x.shape)
    randomize_statistics(layer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        actual = keras.ops.convert_to_numpy(layer(x, training=training))
    assert_close(actual, reference_lambda_layer(layer, x, training=training), atol=1e-5,
                 what="1 x 1 map")
    with tf.GradientTape() as tape:
        loss = keras.ops.sum(layer(x, training=training))
    gradient = tape.gradient(loss, layer.key_kernel.value)
    assert gradient is not None  # connected (Keras warns of variables without gradients) ...
    np.testing.assert_array_equal(gradient, 0.0)  # ... and zero, as a one-position softmax's


def test_reference_detects_a_wrong_offset():
    """The reference is sensitive: the conv kernel flipped (convolution instead of
    cross-correlation) gives a different output."""
    layer = make_layer(position="local", receptive_field=3)
    x = random_input()
    layer.build(x.shape)
    expected = reference_lambda_layer(layer, x)
    layer.position_embeddings.assign(as_float64(layer.position_embeddings)[::-1, ::-1])
    assert max_abs_diff(layer(x), expected) > 1e-2


# -------------------------------------------------------------------- XLA, gradients
XLA_CASES = {
    "local-row_windows": (dict(position="local", implementation="row_windows", receptive_field=5),
                          True),
    "local-auto": (dict(position="local", receptive_field=5), False),
    "local-conv-u4-s2p3": (dict(position="local", implementation="conv", intra_depth=4,
                                receptive_field=3, strides=2, position_bias=True), True),
    "relative-s2p2": (dict(position="relative", strides=2, pool_size=2), False),
    "global-u4": (dict(position="global", intra_depth=4, position_bias=True), True),
    "none": (dict(position=None), False),
}


@pytest.mark.parametrize("case", XLA_CASES)
def test_xla_matches_eager(case):
    kwargs, training = XLA_CASES[case]
    layer = make_layer(**kwargs)
    x = random_input()
    layer.build(x.shape)
    randomize_statistics(layer)
    error = assert_xla_matches_eager(lambda t: layer(t, training=training), x,
                                     variables=layer.trainable_variables)
    print(f"\n[xla] {case}: max diff / max(1, max |eager|) over output and gradients {error:.2e}")


GRADIENT_CASES = {
    "local-lambdas_first": dict(position="local", implementation="lambdas_first",
                                receptive_field=3, position_bias=True),
    "local-row_windows": dict(position="local", implementation="row_windows", receptive_field=3,
                              position_bias=True),
    "local-conv-u4": dict(position="local", implementation="conv", intra_depth=4,
                          receptive_field=3, position_bias=True),
    "relative-s2": dict(position="relative", strides=2, position_bias=True),
    "global": dict(position="global", position_bias=True),
    "none": dict(position=None),
}


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("case", GRADIENT_CASES)
def test_every_weight_gets_a_gradient(case, training):
    layer = make_layer(**GRADIENT_CASES[case])
    x = random_input()
    layer.build(x.shape)
    expected = {"query_kernel", "key_kernel", "value_kernel", "gamma", "beta"}
    if layer.position is not None:
        expected |= {"position_embeddings", "position_bias"}
    assert {w.name for w in layer.trainable_weights} == expected
    assert_all_weights_get_gradients(layer, x, training=training)


# ------------------------------------------------------------------- shift equivariance
def _shift_equivariance_error(layer, shift, margin, size=12):
    """Input supported in the middle of a size x size map, and the same input shifted; the
    largest difference between the shifted output and the output, over the interior positions
    (at least `margin` from the borders in both maps)."""
    x = np.zeros((1, size, size, CHANNELS), "float32")
    x[:, 4:8, 3:7] = random_input((1, 4, 4, CHANNELS))
    shifted = np.roll(x, shift, axis=(1, 2))  # support stays inside: nothing wraps around
    out, out_shifted = (keras.ops.convert_to_numpy(layer(t)) for t in (x, shifted))
    rows = slice(margin, size - margin - shift[0])
    cols = slice(margin, size - margin - shift[1])
    moved = out_shifted[:, margin + shift[0]:size - margin, margin + shift[1]:size - margin]
    return max_abs_diff(moved, out[:, rows, cols])


@pytest.mark.parametrize("implementation", formulations.FORMULATIONS)
def test_local_mode_is_shift_equivariant(implementation):
    layer = make_layer(position="local", receptive_field=3, implementation=implementation)
    layer.build((1, 12, 12, CHANNELS))
    # Non-zero BN shifts: V(0) != 0 and q(0) != 0, so the zero padding breaks equivariance
    # within r // 2 of the border, and only there.
    randomize_statistics(layer)
    assert _shift_equivariance_error(layer, (2, 1), margin=1) <= 1e-5
    assert _shift_equivariance_error(layer, (2, 1), margin=0) > 1e-3  # the borders do differ


def test_relative_mode_is_shift_equivariant():
    layer = make_layer(position="relative")
    layer.build((1, 12, 12, CHANNELS))
    # Values keep the fresh BN (V(0) = 0: the zero context adds nothing wherever it sits);
    # queries get a non-zero shift so the background outputs are non-trivial too.
    randomize_statistics(layer, norms=("query_norm",))
    assert _shift_equivariance_error(layer, (2, 1), margin=0) <= 1e-5


def test_global_mode_is_not_shift_equivariant():
    """Control for the two tests above: free per-(n, m) embeddings are not equivariant."""
    layer = make_layer(position="global")
    layer.build((1, 12, 12, CHANNELS))
    randomize_statistics(layer, norms=("query_norm",))
    assert _shift_equivariance_error(layer, (2, 1), margin=1) > 1e-2


# ---------------------------------------------------------------------- mixed precision
MIXED_CASES = {
    "local-row_windows": dict(position="local", implementation="row_windows", receptive_field=5),
    "local-conv-u4-s2": dict(position="local", implementation="conv", intra_depth=4,
                             receptive_field=3, strides=2, position_bias=True),
    "relative": dict(position="relative", position_bias=True),
    "global-s2p2": dict(position="global", strides=2, pool_size=2),
    "none": dict(position=None),
}
POLICIES = ["mixed_float16", "mixed_bfloat16"]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", MIXED_CASES)
def test_mixed_precision_training_is_finite_for_large_inputs(case, policy):
    keras.mixed_precision.set_dtype_policy(policy)
    layer = make_layer(**MIXED_CASES[case])
    x = random_input(scale=1e3)
    out = layer(x, training=True)  # BN batch statistics: normalised queries and values
    assert keras.backend.standardize_dtype(out.dtype) == layer.compute_dtype
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))))
    assert_mixed_precision_dtypes(layer, policy)  # BN sublayers included: float32 variables
    # Finite gradients; keys of ~1e3 saturate the softmax, so some may legitimately be zero.
    assert_all_weights_get_gradients(layer, x, training=True, nonzero=False)


@pytest.mark.parametrize("case", MIXED_CASES)
def test_mixed_bfloat16_inference_is_finite_for_large_inputs(case):
    # Fresh moving statistics: q and V are not normalised and outputs reach ~1e7 for inputs of
    # 1e3. bfloat16 has float32's exponent range and represents them. NOTE: mixed_float16 cannot
    # (max 65504): such an un-normalised float16 inference gives inf, a limit of the format, not
    # of the layer (whose lambdas accumulate in float32); trained statistics keep values O(1).
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    layer = make_layer(**MIXED_CASES[case])
    out = keras.ops.cast(layer(random_input(scale=1e3), training=False), "float32")
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


@pytest.mark.parametrize("policy", POLICIES)
def test_key_softmax_runs_in_float32(policy):
    keras.mixed_precision.set_dtype_policy(policy)
    layer = make_layer(position="local", receptive_field=3)
    x = random_input(scale=1e3)
    layer.build(x.shape)
    assert graph_op_dtypes(lambda t: layer(t, training=True), x, "Softmax") == ["float32"]
    # Keys of magnitude ~1e3 would overflow exp() in float16; the keys' softmax stays a
    # distribution over the context positions.
    keys = keras.ops.matmul(keras.ops.reshape(x, (BATCH, -1, CHANNELS)), layer.key_kernel)
    assert float(keras.ops.max(keras.ops.abs(keys))) > 11.1  # exp(11.1) > 65504


@pytest.mark.parametrize("policy,rtol", [("mixed_float16", 1e-2), ("mixed_bfloat16", 5e-2)])
def test_mixed_precision_matches_float32(policy, rtol):
    kwargs = dict(position="local", receptive_field=3, intra_depth=4, position_bias=True)
    x = random_input()
    reference = make_layer(**kwargs)
    reference.build(x.shape)
    randomize_statistics(reference)
    keras.mixed_precision.set_dtype_policy(policy)
    layer = make_layer(**kwargs)
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())
    expected = keras.ops.convert_to_numpy(reference(x))
    actual = keras.ops.convert_to_numpy(keras.ops.cast(layer(x), "float32"))
    error = max_abs_diff(actual, expected) / np.abs(expected).max()
    print(f"\n[mixed] {policy}: max abs diff / max |y| = {error:.2e}")
    assert error <= rtol


# ------------------------------------------------------------- config, saving, Sequential
CONFIG_CASES = {
    "local-u4-s2-bias": dict(position="local", intra_depth=4, receptive_field=3, strides=2,
                             pool_size=2, implementation="conv", position_bias=True),
    "relative-feature-size-initializers": dict(
        position="relative", feature_size=(ROWS, COLS), query_initializer="he_normal",
        key_initializer=keras.initializers.RandomNormal(stddev=0.3),
        norm_momentum=0.99, norm_epsilon=1e-3),
    "global-s2": dict(position="global", strides=2),
    "local-row_windows": dict(position="local", receptive_field=5, implementation="row_windows"),
    "relative-queries_first": dict(position="relative", implementation="queries_first"),
    "none": dict(position=None, output_dim=None, num_heads=3),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_config_round_trip(case):
    layer = make_layer(**CONFIG_CASES[case])
    x = random_input()
    layer.build(x.shape)
    randomize_statistics(layer)
    clone = assert_config_round_trip(layer, x)
    for name, value in CONFIG_CASES[case].items():
        if "initializer" not in name:
            assert clone.get_config()[name] == value, name


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_keras_save_and_reload(case, tmp_path):
    inputs = keras.Input((ROWS, COLS, CHANNELS))
    model = keras.Model(inputs, make_layer(**CONFIG_CASES[case])(inputs))
    randomize_statistics(model.layers[-1])
    assert_keras_save_reload(model, random_input(), tmp_path)


def test_dynamic_size_model_saves_and_reloads(tmp_path):
    inputs = keras.Input((None, None, CHANNELS))
    model = keras.Model(inputs, make_layer(position="local", receptive_field=3, strides=2)(inputs))
    reloaded = assert_keras_save_reload(model, random_input(), tmp_path)
    other = random_input((1, 9, 5, CHANNELS))
    assert max_abs_diff(reloaded(other), model(other)) == 0.0
    assert reloaded(other).shape == (1, 5, 3, 8)


def test_inside_sequential_trains_and_round_trips(tmp_path):
    model = keras.Sequential([
        keras.Input((ROWS, COLS, CHANNELS)),
        make_layer(position="relative", strides=2, pool_size=2, position_bias=True),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = random_input((8, ROWS, COLS, CHANNELS)), np.arange(8) % 3
    lambda_layer = model.layers[0]
    before = [keras.ops.convert_to_numpy(w) for w in lambda_layer.weights]
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # Every weight moves: trainable ones by Adam, BN moving statistics by the training calls.
    for weight, old in zip(lambda_layer.weights, before):
        assert max_abs_diff(weight, old) > 0, weight.path
    assert_config_round_trip(model, x)
    assert_keras_save_reload(model, x, tmp_path)


# ------------------------------------------------------------------------------- shapes
SHAPE_MODES = {
    "local-row_windows": dict(position="local", implementation="row_windows", receptive_field=3),
    "local-conv": dict(position="local", implementation="conv", receptive_field=3),
    "relative": dict(position="relative"),
    "global": dict(position="global"),
    "none": dict(position=None),
}
STRIDES = {"s1": dict(strides=1), "s2p3": dict(strides=2, pool_size=3),
           "s2p2": dict(strides=2, pool_size=2)}


@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("mode", SHAPE_MODES)
@pytest.mark.parametrize("size", [(ROWS, COLS), (5, 5)], ids=["6x7", "5x5"])
def test_compute_output_shape_matches_output(mode, stride, size):
    layer = make_layer(**SHAPE_MODES[mode], **STRIDES[stride])
    x = random_input((BATCH,) + size + (CHANNELS,))
    expected = (BATCH, -(-size[0] // 2), -(-size[1] // 2)) if stride == "s2p3" else (
        (BATCH, size[0] // 2, size[1] // 2) if stride == "s2p2" else (BATCH,) + size)
    assert layer(x).shape == layer.compute_output_shape(x.shape) == expected + (8,)


@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("implementation", ["auto", "conv"])
def test_local_mode_runs_with_dynamic_spatial_size(implementation, stride):
    layer = make_layer(position="local", receptive_field=3, implementation=implementation,
                       **STRIDES[stride])
    symbolic = layer(keras.Input((None, None, CHANNELS)))
    assert symbolic.shape == layer.compute_output_shape((None, None, None, CHANNELS))
    assert symbolic.shape == (None, None, None, 8)
    traced = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, CHANNELS))])
    for size in [(ROWS, COLS), (9, 5)]:
        x = random_input((1,) + size + (CHANNELS,))
        out = traced(x)
        assert tuple(out.shape) == layer.compute_output_shape(x.shape)
        assert_close(out.numpy(), keras.ops.convert_to_numpy(layer(x)), 1e-5)


@pytest.mark.parametrize("position", ["relative", "global"])
def test_static_size_modes_run_under_a_dynamic_signature(position):
    """With `feature_size`, "relative"/"global" layers trace with unknown spatial dims (e.g. a
    SavedModel signature) and give the static-shape output; another size is refused when the
    graph runs, naming feature_size: also one of as many positions (ROWS x COLS read as COLS x
    ROWS was silently reshaped to the embeddings' size), and one of more (which failed in an
    einsum of the position term)."""
    layer = make_layer(position=position, feature_size=(ROWS, COLS))
    x = random_input()
    traced = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, CHANNELS))])
    assert_close(traced(x).numpy(), keras.ops.convert_to_numpy(layer(x)), 1e-5)
    for rows, cols in ((COLS, ROWS), (ROWS + 1, COLS)):
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(
                f"`position={position}` embeddings are made for feature_size=({ROWS}, {COLS}). "
                f"Received: input spatial size] [{rows} {cols}]")):
            traced(random_input((BATCH, rows, cols, CHANNELS)))
