"""Strict, all-or-nothing loading: every checkpoint tensor used, every model weight set, nothing
non-finite; otherwise a ValueError naming the tensors and an unchanged model.

The classifier rule (`_matched`, the same for safetensors and `.weights.h5` files): a model
without a classifier (include_top=False) loads everything else; a model built for the builders'
default `classes` (DEFAULT_CLASSES, ImageNet's) must take the checkpoint's classifier, and a
checkpoint without one or with another number of classes is refused (`classifier_advice`: pass
`classes=<the file's>` or include_top=False); any other `classes` is an explicit request for a new
classifier (fine-tuning), which keeps its initial values when the checkpoint's does not fit.
"""

import inspect
import os
import warnings

import numpy as np
import keras

from lambda_keras.models import CLASSIFIER, build_lambda_resnet
from lambda_keras.weights.timm_format import CLASSIFIER_KERNEL, read_safetensors, timm_to_keras

MAX_LISTED = 12  # names listed per category in a strict-loading error
UNCHANGED = "The model was left unchanged."
# The builders' default `classes` (ImageNet's 1000): a model built for it takes the checkpoint's
# classifier or refuses the checkpoint; other classes ask for a new one (the module docstring).
DEFAULT_CLASSES = inspect.signature(build_lambda_resnet).parameters["classes"].default
# NOTE: Keras 3's save_weights writes a compiled model's optimizer (iteration counter, learning
# rate, slot and EMA variables, a LossScaleOptimizer's inner optimizer) under this top-level
# group, beside the model's "layers" and "vars"; a model built by a builder has no optimizer, so
# load_weights never reads it. Layout as measured on Keras 3.15, not a documented format.
OPTIMIZER_GROUP = "optimizer"


def _listed(names):
    names = sorted(names)
    more = f" ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


def classifier_classes(model):
    """The number of classes of `model`'s classifier, or None when it has none."""
    shapes = [v.shape for v in model.weights if v.path == f"{CLASSIFIER}/kernel"]
    return int(shapes[0][-1]) if shapes else None


def keeps_own_classifier(model):
    """Whether `model` keeps its classifier's initial values when a checkpoint's does not fit:
    it has none, or was built for other classes than DEFAULT_CLASSES (a new classifier)."""
    return classifier_classes(model) != DEFAULT_CLASSES


def classifier_advice(source, file_classes, model_classes, tensor):
    """Why the classifier of `source` (`tensor`; `file_classes` None: absent) does not fit a model
    of `model_classes` classes that must take it, and the ways out."""
    if file_classes is None:
        found = f"{source!r} has no classifier ({tensor} is absent)"
        way_out = "include_top=False to load everything else"
    else:
        found = f"The classifier of {source!r} ({tensor}) has {file_classes} classes"
        way_out = (f"classes={file_classes} to match the file, or include_top=False to load "
                   "everything but the classifier")
    return (f"{found}; the model's {CLASSIFIER!r} layer has {model_classes}. Pass {way_out} "
            f"(`classes` other than {DEFAULT_CLASSES} ask for a new classifier: its initial "
            "values are kept, for fine-tuning).")


def _matched(model, converted, source, keeps_own=None):
    """The classifier rule (module docstring) applied to `model` and `converted`.

    Returns (targets, converted, advice): the model's {path: variable} and the checkpoint's
    tensors left to match each other (without the classifier when the model keeps its own) and
    `classifier_advice` when the model must take a classifier that does not fit, else None.
    `keeps_own` overrides `keeps_own_classifier(model)` (file_fault: a preset's own classes).
    """
    targets = {v.path: v for v in model.weights}
    head = [k for k in targets if k.startswith(f"{CLASSIFIER}/")]
    if head and all(k in converted and tuple(converted[k][0].shape) == tuple(targets[k].shape)
                    for k in head):
        return targets, converted, None
    if not head or (keeps_own_classifier(model) if keeps_own is None else keeps_own):
        return ({k: v for k, v in targets.items() if k not in head},
                {k: v for k, v in converted.items() if not k.startswith(f"{CLASSIFIER}/")}, None)
    kernel = converted.get(f"{CLASSIFIER}/kernel")
    file_classes = None if kernel is None else int(kernel[0].shape[-1])
    model_classes = classifier_classes(model)
    if file_classes == model_classes:  # the kernel fits: the bias is reported as mis-shaped
        return targets, converted, None
    tensor = CLASSIFIER_KERNEL if kernel is None else kernel[1]
    return targets, converted, classifier_advice(source, file_classes, model_classes, tensor)


def strict_problems(model, converted, source, unconverted=(), keeps_own=None):
    """The strict-loading error message for `model` (see `assign_strict`), or None if it fits."""
    targets, converted, advice = _matched(model, converted, source, keeps_own)
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
    message = f"Cannot load {source!r} into model {model.name!r}: " + "; ".join(problems) + "."
    return message if advice is None else f"{message} {advice}"


def assign_strict(model, converted, source, unconverted=()):
    """Assign {weight path: (array, source name, source shape)} to `model`, all or nothing.

    The classifier follows the rule of the module docstring. Raises ValueError naming every
    missing, unexpected and mis-shaped tensor; the model is then unchanged.
    """
    problems = strict_problems(model, converted, source, unconverted)
    if problems:
        raise ValueError(f"{problems} {UNCHANGED}")
    targets, converted, _ = _matched(model, converted, source)
    for key, variable in targets.items():
        variable.assign(converted[key][0].astype(variable.dtype))


def check_finite(state, source, outcome=UNCHANGED):
    """ValueError naming the tensors of {name: array} that hold NaN or infinity; the message ends
    with `outcome` (what the caller left as it was)."""
    bad = [name for name, array in state.items()
           if np.issubdtype(np.asarray(array).dtype, np.inexact)
           and not np.isfinite(array).all()]
    if bad:
        raise ValueError(f"{source!r} holds non-finite values (NaN or infinity) in {len(bad)} "
                         f"tensors: {_listed(bad)}. {outcome}".rstrip())


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


def _check_h5_dtypes(path):
    """ValueError naming the model datasets of a .weights.h5 file that are not floating point.

    Every weight of a lambda_keras model is a float; Keras would silently cast integers. The
    optimizer's state (`OPTIMIZER_GROUP`, with its integer iteration counter) is not the model's
    and is not checked. A file h5py cannot open is left to Keras' own error.
    """
    try:
        datasets = _h5_datasets(path)
    except OSError:
        return
    bad = [f"{name} ({dtype})" for name, dtype in datasets.items() if dtype.kind != "f"]
    if bad:
        raise ValueError(f"{path!r} holds {len(bad)} non-floating-point weight tensors: "
                         f"{_listed(bad)}. {UNCHANGED}")


def _h5_classifier_group(model):
    """The group of a Keras weights file that holds the classifier of `model` (for a model
    without one, where a classifier appended to it would be saved): `layers/dense[_i]`.

    NOTE: Keras 3 saves a functional model's layers under layers/<name>: the layer class's
    snake_case name (Keras' own `naming.to_snake_case`, which its saving_lib calls), numbered in
    `model.layers` order (dense, dense_1, ...), and each layer's variables under vars/<i> in
    creation order (a Dense: kernel, bias). Layout as measured on Keras 3.15, like
    OPTIMIZER_GROUP.
    """
    from keras.src.utils.naming import to_snake_case  # private, as the file layout it names

    dense = [layer.name for layer in model.layers if type(layer) is keras.layers.Dense]
    index = dense.index(CLASSIFIER) if CLASSIFIER in dense else len(dense)  # last, if absent
    return f"layers/{to_snake_case('Dense')}{f'_{index}' if index else ''}"


def _h5_classifier(model, path):
    """(dataset, classes) of the classifier kernel in the Keras weights file `path`, classes None
    when the file has no classifier (`_h5_classifier_group`)."""
    import h5py

    dataset = f"{_h5_classifier_group(model)}/vars/0"
    with h5py.File(path, "r") as f:
        return dataset, (int(f[dataset].shape[-1]) if dataset in f else None)


def _h5_datasets(path):
    """{name: dtype} of the datasets of the Keras weights file `path`, but `OPTIMIZER_GROUP`'s
    (OSError: h5py cannot open it)."""
    import h5py

    datasets = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: datasets.update({name: obj.dtype})
                     if isinstance(obj, h5py.Dataset) and name.split("/")[0] != OPTIMIZER_GROUP
                     else None)
    return datasets


def _check_all_used(model, path, name, skipped=None):
    """ValueError naming the datasets of `path` that loading it into `model` left unused.

    Keras' load_weights reads what the model's own save_weights writes and ignores the rest of
    the file; what it reads is found by saving `model` (a temporary file). `skipped`: a group
    the classifier rule leaves unused (the file's classifier); `name`: the model the message
    names.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        own = os.path.join(folder, "model.weights.h5")
        model.save_weights(own)
        read = set(_h5_datasets(own))
    unused = [dataset for dataset in _h5_datasets(path) if dataset not in read
              and (skipped is None or not dataset.startswith(f"{skipped}/"))]
    if unused:
        raise ValueError(f"Cannot load {path!r} into model {name!r}: {len(unused)} unexpected "
                         f"checkpoint tensors (the model has no weights for them): "
                         f"{_listed(unused)}. {UNCHANGED}")


def load_keras_file(model, path):
    """Keras .weights.h5 via model.load_weights, restored on failure (no partial model).

    The classifier follows the rule of the module docstring: a file whose classifier does not
    fit (or a headless file) loads into the backbone only when the model keeps its own
    classifier, which then keeps its initial values; a model of DEFAULT_CLASSES classes refuses
    it (`classifier_advice`). A file holding tensors that no weight takes (but the classifier's,
    where the rule skips it) is refused, naming them (`_check_all_used`: Keras' own
    load_weights ignores them). The optimizer state in the file of a compiled model is skipped
    (`OPTIMIZER_GROUP`); a compiled `model` is loaded through an uncompiled view of its layers,
    so that its own optimizer is left alone too.
    """
    _check_h5_dtypes(path)
    if getattr(model, "optimizer", None) is not None and getattr(model, "inputs", None):
        model = keras.Model(model.inputs, model.outputs, name=model.name)  # same variables
    snapshot = [v.numpy() for v in model.weights]

    def restore():
        for variable, value in zip(model.weights, snapshot):
            variable.assign(value)

    try:
        _load_by_the_rule(model, path, restore)
        check_finite({v.path: v.numpy() for v in model.weights}, path)
    except Exception:
        restore()
        raise


def _load_by_the_rule(model, path, restore):
    """Loads `path` into `model`, or into its backbone when the classifier is what does not fit
    and the model keeps its own; raises ValueError otherwise, also when the file holds tensors
    that no weight took (`_check_all_used`; the caller restores the model)."""
    model_classes = classifier_classes(model)
    try:
        _keras_load(model, path)
    except Exception as error:  # noqa: BLE001 - keras raises ValueError/KeyError/OSError
        restore()
        first_error = error
    else:  # all of the file is used, but its classifier where the model has none
        _check_all_used(model, path, model.name,
                        None if model_classes is not None else _h5_classifier_group(model))
        return
    if model_classes is not None:
        backbone = keras.Model(model.inputs, model.get_layer(CLASSIFIER).input)
        try:
            _keras_load(backbone, path)
        except Exception:  # noqa: BLE001 - not (only) the classifier: first_error says what
            pass
        else:
            if keeps_own_classifier(model):  # a new classifier: it keeps its initial values
                _check_all_used(backbone, path, model.name, _h5_classifier_group(model))
                return
            dataset, file_classes = _h5_classifier(model, path)
            if file_classes != model_classes:
                raise ValueError(
                    f"Cannot load {path!r} into model {model.name!r}. "
                    f"{classifier_advice(path, file_classes, model_classes, dataset)} "
                    f"{UNCHANGED}") from first_error
    raise ValueError(f"Cannot load {path!r} into model {model.name!r}: {first_error} "
                     f"{UNCHANGED}") from first_error
