"""Tests for lambda_keras.layers.LambdaLayer's arguments and inputs: each bad one is refused with
a message that names the argument and what was received (at construction, or at build for input
shapes), edge values still build a layer, and configs of earlier releases still load.
(The layer's outputs, gradients, round trips and shapes: tests/test_layers.py.)
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import max_abs_diff
from lambda_keras.layers import LambdaLayer, formulations
from reference import BATCH, CHANNELS, COLS, ROWS, make_layer, random_input

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
    # Was an empty output ((None, 0, 3, d)), where Keras' AveragePooling2D refuses the size.
    "pool_size-2-on-a-row": (
        dict(strides=2, pool_size=2), (1, COLS, CHANNELS),
        "`strides=2` with `pool_size=2` (no padding) needs maps of at least 2 x 2 positions: "
        "its output would have none. Received: input_shape=(None, 1, 7, 6)"),
}


@pytest.mark.parametrize("case", BUILD_ERRORS)
def test_bad_input_shape_raises_at_build(case):
    kwargs, shape, message = BUILD_ERRORS[case]
    with pytest.raises(ValueError, match=re.escape(message)):
        make_layer(**kwargs)(keras.Input(shape))


def test_pool_of_two_refuses_a_map_it_would_empty_as_keras_does():
    """The shapes Keras' own 2x2/2 pool cannot pool (its expectation: refused by newer Keras,
    3.15 here; an empty map in Keras 3.9, the lowest version allowed), in compute_output_shape
    too; the padded 3x3/2 pool takes them."""
    for shape in ((BATCH, 1, 1, CHANNELS), (BATCH, COLS, 1, CHANNELS)):
        try:
            pooled = keras.layers.AveragePooling2D(2).compute_output_shape(shape)
        except ValueError as error:
            assert "would be zero or negative" in str(error)
        else:
            assert 0 in pooled[1:3], pooled
        with pytest.raises(ValueError, match=re.escape("needs maps of at least 2 x 2")):
            LambdaLayer(strides=2, pool_size=2).compute_output_shape(shape)
        assert LambdaLayer(strides=2).compute_output_shape(shape)[1:3] == tuple(
            (s + 1) // 2 for s in shape[1:3])


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
    """The sizes unknown while tracing named as None (were graph tensors' reprs)."""
    layer = make_layer(position="local", receptive_field=3, implementation=implementation)
    for signature, received in (((None, None, None), (None, None)),
                                ((None, ROWS, None), (ROWS, None))):
        traced = tf.function(layer, input_signature=[tf.TensorSpec((*signature, CHANNELS))])
        with pytest.raises(ValueError, match=re.escape(
                f'`implementation="{implementation}"` needs a spatial size known while tracing '
                '(use "conv" or "auto" for inputs of any size, e.g. a SavedModel signature of any '
                f"image size). Received: input spatial size {received}")):
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


# ------------------------------------------------------------------- bounds and types
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
