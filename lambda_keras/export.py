"""Export: TF Serving SavedModels and LiteRT (TFLite) flatbuffers, the serving contract built in.

`saved_model(model, export_dir)` writes a TF Serving *model base path*: `export_dir/<version>/`
holding `saved_model.pb`, `variables/`, `assets/labels.txt` and
`assets.extra/tf_serving_warmup_requests`. Two signatures, both returning

    probabilities   float32 [batch, classes]
    top_k_scores    float32 [batch, k]
    top_k_indices   int32   [batch, k]
    top_k_labels    string  [batch, k]   (from assets/labels.txt through a lookup table)

- `serving_default`: `images` float32 [batch, height, width, 3], RGB pixels in 0..255, any size;
  a model with a fixed input size gets the images resized to it in-graph, then
  `data.normalize` ((pixels / 255) - mean) / std.
- `serving_bytes`: `image_bytes` string [batch] of JPEG or PNG files (what TF Serving's REST API
  delivers for `{"b64": ...}`): checked, decoded, then `data.eval_transform` with the preset's
  `Preprocessing` (shorter side to input_size / crop_pct, center crop, normalise: timm's eval).

The SavedModel is written with Keras' `ExportArchive` (tf.functions over the model's variables),
so serving needs neither lambda_keras nor Keras. It is written to a hidden temporary directory
next to the target and renamed into place only when complete (TF Serving ignores non-integer
directory names), so a failed export leaves no version directory behind.

Hostile inputs to `serving_bytes` fail the request with an InvalidArgument error, never the
process: anything but JPEG/PNG (empty strings included) is refused by its magic bytes; the image
size is read from the JPEG header (`tf.image.extract_jpeg_shape`) or the PNG IHDR chunk *before*
decoding, and images over `MAX_IMAGE_PIXELS` pixels (decompression bombs) are refused, as are
aspect ratios whose eval resize would exceed that size. Grayscale and RGBA images are converted
to RGB; a 1x1 image is upscaled like any other.

`tflite(model, path, quantization=...)` converts the model's inference call with the TFLite
converter restricted to the built-in op set (no Select TF / Flex ops; the written file is checked
op by op): None (float32), "float16" (float16 weights), "dynamic" (int8 weights, float
activations) or "int8" (full integer quantization calibrated on `representative_data`, float32
input and output tensors). int8 files whose calibration produced unbounded ranges are refused.

NOTE: JPEGs are decoded with `dct_method="INTEGER_ACCURATE"` (libjpeg's ISLOW, what PIL uses);
resizing is `tf.image.resize(antialias=True)`, close to but not bit-identical with PIL's.
"""

import contextlib
import math
import os
import re
import shutil
import tempfile

import numpy as np
import keras
import tensorflow as tf

from lambda_keras import data
from lambda_keras import weights

QUANTIZATIONS = (None, "float16", "dynamic", "int8")
# Largest decoded image (and largest eval-resized image) serving_bytes accepts: 8192 x 8192.
MAX_IMAGE_PIXELS = 8192 * 8192
# int8 tensors with a larger scale (a range of +-1e12) come from infinite calibration ranges.
MAX_QUANTIZATION_SCALE = 1e10
SIGNATURE_IMAGES = "serving_default"
SIGNATURE_BYTES = "serving_bytes"
LABELS_FILE = "labels.txt"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_VERSION_NAME = re.compile(r"^\d+$")


# ---------------------------------------------------------------------------- model inspection
def _check_classifier(model):
    """(static input size (H, W) or None, number of classes, whether the output is logits)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={type(model).__name__}")
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4 or model.inputs[0].shape[-1] != 3:
        raise ValueError(
            "`model` must take one batch of RGB images [batch, height, width, 3]. Received: "
            f"input shapes {[tuple(t.shape) for t in model.inputs]}")
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError(
            "`model` must be a classifier with one output [batch, classes] (include_top=True). "
            f"Received: output shapes {[tuple(t.shape) for t in model.outputs]}")
    height, width = model.inputs[0].shape[1:3]
    size = None if height is None or width is None else (int(height), int(width))
    return size, int(model.outputs[0].shape[-1]), _outputs_logits(model)


def _outputs_logits(model):
    """False when the last layer applies softmax, True when it is linear (logits)."""
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return False
    name = getattr(getattr(last, "activation", None), "__name__", None)
    if name in ("softmax", "linear"):
        return name == "linear"
    raise ValueError(
        "The served `probabilities` need a model whose last layer applies softmax or no "
        "activation (logits, softmax is then applied in-graph). Received: last layer "
        f"{last.name!r} with activation={name!r}")


def _resolve_preprocessing(preprocessing, model_size):
    """The Preprocessing for the served signatures; its input_size must match a static model."""
    if preprocessing is None:
        preprocessing = weights.DEFAULT_PREPROCESSING
        if model_size is not None:
            preprocessing = weights.replace_input_size(preprocessing, model_size)
    if not isinstance(preprocessing, weights.Preprocessing):
        raise TypeError(
            "`preprocessing` must be a lambda_keras.weights.Preprocessing. Received: "
            f"preprocessing={preprocessing!r}")
    size = tuple(int(s) for s in preprocessing.input_size)
    if model_size is not None and size != model_size:
        raise ValueError(
            f"`preprocessing.input_size` must match the model's input size {model_size}. "
            f"Received: preprocessing.input_size={preprocessing.input_size!r}")
    if not 0.0 < preprocessing.crop_pct <= 1.0:
        raise ValueError(
            "`preprocessing.crop_pct` must be in (0, 1]. "
            f"Received: crop_pct={preprocessing.crop_pct!r}")
    if preprocessing.interpolation not in data.RESIZE_METHODS:
        raise ValueError(
            f"`preprocessing.interpolation` must be one of {data.RESIZE_METHODS}. "
            f"Received: interpolation={preprocessing.interpolation!r}")
    return preprocessing


def _resolve_labels(labels, num_classes):
    """Class names, one per class; a path reads one name per line."""
    if labels is None:
        return [str(i) for i in range(num_classes)]
    if isinstance(labels, (str, os.PathLike)):
        with open(labels, encoding="utf-8") as f:
            labels = f.read().splitlines()
    labels = list(labels)
    if len(labels) != num_classes or not all(isinstance(name, str) for name in labels):
        raise ValueError(
            f"`labels` must be {num_classes} strings, one per class. "
            f"Received: {len(labels)} labels starting {labels[:3]!r}")
    if any("\n" in name or "\r" in name for name in labels):
        raise ValueError("`labels` must not contain line breaks (labels.txt has one per line).")
    return labels


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


# ----------------------------------------------------------------- in-graph preprocessing
def _resize_to_model(images, size, interpolation):
    """serving_default: [b, h, w, 3] pixels of any size -> [b, H, W, 3] (no crop), clipped."""
    images = tf.image.resize(images, size, method=interpolation, antialias=True)
    return tf.clip_by_value(images, 0.0, 255.0)  # bicubic overshoots, as in data.eval_transform


def _check_resize_budget(height, width, preprocessing):
    """Assert op: the eval resize of a (height, width) image stays under MAX_IMAGE_PIXELS.

    data.eval_transform resizes the shorter side to floor(size / crop_pct) keeping the aspect
    ratio, so a 1 x 20000 image would be resized to 73 x 1460000 pixels at 64 px.
    """
    short = math.floor(min(preprocessing.input_size) / preprocessing.crop_pct)
    shorter = tf.cast(tf.minimum(height, width), tf.float64)
    longer = tf.cast(tf.maximum(height, width), tf.float64)
    resized = float(short) * float(short) * longer / shorter  # pixels after the eval resize
    return tf.debugging.assert_less_equal(
        resized, tf.constant(MAX_IMAGE_PIXELS, tf.float64),
        message=f"image_bytes: the aspect ratio is too extreme (the eval resize would exceed "
                f"{MAX_IMAGE_PIXELS} pixels)")


def _header_size(encoded):
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


def _decode(encoded, preprocessing):
    """JPEG/PNG bytes (scalar string) -> uint8 RGB [h, w, 3], refusing oversized headers first."""
    is_jpeg, height, width = _header_size(encoded)
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


# ------------------------------------------------------------------------------- SavedModel
class _Server:
    """The two serving functions over one model; everything here is traced into the SavedModel."""

    def __init__(self, model, preprocessing, labels_path, top_k, model_size, logits):
        self.model = model
        self.preprocessing = preprocessing
        self.top_k = top_k
        self.model_size = model_size
        self.logits = logits
        initializer = tf.lookup.TextFileInitializer(
            labels_path, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            tf.string, tf.lookup.TextFileIndex.WHOLE_LINE)
        self.labels = tf.lookup.StaticHashTable(initializer, default_value="")

    def _classify(self, pixels):
        """Float32 RGB pixels 0..255 at the model size [b, H, W, 3] -> the output dict."""
        return self._classify_normalized(data.normalize(pixels, self.preprocessing))

    def _classify_normalized(self, images):
        """Normalised images at the model size [b, H, W, 3] -> the output dict."""
        outputs = self.model(images, training=False)  # [b, classes]
        outputs = tf.cast(outputs, tf.float32)
        probabilities = tf.nn.softmax(outputs, axis=-1) if self.logits else outputs
        scores, indices = tf.math.top_k(probabilities, k=self.top_k)  # [b, k], [b, k]
        return {
            "probabilities": probabilities,
            "top_k_scores": scores,
            "top_k_indices": indices,
            "top_k_labels": self.labels.lookup(tf.cast(indices, tf.int64)),  # [b, k]
        }

    def serve_images(self, images):
        if self.model_size is not None:
            size = tf.constant(self.model_size, tf.int32)
            same = tf.reduce_all(tf.equal(tf.shape(images)[1:3], size))
            images = tf.cond(
                same, lambda: tf.identity(images),
                lambda: _resize_to_model(images, size, self.preprocessing.interpolation))
            images = tf.ensure_shape(images, (None, *self.model_size, 3))  # [b, H, W, 3]
        return self._classify(images)

    def serve_bytes(self, image_bytes):
        size = tuple(self.preprocessing.input_size)
        images = tf.map_fn(
            lambda item: data.eval_transform(_decode(item, self.preprocessing), self.preprocessing),
            image_bytes, fn_output_signature=tf.TensorSpec((*size, 3), tf.float32))  # [b, H, W, 3]
        return self._classify_normalized(images)


def _build_archive(server):
    archive = keras.export.ExportArchive()
    archive.track(server.model)
    archive.track(server.labels)  # the lookup table and, through it, assets/labels.txt
    archive.add_endpoint(
        SIGNATURE_IMAGES, server.serve_images,
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32, name="images")])
    archive.add_endpoint(
        SIGNATURE_BYTES, server.serve_bytes,
        input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
    return archive


def _serving_apis():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError as error:
        raise ImportError(
            "Writing TF Serving warmup requests needs the `tensorflow-serving-api` package: "
            "`pip install 'lambda-keras[serving]'`, or pass `warmup=False`.") from error
    return predict_pb2, prediction_log_pb2


def _sample_image(height, width):
    """A deterministic, smooth RGB test image, uint8 [height, width, 3] (warmup and docs)."""
    rows, cols = np.meshgrid(np.linspace(0.0, 1.0, height), np.linspace(0.0, 1.0, width),
                             indexing="ij")
    channels = [rows, cols, 0.5 + 0.5 * np.sin(6.0 * (rows + cols))]
    return np.round(255.0 * np.stack(channels, axis=-1)).astype("uint8")


def warmup_requests(image_size, model_name="model"):
    """Serialized PredictionLog records exercising both signatures: a float batch, a JPEG, and a
    JPEG + PNG batch. TF Serving replays them against the version it is loading."""
    predict_pb2, prediction_log_pb2 = _serving_apis()
    image = _sample_image(*image_size)
    jpeg = tf.io.encode_jpeg(image, quality=90).numpy()
    png = tf.io.encode_png(_sample_image(image_size[0] + 17, image_size[1] + 5)).numpy()
    inputs = [
        (SIGNATURE_IMAGES, "images", image[None].astype("float32")),
        (SIGNATURE_BYTES, "image_bytes", np.array([jpeg], dtype=object)),
        (SIGNATURE_BYTES, "image_bytes", np.array([jpeg, png], dtype=object)),
    ]
    records = []
    for signature, key, value in inputs:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


def _version_directory(export_dir, version, overwrite):
    """The target export_dir/<version>, checked; `version` None picks the next integer."""
    if version is None:
        existing = os.listdir(export_dir) if os.path.isdir(export_dir) else []
        numbers = [int(name) for name in existing
                   if _VERSION_NAME.match(name) and os.path.isdir(os.path.join(export_dir, name))]
        version = max(numbers, default=0) + 1
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 0:
        raise ValueError(
            "`version` must be a non-negative integer (TF Serving versions). "
            f"Received: version={version!r}")
    target = os.path.join(export_dir, str(int(version)))
    if os.path.isdir(target) and os.listdir(target) and not overwrite:
        raise FileExistsError(
            f"The version directory {target!r} exists and is not empty; pass overwrite=True to "
            "replace it or choose another `version`.")
    if os.path.exists(target) and not os.path.isdir(target):
        raise FileExistsError(f"{target!r} exists and is not a directory.")
    return target


@contextlib.contextmanager
def _staging_directory(target):
    """Yields a hidden temporary directory next to `target`, renamed onto it on success."""
    parent = os.path.dirname(target)
    created_parent = not os.path.isdir(parent)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(target)}-", dir=parent)
    try:
        yield staging
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_parent and not os.listdir(parent):
            os.rmdir(parent)
        raise


def _move_into_place(staging, target):
    if not os.path.isdir(target) or not os.listdir(target):
        os.replace(staging, target)  # an empty directory is replaced atomically
        return
    retired = tempfile.mkdtemp(prefix=f".old-{os.path.basename(target)}-",
                               dir=os.path.dirname(target))
    os.rmdir(retired)
    os.replace(target, retired)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def saved_model(model, export_dir, version=None, preprocessing=None, labels=None, top_k=5,
                warmup=True, overwrite=False):
    """Writes `model` as a TF Serving servable `export_dir/<version>/`; returns that path.

    Args:
        model: a Keras classifier taking normalised RGB images [batch, H, W, 3] (static or dynamic
            H, W) and returning softmax probabilities or logits [batch, classes].
        export_dir: the TF Serving model base path (created if missing).
        version: integer version directory; defaults to one more than the largest present (or 1).
        preprocessing: `lambda_keras.weights.Preprocessing` of the weights (input size, crop,
            interpolation, mean/std); defaults to ImageNet statistics at the model's input size.
        labels: class names (a sequence or a text file with one per line); defaults to "0", "1", ...
        top_k: number of top classes returned (at most the number of classes).
        warmup: write `assets.extra/tf_serving_warmup_requests` (needs tensorflow-serving-api).
        overwrite: replace a non-empty existing version directory.
    """
    model_size, num_classes, logits = _check_classifier(model)
    preprocessing = _resolve_preprocessing(preprocessing, model_size)
    labels = _resolve_labels(labels, num_classes)
    top_k = min(_positive_int("top_k", top_k), num_classes)
    if warmup:
        _serving_apis()  # fail before writing anything
    export_dir = os.fspath(export_dir)
    target = _version_directory(export_dir, version, overwrite)

    with _staging_directory(target) as staging, tempfile.TemporaryDirectory() as scratch:
        labels_path = os.path.join(scratch, LABELS_FILE)
        with open(labels_path, "w", encoding="utf-8") as f:
            f.write("\n".join(labels) + "\n")
        server = _Server(model, preprocessing, labels_path, top_k, model_size, logits)
        _build_archive(server).write_out(staging, verbose=False)
        if warmup:
            os.makedirs(os.path.join(staging, "assets.extra"))
            records = warmup_requests(tuple(preprocessing.input_size),
                                      os.path.basename(os.path.normpath(export_dir)))
            with tf.io.TFRecordWriter(os.path.join(staging, WARMUP_FILE)) as writer:
                for record in records:
                    writer.write(record)
    return target


# ---------------------------------------------------------------------------------- LiteRT
def _representative_dataset(source):
    """A generator function yielding [1, H, W, 3] float32 samples from an array or tf.data."""
    if isinstance(source, tf.data.Dataset):
        def batches():
            for element in source:
                yield element[0] if isinstance(element, (tuple, list)) else element
    else:
        array = np.asarray(source, dtype="float32")
        if array.ndim != 4:
            raise ValueError(
                "`representative_data` must be a tf.data.Dataset or an array of normalised images "
                f"[samples, H, W, 3]. Received: an array of shape {array.shape}")

        def batches():
            yield array

    def samples():
        for batch in batches():
            batch = np.asarray(batch, dtype="float32")
            batch = batch[None] if batch.ndim == 3 else batch
            for sample in batch:
                yield [sample[None]]

    return samples


def _converter(model, quantization, representative_data):
    """A TFLiteConverter over the model's inference call, set up for one quantization mode."""
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in model.inputs]

    @tf.function(input_signature=specs, autograph=False)
    def serve(*inputs):
        return model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)

    # NOTE: converting the concrete function directly skips the SavedModel round trip of
    # `model.export(format="litert")` (about 15 s for a LambdaResNet-50) for the same graph. The
    # converter freezes the variables it finds on `trackable`: it must hold the tf.Variables the
    # function captures (as keras.export.ExportArchive does); given the Keras model itself, the
    # variables stay mutable READ_VARIABLE ops and the converted model computes garbage.
    concrete = serve.get_concrete_function()
    trackable = tf.Module()
    trackable.captured_variables = list(concrete.variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], trackable)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        # Integer kernels for every op (conversion fails otherwise); float32 input/output tensors.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = _representative_dataset(representative_data)
    return converter


def _write_atomically(path, data):
    """Writes `data` to a hidden temporary file next to `path`, then renames it onto `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".tmp-{os.path.basename(path)}-", dir=directory)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise


def _check_quantization_scales(flatbuffer):
    """Refuses int8 models whose calibration produced unusable scales (e.g. from -inf values)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    unbounded = []  # (name, largest scale)
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            params = tensor.Quantization()
            if params is None or not params.ScaleLength():
                continue
            scales = params.ScaleAsNumpy()
            if not np.all(np.isfinite(scales) & (scales < MAX_QUANTIZATION_SCALE)):
                unbounded.append((tensor.Name().decode(), float(np.max(scales))))
    if unbounded:
        # Activations first: constants (biases) only inherit the scale of their input.
        unbounded.sort(key=lambda item: item[0].startswith("arith.constant"))
        names = ", ".join(f"{name!r} (scale {scale:.3g})" for name, scale in unbounded[:3])
        raise ValueError(
            f"int8 calibration gave {len(unbounded)} tensors an unbounded range, e.g. {names}: "
            "an infinite value in the graph (such as -inf padding before a max pool) makes the "
            "quantized model compute garbage. Remove the infinite constant from the model.")


def tflite_custom_ops(flatbuffer):
    """Names of the non-builtin (custom, Flex/Select TF) operators in a .tflite flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    custom = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom.append((code.CustomCode() or b"?").decode())
    return custom


def tflite(model, path, quantization=None, representative_data=None):
    """Converts `model` to a LiteRT (TFLite) flatbuffer at `path` with built-in ops only.

    The file computes the model's call only: inputs are normalised images, as for Keras (the
    served SavedModel signatures are what add decoding and preprocessing).

    Args:
        model: a Keras model (any outputs; the converted signature is the model's call).
        path: destination `.tflite` file, written atomically.
        quantization: None (float32), "float16", "dynamic" (int8 weights) or "int8" (full
            integer quantization of weights and activations, float32 input/output tensors).
        representative_data: for "int8" only: normalised model inputs for calibration, as an
            array [samples, H, W, 3] or a tf.data.Dataset of images or (images, labels).
    Returns:
        `path`.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={type(model).__name__}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {QUANTIZATIONS}. "
            f"Received: quantization={quantization!r}")
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            '`quantization="int8"` calibrates activation ranges and needs `representative_data` '
            "(a few hundred normalised images). Received: representative_data=None")
    if quantization != "int8" and representative_data is not None:
        raise ValueError(
            '`representative_data` is only used with quantization="int8". '
            f"Received: quantization={quantization!r}")
    path = os.fspath(path)
    flatbuffer = _converter(model, quantization, representative_data).convert()
    custom = tflite_custom_ops(flatbuffer)
    if custom:  # unreachable with the built-in op sets above; guards converter changes
        raise RuntimeError(f"The converted model uses non-builtin (Flex/custom) ops {custom}.")
    if quantization == "int8":
        _check_quantization_scales(flatbuffer)
    _write_atomically(path, flatbuffer)
    return path
