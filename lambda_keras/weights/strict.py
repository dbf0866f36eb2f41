"""Strict, all-or-nothing loading: every checkpoint tensor used, every model weight set, nothing
non-finite; otherwise a ValueError naming the tensors and an unchanged model."""

import os
import warnings

import numpy as np
import keras

from lambda_keras.models import CLASSIFIER
from lambda_keras.weights.timm_format import read_safetensors, timm_to_keras

MAX_LISTED = 12  # names listed per category in a strict-loading error
# NOTE: Keras 3's save_weights writes a compiled model's optimizer (iteration counter, learning
# rate, slot and EMA variables, a LossScaleOptimizer's inner optimizer) under this top-level
# group, beside the model's "layers" and "vars"; a model built by a builder has no optimizer, so
# load_weights never reads it. Layout as measured on Keras 3.15, not a documented format.
OPTIMIZER_GROUP = "optimizer"


def _listed(names):
    names = sorted(names)
    more = f" ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


def _classifier_mismatch(converted, targets):
    """True when the model has no classifier or one shaped differently from the checkpoint's."""
    model_keys = [k for k in targets if k.startswith(f"{CLASSIFIER}/")]
    if not model_keys:
        return True
    return any(k in converted and tuple(converted[k][0].shape) != tuple(targets[k].shape)
               for k in model_keys)


def strict_problems(model, converted, source, unconverted=()):
    """The strict-loading error message for `model` (see `assign_strict`), or None if it fits."""
    targets = {v.path: v for v in model.weights}
    if _classifier_mismatch(converted, targets):
        converted = {k: v for k, v in converted.items() if not k.startswith(f"{CLASSIFIER}/")}
        targets = {k: v for k, v in targets.items() if not k.startswith(f"{CLASSIFIER}/")}
    missing = [k for k in targets if k not in converted]
    unexpected = list(unconverted) + [
        f"{name} (-> {k})" for k, (_, name, _) in converted.items() if k not in targets]
    mis_shaped = [
        f"{name} {shape} -> {k}: converted {tuple(a.shape)}, model {tuple(targets[k].shape)}"
        for k, (a, name, shape) in converted.items()
        if k in targets and tuple(a.shape) != tuple(targets[k].shape)]
    if not (missing or unexpected or mis_shaped):
        return None
    problems = [
        f"{len(items)} {label}: {_listed(items)}"
        for label, items in (("model weights missing from the checkpoint", missing),
                             ("unexpected checkpoint tensors", unexpected),
                             ("mis-shaped tensors", mis_shaped)) if items]
    return f"Cannot load {source!r} into model {model.name!r}: " + "; ".join(problems) + "."


def assign_strict(model, converted, source, unconverted=()):
    """Assign {weight path: (array, source name, source shape)} to `model`, all or nothing.

    The classifier is skipped when the model has none or a different number of classes.
    Raises ValueError naming every missing, unexpected and mis-shaped tensor; the model is then
    unchanged.
    """
    problems = strict_problems(model, converted, source, unconverted)
    if problems:
        raise ValueError(problems + " The model was left unchanged.")
    targets = {v.path: v for v in model.weights}
    if _classifier_mismatch(converted, targets):
        targets = {k: v for k, v in targets.items() if not k.startswith(f"{CLASSIFIER}/")}
    for key, variable in targets.items():
        variable.assign(converted[key][0].astype(variable.dtype))


def check_finite(state, source):
    """ValueError naming the tensors of {name: array} that hold NaN or infinity."""
    bad = [name for name, array in state.items()
           if np.issubdtype(np.asarray(array).dtype, np.inexact)
           and not np.isfinite(array).all()]
    if bad:
        raise ValueError(f"{source!r} holds non-finite values (NaN or infinity) in {len(bad)} "
                         f"tensors: {_listed(bad)}. The model was left unchanged.")


def load_timm_file(model, path):
    state = read_safetensors(path)
    check_finite(state, path)
    converted, unconverted = timm_to_keras(state)
    assign_strict(model, converted, path, unconverted)


def _keras_load(model, path):
    """model.load_weights, with Keras' "retain freshly-initialised weights" warnings as errors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_weights(path)
    skipped = [str(w.message) for w in caught
               if f"{os.sep}saving{os.sep}" in (w.filename or "")]
    if skipped:
        raise ValueError(f"Keras skipped part of the file: {skipped[0]}")
    check_finite({v.path: v.numpy() for v in model.weights}, path)  # caller restores on error


def _check_h5_dtypes(path):
    """ValueError naming the model datasets of a .weights.h5 file that are not floating point.

    Every weight of a lambda_keras model is a float; Keras would silently cast integers. The
    optimizer's state (`OPTIMIZER_GROUP`, with its integer iteration counter) is not the model's
    and is not checked. A file h5py cannot open is left to Keras' own error.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError:
        return
    bad = []
    with f:
        f.visititems(lambda name, obj: bad.append(f"{name} ({obj.dtype})")
                     if isinstance(obj, h5py.Dataset) and obj.dtype.kind != "f"
                     and name.split("/")[0] != OPTIMIZER_GROUP else None)
    if bad:
        raise ValueError(f"{path!r} holds {len(bad)} non-floating-point weight tensors: "
                         f"{_listed(bad)}. The model was left unchanged.")


def load_keras_file(model, path):
    """Keras .weights.h5 via model.load_weights, restored on failure (no partial model).

    A file whose classifier does not fit (or a headless file) loads into the backbone only when
    the model's classifier cannot take it, with a warning; the classifier then keeps its values.
    The optimizer state in the file of a compiled model is skipped (`OPTIMIZER_GROUP`); a
    compiled `model` is loaded through an uncompiled view of its layers, so that its own
    optimizer is left alone too.
    """
    _check_h5_dtypes(path)
    if getattr(model, "optimizer", None) is not None and getattr(model, "inputs", None):
        model = keras.Model(model.inputs, model.outputs, name=model.name)  # same variables
    snapshot = [v.numpy() for v in model.weights]

    def restore():
        for variable, value in zip(model.weights, snapshot):
            variable.assign(value)

    try:
        _keras_load(model, path)
        return
    except Exception as error:  # noqa: BLE001 - keras raises ValueError/KeyError/OSError
        restore()
        first_error = error
    try:
        classifier = model.get_layer(CLASSIFIER)
    except ValueError:
        classifier = None
    if classifier is not None:
        backbone = keras.Model(model.inputs, classifier.input)
        try:
            _keras_load(backbone, path)
            warnings.warn(
                f"{path!r}: the classifier did not fit the model's {CLASSIFIER!r} layer; every "
                "other weight was loaded and the classifier kept its initial values.",
                stacklevel=3)
            return
        except Exception:  # noqa: BLE001
            restore()
    raise ValueError(f"Cannot load {path!r} into model {model.name!r}: {first_error} "
                     "The model was left unchanged.") from first_error
