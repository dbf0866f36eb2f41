"""In-graph image handling of the served signatures: input guards, header checks, decoding.

Everything here is traced into the SavedModel and runs inside TF Serving, so every refusal is a
`tf.debugging` assertion: the request fails with INVALID_ARGUMENT (HTTP 400) and a message that
names the broken rule; the server keeps running.

Budgets (per image):
- `MAX_IMAGE_PIXELS`: the size read from the JPEG header or the PNG IHDR chunk *before*
  decoding (decompression bombs: a 60000 x 60000 JPEG is a few hundred bytes);
- `MAX_RESIZED_BYTES`: the float32 image that the eval resize produces (shorter side to
  input_size / crop_pct, keeping the aspect ratio), so that an extreme aspect ratio (1 x 12000)
  cannot make one request allocate most of a GiB.
"""

import math

import tensorflow as tf

# Largest decoded image serving_bytes accepts: 8192 x 8192 pixels (201 MB as uint8 RGB).
MAX_IMAGE_PIXELS = 8192 * 8192
# Largest float32 RGB image the eval resize may produce: 64 MiB (about 5.6M pixels; a 224-px
# model's 256-px shorter side then allows aspect ratios up to about 85:1).
MAX_RESIZED_BYTES = 64 * 2 ** 20
_FLOAT_RGB_BYTES = 3 * 4  # bytes per pixel of a float32 RGB image
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_finite(images, name):
    """Assert op: `images` holds no NaN or infinity (else INVALID_ARGUMENT naming `name`)."""
    return tf.debugging.assert_all_finite(
        images, message=f"{name}: the pixels must be finite numbers (NaN or infinity received)")


def check_rank(tensor, rank, name, shape_text):
    """Assert op: `tensor` has `rank` dimensions (for signatures of unknown rank)."""
    return tf.debugging.assert_equal(
        tf.rank(tensor), rank,
        message=f"{name}: expected a tensor of shape {shape_text} (rank {rank})")


def resize_to_model(images, size, interpolation):
    """serving_default: [b, h, w, 3] pixels of any size -> [b, H, W, 3] (no crop), clipped."""
    images = tf.image.resize(images, size, method=interpolation, antialias=True)
    return tf.clip_by_value(images, 0.0, 255.0)  # bicubic overshoots, as in data.eval_transform


def resized_bytes(height, width, preprocessing):
    """float64 bytes of the float32 RGB image that data.eval_transform's resize makes of an image.

    The shorter side goes to floor(min(input_size) / crop_pct), the longer one in proportion, so
    a 1 x 12000 image at 64 px would become 73 x 876000 pixels (767 MB as float32).
    """
    short = math.floor(min(preprocessing.input_size) / preprocessing.crop_pct)
    shorter = tf.cast(tf.minimum(height, width), tf.float64)
    longer = tf.cast(tf.maximum(height, width), tf.float64)
    pixels = float(short) * tf.math.ceil(float(short) * longer / shorter)  # after the resize
    return pixels * _FLOAT_RGB_BYTES


def _check_resize_budget(height, width, preprocessing):
    """Assert op: the eval resize of a (height, width) image stays within MAX_RESIZED_BYTES."""
    return tf.debugging.assert_less_equal(
        resized_bytes(height, width, preprocessing), tf.constant(MAX_RESIZED_BYTES, tf.float64),
        message=f"image_bytes: the aspect ratio is too extreme (the eval resize would make a "
                f"float image over {MAX_RESIZED_BYTES} bytes)")


def header_size(encoded):
    """(is_jpeg, height, width) of JPEG/PNG bytes, read from the header without decoding."""
    padded = tf.strings.join([encoded, tf.constant(b"\0" * 24)])  # reads never run off the end
    is_jpeg = tf.io.is_jpeg(encoded)
    is_png = tf.equal(tf.strings.substr(padded, 0, 8), _PNG_MAGIC) & tf.equal(
        tf.strings.substr(padded, 12, 4), b"IHDR")
    known = tf.debugging.assert_equal(
        is_jpeg | is_png, True,
        message="image_bytes: each element must be a JPEG or PNG file (empty or unknown data)")

    def jpeg_size():
        shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)  # [3]
        return shape[0], shape[1]

    def png_size():
        # IHDR: width and height as big-endian uint32 at bytes 16..23.
        header = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 16, 8), tf.uint8), tf.int64)
        big_endian = tf.constant([2 ** 24, 2 ** 16, 2 ** 8, 1], tf.int64)  # [4]
        width = tf.reduce_sum(header[:4] * big_endian)
        height = tf.reduce_sum(header[4:] * big_endian)
        return height, width

    with tf.control_dependencies([known]):
        height, width = tf.cond(is_jpeg, jpeg_size, png_size)
    return is_jpeg, height, width


def decode(encoded, preprocessing):
    """JPEG/PNG bytes (scalar string) -> uint8 RGB [h, w, 3], refusing oversized headers first."""
    is_jpeg, height, width = header_size(encoded)
    checks = [
        tf.debugging.assert_positive(
            tf.stack([height, width]), message="image_bytes: the image header has a zero size"),
        tf.debugging.assert_less_equal(  # float64: a forged 2^32 x 2^32 header overflows int64
            tf.cast(height, tf.float64) * tf.cast(width, tf.float64),
            tf.constant(MAX_IMAGE_PIXELS, tf.float64),
            message=f"image_bytes: the image header claims more than {MAX_IMAGE_PIXELS} pixels "
                    "(decompression bomb guard)"),
    ]
    with tf.control_dependencies(checks):  # the budget divides by the (checked) shorter side
        checks.append(_check_resize_budget(height, width, preprocessing))
    with tf.control_dependencies(checks):
        image = tf.cond(
            is_jpeg,
            lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_png(encoded, channels=3, dtype=tf.uint8))
    return tf.ensure_shape(image, (None, None, 3))  # grayscale / RGBA converted to RGB
