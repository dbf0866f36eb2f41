"""Image transforms: the evaluation and training transforms, and the one normalisation.

- `eval_transform`: resize the shorter side to floor(size / crop_pct) with the preset's
  interpolation (antialiased, like PIL), center-crop `size` (torchvision rounding), normalise.
  timm's eval transform; matches PIL to a few grey levels (tests/test_data.py). export.py reuses
  it for in-graph preprocessing.
- `train_transform`: Inception random resized crop (area 8%-100%, aspect 3/4-4/3), resize, random
  horizontal flip, an optional augmenter (RandAugment) on 0..255 pixels, normalise.
- `normalize`: ((pixels / 255) - mean) / std with the preset's mean and std.

NOTE: when no crop satisfying the area/aspect ranges is found in 10 attempts, the random resized
crop keeps the whole image (TF's Inception sampler); timm falls back to a center crop.
"""

import math

import tensorflow as tf

from lambda_keras import utils
from lambda_keras.presets import DEFAULT_PREPROCESSING, Preprocessing

RESIZE_METHODS = ("bilinear", "bicubic", "nearest")
RANDOM_RESIZED_CROP_SCALE = (0.08, 1.0)
RANDOM_RESIZED_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def check_preprocessing(preprocessing):
    """Refuses a `preprocessing` the transforms cannot apply (the one check: data, export).

    Raises:
        TypeError: `preprocessing` is not a `lambda_keras.weights.Preprocessing`.
        ValueError: its interpolation is not one of `RESIZE_METHODS`, or its crop_pct is not in
            (0, 1].
    """
    if not isinstance(preprocessing, Preprocessing):
        raise TypeError(
            "`preprocessing` must be a lambda_keras.weights.Preprocessing. "
            f"Received: preprocessing={preprocessing!r}"
        )
    if preprocessing.interpolation not in RESIZE_METHODS:
        raise ValueError(
            f"`preprocessing.interpolation` must be one of {RESIZE_METHODS}. "
            f"Received: preprocessing.interpolation={preprocessing.interpolation!r}"
        )
    if not 0.0 < preprocessing.crop_pct <= 1.0:
        raise ValueError(
            "`preprocessing.crop_pct` must be in (0, 1]. "
            f"Received: preprocessing.crop_pct={preprocessing.crop_pct!r}"
        )


def image_size_of(image_size, preprocessing):
    """`image_size` (int, (h, w) or None for the preset's) -> (height, width)."""
    if image_size is None:
        return utils.check_size_pair("preprocessing.input_size", preprocessing.input_size)
    return utils.check_size_pair("image_size", image_size)


def normalize(images, preprocessing=DEFAULT_PREPROCESSING):
    """Pixels in 0..255 (any dtype, channels last) -> float32 ((pixels / 255) - mean) / std.

    Args:
        images: a tensor or array of RGB pixels in 0..255, shape (..., 3) (one image, a batch).
        preprocessing: a `lambda_keras.weights.Preprocessing`, whose `mean` and `std` (of pixels
            / 255, per channel) are used; default `DEFAULT_PREPROCESSING` (ImageNet's).

    Returns:
        A float32 tensor of the shape of `images`.

    Raises:
        TypeError: `preprocessing` is not a Preprocessing.
        ValueError: `preprocessing` has an unknown interpolation or a crop_pct outside (0, 1]
            (`check_preprocessing`, shared by every transform).

    Example:

    >>> x = normalize(tf.fill([2, 8, 8, 3], 255.0))  # white images
    >>> x.shape, round(float(x[0, 0, 0, 0]), 4)  # (1 - 0.485) / 0.229
    (TensorShape([2, 8, 8, 3]), 2.2489)
    """
    check_preprocessing(preprocessing)
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

    Args:
        image: RGB pixels in 0..255 (any dtype), (h, w, 3) or (b, h, w, 3); a batch shares one
            size.
        preprocessing: a `lambda_keras.weights.Preprocessing` (crop_pct, interpolation, mean,
            std, input_size); default `DEFAULT_PREPROCESSING`.
        image_size: int or (height, width) of the result; default `preprocessing.input_size`.

    Returns:
        A float32 tensor (H, W, 3) or (b, H, W, 3), normalised as `normalize`.

    Raises:
        TypeError: `preprocessing` is not a Preprocessing, or `image_size` not an int or a pair
            of ints.
        ValueError: an unknown interpolation, a crop_pct outside (0, 1], or a size below 1.

    Example:

    >>> image = tf.zeros([480, 640, 3], tf.uint8)
    >>> eval_transform(image, image_size=224).shape  # resized to 256 x 341, then cropped
    TensorShape([224, 224, 3])
    """
    check_preprocessing(preprocessing)
    size = image_size_of(image_size, preprocessing)
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
    (a callable on float 0..255 images such as `make_randaugment()`; one with a true `takes_seed`
    attribute is called with a stateless seed derived from `seed`), then `normalize`.
    `seed` is a stateless seed, shape (2,) int; None draws one (not reproducible).

    Args:
        image: one RGB image of pixels in 0..255 (any dtype), (h, w, 3).
        preprocessing: a `lambda_keras.weights.Preprocessing` (interpolation, mean, std,
            input_size; its crop_pct is the evaluation's); default `DEFAULT_PREPROCESSING`.
        image_size: int or (height, width) of the result; default `preprocessing.input_size`.
        seed: a (2,) int stateless seed; the result is a function of `image` and `seed`.
        augmenter: None or a callable on float32 (H, W, 3) images in 0..255 returning the same
            shape (`make_randaugment()`).
        scale: (min, max) area fraction of the random crop (ImageNet's (0.08, 1.0)).
        ratio: (min, max) aspect ratio of the random crop (3/4, 4/3).

    Returns:
        A float32 tensor (H, W, 3), normalised as `normalize`.

    Raises:
        TypeError: `preprocessing` is not a Preprocessing, or `image_size` not an int or a pair
            of ints.
        ValueError: an unknown interpolation, a crop_pct outside (0, 1], or a size below 1.

    Example:

    >>> image = tf.zeros([100, 120, 3], tf.uint8)
    >>> train_transform(image, image_size=64, seed=[1, 2],
    ...                 augmenter=make_randaugment(2, 10)).shape
    TensorShape([64, 64, 3])
    """
    check_preprocessing(preprocessing)
    size = image_size_of(image_size, preprocessing)
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
        # A RandAugment gets this example's own seed (reproducible, resumable); other callables
        # draw their own randomness.
        if getattr(augmenter, "takes_seed", False):
            augmented = augmenter(image, seed=tf.random.experimental.stateless_fold_in(seed, 2))
        else:
            augmented = augmenter(image)
        image = tf.ensure_shape(tf.cast(augmented, tf.float32), size + (3,))
    return normalize(image, preprocessing)

