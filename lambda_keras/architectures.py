"""LambdaResNet architectures as data: the paper's family 50..420 and timm-compatible variants.

Paper (PAPER.md section 3): LambdaResNets are ResNet-RS backbones [C: Figure 4]; the backbone's
details as recalled from the paper's appendix (UNCONFIRMED) and as ResNet-RS defines them: ResNet-D
stem, average-pool shortcut, squeeze-excitation 0.25, dropout and stochastic depth growing with
depth, zero-initialised last BN gamma. Lambda layers in a few c4 blocks [C, the paper's sentence
as quoted in lucidrains/lambda-networks issue 9]: "a single lambda layer in c4 for
LambdaResNet50, 3 lambda layers for LambdaResNet101, 6 lambda layers for
LambdaResNet-152/200/270/350 and 8 lambda layers for LambdaResNet-420"; and in every c5 block
(our inference from that sentence and the hybrid study, PAPER.md 3.3).
NOTE: which c4 blocks hold the lambdas is not in what we could read of the paper; they are spread
evenly through c4 (`spread_evenly`), which for the paper's counts never picks c4's strided first
block. A recollection (PAPER.md 3.3, UNCONFIRMED) puts them every 10 blocks (350: 10, 20, ..., 60;
420: 10, 20, ..., 80); the even spread gives 10, 21, ..., 62 and 10, 19, ..., 77 there. Every c5
block is a lambda block, the strided first one included: the paper's strided lambda blocks
downsample with an average pool after the lambda layer (PAPER.md 3.1), and timm's lambda_resnet26t
has a lambda layer in its strided first c5 block too.
NOTE: dropout / stochastic-depth rates are the ResNet-RS configs' for each depth (0.25/0.0 up to
152, 0.25/0.1 for 200 and 270, 0.4/0.1 for 350 and 420: their 320 px rows), read in
tensorflow/tpu's configs (training/recipes.py's RESNET_RS_ROWS); that the paper trained with them
is recalled, UNCONFIRMED. Image sizes: the paper's Figure 4 points (152 @ 256, 270 @ 256, 350 and
420 @ 320, read off the plot) and 224 for 50/101/200 (the ablation size, UNCONFIRMED).

NOTE: squeeze-excitation in lambda blocks (`se_in_lambda_blocks`, default False). Known: ResNet-RS
has SE 0.25 in every block. Recalled by the team, not read and not in PAPER.md: a sentence of the
paper's appendix saying the lambda blocks have no SE. Recalled (PAPER.md 3.5, UNCONFIRMED): 51M
parameters for LambdaResNet-152 in the paper's pseudo-label table.
Measured (trainable, 1000 classes): LambdaResNet-152 with SE everywhere 76.62M, SE in conv blocks
only (the default) 67.17M, no SE at all (se_ratio=0) 50.25M. The default follows the recalled
sentence; the recalled 51M fits only the model without any SE, so one recollection may be wrong.
NOTE: `paper_top1` is the paper's Figure 4 value read off the plot; the table's only reader is the
builders' docstrings. timm's published top-1 of its weights is preset metadata (presets.py).

timm variants (timm/models/byoanet.py): tiered stem 24-32-64 + max pool, strided 1x1 conv shortcut,
no SE, lambda layers with r=9 convolution (or relative positions), 2x2 pooling for strides, and
`timm`'s bias on the lambda convolution; their lambda blocks sit where timm's `interleave_blocks`
puts them.
"""

import dataclasses

STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck widths of c2..c5; block outputs are 4x these
STAGE_STRIDES = (1, 2, 2, 2)


@dataclasses.dataclass(frozen=True)
class LambdaSpec:
    """Lambda layer settings shared by every lambda block of a model (see LambdaLayer)."""

    key_dim: int = 16  # |k|
    num_heads: int = 4  # |h|
    intra_depth: int = 1  # |u|
    position: str = "local"  # "local", "relative", "global" or None
    receptive_field: int = 23  # scope r of the lambda convolution
    pool_size: int = 3  # 3: paper's 3x3/2 pool for strides; 2: timm's 2x2/2
    position_bias: bool = False  # timm's lambda convolution has a bias
    implementation: str = "auto"  # formulation of the local position lambdas


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One LambdaResNet: a row of the table below."""

    name: str  # registry key, also the default model name
    builder: str  # public builder function in models.py (e.g. "LambdaResNet50")
    blocks: tuple  # bottleneck blocks per stage c2..c5
    lambda_blocks: tuple  # per stage, the 0-based indices of the blocks that hold a lambda layer
    stem: str = "resnet_d"  # "classic", "resnet_d" or "tiered" (blocks.STEMS)
    stem_width: int = 64  # output channels of the stem
    shortcut: str = "avg"  # "avg" (ResNet-D) or "conv" (strided 1x1 conv)
    activation: str = "relu"
    se_ratio: float = 0.25  # 0 disables squeeze-excitation
    se_in_lambda_blocks: bool = False  # squeeze-excitation also in lambda blocks (module NOTE)
    drop_rate: float = 0.25  # dropout before the classifier
    drop_path_rate: float = 0.0  # stochastic depth of the last stage
    lambda_spec: LambdaSpec = LambdaSpec()
    image_size: int = 224  # training/eval resolution of the paper or of the weights
    paper_top1: str = None  # the paper's ImageNet top-1 at image_size, with how it is known


def spread_evenly(count, depth):
    """0-based indices of `count` of `depth` blocks, evenly spaced; all blocks when
    count == depth.

    The k-th pick (k = 1..count) is block floor(k * depth / (count + 1) + 0.5) - 1: the first
    (strided) block is picked when depth / (count + 1) < 1.5, i.e. for counts above about two
    thirds of the stage (spread_evenly(1, 2) == (0,), spread_evenly(2, 3) == (0, 1)); never for
    the paper family's c4 counts.
    """
    if not 0 <= count <= depth:
        raise ValueError(f"Cannot place {count} lambda blocks in a stage of {depth} blocks.")
    if count == depth:
        return tuple(range(depth))
    return tuple(int((i + 1) * depth / (count + 1) + 0.5) - 1 for i in range(count))


def lambda_blocks_from_counts(counts, blocks):
    return tuple(spread_evenly(c, d) for c, d in zip(counts, blocks))


LAYOUT_HELP = (
    "`layout` must be 4 letters over {C, L} (one per stage c2..c5, L: every block is a lambda "
    "block) or 4 per-stage entries, each a lambda-block count (spread evenly), a tuple of "
    "0-based block indices, or \"all\"")


def lambda_blocks_from_layout(layout, blocks):
    """`layout` -> the 0-based lambda block indices of each stage (see `LAYOUT_HELP`).

    Forms: "CCLL" (paper Table 5 notation); (0, 0, 6, 3) (counts, spread evenly as for the paper
    family); ((), (), (5, 11, 17), "all") (explicit indices); the per-stage forms mix freely.
    """
    received = f"Received: layout={layout!r}"
    if isinstance(layout, str):
        if len(layout) != 4 or set(layout.upper()) - set("CL"):
            raise ValueError(f"{LAYOUT_HELP}. {received}")
        return tuple(tuple(range(d)) if c == "L" else () for c, d in zip(layout.upper(), blocks))
    if not isinstance(layout, (tuple, list)) or len(layout) != 4:
        raise ValueError(f"{LAYOUT_HELP}. {received}")
    stages = []
    for stage, (entry, depth) in enumerate(zip(layout, blocks)):
        where = f"stage c{stage + 2} has {depth} blocks (0..{depth - 1})"
        if isinstance(entry, str):
            if entry.lower() != "all":
                raise ValueError(f"{LAYOUT_HELP}; {where}. {received}")
            stages.append(tuple(range(depth)))
        elif isinstance(entry, int) and not isinstance(entry, bool):
            if not 0 <= entry <= depth:
                raise ValueError(f"{LAYOUT_HELP}; a count must be between 0 and the stage depth "
                                 f"{tuple(blocks)}. {received}")
            stages.append(spread_evenly(entry, depth))
        elif isinstance(entry, (tuple, list)):
            bad = [i for i in entry if isinstance(i, bool) or not isinstance(i, int)
                   or not 0 <= i < depth]
            if bad or len(set(entry)) != len(entry):
                problem = f"invalid indices {bad}" if bad else "repeated indices"
                raise ValueError(f"{LAYOUT_HELP}; {problem}: {where}. {received}")
            stages.append(tuple(sorted(entry)))
        else:
            raise ValueError(f"{LAYOUT_HELP}. {received}")
    return tuple(stages)


# depth: (blocks per stage, lambda blocks in c4, drop_rate, drop_path_rate, image size, top-1)
# top-1: the paper's Figure 4 labelled points, read off the plot (PAPER.md section 3.4, +-0.05).
PAPER_FAMILY = {
    50: ((3, 4, 6, 3), 1, 0.25, 0.0, 224, None),
    101: ((3, 4, 23, 3), 3, 0.25, 0.0, 224, None),
    152: ((3, 8, 36, 3), 6, 0.25, 0.0, 256, 83.75),
    200: ((3, 24, 36, 3), 6, 0.25, 0.1, 224, None),
    270: ((4, 29, 53, 4), 6, 0.25, 0.1, 256, 84.2),
    350: ((4, 36, 72, 4), 6, 0.4, 0.1, 320, 84.7),
    420: ((4, 44, 87, 4), 8, 0.4, 0.1, 320, 84.9),
}

ARCHITECTURES = {
    f"lambda_resnet{depth}": Architecture(
        name=f"lambda_resnet{depth}",
        builder=f"LambdaResNet{depth}",
        blocks=blocks,
        lambda_blocks=lambda_blocks_from_counts((0, 0, c4, blocks[3]), blocks),
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        image_size=image_size,
        paper_top1=None if top1 is None else f"~{top1} (Figure 4, read off the plot)",
    )
    for depth, (blocks, c4, drop_rate, drop_path_rate, image_size, top1) in PAPER_FAMILY.items()
}

# timm's top-1 of these is preset metadata (presets.py), not the paper's.
_TIMM = dict(stem="tiered", shortcut="conv", se_ratio=0.0, drop_rate=0.0, image_size=256,
             lambda_spec=LambdaSpec(receptive_field=9, pool_size=2, position_bias=True))
ARCHITECTURES.update({
    "lambda_resnet26t": Architecture(
        name="lambda_resnet26t", builder="LambdaResNet26T", blocks=(2, 2, 2, 2),
        lambda_blocks=((), (), (1,), (0, 1)), **_TIMM),
    "lambda_resnet50ts": Architecture(
        name="lambda_resnet50ts", builder="LambdaResNet50TS", blocks=(3, 4, 6, 3),
        lambda_blocks=((), (3,), (1, 3, 5), (1,)), activation="silu", **_TIMM),
    "lambda_resnet26rpt_256": Architecture(
        name="lambda_resnet26rpt_256", builder="LambdaResNet26RPT256", blocks=(2, 2, 2, 2),
        lambda_blocks=((), (), (1,), (0, 1)),
        **{**_TIMM, "lambda_spec": LambdaSpec(position="relative", pool_size=2)}),
})

# Overrides accepted by the builders: Architecture fields, LambdaSpec fields, and `layout`.
ARCHITECTURE_OVERRIDES = ("stem", "stem_width", "shortcut", "activation", "se_ratio",
                          "se_in_lambda_blocks", "drop_rate", "drop_path_rate")
LAMBDA_OVERRIDES = tuple(f.name for f in dataclasses.fields(LambdaSpec))
