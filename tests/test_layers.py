"""Tests for lambda_keras.layers.LambdaLayer.

The expectation for the forward pass is the NumPy reference of the paper's equations in
tests/reference.py (PAPER.md section 1.1-1.5), independent of the layer's helpers: the position
embeddings E[n, m] are built by explicit loops over query and context positions. Each
formulation of the position term, forced through `implementation`, is checked against the same
reference in tests/test_formulations.py; tests/test_backends.py repeats both on JAX and PyTorch.
The other tests check properties (shift equivariance, XLA == eager, non-zero gradients, finite
mixed precision), round trips (config, `.keras`), shapes, and every error message.
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
from lambda_keras.layers import LambdaLayer, formulations
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
    SavedModel signature) and give the static-shape output."""
    layer = make_layer(position=position, feature_size=(ROWS, COLS))
    x = random_input()
    traced = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, CHANNELS))])
    assert_close(traced(x).numpy(), keras.ops.convert_to_numpy(layer(x)), 1e-5)


# ------------------------------------------------------------------------------- errors
CONSTRUCTOR_ERRORS = {
    "key_dim-zero": (dict(key_dim=0), "`key_dim` must be an int >= 1. Received: key_dim=0"),
    "key_dim-negative": (dict(key_dim=-4), "Received: key_dim=-4"),
    "num_heads-not-dividing-output_dim": (
        dict(output_dim=10, num_heads=4),
        "`output_dim` must be divisible by `num_heads`. Received: output_dim=10, num_heads=4"),
    "receptive_field-even": (dict(receptive_field=4),
                             "`receptive_field` must be odd. Received: receptive_field=4"),
    "receptive_field-zero": (
        dict(receptive_field=0),
        "`receptive_field` must be an int >= 1. Received: receptive_field=0"),
    "receptive_field-negative": (dict(receptive_field=-3), "Received: receptive_field=-3"),
    "strides": (dict(strides=3), "`strides` must be an int in [1, 2]. Received: strides=3"),
    "position": (dict(position="window"), "`position` must be one of ('local', 'relative', "
                 "'global', None). Received: position='window'"),
    "pool_size": (dict(pool_size=4), "`pool_size` must be an int in [2, 3]. "
                                     "Received: pool_size=4"),
    "implementation": (dict(implementation="fft"),
                       "`implementation` must be one of ('auto', 'queries_first', "
                       "'query_windows', 'lambdas_first', 'row_windows', 'conv'). "
                       "Received: implementation='fft'"),
    # A list was looked up in the dict of legacy names: "TypeError: unhashable type: 'list'".
    "implementation-list": (dict(implementation=["auto"]),
                            "`implementation` must be one of ('auto', 'queries_first', "
                            "'query_windows', 'lambdas_first', 'row_windows', 'conv'). "
                            "Received: implementation=['auto']"),
    "implementation-none-value": (dict(implementation=None), "Received: implementation=None"),
    "implementation-local-only": (
        dict(position="relative", implementation="row_windows"),
        '`implementation="row_windows"` computes the local lambda convolution and needs '
        "`position=\"local\"`. Received: position='relative'"),
    "implementation-conv-global": (dict(position="global", implementation="conv"),
                                   "needs `position=\"local\"`. Received: position='global'"),
    "feature_size": (dict(position="relative", feature_size=(6, 0)),
                     "Received: feature_size=(6, 0)"),
    "feature_size-local": (dict(position="local", feature_size=(6, 7)),
                           "position='local' has none. Received: feature_size=(6, 7)"),
    # Was accepted and built no bias (get_config kept True).
    "position_bias-none": (dict(position=None, position_bias=True),
                           "`position_bias` is a bias of the position lambdas; position=None "
                           "has none. Received: position_bias=True with position=None"),
    # Was accepted and never used (no position term to compute).
    "implementation-none": (dict(position=None, implementation="row_windows"),
                            '`implementation="row_windows"` computes the position term; '
                            "position=None has none (leave implementation=\"auto\"). "
                            "Received: position=None"),
}


def test_old_config_with_feature_size_beside_local_still_loads():
    """Before the refusal above, feature_size was ignored beside "local"; saved configs load."""
    config = {**LambdaLayer(position="local").get_config(), "feature_size": (6, 7)}
    assert LambdaLayer.from_config(config).feature_size is None


def test_old_config_with_position_arguments_beside_no_position_still_loads():
    """Before their refusal above, position_bias and a formulation were ignored beside
    position=None; saved configs load as what they built."""
    config = {**LambdaLayer(position=None).get_config(), "position_bias": True,
              "implementation": "row_windows"}
    restored = LambdaLayer.from_config(config)
    assert (restored.position_bias, restored.implementation) == (False, "auto")


@pytest.mark.parametrize("name, value, error", [
    ("strides", 2.0, TypeError),  # was accepted (2.0 in (1, 2)) and made 2
    ("strides", "2", TypeError),
    ("strides", True, TypeError),
    ("strides", 3, ValueError),
    ("strides", 0, ValueError),
    ("pool_size", 3.0, TypeError),  # was accepted and made 3
    ("pool_size", "3", TypeError),
    ("pool_size", 4, ValueError),
])
def test_strides_and_pool_size_are_ints_in_range(name, value, error):
    """As utils' checks: TypeError for a value of the wrong type, ValueError out of range."""
    low = 1 if name == "strides" else 2
    with pytest.raises(error, match=re.escape(
            f"`{name}` must be an int in [{low}, {low + 1}]. Received: {name}={value!r}")):
        LambdaLayer(**{name: value})


@pytest.mark.parametrize("case", CONSTRUCTOR_ERRORS)
def test_bad_argument_raises(case):
    kwargs, message = CONSTRUCTOR_ERRORS[case]
    with pytest.raises(ValueError, match=re.escape(message)):
        LambdaLayer(**kwargs)


# id: (layer arguments, input shape given to keras.Input (no batch), message).
BUILD_ERRORS = {
    "num_heads-not-dividing-input-channels": (
        dict(output_dim=None, num_heads=4), (ROWS, COLS, CHANNELS),
        # Was "Received: output_dim=6": an output_dim the user never gave.
        "`num_heads` must divide the input depth when `output_dim` is None (the output keeps "
        "the input's depth). Received: output_dim=None (input depth 6), num_heads=4"),
    "rank-3-input": (dict(), (ROWS, CHANNELS),
                     "rank 4 (batch, height, width, channels). Received: input_shape=(None, 6, 6)"),
    "relative-unknown-size": (
        dict(position="relative"), (None, None, 8),
        '`position="relative"` needs a static spatial size: give `feature_size=(H, W)` or a '
        "fully defined input shape. Received: input_shape=(None, None, None, 8)"),
    "global-unknown-size": (
        dict(position="global"), (ROWS, None, 8),
        '`position="global"` needs a static spatial size: give `feature_size=(H, W)` or a '
        "fully defined input shape. Received: input_shape=(None, 6, None, 8)"),
    "relative-mismatched-feature_size": (
        dict(position="relative", feature_size=(5, 5)), (ROWS, COLS, CHANNELS),
        '`position="relative"` embeddings are made for feature_size=(5, 5); the input\'s '
        "spatial size differs. Received: input_shape=(None, 6, 7, 6)"),
    "global-mismatched-feature_size": (
        dict(position="global", feature_size=(ROWS, 8)), (ROWS, COLS, CHANNELS),
        "feature_size=(6, 8); the input's spatial size differs. "
        "Received: input_shape=(None, 6, 7, 6)"),
}


@pytest.mark.parametrize("case", BUILD_ERRORS)
def test_bad_input_shape_raises_at_build(case):
    kwargs, shape, message = BUILD_ERRORS[case]
    with pytest.raises(ValueError, match=re.escape(message)):
        make_layer(**kwargs)(keras.Input(shape))


def test_input_without_channels_is_refused_at_build():
    """Was a ZeroDivisionError in the initialisation (shared.build_projections)."""
    with pytest.raises(ValueError, match=re.escape(
            "The channel axis of the input must be at least 1. "
            "Received: input_shape=(2, 8, 8, 0)")):
        LambdaLayer(output_dim=8, receptive_field=3)(np.zeros((2, 8, 8, 0), "float32"))


@pytest.mark.parametrize("name", ["query", "key", "value", "position"])
@pytest.mark.parametrize("value", ["nope", 5])
def test_bad_initializer_names_its_argument(name, value):
    """Keras' "Could not interpret initializer identifier" named no argument: it is the cause."""
    with pytest.raises(ValueError, match=re.escape(
            f"`{name}_initializer` must be None or a Keras initializer (a name such as "
            f'"he_normal", a config dict, an Initializer or a callable). '
            f"Received: {name}_initializer={value!r}")) as info:
        LambdaLayer(**{f"{name}_initializer": value})
    assert isinstance(info.value.__cause__, ValueError)
    assert f"Could not interpret initializer identifier: {value}" in str(info.value.__cause__)


def test_built_relative_layer_rejects_another_size():
    layer = make_layer(position="relative")
    layer(random_input())
    with pytest.raises(ValueError, match=re.escape(
            '`position="relative"` embeddings are made for feature_size=(6, 7). '
            "Received: input spatial size (5, 5)")):
        layer(random_input((BATCH, 5, 5, CHANNELS)))


def test_built_layer_rejects_another_channel_count():
    """Keras' input check names the axis (it was TensorFlow's MatMul shape error)."""
    layer = make_layer()
    layer(random_input())
    with pytest.raises(ValueError, match=re.escape(
            f"expected axis -1 of input shape to have value {CHANNELS}, but received input "
            f"with shape (2, 6, 7, {CHANNELS + 2})")):
        layer(random_input((2, ROWS, COLS, CHANNELS + 2)))


@pytest.mark.parametrize("implementation", formulations.STATIC_ONLY)
def test_static_formulations_reject_dynamic_size(implementation):
    layer = make_layer(position="local", receptive_field=3, implementation=implementation)
    traced = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, CHANNELS))])
    with pytest.raises(ValueError, match=re.escape(
            f'`implementation="{implementation}"` needs a static spatial size (use "conv" or '
            '"auto" for inputs of any size). Received: input spatial size')):
        traced(random_input())


def test_legacy_einsum_implementation_loads_as_auto():
    """Configs saved before the formulation names existed keep loading: "einsum" is "auto"."""
    layer = make_layer(position="local", receptive_field=3)
    x = random_input()
    layer.build(x.shape)
    old_config = {**layer.get_config(), "implementation": "einsum"}
    restored = LambdaLayer.from_config(old_config)
    assert restored.implementation == "auto"
    assert restored.get_config() == layer.get_config()
    restored.build(x.shape)
    restored.set_weights(layer.get_weights())
    assert max_abs_diff(restored(x), layer(x)) == 0.0


def test_compute_output_shape_rejects_rank_3():
    with pytest.raises(ValueError, match=re.escape("Received: input_shape=(None, 6, 8)")):
        make_layer().compute_output_shape((None, 6, 8))


# --- issue 19: reliability ------------------------------------------------------------------
# No string-as-bool, batch-norm settings in their range, sizes bounded (a typo or a hostile config
# must not try to allocate terabytes).
@pytest.mark.parametrize("kwargs,error,received", [
    (dict(position_bias="false"), TypeError, "position_bias='false'"),  # was True
    (dict(position_bias=1), TypeError, "position_bias=1"),
    (dict(norm_momentum=5.0), ValueError, "norm_momentum=5.0"),
    (dict(norm_momentum=1.0), ValueError, "norm_momentum=1.0"),  # statistics never update
    (dict(norm_momentum=-0.1), ValueError, "norm_momentum=-0.1"),
    (dict(norm_momentum="0.9"), TypeError, "norm_momentum='0.9'"),
    (dict(norm_epsilon=0.0), ValueError, "norm_epsilon=0.0"),
    (dict(norm_epsilon=float("nan")), ValueError, "norm_epsilon=nan"),
    (dict(key_dim=2**40), ValueError, "key_dim=1099511627776"),
    (dict(output_dim=2**20, num_heads=4), ValueError, "output_dim=1048576"),
    (dict(receptive_field=2**20 + 1), ValueError, "receptive_field=1048577"),
    (dict(key_dim=2**10, num_heads=2**7), ValueError, "key_dim=1024, num_heads=128"),
    (dict(key_dim=True), TypeError, "key_dim=True"),  # a bool is not a size
    (dict(num_heads=4.0), TypeError, "num_heads=4.0"),  # nor a float
])
def test_unchecked_arguments_are_refused(kwargs, error, received):
    with pytest.raises(error) as info:
        LambdaLayer(**kwargs)
    assert received in str(info.value), str(info.value)
    name = next(iter(kwargs))
    assert f"`{name}`" in str(info.value), str(info.value)


def test_argument_bounds_accept_their_edges():
    # The refusals above are bounds, not bans: the edge values still build a layer.
    layer = LambdaLayer(norm_momentum=0.0, norm_epsilon=1e-12, position_bias=True,
                        key_dim=256, num_heads=256, receptive_field=1025)
    assert (layer.norm_momentum, layer.position_bias, layer.key_dim) == (0.0, True, 256)
