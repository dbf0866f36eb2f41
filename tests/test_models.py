"""Tests for the LambdaResNet builders (lambda_keras.models, blocks, architectures).

Independent expectations:
- parameter counts of the paper's ResNet-50 hybrid study (Tables 3 and 12 / PAPER.md section 3.2)
  and of `keras.applications.ResNet50` and timm's ResNet-RS (the backbone without lambdas), on
  full-size models (built only, never run);
- the paper's family (PAPER.md section 3.3): blocks per stage and lambda layers per stage, written
  out here from the paper's sentence rather than read from architectures.py;
- round trips (config, `.keras`), eager vs XLA, float32 vs mixed_bfloat16, NumPy pooling of the
  include_top=False features, softmax of the logits model;
- (every bad argument raises a ValueError that names it: tests/test_model_arguments.py).

Everything that runs uses 64x64 inputs (c4 is 4x4, c5 2x2) and 10 classes, except the family test,
which builds the 1000-class heads so that its printed counts are the full models' (position="conv"
weights do not depend on the input size).
"""

import re
import time
import warnings

import numpy as np
import keras
import pytest
import tensorflow as tf

import lambda_keras
from helpers import (
    CLASSES,
    SIZE,
    assert_all_weights_get_gradients,
    assert_close,
    assert_config_round_trip,
    assert_keras_save_reload,
    images,
    small_model,
)
from lambda_keras import LambdaLayer, models
from lambda_keras.blocks import MaxPoolSymmetric, StochasticDepth

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


@pytest.fixture(scope="module")
def default_model():
    """The default small LambdaResNet-50, shared by the tests that only read its structure."""
    return small_model()


def lambda_layers(model):
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
    counts = [0, 0, 0, 0]
    for layer in model.layers:
        match = re.fullmatch(r"stage(\d)_block(\d+)_out", layer.name)
        if match:
            counts[int(match.group(1)) - 1] += 1
    return tuple(counts)


def trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def numpy_softmax(logits):
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


# ------------------------------------------------------- paper's ResNet-50 study (full size)
# Parameters are counted as the paper (and torchvision, timm) counts them: trainable weights only;
# BN moving statistics are buffers, not parameters. This convention reproduces every printed value
# of the table to its 0.1M precision (except CCLL, below); counting all weights would print LLLC
# as 21.8, CCCL as 18.9 and the |u|=4 model as 16.1 (all weights: 25.61, 25.54, 25.05, 21.78,
# 15.05, 15.12, 15.62, 18.88, 16.10).
PAPER_STUDY = {
    # layout (c2..c5), extra overrides: paper's params in millions
    ("CCCC", ()): 25.6,
    ("LCCC", ()): 25.5,
    ("LLCC", ()): 25.0,
    ("LLLC", ()): 21.7,
    ("LLLL", ()): 15.0,
    ("CLLL", ()): 15.1,
    # NOTE: our notes of the paper's Table 12 print 15.4M for C->C->L->L; the counting that
    # reproduces every other row to 0.05M gives 15.56M (1.0% above 15.4M). The computed value is
    # asserted; PAPER.md section 3.2 marks the row's number as unconfirmed.
    ("CCLL", ()): 15.56,
    ("CCCL", ()): 18.8,
    # Table 3: |u| = 4 with a 7x7 lambda convolution, all stages lambda.
    ("LLLL", (("intra_depth", 4), ("receptive_field", 7))): 16.0,
}


def paper_study_model(layout, **overrides):
    """The plain ResNet-50 of the study: classic stem, conv shortcut, no SE, 1000 classes."""
    return lambda_keras.LambdaResNet50(weights=None, layout=layout, se_ratio=0.0, stem="classic",
                                       shortcut="conv", **overrides)


def _study_id(key):
    layout, extra = key
    return "-".join([layout] + [f"{name}={value}" for name, value in extra])


@pytest.mark.parametrize("layout,extra", list(PAPER_STUDY),
                         ids=[_study_id(key) for key in PAPER_STUDY])
def test_paper_study_parameter_counts(layout, extra):
    model = paper_study_model(layout, **dict(extra))
    params = trainable_count(model) / 1e6
    paper = PAPER_STUDY[(layout, extra)]
    print(f"\n[params] {layout} {dict(extra) or ''}: trainable {params:.3f}M, "
          f"all weights {model.count_params() / 1e6:.3f}M, paper {paper}M")
    # The issue asks for 2%; the counts in fact agree to the paper's printed precision (0.05M).
    assert abs(params - paper) / paper < 0.02
    assert abs(params - paper) <= 0.05 + 1e-9, f"{params:.3f}M vs paper {paper}M"


def test_all_conv_layout_is_keras_resnet50():
    """CCCC is ResNet-50: keras.applications.ResNet50 minus its conv biases, to the parameter."""
    ours = paper_study_model("CCCC")
    keras_resnet = keras.applications.ResNet50(weights=None)
    assert not lambda_layers(ours)
    print(f"\n[params] CCCC {ours.count_params()} vs keras ResNet50 {keras_resnet.count_params()}")
    assert abs(ours.count_params() / keras_resnet.count_params() - 1) < 0.005
    # Keras' ResNet50 convolutions have biases (ours are bias-free, followed by BN as in the paper).
    conv_biases = sum(int(np.prod(layer.bias.shape)) for layer in keras_resnet.layers
                      if isinstance(layer, keras.layers.Conv2D) and layer.use_bias)
    assert trainable_count(ours) == trainable_count(keras_resnet) - conv_biases


# Trainable parameters of timm's ResNet-RS (`sum(p.numel() for p in timm.create_model(
# f"resnetrs{depth}").parameters())`, timm 1.0.31; the ResNet-RS paper prints 35.7M and 63.6M).
# Constants because torch and TensorFlow in one process crash here.
TIMM_RESNET_RS = {50: 35_691_912, 101: 63_618_696}


@pytest.mark.parametrize("depth", list(TIMM_RESNET_RS))
def test_all_conv_layout_is_resnet_rs(depth):
    """The backbone without lambdas is ResNet-RS (ResNet-D stem, avg-pool shortcut, SE 0.25)."""
    model = getattr(lambda_keras, f"LambdaResNet{depth}")(layout="CCCC")
    assert not lambda_layers(model)
    assert trainable_count(model) == TIMM_RESNET_RS[depth]


# ------------------------------------------------------------------- the family 50..420
# PAPER.md section 3.3: ResNet-RS block counts; "a single lambda layer in c4 for LambdaResNet50,
# 3 lambda layers for LambdaResNet101, 6 lambda layers for LambdaResNet-152/200/270/350 and 8 lambda
# layers for LambdaResNet-420", lambda layers in every c5 block.
FAMILY = {
    50: ((3, 4, 6, 3), 1),
    101: ((3, 4, 23, 3), 3),
    152: ((3, 8, 36, 3), 6),
    200: ((3, 24, 36, 3), 6),
    270: ((4, 29, 53, 4), 6),
    350: ((4, 36, 72, 4), 6),
    420: ((4, 44, 87, 4), 8),
}
SLOW_DEPTHS = (270, 350, 420)


def _parity_sizes():
    """The smallest input size >= 32 for each parity combination of the c2, c3 and c4 maps (the
    inputs of the three strided blocks; each stride-2 step maps n to ceil(n / 2))."""
    found = {}
    for size in range(32, 1024):
        c2 = -(-size // 4)
        c3 = -(-c2 // 2)
        c4 = -(-c3 // 2)
        found.setdefault((c2 % 2, c3 % 2, c4 % 2), size)
    assert len(found) == 8
    return sorted(found.values())


PARITY_SIZES = _parity_sizes()


@pytest.mark.parametrize("depth", [
    pytest.param(d, marks=pytest.mark.slow) if d in SLOW_DEPTHS else d for d in FAMILY])
def test_family_builds_runs_and_places_lambdas(depth):
    blocks, c4_lambdas = FAMILY[depth]
    start = time.perf_counter()
    model = getattr(lambda_keras, f"LambdaResNet{depth}")(input_shape=(None, None, 3))
    build_s = time.perf_counter() - start
    # Every parity of the maps entering the three strided blocks builds (blocks.ResidualAdd
    # refuses a broadcast residual during shape inference); tests/test_applications.py sweeps
    # LambdaResNet-50 and -101 over every residue mod 32.
    for height, width in zip(PARITY_SIZES, PARITY_SIZES[1:] + PARITY_SIZES[:1]):
        assert model.compute_output_spec(keras.KerasTensor((1, height, width, 3))).shape == (1, 1000)
    start = time.perf_counter()
    probs = keras.ops.convert_to_numpy(model(images(), training=False))
    forward_s = time.perf_counter() - start
    print(f"\n[family] LambdaResNet{depth}: build {build_s:.1f}s, forward {forward_s:.1f}s, "
          f"{len(model.layers)} layers, params {model.count_params() / 1e6:.2f}M all / "
          f"{trainable_count(model) / 1e6:.2f}M trainable")

    assert model.name == f"lambda_resnet{depth}"
    assert probs.shape == (2, 1000)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert blocks_per_stage(model) == blocks
    assert lambda_blocks_per_stage(model) == (0, 0, c4_lambdas, blocks[3])
    # Spread evenly through c4 (the paper does not say where): the strided first block stays
    # convolutional, consecutive lambda blocks are equally spaced up to rounding, and the conv
    # runs before the first and after the last are no longer than that spacing.
    c4 = sorted(int(re.fullmatch(r"stage3_block(\d+)_lambda", layer.name).group(1))
                for layer in lambda_layers(model) if layer.name.startswith("stage3_"))
    spacing = blocks[2] / (c4_lambdas + 1)
    assert c4[0] > 1
    assert all(np.floor(spacing) <= gap <= np.ceil(spacing) for gap in np.diff(c4)), c4
    assert c4[0] - 1 <= np.ceil(spacing) and blocks[2] - c4[-1] <= np.ceil(spacing), c4


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


def test_undefined_input_size_with_conv_positions():
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
    model = small_model(drop_path_rate=0.2)
    layers = [layer for layer in model.layers if isinstance(layer, StochasticDepth)]
    assert len(layers) == 16  # one per block
    for layer in layers:
        stage = int(re.fullmatch(r"stage(\d)_block\d+_drop_path", layer.name).group(1))
        # ResNet-RS: the rate grows linearly over the four block groups, rate * (group + 2) / 5.
        assert layer.rate == pytest.approx(0.2 * (stage + 1) / 5)
    x = images()
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))


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
