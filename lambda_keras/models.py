"""LambdaResNet builders with the keras.applications signature, over the table in architectures.py.

One generic builder (`build_lambda_resnet`) reads an `Architecture` row, applies overrides and
builds a functional `keras.Model`; the public `LambdaResNet*` functions are thin wrappers, one per
row, with their own names and docstrings (like keras.applications.ResNet50). Every layer has a
deterministic hierarchical name (`stage3_block2_lambda`, `stage3_block2_conv1_bn`), which is what
lambda_keras.weights maps foreign checkpoints onto.

Model names: `resolve_model` (presets.resolve_model_name, the one resolver of the package and the
CLI) accepts registry keys, builder names and preset names; `get_model(name)` builds what a name
means with that name's default weights.

`layout` picks lambda placement without new code (architectures.lambda_blocks_from_layout):
"CCLL" (paper Table 5 notation: one letter per stage c2..c5, L = every block is a lambda block),
per-stage lambda-block counts spread evenly as for the paper family ((0, 0, 6, 3)), or explicit
0-based block indices per stage (((), (), (5, 11, 17), "all")).
`features=True` (with include_top=False) returns the c2..c5 maps (strides 4, 8, 16, 32) as a dict,
e.g. for a Mask R-CNN / FPN backbone as in the paper's COCO experiments.

Input sizes: every static size >= 32 builds; each stride-2 step keeps ceil(n / 2) (blocks.py),
so the c5 map is ceil(size / 32) and the classifier's output is (batch, classes). A dynamic size
(None) builds only where the lambda layers use local position embeddings (`position="local"`,
the lambda convolution) or none: `position="relative"` or `"global"` (LambdaResNet26RPT256) makes
embeddings for one map size and needs a static input size (the architecture's image size by
default).
Residual additions never broadcast (blocks.ResidualAdd). Only "channels_last" is supported.

Weights: this module imports lambda_keras.weights (download, conversion, strict loading) only when
a builder is given `weights`; the weights package sits above models.py.
"""

import dataclasses
import numbers
import sys

import keras

from lambda_keras import architectures, blocks, utils
from lambda_keras.layers.lambda_layer import LambdaLayer, resolve_position
from lambda_keras.layers.shared import MAX_DIM
from lambda_keras.presets import IMAGENET_PRESETS, PRESETS, model_names
from lambda_keras.presets import resolve_model_name as resolve_model

MIN_INPUT_SIZE = 32  # the network downsamples by 32
POOLINGS = (None, "avg", "max")
SHORTCUTS = ("avg", "conv")
CLASSIFIER = "predictions"  # name of the classifier layer: weights, training and export find it so
# Keras walks functional graphs recursively; LambdaResNet-420 is ~2000 layers deep.
RECURSION_LIMIT = 20000

__all__ = ["build_lambda_resnet", "get_model", "resolve_model", "resolve_architecture",
           "model_names", "BUILDERS"]


def outputs_logits(model):
    """Whether `model` outputs logits (True) or probabilities (False), from its last layer.

    The one rule of the package (training picks `from_logits`, export applies softmax in-graph):
    a softmax layer, activation or `keras.ops.softmax` call gives probabilities, a linear layer
    (no activation) logits. The last layer is the operation that makes the (first) output, where
    the model records it (functional and Sequential models), else `model.layers[-1]`.

    Raises:
        ValueError: the last layer applies another activation (sigmoid, relu, ...).
    """
    history = getattr((getattr(model, "outputs", None) or [None])[0], "_keras_history", None)
    last = history[0] if history else model.layers[-1]
    if type(last).__name__ == "Softmax":  # keras.layers.Softmax, or the op of ops.softmax
        return False
    name = getattr(getattr(last, "activation", None), "__name__", None)
    if name in ("softmax", "linear"):
        return name == "linear"
    raise ValueError(
        "A classifier's last layer must apply softmax or no activation (logits). Received: last "
        f"layer {last.name!r} ({type(last).__name__}) with activation={name!r}")


def resolve_architecture(arch_name, **overrides):
    """The architecture (table row) of a model name with overrides applied.

    Args:
        arch_name: any model name: registry key, builder or preset name (see `resolve_model`).
        **overrides: `layout` (architectures.lambda_blocks_from_layout), the Architecture fields
            of architectures.ARCHITECTURE_OVERRIDES (`stem`, `stem_width`, `shortcut`,
            `activation`, `se_ratio`, `se_in_lambda_blocks`, `drop_rate`, `drop_path_rate`)
            and the LambdaSpec fields (architectures.LAMBDA_OVERRIDES: `key_dim`, `num_heads`,
            ...; checked here by LambdaLayer's own constructor, also where `layout` places no
            lambda layer).

    Returns:
        An `architectures.Architecture` (a frozen dataclass).

    Raises:
        TypeError: `arch_name` is not a string, or an override is of the wrong type.
        ValueError: an unknown model name or override, an override value out of range, or a
            bad `layout`.

    Example:
    >>> resolve_architecture("LambdaResNet50", layout="CCLL").lambda_blocks
    ((), (), (0, 1, 2, 3, 4, 5), (0, 1, 2))
    """
    arch = architectures.ARCHITECTURES[resolve_model(arch_name).arch]
    valid = ("layout",) + architectures.ARCHITECTURE_OVERRIDES + architectures.LAMBDA_OVERRIDES
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"Unknown architecture override(s) {unknown}. Valid overrides: {valid}")
    if "stem" in overrides:
        utils.check_choice("stem", overrides["stem"], tuple(blocks.STEMS))
    if "shortcut" in overrides:
        utils.check_choice("shortcut", overrides["shortcut"], SHORTCUTS)
    if "stem_width" in overrides:  # the lambda layer's bound on its widths
        utils.check_int("stem_width", overrides["stem_width"], low=8, high=MAX_DIM)
    if "activation" in overrides:
        _check_activation("activation", overrides["activation"])
    if "se_in_lambda_blocks" in overrides:
        utils.check_bool("se_in_lambda_blocks", overrides["se_in_lambda_blocks"])
    for rate in ("se_ratio", "drop_rate", "drop_path_rate"):
        if rate in overrides:
            overrides[rate] = utils.check_number(rate, overrides[rate], low=0.0, high=1.0,
                                                 high_open=True)
    lambda_overrides = {k: overrides.pop(k) for k in architectures.LAMBDA_OVERRIDES
                        if k in overrides}
    if "position" in lambda_overrides:  # the former name "conv" warns here, at the caller
        lambda_overrides["position"] = resolve_position(lambda_overrides["position"])
    if lambda_overrides.get("position", "") is None:
        # timm's bias belongs to its position lambdas: without positions there is none (a bias
        # asked for explicitly is refused by LambdaLayer).
        lambda_overrides.setdefault("position_bias", False)
    if "layout" in overrides:
        overrides["lambda_blocks"] = architectures.lambda_blocks_from_layout(
            overrides.pop("layout"), arch.blocks)
    spec = dataclasses.replace(arch.lambda_spec, **lambda_overrides)
    if lambda_overrides:  # the layer's checks, built or not (a name: no auto-name counter used)
        LambdaLayer(name="lambda_overrides", **dataclasses.asdict(spec))
    return dataclasses.replace(arch, lambda_spec=spec, **overrides)


def _check_activation(name, value):
    """`value` as Keras reads an activation (a name, a callable or None), else ValueError
    naming the argument `name` and `value` (Keras' own error names neither)."""
    try:
        return keras.activations.get(value)
    except Exception as error:  # noqa: BLE001 - Keras raises ValueError or TypeError
        raise ValueError(f"`{name}` must be a Keras activation: a name such as 'relu', a "
                         f"callable or None. Received: {name}={value!r}") from error


def _check_data_format(builder):
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            f"{builder} does not support the `channels_first` image data format (the lambda "
            "layer, the ported timm weights and the export paths are channels-last). Switch to "
            "`channels_last` with keras.config.set_image_data_format('channels_last') or in "
            "~/.keras/keras.json. Received: "
            f"keras.config.image_data_format()={keras.config.image_data_format()!r}")


def _input_shape(input_shape, arch, include_top, weights):
    static_needed = arch.lambda_spec.position in ("relative", "global") and any(arch.lambda_blocks)
    if input_shape is None:
        size = arch.image_size if (include_top or static_needed) else None
        return (size, size, 3)
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3 or any(
            s is not None and (isinstance(s, bool) or not isinstance(s, numbers.Integral))
            for s in input_shape):
        raise ValueError(f"`input_shape` must be (height, width, channels) of ints or None. "
                         f"Received: input_shape={input_shape!r}")
    input_shape = tuple(None if s is None else int(s) for s in input_shape)
    if input_shape[-1] is None or input_shape[-1] < 1:
        raise ValueError("`input_shape` must give a positive number of channels (channels last). "
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
    """Instantiates the LambdaResNet `arch_name` (keras.applications API).

    The generic builder behind every public `LambdaResNet*` function, whose docstrings describe
    each model. Unlike them, `weights` defaults to None whatever the name (`get_model` gives a
    name's default weights).

    Args:
        arch_name: any model name: registry key ("lambda_resnet50"), builder
            ("LambdaResNet50") or preset name ("lambda_resnet26t.c1_in1k"); see `resolve_model`.
        include_top: whether to include the classifier head (global average pooling, dropout
            where the architecture has it, a dense layer named "predictions").
        weights: `None` (random initialization), `"imagenet"` or a preset name (the models with
            timm weights), or the path to a timm `.safetensors` or Keras `.weights.h5` file.
        input_tensor: optional Keras tensor (output of `keras.Input()`) to use as the image
            input.
        input_shape: optional `(height, width, channels)`, channels last, each side at least 32
            or `None` (see the module docstring for dynamic sizes). Defaults to the
            architecture's `(image_size, image_size, 3)` with `include_top=True` or relative /
            global positions, else `(None, None, 3)`.
        pooling: with `include_top=False`: `None` (the 4D c5 map), `"avg"` or `"max"`.
        classes: number of classes of the classifier.
        classifier_activation: activation of the classifier (`"softmax"`, `None` for logits,
            ...); with pretrained weights only `"softmax"` or `None`.
        name: name of the model. Defaults to the registry key.
        features: with `include_top=False` and `pooling=None`, output a dict of the c2..c5 maps
            (strides 4, 8, 16, 32) instead of the c5 map.
        **overrides: architecture overrides (see `resolve_architecture`): `layout`, `stem`,
            `stem_width`, `shortcut`, `activation`, `se_ratio`, `se_in_lambda_blocks`,
            `drop_rate`, `drop_path_rate` and the lambda layer's `key_dim`, `num_heads`,
            `intra_depth`, `position`, `receptive_field`, `pool_size`, `position_bias`,
            `implementation`.

    Returns:
        A `keras.Model`: `(batch, classes)` with the top, `(batch, 2048)` pooled, the c5 map
        `(batch, ceil(H / 32), ceil(W / 32), 2048)`, or the dict of c2..c5 maps (`features`).

    Raises:
        TypeError: an argument of the wrong type (`include_top`, `features`, `classes`,
            `weights`, an override).
        ValueError: an unknown model name or override, a bad value or combination (`pooling`,
            an unknown `classifier_activation` or `activation`, `classifier_activation` with
            pretrained weights, `features` with `include_top` or `pooling`, `input_shape` /
            `input_tensor` (not a Keras tensor), `weights` this model has none of or a
            file of another kind), or the `channels_first` data format, all before the network
            is built; or the weights cannot be loaded (a failed download, a checkpoint that
            does not fit the model).

    Example:
    >>> model = build_lambda_resnet("lambda_resnet50", input_shape=(64, 64, 3), classes=10,
    ...                             layout="CCLL")
    >>> model.output_shape
    (None, 10)
    """
    arch = resolve_architecture(arch_name, **overrides)
    _check_data_format(arch.builder)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    include_top = utils.check_bool("include_top", include_top)
    features = utils.check_bool("features", features)
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    classes = utils.check_int("classes", classes, low=1)
    if features and include_top:
        raise ValueError("`features=True` returns the c2..c5 maps and needs include_top=False. "
                         f"Received: include_top={include_top!r}")
    if features and pooling is not None:
        raise ValueError("`features=True` returns the c2..c5 maps, unpooled. "
                         f"Received: pooling={pooling!r}")
    head = _check_activation("classifier_activation", classifier_activation)
    pretrained_heads = (keras.activations.get("softmax"), keras.activations.get(None))
    if weights is not None and include_top and head not in pretrained_heads:
        # As keras.applications: pretrained classifiers give logits or their softmax.
        raise ValueError("With pretrained weights `classifier_activation` must be None or "
                         f"'softmax'. Received: classifier_activation={classifier_activation!r}")
    if weights is not None:
        from lambda_keras import weights as weights_lib  # above this module; loaded on demand

        weights_lib.validate_weights(weights, arch.name)
    if input_tensor is not None:
        if not keras.backend.is_keras_tensor(input_tensor):
            # NOTE: as keras.applications (keras.Input(tensor=...) refuses all else): ValueError.
            raise ValueError("`input_tensor` must be a Keras tensor (the output of `keras.Input()` "
                             f"or of a layer). Received: input_tensor={input_tensor!r:.100} of "
                             f"type {type(input_tensor).__name__}")
        if len(input_tensor.shape) != 4:
            raise ValueError("`input_tensor` must be a batch of images (rank 4). "
                             f"Received: input_tensor.shape={tuple(input_tensor.shape)}")
        if input_shape is not None and (not isinstance(input_shape, (tuple, list))
                                        or tuple(input_shape) != tuple(input_tensor.shape[1:])):
            raise ValueError("`input_shape` and `input_tensor` disagree (give one). Received: "
                             f"input_shape={input_shape!r}, input_tensor.shape="
                             f"{tuple(input_tensor.shape)}")
        shape = _input_shape(tuple(input_tensor.shape[1:]), arch, include_top, weights)
        inputs = input_tensor
    else:
        shape = _input_shape(input_shape, arch, include_top, weights)
        inputs = keras.Input(shape, name="images")

    lambda_kwargs = dataclasses.asdict(arch.lambda_spec)
    x = blocks.stem(inputs, arch.stem, arch.stem_width, arch.activation)  # [b, H/4, W/4, stem]
    stage_outputs = {}
    for stage, (depth, width, stride, lambda_idx) in enumerate(zip(
            arch.blocks, architectures.STAGE_WIDTHS, architectures.STAGE_STRIDES,
            arch.lambda_blocks)):
        # NOTE: stochastic depth grows per stage, rate * (stage + 2) / 5, as in ResNet-RS.
        drop_path = arch.drop_path_rate * (stage + 2) / 5
        for block in range(depth):
            use_lambda = block in lambda_idx
            x = blocks.bottleneck(
                x, width, stride if block == 0 else 1, f"stage{stage + 1}_block{block + 1}",
                use_lambda=use_lambda, lambda_kwargs=lambda_kwargs,
                activation=arch.activation, shortcut_kind=arch.shortcut,
                se_ratio=0.0 if use_lambda and not arch.se_in_lambda_blocks else arch.se_ratio,
                drop_path_rate=drop_path)
        stage_outputs[f"c{stage + 2}"] = x  # [b, H / 2^(stage+2), W / 2^(stage+2), 4 * width]

    if features:
        outputs = stage_outputs
    elif include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)  # [b, 2048]
        if arch.drop_rate:
            x = keras.layers.Dropout(arch.drop_rate, name="head_dropout")(x)
        # The classifier runs in float32 under mixed precision (stable softmax / logits).
        outputs = keras.layers.Dense(classes, activation=classifier_activation, dtype="float32",
                                     name=CLASSIFIER)(x)  # [b, classes]
    elif pooling == "avg":
        outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)  # [b, 2048]
    elif pooling == "max":
        outputs = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)  # [b, 2048]
    else:
        outputs = x  # [b, ceil(H/32), ceil(W/32), 2048]

    if input_tensor is not None:
        # A single source input is passed bare: a one-element list would make Keras warn that
        # the structure of the inputs differs on every call with a plain tensor.
        sources = keras.utils.get_source_inputs(input_tensor)
        inputs = sources[0] if len(sources) == 1 else sources
    model = keras.Model(inputs, outputs, name=name or arch.name)
    if weights is not None:
        weights_lib.load_weights(model, weights, arch.name)
    return model


def get_model(name, **kwargs):
    """The model a name means, with that name's default weights unless `weights` is given.

    Args:
        name: a registry key ("lambda_resnet26t"), builder name ("LambdaResNet26T") or preset
            name ("lambda_resnet26t.c1_in1k"); see `resolve_model`.
        **kwargs: the builder's arguments (include_top, weights, input_shape, classes, ...).

    Returns:
        A `keras.Model`. Default weights: a preset name loads that preset, a builder or registry
        key uses the builder's default ("imagenet" for the timm variants, None for the paper
        family).

    Raises:
        TypeError: `name` is not a string, or a builder argument of the wrong type.
        ValueError: an unknown model name (the message lists the valid ones), or a bad builder
            argument or override, or weights that cannot be loaded (as `build_lambda_resnet`).

    Example:
    >>> model = get_model("lambda_resnet50", input_shape=(64, 64, 3), classes=10)
    >>> model.name, model.output_shape
    ('lambda_resnet50', (None, 10))
    """
    resolved = resolve_model(name)
    kwargs.setdefault("weights", resolved.default_weights)
    return BUILDERS[resolved.arch](**kwargs)


def load_model(filepath, **kwargs):
    """Loads a `.keras` file holding lambda_keras layers.

    A `train` checkpoint, a saved LambdaResNet or any model using `LambdaLayer`. `import
    lambda_keras` imports no Keras, so Keras knows the package's layers (and the optimizer of
    `train`'s checkpoints, on TensorFlow) only once their modules are loaded; this loads them,
    then calls `keras.saving.load_model`.

    Args:
        filepath: path of the `.keras` file.
        **kwargs: passed to `keras.saving.load_model`: `custom_objects`, `compile`,
            `safe_mode` (default True: no Python lambdas are deserialized).

    Returns:
        The `keras.Model` saved in the file.

    Raises:
        ValueError: as `keras.saving.load_model`, e.g. a missing file or one that is not a
            Keras archive.

    Example:

    ```python
    model = lambda_keras.load_model("runs/digits/checkpoints/best.keras")
    ```
    """
    from lambda_keras import layers  # noqa: F401 (registers LambdaLayer, SequenceLambdaLayer)

    if keras.backend.backend() == "tensorflow":  # training is TensorFlow's (README: Backends)
        from lambda_keras.training import optimizer  # noqa: F401 (registers MomentumL2)
    return keras.saving.load_model(filepath, **kwargs)


# --------------------------------------------------------------------------- public builders
_DOC = """Instantiates the {title} architecture{source}.

{description}

Reference:
- [LambdaNetworks: Modeling Long-Range Interactions Without Attention](
    https://arxiv.org/abs/2102.08602) (Bello, ICLR 2021){timm_reference}

Args:
    include_top: whether to include the classifier head (global average pooling, {dropout}a
        dense layer). Defaults to `True`.
    weights: {weights_doc} Defaults to `{default_weights!r}`.
    input_tensor: optional Keras tensor (output of `keras.Input()`) to use as the image input.
    input_shape: optional `(height, width, channels)`, channels last, {input_shape_doc}
    pooling: with `include_top=False`: `None` (the 4D c5 map), `"avg"` or `"max"` (2D output).
    classes: number of classes of the classifier. Defaults to 1000.
    classifier_activation: activation of the classifier (`"softmax"`, `None` for logits, ...);
        with pretrained weights only `"softmax"` or `None`.
    name: name of the model. Defaults to `"{arch}"`.
    **overrides: `features=True` (with `include_top=False`: a dict of the c2..c5 maps) and
        architecture overrides: `layout` (e.g. `"CCLL"`, `(0, 0, 6, 3)` or
        `((), (), (5, 11, 17), "all")`), `stem`, `stem_width`, `shortcut`, `activation`,
        `se_ratio`, `se_in_lambda_blocks`, `drop_rate`, `drop_path_rate`, and the lambda layer's
        `key_dim`, `num_heads`, `intra_depth`, `position`, `receptive_field`, `pool_size`,
        `position_bias`, `implementation` (architectures.py).

Returns:
    A `keras.Model` taking float32 RGB images normalised with the preprocessing of
    `lambda_keras.preprocess_input(x, "{builder}")`.

Example:
>>> model = lambda_keras.{builder}(weights=None, input_shape=(64, 64, 3), classes=10)
>>> model.output_shape
(None, 10)
"""


def _document(builder):
    """Sets `builder.__doc__` from its architecture row (as keras.applications does)."""
    arch = next(a for a in architectures.ARCHITECTURES.values() if a.builder == builder.__name__)
    lambdas = tuple(len(idx) for idx in arch.lambda_blocks)
    preset = IMAGENET_PRESETS.get(arch.name)
    if preset is None:
        source = " of the LambdaNetworks paper"
        top1 = f" Paper top-1 at {arch.image_size}: {arch.paper_top1}." if arch.paper_top1 else ""
        description = (
            f"ResNet-RS backbone with blocks {arch.blocks} per stage c2..c5 and lambda layers "
            f"in {lambdas} of them (every c5 block, the paper's count in c4). No published "
            f"weights.{top1}")
        weights_doc = ("`None` (random initialization) or the path to a Keras `.weights.h5` "
                       "file\n        (the paper published no weights).")
        timm_reference = ""
    else:
        p = PRESETS[preset]
        source = ", timm-compatible"
        description = (
            f"timm's `{arch.name}`: {arch.stem} stem, blocks {arch.blocks} per stage c2..c5, "
            f"lambda layers in {lambdas} of them ({arch.lambda_spec.position} positions). "
            f"ImageNet weights: preset `{preset}` ({p.top1}% top-1 at {p.top1_size} px "
            "as reported by timm), ported exactly.")
        weights_doc = (f"`None` (random initialization), `\"imagenet\"` (the preset\n        "
                       f"`{preset}`), a preset name, or the path to a timm `.safetensors` or "
                       "Keras\n        `.weights.h5` file.")
        timm_reference = "\n- timm, `timm/models/byoanet.py` (architecture and weights)"
    size = f"`({arch.image_size}, {arch.image_size}, 3)`"
    if arch.lambda_spec.position in ("relative", "global"):  # embeddings made for one map size
        input_shape_doc = (f"each side at least\n        32 (its {arch.lambda_spec.position} "
                           f"positions need a static size). Defaults to {size}.")
    else:
        input_shape_doc = (f"each side at least\n        32 or `None`. Defaults to {size} "
                           "with\n        `include_top=True`, else `(None, None, 3)` (a static "
                           'size with a\n        `position="relative"` or `"global"` override).')
    builder.__doc__ = _DOC.format(
        title=arch.builder, source=source, description=description, timm_reference=timm_reference,
        dropout="dropout, " if arch.drop_rate else "", weights_doc=weights_doc,
        default_weights="imagenet" if preset else None, input_shape_doc=input_shape_doc,
        arch=arch.name, builder=arch.builder)
    return builder


@_document
def LambdaResNet50(include_top=True, weights=None, input_tensor=None, input_shape=None,
                   pooling=None, classes=1000, classifier_activation="softmax", name=None,
                   **overrides):
    return build_lambda_resnet("lambda_resnet50", include_top, weights, input_tensor, input_shape,
                               pooling, classes, classifier_activation, name, **overrides)


@_document
def LambdaResNet101(include_top=True, weights=None, input_tensor=None, input_shape=None,
                    pooling=None, classes=1000, classifier_activation="softmax", name=None,
                    **overrides):
    return build_lambda_resnet("lambda_resnet101", include_top, weights, input_tensor,
                               input_shape, pooling, classes, classifier_activation, name,
                               **overrides)


@_document
def LambdaResNet152(include_top=True, weights=None, input_tensor=None, input_shape=None,
                    pooling=None, classes=1000, classifier_activation="softmax", name=None,
                    **overrides):
    return build_lambda_resnet("lambda_resnet152", include_top, weights, input_tensor,
                               input_shape, pooling, classes, classifier_activation, name,
                               **overrides)


@_document
def LambdaResNet200(include_top=True, weights=None, input_tensor=None, input_shape=None,
                    pooling=None, classes=1000, classifier_activation="softmax", name=None,
                    **overrides):
    return build_lambda_resnet("lambda_resnet200", include_top, weights, input_tensor,
                               input_shape, pooling, classes, classifier_activation, name,
                               **overrides)


@_document
def LambdaResNet270(include_top=True, weights=None, input_tensor=None, input_shape=None,
                    pooling=None, classes=1000, classifier_activation="softmax", name=None,
                    **overrides):
    return build_lambda_resnet("lambda_resnet270", include_top, weights, input_tensor,
                               input_shape, pooling, classes, classifier_activation, name,
                               **overrides)


@_document
def LambdaResNet350(include_top=True, weights=None, input_tensor=None, input_shape=None,
                    pooling=None, classes=1000, classifier_activation="softmax", name=None,
                    **overrides):
    return build_lambda_resnet("lambda_resnet350", include_top, weights, input_tensor,
                               input_shape, pooling, classes, classifier_activation, name,
                               **overrides)


@_document
def LambdaResNet420(include_top=True, weights=None, input_tensor=None, input_shape=None,
                    pooling=None, classes=1000, classifier_activation="softmax", name=None,
                    **overrides):
    return build_lambda_resnet("lambda_resnet420", include_top, weights, input_tensor,
                               input_shape, pooling, classes, classifier_activation, name,
                               **overrides)


@_document
def LambdaResNet26T(include_top=True, weights="imagenet", input_tensor=None, input_shape=None,
                    pooling=None, classes=1000, classifier_activation="softmax", name=None,
                    **overrides):
    return build_lambda_resnet("lambda_resnet26t", include_top, weights, input_tensor,
                               input_shape, pooling, classes, classifier_activation, name,
                               **overrides)


@_document
def LambdaResNet50TS(include_top=True, weights="imagenet", input_tensor=None, input_shape=None,
                     pooling=None, classes=1000, classifier_activation="softmax", name=None,
                     **overrides):
    return build_lambda_resnet("lambda_resnet50ts", include_top, weights, input_tensor,
                               input_shape, pooling, classes, classifier_activation, name,
                               **overrides)


@_document
def LambdaResNet26RPT256(include_top=True, weights="imagenet", input_tensor=None,
                         input_shape=None, pooling=None, classes=1000,
                         classifier_activation="softmax", name=None, **overrides):
    return build_lambda_resnet("lambda_resnet26rpt_256", include_top, weights, input_tensor,
                               input_shape, pooling, classes, classifier_activation, name,
                               **overrides)


# Registry key -> public builder (every row of architectures.ARCHITECTURES has one).
BUILDERS = {arch.name: globals()[arch.builder] for arch in architectures.ARCHITECTURES.values()}
