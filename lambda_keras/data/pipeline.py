"""Input pipelines: tf.data datasets from a spec string, ImageNet-style train/eval transforms.

`make_dataset(spec, split)` returns `(dataset, DatasetInfo)`. The dataset yields
`(images, labels)`: images float32 `(batch, height, width, 3)` normalised as
((pixels / 255) - mean) / std with the preset's `lambda_keras.weights.Preprocessing`, labels int32
class indices `(batch,)`, or float32 one-hot `(batch, num_classes)` when MixUp/CutMix is on (they
mix labels). Training datasets have a static batch dimension (`drop_remainder=True`), which TPUs
and XLA need. Everything runs inside tf.data (graph mode).

Dataset specs (`SCHEMES`):
- `tfds:NAME[:SPLIT]`  a tensorflow-datasets dataset already prepared in `data_dir` (nothing is
  downloaded: a missing dataset is an error that says how to prepare it). NAME may carry a config
  and a version (`imagenet2012`, `tf_flowers`, `cifar10:3.0.2`); SPLIT, when given, replaces the
  `split` argument and may slice (`tfds:tf_flowers:train[:80%]`). `split="validation"` reads the
  dataset's "validation" split, or its "test" split when it has none.
- `folder:PATH`  class sub-folders of images (.jpg, .jpeg, .png, .gif, .bmp), like
  `keras.utils.image_dataset_from_directory`. If PATH has split folders (`train/`, `val/` or
  `validation/`, `test/`), each holding class folders, `split` picks one; otherwise PATH holds the
  class folders and a fixed stratified 80/20 hold-out gives "train" and "validation"/"test"
  ("all" reads everything). Non-image files, files whose header is not an image, unreadable
  files and empty class folders are errors naming their paths, raised before training starts.
- `digits`  scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, offline),
  grey levels 0..16 scaled to 0..255, repeated to RGB and upscaled by the transforms; the same
  fixed stratified 80/20 hold-out (1437 train, 360 validation/test).

Transforms (reused by export.py for in-graph preprocessing):
- `eval_transform`: resize the shorter side to floor(size / crop_pct) with the preset's
  interpolation (antialiased, like PIL), center-crop `size` (torchvision rounding), normalise.
  timm's eval transform; matches PIL to a few grey levels (tests/test_data.py).
- `train_transform`: Inception random resized crop (area 8%-100%, aspect 3/4-4/3), resize, random
  horizontal flip, an optional augmenter (RandAugment) on 0..255 pixels, normalise.
- `normalize`: the single normalisation used everywhere.
Augmentation layers are Keras' own (`keras.layers.RandAugment`, `MixUp`, `CutMix`).

Deviations:
- NOTE: the paper's recipe (PAPER.md section 4) uses the TPU RandAugment implementation; Keras'
  RandAugment has its own op set and a normalised strength `factor` in [0, 1]. A magnitude M on
  RandAugment's 0..30 integer scale maps to factor = M / 30 (M=15 is Keras' default 0.5).
  Keras' layer evaluates all 11 ops for each slot and keeps one; `RandAugment` here runs the same
  Keras op layers through `tf.switch_case`, only the drawn ones (10x the throughput).
- NOTE: when no crop satisfying the area/aspect ranges is found in 10 attempts, the random resized
  crop keeps the whole image (TF's Inception sampler); timm falls back to a center crop.
- NOTE: with both MixUp and CutMix on, each batch uses one of them with probability 1/2 (timm's
  default switch); Keras' CutMix draws its Beta parameter uniformly from [0, cutmix_alpha].
- NOTE: a folder image with a valid header but a damaged body fails only when tf.data decodes it,
  with TF's message and no path; `verify_images=True` decodes every image up front instead.
"""

import concurrent.futures
import dataclasses
import functools
import math
import os
import re

import numpy as np
import tensorflow as tf

from lambda_keras.weights import DEFAULT_PREPROCESSING, Preprocessing

SCHEMES = ("tfds", "folder", "digits")
AUGMENTS = (None, "imagenet", "randaugment")
RESIZE_METHODS = ("bilinear", "bicubic", "nearest")
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# File signatures of the formats tf.io.decode_image reads: (leading bytes, format).
IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
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
# Split folders of a `folder:` dataset, by logical split, in order of preference.
FOLDER_SPLIT_DIRS = {
    "train": ("train",),
    "validation": ("validation", "val"),
    "val": ("val", "validation"),
    "test": ("test",),
}
RANDAUGMENT_MAX_MAGNITUDE = 30
RANDOM_RESIZED_CROP_SCALE = (0.08, 1.0)
RANDOM_RESIZED_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
TFDS_SHUFFLE_BUFFER = 10_000
_MAX_LISTED_PATHS = 10
_VERSION_RE = re.compile(r"^(\d+|\*)\.(\d+|\*)\.(\d+|\*)$")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What `make_dataset` read."""

    spec: str  # the dataset spec as given
    split: str  # the split actually read (e.g. "test" for a tfds dataset without "validation")
    num_classes: int
    class_names: tuple  # class index -> name
    num_examples: int  # examples in the split (one pass, before batching)
    steps_per_epoch: int  # batches in one pass over the split


@dataclasses.dataclass(frozen=True)
class _Source:
    """Unbatched examples (raw, int32 label) and `decode(raw)` -> uint8 (h, w, 3)."""

    examples: tf.data.Dataset
    decode: object
    split: str
    class_names: tuple
    num_examples: int
    shuffle_buffer: int  # default shuffle buffer for this source


# --------------------------------------------------------------------------------------------
# Transforms


def _check_preprocessing(preprocessing):
    if not isinstance(preprocessing, Preprocessing):
        raise TypeError(
            "`preprocessing` must be a lambda_keras.weights.Preprocessing. "
            f"Received: preprocessing={preprocessing!r}"
        )
    if preprocessing.interpolation not in RESIZE_METHODS:
        raise ValueError(
            f"`preprocessing.interpolation` must be one of {RESIZE_METHODS}. "
            f"Received: interpolation={preprocessing.interpolation!r}"
        )
    if not 0.0 < preprocessing.crop_pct <= 1.0:
        raise ValueError(
            "`preprocessing.crop_pct` must be in (0, 1]. "
            f"Received: crop_pct={preprocessing.crop_pct!r}"
        )


def _image_size(image_size, preprocessing):
    """`image_size` (int, (h, w) or None for the preset's) -> (height, width)."""
    size = preprocessing.input_size if image_size is None else image_size
    if isinstance(size, int):
        size = (size, size)
    size = tuple(size)
    if len(size) != 2 or not all(type(s) is int and s > 0 for s in size):
        raise ValueError(
            "`image_size` must be a positive int or a (height, width) pair of positive ints. "
            f"Received: image_size={image_size!r}"
        )
    return size


def normalize(images, preprocessing=DEFAULT_PREPROCESSING):
    """Pixels in 0..255 (any dtype, channels last) -> float32 ((pixels / 255) - mean) / std."""
    _check_preprocessing(preprocessing)
    images = tf.cast(images, tf.float32) / 255.0  # (..., 3)
    mean = tf.constant(preprocessing.mean, tf.float32)  # (3,)
    std = tf.constant(preprocessing.std, tf.float32)  # (3,)
    return (images - mean) / std  # (..., 3)


def _resize(images, size, method):
    """Resize to `size` like PIL does (antialiased when shrinking), clipped to 0..255."""
    images = tf.image.resize(images, size, method=method, antialias=True)  # (..., h, w, 3) float32
    return tf.clip_by_value(images, 0.0, 255.0)  # bicubic overshoots; PIL clips to uint8


def _eval_resize_size(height, width, size, crop_pct):
    """timm/torchvision eval resize: shorter side to floor(size / crop_pct), aspect kept."""
    if size[0] != size[1]:  # non-square target: both sides scaled independently (timm)
        return tf.constant([math.floor(s / crop_pct) for s in size], tf.int32)
    scale = tf.constant(math.floor(size[0] / crop_pct), tf.float64)
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    new_h = tf.where(w <= h, tf.floor(scale * h / w), scale)  # int(size * long / short)
    new_w = tf.where(w <= h, scale, tf.floor(scale * w / h))
    return tf.cast(tf.stack([new_h, new_w]), tf.int32)  # (2,)


def _center_crop(images, size):
    """Center-crop (..., H, W, C) to `size` at round((H - h) / 2), half to even (torchvision)."""
    shape = tf.shape(images)
    top = tf.cast(tf.round(tf.cast(shape[-3] - size[0], tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(shape[-2] - size[1], tf.float32) / 2.0), tf.int32)
    return images[..., top : top + size[0], left : left + size[1], :]  # (..., h, w, C)


def eval_transform(image, preprocessing=DEFAULT_PREPROCESSING, image_size=None):
    """Evaluation transform of one image (h, w, 3) or a batch (b, h, w, 3) of 0..255 pixels.

    Resizes the shorter side to floor(size / crop_pct) with `preprocessing.interpolation`, center
    crops `image_size` (default `preprocessing.input_size`) and normalises: float32 (..., H, W, 3).
    """
    _check_preprocessing(preprocessing)
    size = _image_size(image_size, preprocessing)
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    resize_to = _eval_resize_size(shape[-3], shape[-2], size, preprocessing.crop_pct)
    image = _resize(image, resize_to, preprocessing.interpolation)  # (..., >=H, >=W, 3)
    image = _center_crop(image, size)  # (..., H, W, 3)
    image = tf.ensure_shape(image, image.shape[:-3] + size + (3,))
    return normalize(image, preprocessing)


def train_transform(
    image,
    preprocessing=DEFAULT_PREPROCESSING,
    image_size=None,
    *,
    seed=None,
    augmenter=None,
    scale=RANDOM_RESIZED_CROP_SCALE,
    ratio=RANDOM_RESIZED_CROP_RATIO,
):
    """Training transform of one image (h, w, 3) of 0..255 pixels -> float32 (H, W, 3) normalised.

    Random resized crop (area fraction in `scale`, aspect ratio in `ratio`), resize to
    `image_size` with `preprocessing.interpolation`, random horizontal flip, then `augmenter`
    (a callable on float 0..255 images such as `make_randaugment()`), then `normalize`.
    `seed` is a stateless seed, shape (2,) int; None draws one (not reproducible).
    """
    _check_preprocessing(preprocessing)
    size = _image_size(image_size, preprocessing)
    image = tf.convert_to_tensor(image)
    if seed is None:
        seed = tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed,
        min_object_covered=0.0,
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, crop_size)  # (crop_h, crop_w, 3)
    image = _resize(image, size, preprocessing.interpolation)  # (H, W, 3) float32
    image = tf.ensure_shape(image, size + (3,))
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    if augmenter is not None:
        image = tf.ensure_shape(tf.cast(augmenter(image), tf.float32), size + (3,))
    return normalize(image, preprocessing)


class RandAugment:
    """RandAugment on one float 0..255 image (H, W, 3) with the op layers of Keras' RandAugment.

    `layer` is the configured `keras.layers.RandAugment`; each call draws `num_ops` of its op
    layers (shear, translate, rotate, brightness, colour, contrast, sharpness, posterize,
    solarize, auto-contrast, equalize), with replacement, and applies them in turn.
    NOTE: Keras' layer computes all 11 ops for every slot and keeps the drawn one with `where`;
    `tf.switch_case` here runs only the drawn ops: 250 instead of 24 images/s through the
    224 px training pipeline on 2 CPU cores. Same ops, same strengths, drawn per image.
    """

    def __init__(self, num_ops=2, factor=1.0 / 3.0, seed=None):
        import keras

        self.layer = keras.layers.RandAugment(
            value_range=(0, 255), num_ops=num_ops, factor=factor, seed=seed
        )
        # Keras' own list of its op sublayers (a private name: tests/test_data.py runs this path).
        self.ops = [getattr(self.layer, name) for name in self.layer._AUGMENT_LAYERS]
        self.num_ops = num_ops
        self.generator = keras.random.SeedGenerator(seed)

    def __call__(self, image):
        import keras

        drawn = keras.random.randint((self.num_ops,), 0, len(self.ops), seed=self.generator)
        for slot in range(self.num_ops):
            branches = [functools.partial(op, image, training=True) for op in self.ops]
            image = tf.switch_case(drawn[slot], branches)  # (H, W, 3)
        return image


def make_randaugment(num_layers=2, magnitude=10, *, seed=None):
    """`RandAugment` for 0..255 images: `num_layers` ops at RandAugment magnitude M.

    NOTE: M on RandAugment's 0..30 scale maps to Keras' factor M / 30 (module docstring).
    """
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(
            "`randaugment_layers` must be a positive int. "
            f"Received: randaugment_layers={num_layers!r}"
        )
    _check_number("randaugment_magnitude", magnitude, 0, RANDAUGMENT_MAX_MAGNITUDE)
    return RandAugment(num_layers, magnitude / RANDAUGMENT_MAX_MAGNITUDE, seed=seed)


# --------------------------------------------------------------------------------------------
# Sources


def _parse_spec(spec):
    """'tfds:NAME[:SPLIT]' | 'folder:PATH' | 'digits' -> (scheme, argument or None)."""
    if not isinstance(spec, str):
        raise TypeError(f"`spec` must be a string. Received: spec={spec!r}")
    scheme, sep, argument = spec.partition(":")
    if scheme not in SCHEMES:
        raise ValueError(
            "`spec` must be 'tfds:NAME[:SPLIT]', 'folder:PATH' or 'digits' (schemes: "
            f"{', '.join(SCHEMES)}). Received: spec={spec!r}"
        )
    if scheme == "digits" and sep:
        raise ValueError(f"`spec` 'digits' takes no argument. Received: spec={spec!r}")
    if scheme in ("tfds", "folder") and not argument:
        what = "NAME" if scheme == "tfds" else "PATH"
        raise ValueError(f"`spec` '{scheme}:' needs a {what}. Received: spec={spec!r}")
    return scheme, argument or None


def _holdout_indices(labels, split, what, class_names):
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


def _digits_source(argument, split, *, data_dir, training, seed):
    from sklearn.datasets import load_digits

    digits = load_digits()
    class_names = tuple(str(name) for name in digits.target_names)
    indices = _holdout_indices(digits.target, split, "spec='digits'", class_names)
    grey = np.round(digits.images[indices] * (255.0 / 16.0)).astype(np.uint8)  # (n, 8, 8)
    images = np.repeat(grey[..., None], 3, axis=-1)  # (n, 8, 8, 3)
    labels = digits.target[indices].astype(np.int32)  # (n,)
    return _Source(
        examples=tf.data.Dataset.from_tensor_slices((images, labels)),
        decode=lambda image: image,
        split=split,
        class_names=class_names,
        num_examples=len(labels),
        shuffle_buffer=len(labels),
    )


def _list_paths(paths):
    shown = ", ".join(paths[:_MAX_LISTED_PATHS])
    more = len(paths) - _MAX_LISTED_PATHS
    return shown + (f" and {more} more" if more > 0 else "")


def _subfolders(path):
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _class_files(class_dir):
    """All non-hidden files under `class_dir` (recursive, sorted)."""
    files = []
    for root, dirs, names in os.walk(class_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith("."))
    return files


def _header_problem(path):
    """None if `path` starts like an image tf.io.decode_image reads, else why not."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as error:
        return f"{path} (unreadable: {error.strerror})"
    if not any(head.startswith(signature) for signature, _ in IMAGE_SIGNATURES):
        formats = sorted({name for _, name in IMAGE_SIGNATURES})
        return f"{path} (not a {', '.join(formats)} image)"
    return None


def _decode_problem(path):
    """None if tf.io.decode_image decodes `path`, else why not."""
    try:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        return f"{path} (cannot be decoded: {error.message.splitlines()[0]})"
    return None


def _check_images(paths, check, folder):
    workers = min(32, 4 * (os.cpu_count() or 1))  # I/O bound
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        problems = [p for p in pool.map(check, paths) if p is not None]
    if problems:
        raise ValueError(
            f"{len(problems)} unreadable image file(s) in the image folder {folder}: "
            f"{_list_paths(problems)}. Fix or remove them."
        )


def _scan_class_folders(folder, verify_images):
    """Class folders under `folder` -> (class_names, paths, labels), every file checked."""
    class_names = tuple(_subfolders(folder))
    if not class_names:
        raise ValueError(
            f"The image folder {folder} has no class sub-folders (folder/CLASS/image.jpg)."
        )
    paths, labels, others = [], [], []
    for label, name in enumerate(class_names):
        files = _class_files(os.path.join(folder, name))
        images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
        others.extend(f for f in files if not f.lower().endswith(IMAGE_EXTENSIONS))
        if not images:
            raise ValueError(
                f"The class folder {os.path.join(folder, name)} is empty: it has no image files "
                f"{IMAGE_EXTENSIONS}. Add images or remove the folder."
            )
        paths.extend(images)
        labels.extend([label] * len(images))
    if others:
        raise ValueError(
            f"{len(others)} file(s) that are not images {IMAGE_EXTENSIONS} in the image folder "
            f"{folder}: {_list_paths(others)}. Move them out of the class folders."
        )
    _check_images(paths, _decode_problem if verify_images else _header_problem, folder)
    return class_names, np.array(paths), np.array(labels, np.int32)


def _folder_split_dir(root, split):
    """For a root with split folders, the folder of `split` (None when the root has none)."""
    names = ("train", "validation", "val", "test")
    present = [d for d in names if os.path.isdir(os.path.join(root, d))]
    if not present:
        return None
    for name in FOLDER_SPLIT_DIRS.get(split, ()):
        if name in present:
            return os.path.join(root, name)
    raise ValueError(
        f"`split` has no split folder in {root} (found {', '.join(present)}; "
        f"'train', 'validation'/'val' and 'test' are recognised). Received: split={split!r}"
    )


def _folder_source(argument, split, *, data_dir, training, seed, verify_images):
    root = os.path.expanduser(argument)
    if not os.path.isdir(root):
        raise ValueError(
            f"`spec` names a folder that does not exist: {root}. "
            f"Received: spec='folder:{argument}'"
        )
    split_dir = _folder_split_dir(root, split)
    if split_dir is not None:
        class_names, paths, labels = _scan_class_folders(split_dir, verify_images)
        train_dir = os.path.join(root, "train")
        train_classes = tuple(_subfolders(train_dir)) if os.path.isdir(train_dir) else class_names
        if train_classes != class_names:
            raise ValueError(
                f"The class folders of {split_dir} differ from those of {train_dir}: "
                f"{list(class_names)} vs {list(train_classes)}."
            )
    else:
        class_names, paths, labels = _scan_class_folders(root, verify_images)
        indices = _holdout_indices(labels, split, f"spec='folder:{argument}'", class_names)
        paths, labels = paths[indices], labels[indices]

    def decode(path):
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)

    return _Source(
        examples=tf.data.Dataset.from_tensor_slices((paths, labels)),
        decode=decode,
        split=split,
        class_names=class_names,
        num_examples=len(labels),
        shuffle_buffer=len(labels),
    )


def _parse_tfds_argument(argument):
    """'NAME[:VERSION][:SPLIT]' -> (name, split or None); NAME may be 'name/config'."""
    name, _, rest = argument.partition(":")
    version, _, split = rest.partition(":")
    if _VERSION_RE.match(version):
        return f"{name}:{version}", split or None
    return name, rest or None


def _tfds_builder(name, data_dir):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(
            f"`spec` names no tensorflow-datasets dataset: {name!r} "
            f"({str(error).splitlines()[0]}). "
            f"See https://www.tensorflow.org/datasets/catalog. Received: spec='tfds:{name}'"
        ) from None
    if not builder.is_prepared():
        manual = ""
        if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
            manual = (
                f" {name} needs a manual download first: put its files in "
                f"{os.path.join(builder.data_dir_root, 'downloads', 'manual')} "
                f"({' '.join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())})."
            )
        raise ValueError(
            f"The tensorflow-datasets dataset {name!r} is not prepared in "
            f"data_dir={builder.data_dir_root} (expected {builder.data_dir}), and make_dataset "
            "never downloads. Prepare it once, where the network is reachable, with "
            f"`tfds build {name} --data_dir={builder.data_dir_root}` or "
            f"`tfds.builder({name!r}, data_dir=...).download_and_prepare()`, then pass that "
            f"data_dir (or set TFDS_DATA_DIR).{manual}"
        )
    return builder


def _tfds_split(builder, name, split):
    """Resolve `split` against the builder's splits ('validation' falls back to 'test')."""
    available = tuple(builder.info.splits.keys())
    if split == "validation" and "validation" not in available and "test" in available:
        split = "test"
    try:
        num_examples = builder.info.splits[split].num_examples
    except (KeyError, ValueError) as error:
        raise ValueError(
            f"`split` is not a split of the tensorflow-datasets dataset {name!r}: its splits are "
            f"{available}; slices such as 'tfds:{name}:train[:80%]' / 'tfds:{name}:train[80%:]' "
            f"carve a held-out part ({error}). Received: split={split!r}"
        ) from None
    return split, num_examples


def _tfds_source(argument, split, *, data_dir, training, seed):
    import tensorflow_datasets as tfds

    name, spec_split = _parse_tfds_argument(argument)
    builder = _tfds_builder(name, data_dir)
    split, num_examples = _tfds_split(builder, name, spec_split or split)
    if builder.info.supervised_keys is None:
        raise ValueError(
            f"The tensorflow-datasets dataset {name!r} has no (image, label) supervised keys."
        )
    image_key, label_key = builder.info.supervised_keys
    image_feature = builder.info.features[image_key]
    label_feature = builder.info.features[label_key]
    if not hasattr(label_feature, "names"):
        raise ValueError(
            f"The tensorflow-datasets dataset {name!r} has no class labels ({label_key!r})."
        )
    # Shuffle still-encoded images; decode after the shuffle buffer (tfds' deferred decoding).
    deferred = isinstance(image_feature, tfds.features.Image)
    examples = builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=training,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
        decoders={image_key: tfds.decode.SkipDecoding()} if deferred else None,
    )
    examples = examples.map(lambda image, label: (image, tf.cast(label, tf.int32)))

    def decode(image):
        image = image_feature.decode_example(image) if deferred else image  # (h, w, c) uint8
        channels = image.shape[-1]
        if channels == 1:
            return tf.image.grayscale_to_rgb(image)
        if channels != 3:
            return image[..., :3]  # drop alpha
        return image

    return _Source(
        examples=examples,
        decode=decode,
        split=split,
        class_names=tuple(label_feature.names),
        num_examples=num_examples,
        shuffle_buffer=min(num_examples, TFDS_SHUFFLE_BUFFER),
    )


# --------------------------------------------------------------------------------------------
# The pipeline


def _check_number(name, value, low, high=None):
    """`value` must be an int/float in [low, high] (high None: unbounded)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"`{name}` must be a number {bounds}. Received: {name}={value!r}")


def _check_positive_int(name, value, optional=False):
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        kind = "a positive int or None" if optional else "a positive int"
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={value!r}")


def _check_flag(name, value):
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool or None. Received: {name}={value!r}")


def _load_source(spec, split, *, data_dir, training, seed, verify_images):
    scheme, argument = _parse_spec(spec)
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


_SOURCES = {"tfds": _tfds_source, "folder": _folder_source, "digits": _digits_source}


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


def _mixed(ds, mixup_alpha, cutmix_alpha, seed):
    """Batches of (images, one-hot labels) -> MixUp or CutMix applied (Keras layers)."""
    import keras

    layers = []
    if mixup_alpha > 0:
        layers.append(keras.layers.MixUp(alpha=mixup_alpha, seed=seed))
    if cutmix_alpha > 0:
        layers.append(keras.layers.CutMix(factor=cutmix_alpha, seed=seed))

    def mix(batch, switch):
        images, labels = batch  # (B, H, W, 3), (B, classes)
        outputs = [layer({"images": images, "labels": labels}) for layer in layers]
        if len(outputs) == 1:
            return outputs[0]["images"], outputs[0]["labels"]
        use_mixup = tf.equal(switch % 2, 0)  # one of the two per batch, probability 1/2 each
        return (
            tf.where(use_mixup, outputs[0]["images"], outputs[1]["images"]),
            tf.where(use_mixup, outputs[0]["labels"], outputs[1]["labels"]),
        )

    switches = tf.data.Dataset.random(seed=None if seed is None else seed + 1)
    return tf.data.Dataset.zip(ds, switches).map(mix, num_parallel_calls=tf.data.AUTOTUNE)


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
        randaugment_layers, randaugment_magnitude: RandAugment's N and M (paper: 2 and 10-15).
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
    """
    if not isinstance(split, str) or not split:
        raise ValueError(f"`split` must be a non-empty string. Received: split={split!r}")
    if augment not in AUGMENTS:
        raise ValueError(f"`augment` must be one of {AUGMENTS}. Received: augment={augment!r}")
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("shuffle_buffer", shuffle_buffer, optional=True)
    _check_number("mixup_alpha", mixup_alpha, 0)
    _check_number("cutmix_alpha", cutmix_alpha, 0, 1)
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
    _check_flag("training", training)
    _check_flag("one_hot", one_hot)
    _check_flag("drop_remainder", drop_remainder)
    preprocessing = DEFAULT_PREPROCESSING if preprocessing is None else preprocessing
    _check_preprocessing(preprocessing)
    size = _image_size(image_size, preprocessing)
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

    source = _load_source(
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
        ds = _mixed(ds, mixup_alpha, cutmix_alpha, seed)
    info = DatasetInfo(
        spec=spec,
        split=source.split,
        num_classes=num_classes,
        class_names=source.class_names,
        num_examples=num_examples,
        steps_per_epoch=steps,
    )
    return ds.prefetch(tf.data.AUTOTUNE), info
