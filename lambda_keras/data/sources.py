"""Dataset specs and the sources behind them: spec parsing, the hold-out split, bundled digits.

- `parse_spec`: 'tfds:NAME[:SPLIT]' | 'folder:PATH' | 'digits' -> (scheme, argument).
- `Source`: what a source hands the pipeline (unbatched raw examples, a decode function, class
  names, sizes). folders.py and tfds_source.py make the other two kinds.
- `holdout_indices`: the fixed stratified 80/20 hold-out of sources without their own splits.
- `digits_source`: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes,
  offline), grey levels 0..16 scaled to 0..255, repeated to RGB and upscaled by the transforms;
  the same hold-out (1437 train, 360 validation/test).
"""

import dataclasses

import numpy as np
import tensorflow as tf

SCHEMES = ("tfds", "folder", "digits")
# Logical split -> held-out part, for sources without their own splits (digits, flat folders).
HOLDOUT_SPLITS = {
    "train": "train",
    "validation": "test",
    "val": "test",
    "test": "test",
    "all": "all",
}
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0  # fixed: the hold-out never depends on the training seed


@dataclasses.dataclass(frozen=True)
class Source:
    """Unbatched examples (raw, int32 label) and `decode(raw)` -> uint8 (h, w, 3)."""

    examples: tf.data.Dataset
    decode: object
    split: str
    class_names: tuple
    num_examples: int
    shuffle_buffer: int  # default shuffle buffer for this source


def parse_spec(spec, arg="spec"):
    """'tfds:NAME[:SPLIT]' | 'folder:PATH' | 'digits' -> (scheme, argument or None).

    `arg` is the argument the messages name (the command line's `--data`, for instance).
    """
    if not isinstance(spec, str):
        raise TypeError(f"`{arg}` must be a string. Received: {arg}={spec!r}")
    scheme, sep, argument = spec.partition(":")
    if scheme not in SCHEMES:
        raise ValueError(
            f"`{arg}` must be 'tfds:NAME[:SPLIT]', 'folder:PATH' or 'digits' (schemes: "
            f"{', '.join(SCHEMES)}). Received: {arg}={spec!r}"
        )
    if scheme == "digits" and sep:
        raise ValueError(f"`{arg}` 'digits' takes no argument. Received: {arg}={spec!r}")
    if scheme in ("tfds", "folder") and not argument:
        what = "NAME" if scheme == "tfds" else "PATH"
        raise ValueError(f"`{arg}` '{scheme}:' needs a {what}. Received: {arg}={spec!r}")
    return scheme, argument or None


def holdout_indices(labels, split, what, class_names):
    """Fixed stratified 80/20 hold-out of `labels` -> sorted indices of `split`."""
    part = HOLDOUT_SPLITS.get(split)
    if part is None:
        raise ValueError(
            f"`split` must be one of {tuple(HOLDOUT_SPLITS)} for {what}. Received: split={split!r}"
        )
    indices = np.arange(len(labels))
    if part == "all":
        return indices
    counts = np.bincount(labels, minlength=len(class_names))
    if counts.min() < 2:
        small = class_names[int(np.argmin(counts))]
        raise ValueError(
            f"{what}: class {small!r} has {counts.min()} example(s); the train/test hold-out "
            "needs at least 2 per class. Add images, or use split='all'."
        )
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        indices, test_size=HOLDOUT_FRACTION, stratify=labels, random_state=HOLDOUT_SEED
    )
    return np.sort(train if part == "train" else test)


def digits_source(argument, split, *, data_dir, training, seed):
    from sklearn.datasets import load_digits

    digits = load_digits()
    class_names = tuple(str(name) for name in digits.target_names)
    indices = holdout_indices(digits.target, split, "spec='digits'", class_names)
    grey = np.round(digits.images[indices] * (255.0 / 16.0)).astype(np.uint8)  # (n, 8, 8)
    images = np.repeat(grey[..., None], 3, axis=-1)  # (n, 8, 8, 3)
    labels = digits.target[indices].astype(np.int32)  # (n,)
    return Source(
        examples=tf.data.Dataset.from_tensor_slices((images, labels)),
        decode=lambda image: image,
        split=split,
        class_names=class_names,
        num_examples=len(labels),
        shuffle_buffer=len(labels),
    )

