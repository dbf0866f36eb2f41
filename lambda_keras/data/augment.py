"""Augmentation: RandAugment as tensorflow/tpu computes it, MixUp / CutMix (Keras' layers).

RandAugment follows `distort_image_with_randaugment` of tensorflow/tpu
models/official/efficientnet/autoaugment.py, the implementation ResNet-RS trains with
(models/official/resnet/resnet_preprocessing.py imports it; both read there):
- the image is clipped to 0..255 and cast to uint8; `num_layers` times, one of the 16 ops below
  is drawn uniformly and applied (always: the reference draws a probability it never uses);
- every op has the same magnitude M, scaled as level = M / 10 (M = 10 is the reference's
  "maximum level", larger M extrapolates; ResNet-RS uses M = 10 and 15);
- geometric ops have a fixed size and a random sign (probability 1/2 each) and fill with grey 128:

| op | argument at magnitude M |
|---|---|
| Rotate | +-30 * M/10 degrees |
| ShearX, ShearY | +-0.3 * M/10 |
| TranslateX, TranslateY | +-100 * M/10 pixels (`translate_const` 100; AutoAugment's is 250) |
| Color, Contrast, Brightness, Sharpness | blend factor 1.8 * M/10 + 0.1 (PIL ImageEnhance) |
| Posterize | int(4 * M/10) bits kept |
| Solarize | threshold int(256 * M/10) |
| SolarizeAdd | + int(110 * M/10) below 128 |
| Cutout | a grey square of side 2 * int(40 * M/10) at a uniform centre |
| AutoContrast, Equalize, Invert | no argument |

The geometric ops use `ImageProjectiveTransformV3` with nearest interpolation and constant fill,
the op under Keras' RandomRotation / RandomTranslation / RandomShear and under the reference's
`contrib_image.transform` (whose wrap/unwrap fills the same pixels with 128).
NOTE: Keras' preprocessing layers draw a uniform value in a range; the reference applies exactly
+-the magnitude, which one transform with a drawn sign expresses, so the ops build that transform.
NOTE: translations are in pixels whatever the image size, as in the reference (tuned at 224 px):
at 160 px and M = 15 a translation moves 150 of 160 columns out.
NOTE: the reference's Contrast blends with `sum(histogram) / 256`, the pixel count over 256, not
the mean grey level its docstring (PIL's ImageEnhance.Contrast) means; here it is the mean grey
level, as PIL. Posterize keeps all 8 bits where int(4 * M/10) > 8 (the reference shifts by a
negative amount there).

Randomness is stateless: `RandAugment(image, seed)` with a (2,) int seed is a function of the
image and the seed (train_transform passes each example's seed, so a resumed run repeats the
same augmentations).

MixUp / CutMix: Keras' `MixUp` and `CutMix` layers on batches. NOTE: with both on, each batch uses
one of them with probability 1/2 (timm's default switch); Keras' CutMix draws its Beta parameter
uniformly from [0, cutmix_alpha].
"""

import math

import tensorflow as tf

from lambda_keras import utils

RANDAUGMENT_MAX_MAGNITUDE = 30
MAX_LEVEL = 10.0  # the reference's _MAX_LEVEL: level = magnitude / MAX_LEVEL
REPLACE = 128  # the grey that fills pixels moved in from outside the image
TRANSLATE_CONST = 100  # pixels at M = 10 (the reference's RandAugment hparams)
CUTOUT_CONST = 40
OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
       "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
       "Cutout", "SolarizeAdd")


# --------------------------------------------------------------------------- the 16 ops (uint8)
def _blend(image1, image2, factor):
    """image1 + factor * (image2 - image1), clipped and truncated to uint8 (the reference)."""
    image1 = tf.cast(image1, tf.float32)
    image2 = tf.cast(image2, tf.float32)
    blended = image1 + factor * (image2 - image1)
    return tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)


def _transform(image, transform):
    """Projective `transform` (8 numbers, output -> input pixel map), nearest, grey fill."""
    transformed = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None],  # (1, H, W, 3)
        transforms=tf.reshape(tf.cast(transform, tf.float32), [1, 8]),
        output_shape=tf.shape(image)[:2],
        fill_value=float(REPLACE),
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )[0]  # (H, W, 3), integer values: nearest interpolation copies pixels
    return tf.cast(transformed, tf.uint8)


def rotate(image, degrees):
    """Rotation by `degrees` about the image centre (tfa/contrib `rotate` transform)."""
    radians = degrees * math.pi / 180.0
    height = tf.cast(tf.shape(image)[0], tf.float32) - 1.0
    width = tf.cast(tf.shape(image)[1], tf.float32) - 1.0
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    return _transform(image, tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0]))


def translate(image, dx, dy):
    """Content moves by (-dx, -dy) pixels: output (x, y) reads input (x + dx, y + dy)."""
    return _transform(image, tf.stack([1.0, 0.0, dx, 0.0, 1.0, dy, 0.0, 0.0]))


def shear(image, shear_x, shear_y):
    """Output (x, y) reads input (x + shear_x * y, y + shear_y * x)."""
    return _transform(image, tf.stack([1.0, shear_x, 0.0, shear_y, 1.0, 0.0, 0.0, 0.0]))


def autocontrast(image):
    """Each channel stretched to 0..255 (PIL ImageOps.autocontrast without cutoff)."""
    def channel(values):
        lo = tf.cast(tf.reduce_min(values), tf.float32)
        hi = tf.cast(tf.reduce_max(values), tf.float32)
        scale = 255.0 / tf.maximum(hi - lo, 1.0)
        stretched = tf.cast(tf.clip_by_value(
            tf.cast(values, tf.float32) * scale - lo * scale, 0.0, 255.0), tf.uint8)
        return tf.where(hi > lo, stretched, values)

    return tf.stack([channel(image[..., c]) for c in range(3)], -1)


def equalize(image):
    """Histogram equalisation per channel (PIL ImageOps.equalize, the reference's port)."""
    def channel(values):
        values = tf.cast(values, tf.int32)
        histogram = tf.histogram_fixed_width(values, [0, 255], nbins=256)  # (256,)
        nonzero = tf.reshape(tf.gather(histogram, tf.where(histogram != 0)), [-1])
        step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
        safe_step = tf.maximum(step, 1)
        lut = (tf.cumsum(histogram) + safe_step // 2) // safe_step
        lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
        return tf.cast(tf.where(step == 0, values, tf.gather(lut, values)), tf.uint8)

    return tf.stack([channel(image[..., c]) for c in range(3)], -1)


def _grey(image):
    return tf.image.rgb_to_grayscale(image)  # (H, W, 1) uint8, ITU-R 601 weights


def color(image, factor):
    return _blend(tf.image.grayscale_to_rgb(_grey(image)), image, factor)


def contrast(image, factor):
    """Blend with the mean grey level (PIL ImageEnhance.Contrast; module NOTE)."""
    mean = tf.reduce_mean(tf.cast(_grey(image), tf.float32))
    degenerate = tf.fill(tf.shape(image), tf.cast(mean + 0.5, tf.uint8))  # int(mean + 0.5), PIL
    return _blend(degenerate, image, factor)


def brightness(image, factor):
    return _blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
    """Blend with PIL's SMOOTH-filtered image (borders kept)."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])  # (3, 3, 3, 1)
    smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1],
                                    padding="VALID")[0]  # (H-2, W-2, 3)
    smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)
    inner = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])  # 1 inside, 0 on the border
    smooth = tf.where(inner == 1, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return _blend(smooth, image, factor)


def posterize(image, bits):
    shift = tf.constant(max(8 - bits, 0), tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold):
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition, threshold=128):
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(image < threshold, added, image)


def cutout(image, pad_size, center):
    """A grey (2 pad_size)^2 square centred at `center` = (row, column), clipped to the image."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    rows = tf.range(height)[:, None]
    columns = tf.range(width)[None, :]
    inside = ((rows >= center[0] - pad_size) & (rows < center[0] + pad_size)
              & (columns >= center[1] - pad_size) & (columns < center[1] + pad_size))
    return tf.where(inside[..., None], tf.cast(REPLACE, tf.uint8), image)


# ------------------------------------------------------------------------------- RandAugment
class RandAugment:
    """RandAugment as tensorflow/tpu's autoaugment.py computes it (module docstring).

    Args:
        num_layers: N, ops applied in turn (ResNet-RS: 2).
        magnitude: M on the reference's scale (level = M / 10; ResNet-RS: 10 or 15).
        ops: the op names to draw from (default all 16 of `OPS`; a subset is for tests).
        translate_const: pixels of a translation at M = 10.
        seed: int, the seed of calls without their own seed.

    Call arguments:
        image: float or uint8 (H, W, 3) with values in 0..255.
        seed: optional (2,) int stateless seed; the result is a function of image and seed.

    Returns:
        float32 (H, W, 3) in 0..255 (integer-valued, as the reference's uint8 image).

    Raises:
        TypeError: `num_layers` or `seed` is not an int, `magnitude` or `translate_const` is
            not a number, or `ops` is not iterable.
        ValueError: `num_layers` < 1, `magnitude` outside [0, 30] (`RANDAUGMENT_MAX_MAGNITUDE`),
            `ops` empty or naming an op not in `OPS`, `translate_const` < 0 or `seed` < 0.

    Example:

    >>> augment = RandAugment(num_layers=2, magnitude=15)
    >>> image = augment(tf.fill([224, 224, 3], 100.0), seed=[1, 2])
    >>> image.shape, image.dtype
    (TensorShape([224, 224, 3]), tf.float32)
    """

    takes_seed = True  # train_transform passes each example's stateless seed

    def __init__(self, num_layers=2, magnitude=10, *, ops=OPS, translate_const=TRANSLATE_CONST,
                 seed=None):
        self.num_layers = utils.check_int("num_layers", num_layers, low=1)
        self.magnitude = utils.check_number("magnitude", magnitude, low=0,
                                            high=RANDAUGMENT_MAX_MAGNITUDE)
        unknown = [op for op in ops if op not in OPS]
        if not ops or unknown:
            raise ValueError(f"`ops` must be a non-empty subset of {OPS}. Received: ops={ops!r}")
        self.ops = tuple(ops)
        self.translate_const = utils.check_number("translate_const", translate_const, low=0)
        self.seed = utils.check_int("seed", seed, low=0, optional=True)

    def arguments(self):
        """{op: its argument at this magnitude, before the random sign}."""
        level = self.magnitude / MAX_LEVEL
        enhance = level * 1.8 + 0.1
        return {
            "Rotate": level * 30.0, "ShearX": level * 0.3, "ShearY": level * 0.3,
            "TranslateX": level * self.translate_const, "TranslateY": level * self.translate_const,
            "Color": enhance, "Contrast": enhance, "Brightness": enhance, "Sharpness": enhance,
            "Posterize": int(level * 4), "Solarize": int(level * 256),
            "SolarizeAdd": int(level * 110), "Cutout": int(level * CUTOUT_CONST),
        }

    def _branch(self, name, image, seed):
        """The op `name` on uint8 `image`; `seed` draws its sign or cutout centre."""
        value = self.arguments().get(name)
        sign = tf.where(tf.random.stateless_uniform([], seed) < 0.5, -1.0, 1.0)
        if name == "Rotate":
            return rotate(image, sign * value)
        if name in ("ShearX", "ShearY"):
            amount = sign * value
            return shear(image, amount, 0.0) if name == "ShearX" else shear(image, 0.0, amount)
        if name in ("TranslateX", "TranslateY"):
            amount = sign * value
            return translate(image, amount, 0.0) if name == "TranslateX" else translate(
                image, 0.0, amount)
        if name == "Cutout":
            size = tf.shape(image)[:2]
            center = tf.random.stateless_uniform([2], seed, 0, 2**30, dtype=tf.int32) % size
            return cutout(image, value, center)
        single = {"AutoContrast": autocontrast, "Equalize": equalize,
                  "Invert": lambda x: 255 - x}
        if name in single:
            return single[name](image)
        with_value = {"Color": color, "Contrast": contrast, "Brightness": brightness,
                      "Sharpness": sharpness, "Posterize": posterize, "Solarize": solarize,
                      "SolarizeAdd": solarize_add}
        return with_value[name](image, value)

    def __call__(self, image, seed=None):
        image = tf.convert_to_tensor(image)
        if seed is None:
            seed = tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32, seed=self.seed)
        image = tf.cast(tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0), tf.uint8)
        shape = image.shape
        for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed,
                                                                            self.num_layers)):
            choose_seed, op_seed = tf.unstack(tf.random.experimental.stateless_split(layer_seed))
            chosen = tf.random.stateless_uniform([], choose_seed, 0, len(self.ops), tf.int32)
            branches = [lambda name=name: self._branch(name, image, op_seed) for name in self.ops]
            image = tf.ensure_shape(tf.switch_case(chosen, branches), shape)  # (H, W, 3) uint8
        return tf.cast(image, tf.float32)


def make_randaugment(num_layers=2, magnitude=10, *, seed=None):
    """`RandAugment` of all 16 ops for 0..255 images: `num_layers` ops at magnitude M.

    M is on tensorflow/tpu's scale: M = 10 rotates by +-30 degrees; ResNet-RS uses 10 and 15.

    Args:
        num_layers: N, the ops applied in turn to each image.
        magnitude: M, the strength of every op, in [0, 30] (`RANDAUGMENT_MAX_MAGNITUDE`).
        seed: int, the seed of calls without their own seed; None: not reproducible.

    Returns:
        A `RandAugment` drawing from all of `RANDAUGMENT_OPS`, called as
        `augment(image, seed=None)`.

    Raises:
        TypeError: `num_layers` or `seed` is not an int, or `magnitude` is not a number.
        ValueError: `num_layers` < 1, `magnitude` outside [0, 30], or `seed` < 0.

    Example:

    >>> augment = make_randaugment(2, 15)
    >>> image = augment(np.full((64, 64, 3), 100.0, "float32"), seed=[1, 2])
    >>> image.shape, image.dtype
    (TensorShape([64, 64, 3]), tf.float32)
    """
    return RandAugment(num_layers, magnitude, seed=seed)


# ------------------------------------------------------------------------------ MixUp / CutMix
def mix_batches(ds, mixup_alpha, cutmix_alpha, seed):
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
