"""The entry points of the builders and the command line: `validate_weights` (before a model is
built), `load_weights` (after) and `convert_timm`, whose argument checks (`check_timm_file`,
`resolve_timm_arch`) the command line's `convert` runs too, naming its own arguments."""

import os

from lambda_keras import models, utils
from lambda_keras.presets import IMAGENET_PRESETS, PRESETS, preset_for, resolve_model_name
from lambda_keras.weights.download import load_preset
from lambda_keras.weights.strict import (
    assign_strict,
    check_finite,
    load_keras_file,
    load_timm_file,
)
from lambda_keras.weights.timm_format import (
    CLASSIFIER_KERNEL,
    SAFETENSORS_SUFFIX,
    infer_timm_arch,
    read_safetensors,
    timm_to_keras,
)

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle")
KERAS_WEIGHTS_SUFFIX = ".weights.h5"


def check_file_kind(path, arg="weights"):
    """Raise ValueError unless `path` names a safetensors or Keras weights file that exists.

    `arg` is the argument the messages name.
    """
    lowered = path.lower()
    if lowered.endswith(PICKLE_SUFFIXES):
        raise ValueError(
            "Pickle checkpoints are refused (loading one can run arbitrary code). Use the "
            "checkpoint's .safetensors file instead (timm models on the Hugging Face hub ship "
            "model.safetensors), or convert it where you trust it: `safetensors.torch.save_file("
            "torch.load(path, weights_only=True), 'model.safetensors')`. "
            f"Received: {arg}={path!r}")
    if not lowered.endswith((SAFETENSORS_SUFFIX, KERAS_WEIGHTS_SUFFIX)):
        raise ValueError(
            f"`{arg}` must be None, 'imagenet', a preset name "
            f"{tuple(PRESETS)}, or the path to a {SAFETENSORS_SUFFIX} (timm) or "
            f"{KERAS_WEIGHTS_SUFFIX} (Keras) file. Received: {arg}={path!r}")
    if lowered.endswith(KERAS_WEIGHTS_SUFFIX) and not path.endswith(KERAS_WEIGHTS_SUFFIX):
        raise ValueError(f"Keras reads weights files only under the lower-case suffix "
                         f"{KERAS_WEIGHTS_SUFFIX}; rename the file. Received: {arg}={path!r}")
    if not os.path.exists(path):
        raise ValueError(f"The weights file that `{arg}` names does not exist. "
                         f"Received: {arg}={path!r}")
    check_not_special(path, arg)


def check_not_special(path, arg):
    """Raise ValueError if `path` is a directory, device, pipe or socket (a missing path is
    fine); `arg` is the argument the messages name."""
    if os.path.isdir(path):
        raise ValueError(f"`{arg}` is a directory, not a weights file. Received: {arg}={path!r}")
    if os.path.exists(path) and not os.path.isfile(path):
        raise ValueError(f"`{arg}` is not a regular file (a device, pipe or socket); pass a "
                         f"weights file. Received: {arg}={path!r}")


def check_timm_file(path, arg="src"):
    """Raise ValueError unless `path` names a timm `.safetensors` file that exists.

    A pickle checkpoint gets `check_file_kind`'s refusal (why, and how to convert it); `arg` is
    the argument the messages name (`convert_timm`'s `src`, the command line's too).
    """
    if not path.lower().endswith((SAFETENSORS_SUFFIX,) + PICKLE_SUFFIXES):
        raise ValueError(f"`{arg}` must be a timm {SAFETENSORS_SUFFIX} file. "
                         f"Received: {arg}={path!r}")
    check_file_kind(path, arg)


def resolve_timm_arch(name, arg="arch_name"):
    """The architecture (IMAGENET_PRESETS key) of a model name with timm weights.

    `name` may be the architecture, its builder or a preset name; `arg` is the argument the
    message names (`convert_timm`'s `arch_name`, the command line's `--model`).

    Raises:
        ValueError: `name` names no model with timm weights.
    """
    try:
        arch = resolve_model_name(name).arch
    except (TypeError, ValueError):
        arch = None
    if arch not in IMAGENET_PRESETS:
        raise ValueError(f"`{arg}` must be one of {tuple(IMAGENET_PRESETS)} (or their builder or "
                         f"preset names): the models with timm weights. Received: {arg}={name!r}")
    return arch


def validate_weights(weights, arch_name, arg="weights"):
    """Check `weights` for the builder of `arch_name` before any layer is built; `arg` is how
    the messages name `weights` (the command line's `--weights`).

    Every `include_top` and `classes` may go with pretrained weights, so they are not checked
    here: everything but the classifier is loaded when the checkpoint's does not fit (the rule is
    in strict.py; a model of the default classes must take the checkpoint's).
    """
    if weights is None:
        return
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str):
        raise TypeError(f"`{arg}` must be None, 'imagenet' or a file path. "
                        f"Received: {arg}={weights!r} of type {type(weights).__name__}")
    if weights == "imagenet" or weights in PRESETS:
        preset_for(weights, arch_name, arg)
        return
    check_file_kind(weights, arg)


def load_weights(model, weights, arch_name):
    """Load `weights` (see validate_weights) into `model`, built for `arch_name`; returns model."""
    if weights is None:
        return model
    validate_weights(weights, arch_name)
    weights = os.fspath(weights)
    if weights == "imagenet" or weights in PRESETS:
        load_preset(model, preset_for(weights, arch_name))
    elif weights.lower().endswith(SAFETENSORS_SUFFIX):
        load_timm_file(model, weights)
    else:
        load_keras_file(model, weights)
    return model


def convert_timm(src, dst, arch_name=None, *, arch_arg="arch_name"):
    """Converts a timm `.safetensors` checkpoint to a Keras `.weights.h5` file.

    Builds the matching lambda_keras model (the checkpoint's number of classes, headless if it
    has no classifier), loads the tensors strictly (every tensor used, every weight set) and
    saves its weights atomically: `dst` is written whole or not at all.

    Args:
        src: path of the timm `model.safetensors` file (pickle checkpoints are refused).
        dst: path of the Keras weights file to write; must end with `.weights.h5`.
        arch_name: the model the checkpoint is for (an architecture with timm weights, its
            builder or preset name); default: the one its tensors reveal.
        arch_arg: how the messages name `arch_name` (the command line's `--model`).

    Returns:
        `dst`.

    Raises:
        TypeError: `src` or `dst` is not a path (a str or os.PathLike).
        ValueError: `dst` does not end with `.weights.h5` or is a directory; `src` is missing,
            not a `.safetensors` file, unreadable or holds non-finite tensors; `arch_name`
            names no model with timm weights (or, without it, the tensors match none); the
            tensors do not fit the model. Nothing is written then.

    Example:

    ```python
    convert_timm("model.safetensors", "lambda_resnet26t.weights.h5")
    # -> 'lambda_resnet26t.weights.h5'
    ```
    """
    src, dst = _path("src", src), _path("dst", dst)
    if not dst.endswith(KERAS_WEIGHTS_SUFFIX):
        raise ValueError(f"`dst` must end with {KERAS_WEIGHTS_SUFFIX}. Received: dst={dst!r}")
    check_not_special(dst, "dst")  # before the conversion, not at the final rename
    check_timm_file(src, "src")
    state = read_safetensors(src, hint="Pass the model.safetensors file of a timm checkpoint "
                                       "as `src` (a Keras .weights.h5 file needs no conversion).")
    check_finite(state, src, outcome=f"Nothing was written to {dst!r}.")
    arch = (infer_timm_arch(state, arch_arg) if arch_name is None
            else resolve_timm_arch(arch_name, arch_arg))
    head = state.get(CLASSIFIER_KERNEL)
    model = models.build_lambda_resnet(
        arch, include_top=head is not None, weights=None,
        classes=1000 if head is None else int(head.shape[0]))
    converted, unconverted = timm_to_keras(state)
    assign_strict(model, converted, src, unconverted)
    utils.atomic_write(dst, model.save_weights)  # never a half-written dst
    return dst


def _path(arg, value):
    """`value` (a str or os.PathLike) as a str; TypeError naming `arg` otherwise."""
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(path, str):
        raise TypeError(f"`{arg}` must be a file path (a str or os.PathLike). "
                        f"Received: {arg}={value!r} of type {type(value).__name__}")
    return path
