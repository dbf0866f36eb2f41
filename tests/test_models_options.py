"""Tests for what each LambdaResNet builder argument builds (lambda_keras.models, blocks,
architectures): the keras.applications arguments (include_top, classes, pooling,
classifier_activation, input_tensor, input sizes, features) and the architecture overrides
(layout, stem, shortcut, squeeze-excitation, dropout, drop path, lambda settings, name), with the
blocks they bring (MaxPoolSymmetric, StochasticDepth).

Independent expectations:
- NumPy pooling of the include_top=False features, softmax of the logits model, the outputs of
  the same weights on a rescaled input (input_tensor);
- feature-map sizes ceil(size / stride) and strides 4, 8, 16, 32;
- layer counts and names per stage, written out here (the default placement, SE widths,
  ResNet-RS's linear drop-path rates), the SE parameter count computed by hand;
- PyTorch's -inf padded MaxPool2d(3, 2, padding=1) written in NumPy (MaxPoolSymmetric), the
  drop probability and expectation of stochastic depth (Huang et al. 2016).

(Every bad argument raises a ValueError that names it: tests/test_model_arguments.py.)

Everything that runs uses 64x64 inputs (c4 is 4x4, c5 2x2) and 10 classes unless a test says
otherwise.
"""

import re
import warnings

import numpy as np
import keras
import pytest

import lambda_keras
from helpers import (
    CLASSES,
    SIZE,
    activate_residual_branches,
    blocks_per_stage,
    images,
    lambda_blocks_per_stage,
    lambda_layers,
    small_model,
    weights_by_path,
)
from lambda_keras.blocks import MaxPoolSymmetric, StochasticDepth


@pytest.fixture(scope="module")
def default_model():
    """The default small LambdaResNet-50, shared by the tests that only read its structure."""
    return small_model()


def numpy_softmax(logits):
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


# ------------------------------------------------------------------------ option branches
def test_include_top_builds_the_classifier(default_model):
    model = default_model
    assert isinstance(model.get_layer("avg_pool"), keras.layers.GlobalAveragePooling2D)
    assert model.get_layer("head_dropout").rate == pytest.approx(0.25)  # ResNet-RS rate for 50
    head = model.get_layer("predictions")
    assert isinstance(head, keras.layers.Dense) and head.units == CLASSES
    assert model.layers[-1] is head
    probs = keras.ops.convert_to_numpy(model(images()))
    assert probs.shape == (2, CLASSES)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("classes", [3, 1001])
def test_custom_classes(classes):
    model = small_model(classes=classes)
    assert model.output_shape == (None, classes)
    assert model(images()).shape == (2, classes)


@pytest.mark.parametrize("pooling,layer_type,reduce", [
    ("avg", keras.layers.GlobalAveragePooling2D, np.mean),
    ("max", keras.layers.GlobalMaxPooling2D, np.max),
])
def test_pooling_builds_what_it_says(pooling, layer_type, reduce):
    x = images()
    base = activate_residual_branches(small_model(include_top=False))
    features = keras.ops.convert_to_numpy(base(x))
    assert base.output_shape == (None, 2, 2, 2048) and features.shape == (2, 2, 2, 2048)
    assert base.layers[-1].name == "stage4_block3_out"  # no pooling, no head

    model = small_model(include_top=False, pooling=pooling)
    model.set_weights(base.get_weights())
    assert isinstance(model.layers[-1], layer_type)
    assert model.layers[-1].name == f"{pooling}_pool"
    pooled = keras.ops.convert_to_numpy(model(x))
    assert pooled.shape == (2, 2048)
    np.testing.assert_allclose(pooled, reduce(features, axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_pooling_is_ignored_with_include_top():
    # keras.applications semantics: `pooling` only applies when include_top=False.
    model = small_model(pooling="max")
    assert model.layers[-1].name == "predictions"
    assert not any(isinstance(layer, keras.layers.GlobalMaxPooling2D) for layer in model.layers)


def test_classifier_activation_none_gives_logits():
    x = images()
    probs_model = activate_residual_branches(small_model())
    logits_model = small_model(classifier_activation=None)
    logits_model.set_weights(probs_model.get_weights())
    logits = keras.ops.convert_to_numpy(logits_model(x))
    assert logits.min() < 0 or logits.max() > 1  # not probabilities
    np.testing.assert_allclose(numpy_softmax(logits), keras.ops.convert_to_numpy(probs_model(x)),
                               rtol=1e-5, atol=1e-6)


def test_input_tensor_is_wired_in():
    inputs = keras.Input((SIZE, SIZE, 3), name="raw")
    scaled = keras.layers.Rescaling(2.0, name="scale")(inputs)
    model = lambda_keras.LambdaResNet50(input_tensor=scaled, include_top=False, pooling="avg")
    assert model.inputs[0] is inputs  # the source input, as keras.applications does
    assert "scale" in [layer.name for layer in model.layers]
    plain = activate_residual_branches(lambda_keras.LambdaResNet50(
        input_shape=(SIZE, SIZE, 3), include_top=False, pooling="avg"))
    model.set_weights(plain.get_weights())
    x = images()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Keras' "structure of `inputs`" warning
        wired = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(wired,
                               keras.ops.convert_to_numpy(plain(2.0 * x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("height,width", [(96, 64), (72, 104)])
def test_non_square_inputs(height, width):
    model = small_model(input_shape=(height, width, 3), include_top=False, features=True)
    outputs = model(images(height=height, width=width))
    for name, stride in (("c2", 4), ("c3", 8), ("c4", 16), ("c5", 32)):
        # Every stride-2 step (symmetric padding, "same" pools) keeps ceil(size / 2).
        assert tuple(outputs[name].shape[1:3]) == (-(-height // stride), -(-width // stride)), name
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(outputs[name])))


def test_undefined_input_size_with_local_positions():
    model = lambda_keras.LambdaResNet50(include_top=False, pooling="avg")
    assert model.input_shape == (None, None, None, 3)
    assert model(images(height=64, width=96)).shape == (2, 2048)


def test_features_have_strides_4_8_16_32():
    model = small_model(include_top=False, features=True)
    assert set(model.output) == {"c2", "c3", "c4", "c5"}
    outputs = model(images())
    for name, stride, channels in (("c2", 4, 256), ("c3", 8, 512), ("c4", 16, 1024),
                                   ("c5", 32, 2048)):
        assert tuple(outputs[name].shape) == (2, SIZE // stride, SIZE // stride, channels), name
        # Each map is the output of the stage's last block.
        stage = int(name[1]) - 1
        last = len([layer for layer in model.layers
                    if re.fullmatch(rf"stage{stage}_block\d+_out", layer.name)])
        assert model.output[name] is model.get_layer(f"stage{stage}_block{last}_out").output


@pytest.mark.parametrize("layout,expected", [
    ((0, 1, 2, 3), (0, 1, 2, 3)),
    ((0, 0, 6, 3), (0, 0, 6, 3)),
    ((0, 0, 0, 0), (0, 0, 0, 0)),
    ("CCLL", (0, 0, 6, 3)),
    ("lccc", (3, 0, 0, 0)),
])
def test_layout(layout, expected):
    model = small_model(layout=layout, include_top=False)
    assert lambda_blocks_per_stage(model) == expected
    assert blocks_per_stage(model) == (3, 4, 6, 3)


def lambda_block_indices(model):
    """0-based lambda block indices per stage, read off the layer names."""
    stages = [[], [], [], []]
    for layer in lambda_layers(model):
        stage, block = re.fullmatch(r"stage(\d)_block(\d+)_lambda", layer.name).groups()
        stages[int(stage) - 1].append(int(block) - 1)
    return tuple(tuple(sorted(s)) for s in stages)


@pytest.mark.parametrize("layout,expected", [
    (((), (), (5, 1), "all"), ((), (), (1, 5), (0, 1, 2))),
    (((), [3], (0,), ()), ((), (3,), (0,), ())),  # a strided first block may be a lambda block
    ((0, 0, (2, 4), "ALL"), ((), (), (2, 4), (0, 1, 2))),  # counts and indices mix
])
def test_layout_explicit_indices(layout, expected):
    model = small_model(layout=layout, include_top=False)
    assert lambda_block_indices(model) == expected
    assert blocks_per_stage(model) == (3, 4, 6, 3)


def test_default_layout_is_the_paper_placement(default_model):
    model = default_model
    assert lambda_blocks_per_stage(model) == (0, 0, 1, 3)
    # The lambda blocks replace the 3x3 conv: no conv2 where there is a lambda.
    names = {layer.name for layer in model.layers}
    for layer in lambda_layers(model):
        block = layer.name[: -len("_lambda")]
        assert f"{block}_conv2" not in names and f"{block}_lambda_bn" in names


@pytest.mark.parametrize("kind,widths,kernel,pooled", [
    ("classic", (64,), 7, True),
    ("resnet_d", (32, 32, 64, 64), 3, False),
    ("tiered", (24, 32, 64), 3, True),
])
def test_stem_override(kind, widths, kernel, pooled):
    model = small_model(stem=kind, include_top=False, features=True)
    convs = [layer for layer in model.layers if re.fullmatch(r"stem_conv\d", layer.name)]
    assert [conv.filters for conv in convs] == list(widths)
    assert convs[0].kernel_size == (kernel, kernel) and convs[0].strides == (2, 2)
    names = {layer.name for layer in model.layers}
    if pooled:
        assert isinstance(model.get_layer("stem_pool"), MaxPoolSymmetric)
    else:
        assert "stem_pool" not in names and convs[-1].strides == (2, 2)
    assert tuple(model.output["c2"].shape[1:3]) == (SIZE // 4, SIZE // 4)


@pytest.mark.parametrize("size", [(8, 8), (7, 10)])
def test_symmetric_max_pool_is_pytorchs_padded_max_pool(size):
    """MaxPoolSymmetric = PyTorch's MaxPool2d(3, 2, padding=1), which pads with -inf: a NumPy
    max over every 3 x 3 window clipped to the map, negative inputs included, odd and even."""
    x = np.random.default_rng(2).standard_normal((2, *size, 3)).astype("float32")
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    out_rows, out_cols = (size[0] + 1) // 2, (size[1] + 1) // 2
    expected = np.stack([np.stack([padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
                                   for j in range(out_cols)], 1) for i in range(out_rows)], 1)
    actual = keras.ops.convert_to_numpy(MaxPoolSymmetric()(x))
    np.testing.assert_array_equal(actual, expected)


def test_default_stem_and_shortcut_are_resnet_d(default_model):
    model = default_model
    assert "stem_pool" not in {layer.name for layer in model.layers}
    assert model.get_layer("stem_conv4").strides == (2, 2)
    pool = model.get_layer("stage2_block1_shortcut_pool")
    assert isinstance(pool, keras.layers.AveragePooling2D)
    assert model.get_layer("stage2_block1_shortcut_conv").strides == (1, 1)


def test_conv_shortcut_override():
    model = small_model(include_top=False, shortcut="conv")
    names = {layer.name for layer in model.layers}
    assert not any(name.endswith("shortcut_pool") for name in names)
    assert model.get_layer("stage2_block1_shortcut_conv").strides == (2, 2)


@pytest.mark.parametrize("se_ratio,reduced", [(None, 64), (0.5, 128), (0.0, None)])
def test_se_ratio_override(se_ratio, reduced, default_model):
    model = default_model if se_ratio is None else small_model(include_top=False, se_ratio=se_ratio)
    se = [layer for layer in model.layers if "_se_" in layer.name]
    if reduced is None:
        assert not se
        return
    # Block outputs are 4x the bottleneck width: stage 1 has 256 channels.
    assert model.get_layer("stage1_block1_se_reduce").filters == reduced
    assert model.get_layer("stage1_block1_se_expand").filters == 256
    assert model.get_layer("stage3_block1_se_reduce").filters == int(1024 * (se_ratio or 0.25))
    # 16 blocks, 4 of them lambda blocks without SE (se_in_lambda_blocks=False by default).
    assert len([layer for layer in se if layer.name.endswith("_se_reduce")]) == 12


def _se_blocks(model):
    return {layer.name[: -len("_se_reduce")] for layer in model.layers
            if layer.name.endswith("_se_reduce")}


@pytest.mark.parametrize("se_in_lambda_blocks", [False, True])
def test_se_in_lambda_blocks(se_in_lambda_blocks, default_model):
    model = (default_model if not se_in_lambda_blocks
             else small_model(se_in_lambda_blocks=True))
    lambda_blocks = {layer.name[: -len("_lambda")] for layer in lambda_layers(model)}
    all_blocks = {layer.name[: -len("_out")] for layer in model.layers
                  if re.fullmatch(r"stage\d_block\d+_out", layer.name)}
    assert len(lambda_blocks) == 4 and len(all_blocks) == 16
    expected = all_blocks if se_in_lambda_blocks else all_blocks - lambda_blocks
    assert _se_blocks(model) == expected


def test_se_in_lambda_blocks_parameter_difference(default_model):
    # Independent count: SE of a block with C = 4 * width output channels and ratio 0.25 has
    # C*C/4 + C/4 (reduce, with bias) + C/4*C + C (expand) parameters; the lambda blocks of the
    # default LambdaResNet-50 are c4 block 3 (C = 1024) and the three c5 blocks (C = 2048).
    def se_params(c):
        r = c // 4
        return c * r + r + r * c + c

    with_se = small_model(se_in_lambda_blocks=True)
    assert (with_se.count_params() - default_model.count_params()
            == se_params(1024) + 3 * se_params(2048))


@pytest.mark.parametrize("drop_rate", [0.0, 0.4])
def test_drop_rate_override(drop_rate):
    model = small_model(drop_rate=drop_rate)
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    if drop_rate:
        assert [d.name for d in dropouts] == ["head_dropout"]
        assert dropouts[0].rate == pytest.approx(drop_rate)
    else:
        assert not dropouts


def test_drop_path_rate_override(default_model):
    assert not any(isinstance(layer, StochasticDepth) for layer in default_model.layers)
    model = small_model(drop_path_rate=0.2, drop_rate=0.0)
    layers = [layer for layer in model.layers if isinstance(layer, StochasticDepth)]
    assert len(layers) == 16  # one per block
    for layer in layers:
        stage = int(re.fullmatch(r"stage(\d)_block\d+_drop_path", layer.name).group(1))
        # ResNet-RS: the rate grows linearly over the four block groups, rate * (group + 2) / 5.
        assert layer.rate == pytest.approx(0.2 * (stage + 1) / 5)
    # Against the same weights without drop path (no head dropout in either): the identity in
    # inference, the branches dropped or rescaled by 1 / (1 - rate) in training. Active branches:
    # a zero branch is the same dropped or not.
    activate_residual_branches(model)
    reference = small_model(drop_rate=0.0)
    values = weights_by_path(model)  # the layer order differs: copied by name
    assert values.keys() == {v.path for v in reference.weights}
    for variable in reference.weights:
        variable.assign(values[variable.path])
    x = images()
    np.testing.assert_array_equal(model(x, training=False), reference(x, training=False))
    trained = keras.ops.convert_to_numpy(model(x, training=True))
    expected = keras.ops.convert_to_numpy(reference(x, training=True))
    assert np.abs(trained - expected).max() > 1e-3 * np.abs(expected).max()


@pytest.mark.parametrize("overrides", [
    dict(key_dim=8, num_heads=2, intra_depth=2, receptive_field=7),
    dict(position="relative"),
    dict(position="global", key_dim=4),
    dict(position=None),
])
def test_lambda_overrides_reach_the_layers(overrides):
    model = small_model(**overrides)
    layers = lambda_layers(model)
    assert len(layers) == 4
    for layer in layers:
        config = layer.get_config()
        for key, value in overrides.items():
            assert config[key] == value, (layer.name, key)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(model(images()))))


def test_no_positions_drop_the_timm_position_bias():
    """timm's architectures carry a bias on their position lambdas; `position=None` leaves no
    position lambdas to bias, so the builder drops it, and only an explicit bias is refused."""
    model = lambda_keras.LambdaResNet26T(weights=None, input_shape=(SIZE, SIZE, 3),
                                         classes=CLASSES, position=None)
    configs = [layer.get_config() for layer in lambda_layers(model)]
    assert configs and all(c["position"] is None and not c["position_bias"] for c in configs)
    default = lambda_keras.LambdaResNet26T(weights=None, input_shape=(SIZE, SIZE, 3),
                                           classes=CLASSES)
    assert all(layer.get_config()["position_bias"] for layer in lambda_layers(default))
    with pytest.raises(ValueError, match="position_bias"):
        lambda_keras.LambdaResNet26T(weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                                     position=None, position_bias=True)


def test_name_override():
    assert small_model(name="my_net").name == "my_net"


def test_stochastic_depth_drops_whole_examples_and_keeps_the_expectation():
    """Training branch (Huang et al. 2016, as timm's DropPath): each example's residual branch is
    zeroed with probability `rate`, the kept ones scaled by 1 / (1 - rate), so the expectation is
    the identity; inference returns the input unchanged."""
    rate, batch = 0.25, 4000
    layer = StochasticDepth(rate, seed=3)
    x = np.random.default_rng(0).uniform(0.5, 1.5, (batch, 2, 3, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    dropped = np.all(y == 0.0, axis=(1, 2, 3))
    kept = ~dropped
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
    # Binomial(4000, 0.25): standard deviation 0.0068 of the fraction; 5 sigma.
    assert abs(dropped.mean() - rate) < 0.035
    assert abs(y.sum() / x.sum() - 1.0) < 0.05
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    with pytest.raises(ValueError, match="rate"):
        StochasticDepth(1.0)


