"""TF Serving SavedModels: two signatures, labels, warmup records, atomic versions.

`saved_model(model, export_dir)` writes a TF Serving *model base path*: `export_dir/<version>/`
holding `saved_model.pb`, `variables/`, `assets/labels.txt` and
`assets.extra/tf_serving_warmup_requests`. Two signatures, both returning

    probabilities   float32 [batch, classes]
    top_k_scores    float32 [batch, k]
    top_k_indices   int32   [batch, k]
    top_k_labels    string  [batch, k]   (from assets/labels.txt through a lookup table)

- `serving_default`: `images` float32 [batch, height, width, 3], RGB pixels in 0..255, any size;
  a model with a fixed input size gets the images resized to it in-graph, then
  `data.normalize` ((pixels / 255) - mean) / std. NaN or infinite pixels fail the request.
- `serving_bytes`: `image_bytes` string [batch] of JPEG or PNG files (what TF Serving's REST API
  delivers for `{"b64": ...}`): checked, decoded, then `data.eval_transform` with the preset's
  `Preprocessing` (shorter side to input_size / crop_pct, center crop, normalise: timm's eval).
  The signature declares an unknown rank so that a tensor of any other rank reaches the graph
  and is refused there with a clear message (TF Serving does not check fed shapes).

The SavedModel is written with Keras' `ExportArchive` over the serving functions only: each
variable is stored once, as the tf.Variable the functions capture (see `_build_archive`), so the
`variables/` directory is the size of the weights. Serving needs neither lambda_keras nor Keras.
It is written to a hidden staging directory next to the target and renamed into place only when
complete (TF Serving ignores non-integer directory names), so a failed export leaves no version
directory behind, nor a parent directory it created; staging directories of exports that were
killed are removed by the next export.

NOTE: JPEGs are decoded with `dct_method="INTEGER_ACCURATE"` (libjpeg's ISLOW, what PIL uses);
resizing is `tf.image.resize(antialias=True)`, close to but not bit-identical with PIL's.
"""

import collections.abc
import contextlib
import os
import re
import shutil
import socket
import tempfile

import numpy as np
import keras
import tensorflow as tf

from lambda_keras import data, models
from lambda_keras import runtime, utils
from lambda_keras import weights
from lambda_keras.data.transforms import check_preprocessing
from lambda_keras.export import images as image_ops

SIGNATURE_IMAGES = "serving_default"
SIGNATURE_BYTES = "serving_bytes"
LABELS_FILE = "labels.txt"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
_VERSION_NAME = re.compile(r"^\d+$")
# Staging and retired version directories: .tmp-<version>-<host>-<pid>-<random> (and .old-...).
_STAGING_NAME = re.compile(r"^\.(?:tmp|old)-\d+-(?P<host>.+)-(?P<pid>\d+)-[A-Za-z0-9_]+$")


# ---------------------------------------------------------------------------- model inspection
def check_classifier(model, arg="model"):
    """(static input size (H, W) or None, number of classes, whether the output is logits) of a
    classifier of RGB images, what the served signatures (and the CLI's `predict`) feed;
    messages name `arg`."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`{arg}` must be a keras.Model. Received: {arg}={type(model).__name__}")
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4 or model.inputs[0].shape[-1] != 3:
        raise ValueError(
            f"`{arg}` must take one batch of RGB images [batch, height, width, 3]. Received: "
            f"input shapes {[tuple(t.shape) for t in model.inputs]}")
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError(
            f"`{arg}` must be a classifier with one output [batch, classes] (include_top=True). "
            f"Received: output shapes {[tuple(t.shape) for t in model.outputs]}")
    height, width = model.inputs[0].shape[1:3]
    size = None if height is None or width is None else (int(height), int(width))
    return size, int(model.outputs[0].shape[-1]), models.outputs_logits(model)


def _resolve_preprocessing(preprocessing, model_size):
    """The Preprocessing for the served signatures; its input_size must match a static model."""
    if preprocessing is None:
        preprocessing = weights.DEFAULT_PREPROCESSING
        if model_size is not None:
            preprocessing = weights.replace_input_size(preprocessing, model_size)
    check_preprocessing(preprocessing)  # type, interpolation, crop_pct
    size = tuple(int(s) for s in preprocessing.input_size)
    if model_size is not None and size != model_size:
        raise ValueError(
            f"`preprocessing.input_size` must match the model's input size {model_size}. "
            f"Received: preprocessing.input_size={preprocessing.input_size!r}")
    return preprocessing


def _preview(labels):
    """`labels` for a message: its first five names."""
    return repr(labels) if len(labels) <= 5 else repr(labels[:5])[:-1] + ", ...]"


def resolve_labels(labels, num_classes, arg="labels"):
    """Class names, one per class; a path reads one name per line; None: "0", "1", ...

    `arg` is the argument the messages name (the command line's `--labels`).

    Raises:
        TypeError: neither a path nor a sequence (a number, a set, a dict).
        ValueError: a file that cannot be read as UTF-8 text, not one string per class, an
            empty name (an empty line of labels.txt, which TensorFlow refuses) or a name with a
            line break.
    """
    if labels is None:
        return [str(i) for i in range(num_classes)]
    if isinstance(labels, (str, os.PathLike)):
        try:
            with open(labels, encoding="utf-8") as f:
                labels = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise ValueError(f"`{arg}` names a file that cannot be read as a labels.txt "
                             f"({reason}). Received: {arg}={os.fspath(labels)!r}") from error
    elif isinstance(labels, (bytes, bytearray)) or not isinstance(
            labels, (collections.abc.Sequence, np.ndarray)):
        # NOTE: a set (or a dict's keys) has no order to match the class indices with.
        raise TypeError(
            f"`{arg}` must be a sequence of {num_classes} class names or a labels.txt path. "
            f"Received: {arg}={labels!r:.200} of type {type(labels).__name__}")
    labels = list(labels)
    if len(labels) != num_classes or not all(isinstance(name, str) for name in labels):
        raise ValueError(
            f"`{arg}` must be {num_classes} strings, one per class. "
            f"Received: {len(labels)} labels starting {labels[:3]!r}")
    for i, name in enumerate(labels):
        if not name:
            raise ValueError(
                f"`{arg}` must not hold empty names (labels.txt would have an empty line, which "
                f"TensorFlow refuses). Received: an empty name at index {i} of "
                f"{arg}={_preview(labels)}")
        if name.splitlines() != [name]:  # "\n", "\r" and the other breaks str.splitlines knows
            raise ValueError(
                f"`{arg}` must not contain line breaks (labels.txt has one name per line). "
                f"Received: {name!r} at index {i} of {arg}={_preview(labels)}")
    return labels


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
        with tf.control_dependencies([image_ops.check_finite(images, "images")]):
            images = tf.identity(images)  # [b, h, w, 3]
        if self.model_size is not None:
            size = tf.constant(self.model_size, tf.int32)
            same = tf.reduce_all(tf.equal(tf.shape(images)[1:3], size))
            images = tf.cond(
                same, lambda: tf.identity(images),
                lambda: image_ops.resize_to_model(images, size, self.preprocessing.interpolation))
            images = tf.ensure_shape(images, (None, *self.model_size, 3))  # [b, H, W, 3]
        return self._classify(images)

    def serve_bytes(self, image_bytes):
        with tf.control_dependencies([
                image_ops.check_rank(image_bytes, 1, "image_bytes", "[batch]")]):
            image_bytes = tf.reshape(image_bytes, [-1])  # [b]
        size = tuple(self.preprocessing.input_size)
        images = tf.map_fn(
            lambda item: data.eval_transform(image_ops.decode(item, self.preprocessing),
                                             self.preprocessing),
            image_bytes, fn_output_signature=tf.TensorSpec((*size, 3), tf.float32))  # [b, H, W, 3]
        return self._classify_normalized(images)


def _build_archive(server):
    """The ExportArchive of the two serving functions.

    NOTE: the model is deliberately not `track()`ed. Keras' ExportArchive stores what `track()`
    registers (the keras.Variable wrappers, under `variables/`) *and* the tf.Variables the
    endpoints capture (under `_all_variables/`); being different Python objects over the same
    buffers, TensorFlow's checkpoint cannot deduplicate them and every weight was written (and
    restored by TF Serving) twice (keras-team/keras#23553). The captured variables alone are what
    the signatures need. The labels table is not a variable: it is tracked explicitly.
    """
    archive = keras.export.ExportArchive()
    archive.track(server.labels)  # the lookup table and, through it, assets/labels.txt
    archive.add_endpoint(
        SIGNATURE_IMAGES, server.serve_images,
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32, name="images")])
    archive.add_endpoint(
        SIGNATURE_BYTES, server.serve_bytes,
        input_signature=[tf.TensorSpec(None, tf.string, name="image_bytes")])
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
    """Serialized PredictionLog records exercising both signatures of a `saved_model` export.

    A float batch, a JPEG, and a JPEG + PNG batch: TF Serving replays them against the version
    it is loading (`saved_model` writes them to `WARMUP_FILE`).

    Args:
        image_size: (height, width) of the images, ints (the model's input size).
        model_name: the model name the requests address (`model_spec.name`).

    Returns:
        A list of 3 serialized `tensorflow_serving.apis.PredictionLog` records (bytes).

    Raises:
        ImportError: tensorflow-serving-api is not installed.
        TypeError: `image_size` is not a (height, width) pair of ints.

    Example:

    >>> records = warmup_requests((32, 32))
    >>> len(records), type(records[0])
    (3, <class 'bytes'>)
    """
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


# ---------------------------------------------------------------------- versions and staging
def _check_export_dir(export_dir):
    if not isinstance(export_dir, (str, os.PathLike)):
        raise TypeError(
            "`export_dir` must be a path (the TF Serving model base path). "
            f"Received: export_dir={export_dir!r}")
    export_dir = os.fspath(export_dir)
    if not export_dir:
        raise ValueError("`export_dir` must be a non-empty path (the TF Serving model base path). "
                         f"Received: export_dir={export_dir!r}")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise ValueError(
            "`export_dir` must be a directory (the TF Serving model base path, which holds one "
            f"directory per version). Received: export_dir={export_dir!r}, an existing file")
    utils.check_not_under_a_file("export_dir", export_dir)
    return export_dir


def check_version_directory(export_dir, version, overwrite, *, version_arg="version",
                            overwrite_arg="overwrite=True"):
    """The version directory `saved_model` writes, export_dir/<version>, checked before
    anything is written; `version` None picks the next integer.

    Args:
        export_dir: the model base path (a directory path).
        version: the version (int >= 0) or None.
        overwrite: whether a non-empty version directory may be replaced.
        version_arg, overwrite_arg: how the messages name the version and the way to allow
            replacing (the command line checks early with `--version`, `--overwrite`).

    Raises:
        TypeError: `version` is not an int (a str such as "1", a float, a bool).
        ValueError: `version` is an int below 0.
        FileExistsError: the version directory is not empty and `overwrite` is False, or is a
            file (also the one picked for `version` None: the message says so).
    """
    automatic = version is None
    if automatic:
        existing = os.listdir(export_dir) if os.path.isdir(export_dir) else []
        numbers = [int(name) for name in existing
                   if _VERSION_NAME.match(name) and os.path.isdir(os.path.join(export_dir, name))]
        version = max(numbers, default=0) + 1
    version = utils.check_int(version_arg, version, low=0)
    target = os.path.join(export_dir, str(version))
    if os.path.isdir(target) and os.listdir(target) and not overwrite:
        raise FileExistsError(
            f"The version directory {target!r} exists and is not empty; pass {overwrite_arg} "
            f"to replace it or choose another `{version_arg}`.")
    if os.path.exists(target) and not os.path.isdir(target):
        if automatic:
            raise FileExistsError(
                f"{target!r} exists and is not a directory: version {version} was chosen "
                f"automatically (`{version_arg}` not given: one more than the largest version "
                f"directory); pass `{version_arg}` to choose another version or remove the file.")
        raise FileExistsError(f"{target!r} exists and is not a directory; choose another "
                              f"`{version_arg}` or remove the file.")
    return target


def remove_stale_staging(export_dir):
    """Removes the hidden staging directories that killed exports left in `export_dir`.

    A staging directory names its host and process; it is stale when that process no longer
    runs on this host (one on another host sharing the directory is left alone). `saved_model`
    calls it before each export.

    Args:
        export_dir: the TF Serving model base path; a missing one holds nothing to remove.

    Returns:
        The sorted names of the directories removed.

    Raises:
        TypeError: `export_dir` is not a path (None, a list, ...).
        OSError: `export_dir` cannot be listed (no permission).

    Example:

    >>> import os, socket, tempfile
    >>> export_dir = tempfile.mkdtemp()
    >>> stale = f".tmp-1-{socket.gethostname()}-99999999-x"  # pid 99999999: no such process
    >>> os.mkdir(os.path.join(export_dir, stale))
    >>> remove_stale_staging(export_dir) == [stale], os.listdir(export_dir)
    (True, [])
    >>> os.rmdir(export_dir)
    """
    if not os.path.isdir(export_dir):
        return []
    host, removed = socket.gethostname(), []
    for name in sorted(os.listdir(export_dir)):
        match = _STAGING_NAME.match(name)
        if match is None or match["host"] != host or utils.process_alive(int(match["pid"])):
            continue
        shutil.rmtree(os.path.join(export_dir, name), ignore_errors=True)
        removed.append(name)
    return removed


def _hidden_directory(kind, target):
    """An empty hidden directory next to `target`: .<kind>-<version>-<host>-<pid>-<random>."""
    prefix = f".{kind}-{os.path.basename(target)}-{socket.gethostname()}-{os.getpid()}-"
    return tempfile.mkdtemp(prefix=prefix, dir=os.path.dirname(target))


@contextlib.contextmanager
def _staging_directory(target):
    """Yields a hidden temporary directory next to `target`, renamed onto it on success.

    On failure the staging directory is removed, and so is every parent directory created for
    it that is still empty (never one that existed before: `utils.created_directory`).
    """
    with utils.created_directory(os.path.dirname(target)):
        staging = _hidden_directory("tmp", target)
        try:
            yield staging
            _move_into_place(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _move_into_place(staging, target):
    if not os.path.isdir(target) or not os.listdir(target):
        os.replace(staging, target)  # an empty directory is replaced atomically
        return
    retired = _hidden_directory("old", target)
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
        export_dir: the TF Serving model base path, a directory (created if missing).
        version: integer version directory; defaults to one more than the largest present (or 1).
        preprocessing: `lambda_keras.weights.Preprocessing` of the weights (input size, crop,
            interpolation, mean/std); defaults to ImageNet statistics at the model's input size.
        labels: class names (a sequence or a text file with one per line); defaults to "0", "1", ...
        top_k: number of top classes returned (at most the number of classes).
        warmup: write `assets.extra/tf_serving_warmup_requests` (needs tensorflow-serving-api).
        overwrite: replace a non-empty existing version directory.

    Returns:
        The version directory written, `export_dir/<version>`.

    Raises:
        TypeError: `model` is not a keras.Model, `export_dir` not a path, `preprocessing` not a
            Preprocessing, `version` or `top_k` not an int, `warmup` or `overwrite` not a bool,
            `labels` neither a sequence nor a path.
        ValueError: Keras on another backend than TensorFlow; `model` is not a classifier of
            RGB images (one [batch, H, W, 3] input, one [batch, classes] softmax or logits
            output); `preprocessing` has another input size than a static model, an unknown
            interpolation or a crop_pct outside (0, 1]; `labels` is not one string per class,
            has empty names or line breaks or names an unreadable file; `top_k` < 1; `version`
            < 0; `export_dir` is empty, an existing file or under one.
        FileExistsError: the version directory is not empty and `overwrite` is False, or is a
            file.
        ImportError: `warmup` is True and tensorflow-serving-api is not installed.
        All are raised before anything is written.

    Example:

    ```python
    model = lambda_keras.LambdaResNet26T(weights=None, input_shape=(64, 64, 3), classes=10)
    export.saved_model(model, "models/lambda_resnet", labels=[str(i) for i in range(10)])
    # -> "models/lambda_resnet/1"; serve with TF Serving, or check with
    # `saved_model_cli show --dir models/lambda_resnet/1 --all`
    ```
    """
    runtime.require_tensorflow_backend("`lambda_keras.export.saved_model`")
    model_size, num_classes, logits = check_classifier(model)
    preprocessing = _resolve_preprocessing(preprocessing, model_size)
    labels = resolve_labels(labels, num_classes)
    top_k = min(utils.check_int("top_k", top_k), num_classes)
    warmup = utils.check_bool("warmup", warmup)
    overwrite = utils.check_bool("overwrite", overwrite)
    if warmup:
        _serving_apis()  # fail before writing anything
    export_dir = _check_export_dir(export_dir)
    target = check_version_directory(export_dir, version, overwrite)
    remove_stale_staging(export_dir)

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
