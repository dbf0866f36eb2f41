"""ImageNet inputs and outputs: `preprocess_input` and `decode_predictions` with the 1000 class
names bundled in assets/imagenet_classes.txt (WordNet ids in the standard sorted order,
torchvision's names)."""

import functools
import importlib.resources

import numpy as np
import keras

from lambda_keras.presets import DEFAULT_PREPROCESSING, resolve_preprocessing


def _check_rgb(shape):
    if getattr(shape, "rank", 0) is None:  # a graph tensor of unknown rank: not checked
        return
    shape = tuple(shape)
    if not shape or shape[-1] not in (3, None):
        raise ValueError("`x` must be RGB images with 3 channels last ([..., 3]). "
                         f"Received: x of shape {shape}")


def preprocess_input(x, preprocessing=None):
    """Float RGB pixels in [0, 255], channels last -> ((x / 255) - mean) / std.

    `preprocessing` is a Preprocessing, a preset/architecture/builder name, or None (ImageNet
    mean/std). NumPy in -> NumPy float32 out; tensors in -> tensors out.

    Raises:
        ValueError: `x` does not end in 3 channels (RGB; a tensor's unknown last dimension is
            not checked).
    """
    prep = DEFAULT_PREPROCESSING if preprocessing is None else resolve_preprocessing(preprocessing)
    if isinstance(x, (np.ndarray, list, tuple)):
        x = np.asarray(x, dtype="float32")
        _check_rgb(x.shape)
        return ((x / 255.0 - np.float32(prep.mean)) / np.float32(prep.std)).astype("float32")
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
    """[B, 1000] scores -> per example a list of `top` (wordnet_id, name, score), best first."""
    preds = np.asarray(keras.ops.convert_to_numpy(preds))
    classes = imagenet_classes()
    if preds.ndim != 2 or preds.shape[1] != len(classes):
        raise ValueError("`decode_predictions` expects a batch of predictions of shape "
                         f"(samples, {len(classes)}). Received: preds.shape={preds.shape}")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= len(classes):
        raise ValueError(f"`top` must be an integer in [1, {len(classes)}]. Received: top={top!r}")
    order = np.argsort(-preds, axis=1, kind="stable")[:, :top]  # [B, top]
    return [[(*classes[i], float(row[i])) for i in idx] for row, idx in zip(preds, order)]
