"""`make_dataset`: a batched tf.data pipeline from a dataset spec, and `DatasetInfo`.

Source (sources.py, folders.py, tfds_source.py) -> shuffle -> repeat -> transform (transforms.py;
RandAugment from augment.py) -> batch -> one-hot -> MixUp/CutMix (augment.py) -> prefetch.
"""

import dataclasses
import math

import tensorflow as tf

from lambda_keras import utils
from lambda_keras.data.augment import RANDAUGMENT_MAX_MAGNITUDE, make_randaugment, mix_batches
from lambda_keras.data.folders import check_folder_root, folder_source
from lambda_keras.data.sources import digits_source, parse_spec
from lambda_keras.data.tfds_source import check_tfds_argument, tfds_source
from lambda_keras.data.transforms import (
    RANDOM_RESIZED_CROP_SCALE, check_preprocessing, eval_transform, image_size_of,
    train_transform)
from lambda_keras.presets import DEFAULT_PREPROCESSING

AUGMENTS = (None, "imagenet", "randaugment")
_SOURCES = {"tfds": tfds_source, "folder": folder_source, "digits": digits_source}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What `make_dataset` read: the split, its classes and its size.

    Args:
        spec: the dataset spec as given.
        split: the split actually read (e.g. "test" for a tfds dataset without "validation").
        num_classes: the number of classes (the labels are 0 .. num_classes - 1).
        class_names: a tuple of the class names, by class index.
        num_examples: examples in the split (one pass, before batching).
        steps_per_epoch: batches in one pass over the split.

    Example:

    >>> _, info = make_dataset("digits", "validation", image_size=32, batch_size=32)
    >>> info.split, info.num_classes, info.num_examples, info.steps_per_epoch
    ('validation', 10, 360, 12)
    """

    spec: str  # the dataset spec as given
    split: str  # the split actually read (e.g. "test" for a tfds dataset without "validation")
    num_classes: int
    class_names: tuple  # class index -> name
    num_examples: int  # examples in the split (one pass, before batching)
    steps_per_epoch: int  # batches in one pass over the split


def check_spec(spec, *, data_dir=None, arg="spec"):
    """Checks a dataset spec early, before anything is built.

    `make_dataset`'s checks of the spec itself and of its source's presence (nothing is read);
    returns None when the spec passes.

    Args:
        spec: "tfds:NAME[:SPLIT]", "folder:PATH" or "digits".
        data_dir: tensorflow-datasets data directory (tfds specs).
        arg: how the messages name the spec (the command line's `--data`).

    Raises:
        TypeError: `spec` is not a string.
        ValueError: an unknown scheme, a missing folder, or a tensorflow-datasets dataset that
            does not exist or is not prepared in `data_dir`.

    Example:

    >>> check_spec("digits")  # bundled with scikit-learn: always there
    >>> check_spec("folder:/no/such/folder")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: `spec` names a folder that does not exist: /no/such/folder. Received: ...
    """
    scheme, argument = parse_spec(spec, arg)
    if scheme == "folder":
        check_folder_root(argument, arg)
    elif scheme == "tfds":
        check_tfds_argument(argument, data_dir, arg)


def load_source(spec, split, *, data_dir, training, seed, verify_images):
    scheme, argument = parse_spec(spec)
    if data_dir is not None and scheme != "tfds":
        raise ValueError(
            "`data_dir` only applies to 'tfds:' specs. "
            f"Received: data_dir={data_dir!r} with spec={spec!r}"
        )
    options = {"data_dir": data_dir, "training": training, "seed": seed}
    if scheme == "folder":
        options["verify_images"] = verify_images
    elif verify_images:
        raise ValueError(
            "`verify_images` only applies to 'folder:' specs. "
            f"Received: verify_images={verify_images!r} with spec={spec!r}"
        )
    return _SOURCES[scheme](argument, split, **options)


def _transformed(ds, source, preprocessing, size, training_augment, augmenter, crop_scale, seed):
    """Unbatched (raw, label) -> (float32 (H, W, 3) normalised image, label)."""
    if not training_augment:
        return ds.map(
            lambda raw, label: (eval_transform(source.decode(raw), preprocessing, size), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def augment(example, element_seed):
        raw, label = example
        image = train_transform(
            source.decode(raw),
            preprocessing,
            size,
            seed=element_seed,
            augmenter=augmenter,
            scale=crop_scale,
        )
        return image, label

    seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)  # (2,) per example
    return tf.data.Dataset.zip(ds, seeds).map(augment, num_parallel_calls=tf.data.AUTOTUNE)




def make_dataset(
    spec,
    split="train",
    *,
    image_size=None,
    batch_size=32,
    training=None,
    preprocessing=None,
    augment="imagenet",
    crop_scale=RANDOM_RESIZED_CROP_SCALE,
    randaugment_layers=2,
    randaugment_magnitude=10,
    mixup_alpha=0.0,
    cutmix_alpha=0.0,
    one_hot=None,
    shuffle_buffer=None,
    seed=None,
    repeat=False,
    drop_remainder=None,
    data_dir=None,
    verify_images=False,
):
    """A batched `tf.data.Dataset` of (images, labels) from a dataset spec, and its `DatasetInfo`.

    Args:
        spec: "tfds:NAME[:SPLIT]", "folder:PATH" or "digits" (module docstring).
        split: "train", "validation" (alias "val"), "test", "all" (digits and flat folders), or
            any tfds split expression ("train[:80%]") for tfds specs.
        image_size: int or (height, width); default `preprocessing.input_size`.
        batch_size: examples per batch.
        training: shuffle and augment; default `split == "train"`.
        preprocessing: a `lambda_keras.weights.Preprocessing` (interpolation, crop_pct, mean, std);
            default `DEFAULT_PREPROCESSING` (ImageNet mean/std, crop 0.875, bicubic).
        augment: training augmentation: "imagenet" (random resized crop + flip), "randaugment"
            (that + RandAugment) or None (the evaluation transform, still shuffled).
        crop_scale: (min, max) area fraction of the random resized crop; (0.08, 1.0) is
            ImageNet's, a larger minimum suits small images (digits).
        randaugment_layers, randaugment_magnitude: RandAugment's N and M (the ResNet-RS
            configs: 2 and 10-15; the paper's use of them recalled, UNCONFIRMED).
        mixup_alpha: MixUp Beta parameter (0 disables; timm uses 0.8).
        cutmix_alpha: CutMix strength in [0, 1] (0 disables). MixUp/CutMix apply when training.
        one_hot: float32 one-hot labels instead of int32 indices; default True iff MixUp or CutMix
            is on (also for evaluation datasets, so train and eval labels match).
        shuffle_buffer: default the whole split (digits, folders) or 10000 (tfds).
        seed: int seeding shuffling and augmentation (a reproducible pipeline); None: random.
        repeat: repeat forever (then pass `steps_per_epoch=info.steps_per_epoch` to fit).
        drop_remainder: static batch dimension; default `training`.
        data_dir: tensorflow-datasets data directory (tfds specs only; default TFDS_DATA_DIR or
            ~/tensorflow_datasets).
        verify_images: folder specs: decode every image up front (slow) instead of checking
            headers, so damaged files are reported with their path before training.

    Returns:
        (dataset, DatasetInfo). Images float32 (B, H, W, 3); labels int32 (B,) or float32
        (B, num_classes); B is static when `drop_remainder`.

    Raises:
        TypeError: an argument of the wrong type: a `spec` or `split` that is not a str, a
            non-int `batch_size` / `shuffle_buffer` / `randaugment_layers`, a non-number alpha
            or magnitude, a flag (`training`, `one_hot`, `repeat`, `drop_remainder`,
            `verify_images`) that is not a bool, a `preprocessing` that is not a Preprocessing.
        ValueError: a value out of range or not applicable: an unknown scheme, split or
            `augment`; `batch_size` < 1 or larger than the split with `drop_remainder`; an
            alpha, magnitude or `crop_scale` out of its range; `one_hot=False` with MixUp or
            CutMix; `data_dir` with a non-tfds spec or `verify_images` with a non-folder spec;
            a missing folder or unprepared tensorflow-datasets dataset (never downloaded); a
            preprocessing with an unknown interpolation or a crop_pct outside (0, 1].

    Example:

    ```python
    train_ds, info = data.make_dataset("digits", "train", image_size=64, batch_size=32,
                                       augment="randaugment", seed=0)
    val_ds, _ = data.make_dataset("digits", "validation", image_size=64, batch_size=32)
    model.fit(train_ds, validation_data=val_ds, epochs=5)  # info.num_classes outputs
    ```
    """
    if not isinstance(split, str) or not split:
        error = ValueError if isinstance(split, str) else TypeError
        raise error(f"`split` must be a non-empty string. Received: split={split!r}")
    if augment not in AUGMENTS:
        raise ValueError(f"`augment` must be one of {AUGMENTS}. Received: augment={augment!r}")
    utils.check_int("batch_size", batch_size, low=1)
    utils.check_int("shuffle_buffer", shuffle_buffer, low=1, optional=True)
    utils.check_number("mixup_alpha", mixup_alpha, low=0)
    utils.check_number("cutmix_alpha", cutmix_alpha, low=0, high=1)
    utils.check_int("randaugment_layers", randaugment_layers, low=1)  # RandAugment's, our names
    utils.check_number("randaugment_magnitude", randaugment_magnitude, low=0,
                       high=RANDAUGMENT_MAX_MAGNITUDE)
    if not (
        isinstance(crop_scale, (tuple, list))
        and len(crop_scale) == 2
        and all(isinstance(v, (int, float)) for v in crop_scale)
        and 0 < crop_scale[0] <= crop_scale[1] <= 1
    ):
        raise ValueError(
            "`crop_scale` must be a (min, max) pair with 0 < min <= max <= 1. "
            f"Received: crop_scale={crop_scale!r}"
        )
    for name, flag in (("training", training), ("one_hot", one_hot),
                       ("drop_remainder", drop_remainder)):
        utils.check_bool(name, flag, optional=True)
    utils.check_bool("repeat", repeat)
    utils.check_bool("verify_images", verify_images)
    preprocessing = DEFAULT_PREPROCESSING if preprocessing is None else preprocessing
    check_preprocessing(preprocessing)
    size = image_size_of(image_size, preprocessing)
    training = split == "train" if training is None else training
    drop_remainder = training if drop_remainder is None else drop_remainder
    mixing = mixup_alpha > 0 or cutmix_alpha > 0
    if mixing and one_hot is False:
        raise ValueError(
            "MixUp and CutMix mix labels, so labels must be one-hot: pass one_hot=True or None. "
            "Received: one_hot=False"
        )
    one_hot = mixing if one_hot is None else one_hot
    augmenter = None
    if training and augment == "randaugment":
        augmenter = make_randaugment(randaugment_layers, randaugment_magnitude, seed=seed)

    source = load_source(
        spec, split, data_dir=data_dir, training=training, seed=seed, verify_images=verify_images
    )
    num_examples, num_classes = source.num_examples, len(source.class_names)
    steps = num_examples // batch_size if drop_remainder else math.ceil(num_examples / batch_size)
    if steps == 0:
        raise ValueError(
            f"`batch_size` is larger than the {num_examples} examples of split {source.split!r} of "
            f"{spec!r}, and drop_remainder leaves no batch. Received: batch_size={batch_size}"
        )

    ds = source.examples  # (raw, label)
    if training:
        buffer = shuffle_buffer or source.shuffle_buffer
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    training_augment = training and augment is not None
    ds = _transformed(
        ds, source, preprocessing, size, training_augment, augmenter, crop_scale, seed
    )
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE)
    if one_hot:
        ds = ds.map(lambda images, labels: (images, tf.one_hot(labels, num_classes)))
    if training and mixing:
        ds = mix_batches(ds, mixup_alpha, cutmix_alpha, seed)
    info = DatasetInfo(
        spec=spec,
        split=source.split,
        num_classes=num_classes,
        class_names=source.class_names,
        num_examples=num_examples,
        steps_per_epoch=steps,
    )
    return ds.prefetch(tf.data.AUTOTUNE), info
