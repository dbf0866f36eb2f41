"""The model side of a run: build or check it, choose trainable parts, compile it.

- `build_model`: a zoo builder name, a `.keras` file or a callable -> keras.Model (call it in the
  strategy's scope and dtype policy, `utils.dtype_policy`).
- `default_image_size`, `preprocessing_for`: from the model, its weights preset or its
  architecture.
- `check_model`: a keras.Model passed in fits the data and the strategy; `check_precision`: any
  model computes in the precision asked for (its layers' policies, `utils.model_precision`);
  `resolve_weights`: "default" -> the name's weights; `weights` only with models built here.
- `set_trainable`: classifier-only phases, frozen BN, synchronized BN.
- `compile_model`: loss (label smoothing), top-1/top-5 metrics, XLA, steps per execution.

Model names are resolved in one place, `zoo_builder` (models.BUILDERS).
"""

import dataclasses
import os

import keras
import tensorflow as tf

from lambda_keras import models, presets, utils, weights as weights_lib
from lambda_keras.models import CLASSIFIER, outputs_logits  # CLASSIFIER: re-exported

TOP_K = 5
# `weights=` of train() and evaluate(): a model name's own default weights (see resolve_weights).
DEFAULT_WEIGHTS = "default"


def _resolve(name):
    """models.resolve_model(name) (registry key, builder or preset name), or None for a .keras
    path or an unknown name."""
    try:
        return models.resolve_model(name)
    except (TypeError, ValueError):
        return None


def zoo_builder(name):
    """(registry key, builder) of any model name, or (None, None)."""
    resolved = _resolve(name)
    return (None, None) if resolved is None else (resolved.arch, models.BUILDERS[resolved.arch])


def default_image_size(model, weights):
    """Image size when neither the recipe nor the caller gives one: the model's input, the
    weights' preset, or the architecture's (architectures.py)."""
    from lambda_keras import architectures

    if isinstance(model, keras.Model):
        size = model.input_shape[1]
        return size or weights_lib.DEFAULT_PREPROCESSING.input_size[0]
    arch, _ = zoo_builder(model) if isinstance(model, str) else (None, None)
    if arch is None:
        return weights_lib.DEFAULT_PREPROCESSING.input_size[0]
    if weights is not None and (weights == "imagenet" or weights in weights_lib.PRESETS):
        return weights_lib.resolve_preprocessing(
            arch if weights == "imagenet" else weights).input_size[0]
    return architectures.ARCHITECTURES[arch].image_size


def preprocessing_for(model, weights, image_size):
    """How a run prepares `model`'s images at `image_size`: a `.keras` file's recorded
    preprocessing (`presets.preprocessing_beside`), the preset's of ImageNet weights, else
    DEFAULT_PREPROCESSING."""
    prep = weights_lib.DEFAULT_PREPROCESSING
    if is_model_file(model):
        prep = presets.preprocessing_beside(model)
    elif isinstance(weights, str) and (weights == "imagenet" or weights in weights_lib.PRESETS):
        arch = zoo_builder(model)[0] if isinstance(model, str) else None
        prep = weights_lib.resolve_preprocessing(weights if weights != "imagenet" else arch)
    return dataclasses.replace(prep, input_size=(image_size, image_size))


def build_model(model, *, image_size, classes, weights=None, recipe=None):
    """The model a run trains, built inside the caller's strategy scope and dtype policy.

    Args:
        model: a builder name ("lambda_resnet50" or "LambdaResNet50"), a `.keras` file (loaded
            as saved: `image_size`, `classes`, `weights` and `recipe` do not apply), or a
            callable `f(input_shape=, classes=, [weights=], [drop_rate=], [drop_path_rate=])`
            returning a keras.Model.
        image_size: the input's height and width (square RGB images).
        classes: the classifier's outputs.
        weights: what the builder loads (None: random; a callable gets it only when given).
        recipe: a `Recipe` whose `drop_rate` / `drop_path_rate`, where not None, replace the
            architecture's.

    Returns:
        The keras.Model.

    Raises:
        ValueError: a `.keras` file that does not exist, or a string that is no builder name;
            the builder's own errors (`build_lambda_resnet`: e.g. a bad `image_size` or
            `classes`, `weights` that cannot be loaded); a `.keras` file that Keras cannot load.
        TypeError: `model` is neither a string, a path nor a callable; the builder's own.

    Example:

    >>> model = build_model("lambda_resnet26t", image_size=64, classes=10)
    >>> model.input_shape, model.output_shape
    ((None, 64, 64, 3), (None, 10))
    """
    if is_model_file(model):
        model = os.fspath(model)
        if not os.path.exists(model):
            raise ValueError(f"`model` file does not exist. Received: model={model!r}")
        return models.load_model(model)  # registers the package's layers; safe_mode=True
    if isinstance(model, str):
        arch, builder = zoo_builder(model)
        if builder is None:
            raise ValueError(f"`model` must be a builder name ({sorted(models.BUILDERS)}), a "
                             f".keras file, a callable or a keras.Model. Received: model={model!r}")
        kwargs = {"weights": weights}
    elif callable(model):
        builder, kwargs = model, ({"weights": weights} if weights is not None else {})
    else:
        raise TypeError("`model` must be a builder name, a .keras path, a callable or a "
                        f"keras.Model. Received: model={model!r}")
    for rate in ("drop_rate", "drop_path_rate"):
        if recipe is not None and getattr(recipe, rate) is not None:
            kwargs[rate] = getattr(recipe, rate)
    return builder(input_shape=(image_size, image_size, 3), classes=classes, **kwargs)


def is_model_file(model):
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith(".keras")


def resolve_weights(model, weights):
    """The weights to build `model` with: `weights` as given, or for DEFAULT_WEIGHTS the name's
    default (a preset's own, "imagenet" for a timm variant's builder or key, None for the paper
    family: models.resolve_model, as get_model and the CLI) and None for anything else.

    Raises:
        ValueError: `weights` given for a keras.Model or `.keras` file, which have their own;
            ignoring it would train or evaluate other weights than the ones asked for.
    """
    if weights == DEFAULT_WEIGHTS:
        resolved = _resolve(model) if isinstance(model, str) else None
        return None if resolved is None else resolved.default_weights
    if weights is not None and (isinstance(model, keras.Model) or is_model_file(model)):
        raise ValueError("`weights` loads pretrained weights into a model built from a builder "
                         "name or callable; a keras.Model or .keras file has its own (load others "
                         f"with `model.load_weights` first). Received: weights={weights!r}")
    return weights


def check_image_size(model, image_size, *, model_arg="`model`", size_arg="image_size"):
    """A model of a fixed input size takes images of that size only (None: any size).

    Args:
        model: a keras.Model.
        image_size: the side of the square images the run feeds it.
        model_arg, size_arg: how the message names the model and the size (the CLI's
            `--model FILE` and `--image-size`).

    Raises:
        ValueError: `model` has a fixed input size other than `image_size`.
    """
    fixed = model.input_shape[1:3]
    if None not in fixed and tuple(fixed) != (image_size, image_size):
        raise ValueError(f"{model_arg} takes {fixed[0]}x{fixed[1]} images; the run's image size "
                         f"is {image_size}. Received: {size_arg}={image_size!r}")


def check_model(model, strategy, classes, image_size):
    """A keras.Model passed to train() fits the data and was made in the strategy's scope."""
    check_image_size(model, image_size)
    if model.output_shape[-1] != classes:
        raise ValueError(f"`model` has {model.output_shape[-1]} outputs; the data has {classes} "
                         f"classes. Received: model={model.name!r}")
    if strategy is not tf.distribute.get_strategy() and getattr(
            model, "_distribute_strategy", None) is not strategy:
        raise ValueError("A keras.Model passed to train() under a distribution strategy must be "
                         "created inside `strategy.scope()`; pass a builder name or callable "
                         f"instead. Received: model={model.name!r}")


def check_precision(model, precision, source):
    """The model computes in the requested policy (`precision`; None: whatever it has).

    A model made by a builder name computes in the policy it was built under; a keras.Model, a
    `.keras` file (its layers keep their saved policies) or a callable that sets its layers'
    dtypes may not: training it would silently run another precision than the one asked for.
    """
    actual = utils.model_precision(model)
    if precision is not None and actual != precision:
        raise ValueError(f"`mixed_precision` applies when train() builds the model from a builder "
                         f"name; {source} computes in {actual!r}. To train it in {precision!r}, "
                         f"build it under that policy (`lambda_keras.utils.dtype_policy`) and "
                         f"load its weights; to train it as it is, leave `mixed_precision` out. "
                         f"Received: mixed_precision={precision!r}")


def set_trainable(model, freeze_backbone, freeze_batch_norm, sync_batch_norm):
    """Backbone (everything but the classifier) and BN trainability, and SyncBN."""
    if freeze_backbone and CLASSIFIER not in [layer.name for layer in model.layers]:
        raise ValueError(f"`freeze_backbone_epochs` needs a classifier layer named {CLASSIFIER!r} "
                         f"(models.py). Received: model={model.name!r}")
    for layer in model.layers:
        layer.trainable = not freeze_backbone or layer.name == CLASSIFIER
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = sync_batch_norm
            if freeze_batch_norm:
                layer.trainable = False  # Keras runs frozen BN in inference mode


def compile_model(model, optimizer, *, label_smoothing, jit_compile, steps_per_execution):
    output_dtype = keras.backend.standardize_dtype(model.outputs[0].dtype)
    if output_dtype != "float32":
        raise ValueError("The model's output must be float32 (a float32 classifier, "
                         "`Dense(..., dtype='float32')` as in models.py) so that the softmax, loss "
                         f"and top-k run in full precision. Received: output dtype {output_dtype}")
    classes = model.output_shape[-1]
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing,
                                                  from_logits=outputs_logits(model)),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(k=min(TOP_K, classes),
                                                       name=f"top{TOP_K}_accuracy")],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )


