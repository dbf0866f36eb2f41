"""Tests for the full-size LambdaResNets (lambda_keras.models, architectures): the paper's
ResNet-50 hybrid study, the all-convolution backbone, and the family LambdaResNet-50..420.

Independent expectations:
- parameter counts of the paper's ResNet-50 hybrid study (Tables 3 and 12 / PAPER.md section 3.2)
  and of `keras.applications.ResNet50` and timm's ResNet-RS (the backbone without lambdas), on
  full-size models (built only, never run); the stages' counts adding up (CCLL = CCCC + LLLL -
  LLCC) where the paper's number is unconfirmed;
- the paper's family (PAPER.md section 3.3): blocks per stage and lambda layers per stage, written
  out here from the paper's sentence rather than read from architectures.py; every parity of the
  maps entering the strided blocks builds; a forward pass gives probabilities.

The family test builds the 1000-class heads so that its printed counts are the full models'
(position="local" weights do not depend on the input size) and runs them on 64x64 inputs.
"""

import re
import time

import numpy as np
import keras
import pytest

import lambda_keras
from helpers import blocks_per_stage, images, lambda_blocks_per_stage, lambda_layers


def trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


# ------------------------------------------------------- paper's ResNet-50 study (full size)
# Parameters are counted as the paper (and torchvision, timm) counts them: trainable weights only;
# BN moving statistics are buffers, not parameters. This convention reproduces every printed value
# of the tables below to its 0.1M precision; counting all weights would print LLLC as 21.8, CCCL as
# 18.9 and the |u|=4 model as 16.1 (all weights: 25.61, 25.54, 25.05, 21.78, 15.05, 15.12, 18.88,
# 16.10). Certainty as PAPER.md labels it: Table 3 rows confirmed [C], Table 5 rows UNCONFIRMED.
PAPER_STUDY = {
    # layout (c2..c5), extra overrides: (paper's params in millions, source and certainty)
    ("CCCC", ()): (25.6, "Table 3/5 [C]"),
    ("LCCC", ()): (25.5, "Table 5 UNCONFIRMED"),
    ("LLCC", ()): (25.0, "Table 5 UNCONFIRMED"),
    ("LLLC", ()): (21.7, "Table 5 UNCONFIRMED"),
    ("LLLL", ()): (15.0, "Table 3/5 [C]"),
    ("CLLL", ()): (15.1, "Table 5 UNCONFIRMED"),
    ("CCCL", ()): (18.8, "Table 5 UNCONFIRMED"),
    # Table 3: |u| = 4 with a 7x7 lambda convolution, all stages lambda.
    ("LLLL", (("intra_depth", 4), ("receptive_field", 7))): (16.0, "Table 3 [C]"),
}
# C->C->L->L (Table 5 UNCONFIRMED, 15.4M) is checked by test_stage_parameters_add_up instead.


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
    paper, source = PAPER_STUDY[(layout, extra)]
    print(f"\n[params] {layout} {dict(extra) or ''}: trainable {params:.3f}M, "
          f"all weights {model.count_params() / 1e6:.3f}M, paper {paper}M ({source})")
    # The issue asks for 2%; the counts in fact agree to the paper's printed precision (0.05M).
    assert abs(params - paper) / paper < 0.02
    assert abs(params - paper) <= 0.05 + 1e-9, f"{params:.3f}M vs paper {paper}M ({source})"


def test_stage_parameters_add_up():
    """A stage's parameters depend only on its own kind (C or L: every stage takes and gives the
    same widths either way), so swapping the kinds of c2, c3 and of c4, c5 separately adds up:
    CCLL = CCCC + LLLL - LLCC, to the parameter. (Table 5's C->C->L->L, 15.4M, is UNCONFIRMED
    and the count that reproduces the other rows gives 15.56M: PAPER.md section 3.2; the issue's
    2% is asserted.)"""
    counts = {}
    for layout in ("CCCC", "LLLL", "LLCC", "CCLL"):
        model = paper_study_model(layout)
        counts[layout] = (trainable_count(model), model.count_params())
        assert lambda_blocks_per_stage(model) == tuple(
            depth if kind == "L" else 0 for kind, depth in zip(layout, (3, 4, 6, 3))), layout
    for i in range(2):  # trainable weights, all weights
        predicted = counts["CCCC"][i] + counts["LLLL"][i] - counts["LLCC"][i]
        assert counts["CCLL"][i] == predicted, (i, counts)
    params = counts["CCLL"][0] / 1e6
    print(f"\n[params] CCLL: trainable {params:.3f}M, paper 15.4M (Table 5 UNCONFIRMED)")
    assert abs(params - 15.4) / 15.4 < 0.02


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
        assert model.compute_output_spec(
            keras.KerasTensor((1, height, width, 3))).shape == (1, 1000)
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

