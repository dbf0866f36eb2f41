"""LambdaResNet builders with the keras.applications signature, over the table in architectures.py.

One generic builder (`build_lambda_resnet`) reads an `Architecture` row, applies overrides and builds
a functional `keras.Model`; the public `LambdaResNet*` functions are thin wrappers. Every layer has a
deterministic hierarchical name (`stage3_block2_lambda`, `stage3_block2_conv1_bn`), which is what
weights.py maps foreign checkpoints onto.

`layout` (paper Table 5 notation) picks lambda placement without new code: "CCLL" (one letter per
stage c2..c5; L = every block of the stage is a lambda block) or a tuple of per-stage lambda counts,
spread evenly as for the paper family (architectures.spread_evenly).
`features=True` (with include_top=False) returns the c2..c5 maps (strides 4, 8, 16, 32) as a dict,
e.g. for a Mask R-CNN / FPN backbone as in the paper's COCO experiments.
"""

import dataclasses
import sys

import keras

from lambda_keras import architectures, blocks
from lambda_keras import weights as weights_lib

MIN_INPUT_SIZE = 32  # the network downsamples by 32
POOLINGS = (None, "avg", "max")
# Keras walks functional graphs recursively; LambdaResNet-420 is ~2000 layers deep.
RECURSION_LIMIT = 20000


def _check_layout(layout, arch):
    """Layout string/tuple -> lambda block indices per stage."""
    if isinstance(layout, str):
        if len(layout) != 4 or set(layout.upper()) - set("CL"):
            raise ValueError(
                "`layout` must be 4 letters over {C, L} (one per stage c2..c5) or 4 lambda-block "
                f"counts. Received: layout={layout!r}")
        counts = tuple(d if c == "L" else 0 for c, d in zip(layout.upper(), arch.blocks))
    else:
        counts = tuple(layout) if isinstance(layout, (tuple, list)) else None
        if (counts is None or len(counts) != 4
                or any(not isinstance(c, int) or not 0 <= c <= d for c, d in zip(counts, arch.blocks))):
            raise ValueError(
                "`layout` must be 4 letters over {C, L} or a tuple of 4 lambda-block counts, each "
                f"between 0 and the stage depth {arch.blocks}. Received: layout={layout!r}")
    return architectures.lambda_blocks_from_counts(counts, arch.blocks)


def resolve_architecture(arch_name, **overrides):
    """The table row `arch_name` with overrides applied (see architectures.*_OVERRIDES)."""
    if arch_name not in architectures.ARCHITECTURES:
        raise ValueError(f"Unknown architecture. Received: arch_name={arch_name!r}; valid: "
                         f"{sorted(architectures.ARCHITECTURES)}")
    arch = architectures.ARCHITECTURES[arch_name]
    valid = ("layout",) + architectures.ARCHITECTURE_OVERRIDES + architectures.LAMBDA_OVERRIDES
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"Unknown architecture override(s) {unknown}. Valid overrides: {valid}")
    if "stem" in overrides and overrides["stem"] not in blocks.STEMS:
        raise ValueError(f"`stem` must be one of {tuple(blocks.STEMS)}. "
                         f"Received: stem={overrides['stem']!r}")
    if "shortcut" in overrides and overrides["shortcut"] not in ("avg", "conv"):
        raise ValueError(f"`shortcut` must be 'avg' or 'conv'. Received: shortcut={overrides['shortcut']!r}")
    for rate in ("se_ratio", "drop_rate", "drop_path_rate"):
        if rate in overrides and not 0.0 <= overrides[rate] < 1.0:
            raise ValueError(f"`{rate}` must be in [0, 1). Received: {rate}={overrides[rate]!r}")
    lambda_overrides = {k: overrides.pop(k) for k in architectures.LAMBDA_OVERRIDES if k in overrides}
    if "layout" in overrides:
        overrides["lambda_blocks"] = _check_layout(overrides.pop("layout"), arch)
    spec = dataclasses.replace(arch.lambda_spec, **lambda_overrides)
    return dataclasses.replace(arch, lambda_spec=spec, **overrides)


def _input_shape(input_shape, arch, include_top, weights):
    static_needed = arch.lambda_spec.position in ("relative", "global") and any(arch.lambda_blocks)
    if input_shape is None:
        size = arch.image_size if (include_top or static_needed) else None
        return (size, size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels). "
                         f"Received: input_shape={input_shape}")
    if weights is not None and input_shape[-1] != 3:
        raise ValueError("Pretrained weights need 3 input channels. "
                         f"Received: input_shape={input_shape}")
    if any(s is not None and s < MIN_INPUT_SIZE for s in input_shape[:2]):
        raise ValueError(f"`input_shape` must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} (the "
                         f"network downsamples by 32). Received: input_shape={input_shape}")
    if static_needed and None in input_shape[:2]:
        raise ValueError(
            f'`position="{arch.lambda_spec.position}"` needs a static input size (its embeddings '
            f"are made for one feature-map size). Received: input_shape={input_shape}")
    return input_shape


def build_lambda_resnet(arch_name, include_top=True, weights=None, input_tensor=None,
                        input_shape=None, pooling=None, classes=1000,
                        classifier_activation="softmax", name=None, features=False, **overrides):
    """Builds the LambdaResNet `arch_name` of architectures.ARCHITECTURES (keras.applications API)."""
    arch = resolve_architecture(arch_name, **overrides)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    if not isinstance(classes, int) or classes <= 0:
        raise ValueError(f"`classes` must be a positive integer. Received: classes={classes!r}")
    if features and include_top:
        raise ValueError("`features=True` returns the c2..c5 maps and needs include_top=False. "
                         f"Received: include_top={include_top!r}")
    if weights is not None:
        weights_lib.validate_weights(weights, arch.name, include_top=include_top, classes=classes)
    if input_tensor is not None:
        if len(input_tensor.shape) != 4:
            raise ValueError("`input_tensor` must be a batch of images (rank 4). "
                             f"Received: input_tensor.shape={tuple(input_tensor.shape)}")
        shape = _input_shape(tuple(input_tensor.shape[1:]), arch, include_top, weights)
        inputs = input_tensor
    else:
        shape = _input_shape(input_shape, arch, include_top, weights)
        inputs = keras.Input(shape, name="images")

    lambda_kwargs = dataclasses.asdict(arch.lambda_spec)
    x = blocks.stem(inputs, arch.stem, arch.stem_width, arch.activation)
    stage_outputs = {}
    for stage, (depth, width, stride, lambda_idx) in enumerate(zip(
            arch.blocks, architectures.STAGE_WIDTHS, architectures.STAGE_STRIDES,
            arch.lambda_blocks)):
        # NOTE: stochastic depth grows per stage, rate * (stage + 2) / 5, as in ResNet-RS.
        drop_path = arch.drop_path_rate * (stage + 2) / 5
        for block in range(depth):
            x = blocks.bottleneck(
                x, width, stride if block == 0 else 1, f"stage{stage + 1}_block{block + 1}",
                use_lambda=block in lambda_idx, lambda_kwargs=lambda_kwargs,
                activation=arch.activation, shortcut_kind=arch.shortcut,
                se_ratio=arch.se_ratio, drop_path_rate=drop_path)
        stage_outputs[f"c{stage + 2}"] = x

    if features:
        outputs = stage_outputs
    elif include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if arch.drop_rate:
            x = keras.layers.Dropout(arch.drop_rate, name="head_dropout")(x)
        # The classifier runs in float32 under mixed precision (stable softmax / logits).
        outputs = keras.layers.Dense(classes, activation=classifier_activation, dtype="float32",
                                     name="predictions")(x)
    elif pooling == "avg":
        outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        outputs = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    else:
        outputs = x

    if input_tensor is not None:
        # A single source input is passed bare: a one-element list would make Keras warn that
        # the structure of the inputs differs on every call with a plain tensor.
        sources = keras.utils.get_source_inputs(input_tensor)
        inputs = sources[0] if len(sources) == 1 else sources
    model = keras.Model(inputs, outputs, name=name or arch.name)
    if weights is not None:
        weights_lib.load_weights(model, weights, arch.name)
    return model


def _builder(arch_name, default_weights=None):
    arch = architectures.ARCHITECTURES[arch_name]

    def builder(include_top=True, weights=default_weights, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None, **overrides):
        return build_lambda_resnet(arch_name, include_top=include_top, weights=weights,
                                   input_tensor=input_tensor, input_shape=input_shape,
                                   pooling=pooling, classes=classes,
                                   classifier_activation=classifier_activation, name=name,
                                   **overrides)

    lambda_count = [len(idx) for idx in arch.lambda_blocks]
    builder.__doc__ = (
        f"Instantiates {arch_name}: blocks per stage {arch.blocks}, lambda blocks per stage "
        f"{tuple(lambda_count)}, {arch.stem} stem, default image size {arch.image_size}.\n\n"
        "Args follow keras.applications: include_top, weights (None, 'imagenet' or a file path), "
        "input_tensor, input_shape, pooling (None/'avg'/'max'), classes, classifier_activation, "
        "name. `features=True` (with include_top=False) returns {'c2'..'c5'}. Architecture "
        "overrides: layout, stem, se_ratio, drop_rate, drop_path_rate, key_dim, num_heads, "
        "intra_depth, receptive_field, position, ... (see architectures.py).")
    return builder


LambdaResNet50 = _builder("lambda_resnet50")
LambdaResNet101 = _builder("lambda_resnet101")
LambdaResNet152 = _builder("lambda_resnet152")
LambdaResNet200 = _builder("lambda_resnet200")
LambdaResNet270 = _builder("lambda_resnet270")
LambdaResNet350 = _builder("lambda_resnet350")
LambdaResNet420 = _builder("lambda_resnet420")
LambdaResNet26T = _builder("lambda_resnet26t", default_weights="imagenet")
LambdaResNet50TS = _builder("lambda_resnet50ts", default_weights="imagenet")
LambdaResNet26RPT256 = _builder("lambda_resnet26rpt_256", default_weights="imagenet")

BUILDERS = {
    "lambda_resnet50": LambdaResNet50, "lambda_resnet101": LambdaResNet101,
    "lambda_resnet152": LambdaResNet152, "lambda_resnet200": LambdaResNet200,
    "lambda_resnet270": LambdaResNet270, "lambda_resnet350": LambdaResNet350,
    "lambda_resnet420": LambdaResNet420, "lambda_resnet26t": LambdaResNet26T,
    "lambda_resnet50ts": LambdaResNet50TS, "lambda_resnet26rpt_256": LambdaResNet26RPT256,
}
