"""ImageNet inputs and outputs: `preprocess_input` and `decode_predictions` with the 1000 class
names bundled in assets/imagenet_classes.txt (WordNet ids in the standard sorted order,
torchvision's names)."""

import functools
import importlib.resources

import numpy as np
import keras

from lambda_keras import utils
from lambda_keras.presets import resolve_preprocessing


def _check_rgb(shape):
    if getattr(shape, "rank", 0) is None:  # a graph tensor of unknown rank: not checked
        return
    shape = tuple(shape)
    if not shape or shape[-1] not in (3, None):
        raise ValueError("`x` must be RGB images with 3 channels last ([..., 3]). "
                         f"Received: x of shape {shape}")


def _is_number_dtype(dtype):
    """Whether a tensor's `dtype` is a float, integer or bool (cast to 0 / 1) one."""
    try:
        return (keras.backend.is_float_dtype(dtype) or keras.backend.is_int_dtype(dtype)
                or keras.backend.standardize_dtype(dtype) == "bool")
    except ValueError:  # a dtype Keras does not know (strings, objects)
        return False


def _check_numbers(x, is_numbers, dtype):
    if not is_numbers:
        raise TypeError(f"`x` must be float or integer RGB pixels. Received: x={x!r:.100}"
                        + ("" if dtype is None else f" of dtype {dtype}"))


def preprocess_input(x, preprocessing=None):
    """Normalises RGB pixels for a model: ((x / 255) - mean) / std.

    Args:
        x: float or integer RGB pixels in [0, 255], channels last (`[..., 3]`): a NumPy array,
            a nested list or tuple, or a tensor.
        preprocessing: whose mean and std: a `Preprocessing`, a model name (preset,
            architecture or builder name, see `resolve_preprocessing`) or None (ImageNet's).

    Returns:
        float32 values of the shape of `x`: a NumPy array for NumPy, list or tuple input, else
        a tensor.

    Raises:
        TypeError: `x` does not hold numbers (None, strings, objects), or `preprocessing` is
            neither a Preprocessing, a string nor None.
        ValueError: `preprocessing` is an unknown model name, or `x` does not end in 3
            channels (RGB; a tensor's unknown last dimension is not checked) or is a ragged
            nested list.

    Example:
    >>> x = preprocess_input(np.full((1, 256, 256, 3), 255.0), "LambdaResNet26T")
    >>> x.shape, x.dtype
    ((1, 256, 256, 3), dtype('float32'))
    """
    prep = resolve_preprocessing(preprocessing, arg="preprocessing")
    if isinstance(x, (np.ndarray, list, tuple)):
        try:
            array = np.asarray(x)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"`x` must be RGB pixels of one shape ([..., 3]). "
                             f"Received: x={x!r:.100} ({error})") from None
        _check_numbers(x, array.dtype.kind in "biuf", array.dtype)
        x = array.astype("float32")
        _check_rgb(x.shape)
        return ((x / 255.0 - np.float32(prep.mean)) / np.float32(prep.std)).astype("float32")
    dtype = getattr(x, "dtype", None)
    _check_numbers(x, x is not None and not isinstance(x, (str, bytes)) and (
        dtype is None or _is_number_dtype(dtype)), dtype)
    x = keras.ops.cast(x, "float32")
    _check_rgb(x.shape)
    mean = keras.ops.convert_to_tensor(prep.mean, "float32")
    std = keras.ops.convert_to_tensor(prep.std, "float32")
    return (x / 255.0 - mean) / std  # [..., 3]


@functools.lru_cache(maxsize=1)
def imagenet_classes():
    """The 1000 ImageNet-1k classes in model output order: ((wordnet_id, name), ...)."""
    text = importlib.resources.files("lambda_keras").joinpath(
        "assets/imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(tuple(line.split("\t")) for line in text.splitlines() if line)


def decode_predictions(preds, top=5):
    """The `top` ImageNet classes of each prediction, best first, as in keras.applications.

    Args:
        preds: scores of the 1000 ImageNet classes, `(samples, 1000)` (probabilities or
            logits; a NumPy array or a tensor).
        top: how many classes per sample, in [1, 1000].

    Returns:
        One list per sample of `top` `(wordnet_id, class_name, score)` tuples, highest score
        first (ties: the lower class index first).

    Raises:
        TypeError: `top` is not an int, or `preds` holds other than numbers (strings).
        ValueError: `preds` is not of shape `(samples, 1000)`, or `top` is out of range.

    Example:
    >>> preds = np.eye(1000)[[1]]  # class 1, a goldfish
    >>> decode_predictions(preds, top=1)
    [[('n01443537', 'goldfish', 1.0)]]
    """
    received = preds
    classes = imagenet_classes()
    try:
        preds = np.asarray(keras.ops.convert_to_numpy(preds))
    except (TypeError, ValueError) as error:  # ragged nested lists, objects
        raise ValueError(f"`preds` must be scores of shape (samples, {len(classes)}). "
                         f"Received: preds={received!r:.100} ({error})") from None
    if preds.ndim != 2 or preds.shape[1] != len(classes):
        raise ValueError("`decode_predictions` expects a batch of predictions of shape "
                         f"(samples, {len(classes)}). Received: preds.shape={preds.shape}")
    if preds.dtype.kind not in "biuf":
        raise TypeError(f"`preds` must hold numbers (class scores). Received: preds of dtype "
                        f"{preds.dtype}: {received!r:.100}")
    top = utils.check_int("top", top, high=len(classes))
    order = np.argsort(-preds, axis=1, kind="stable")[:, :top]  # [B, top]
    return [[(*classes[i], float(row[i])) for i in idx] for row, idx in zip(preds, order)]
