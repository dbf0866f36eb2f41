"""LiteRT (TFLite) flatbuffers: conversion (the written file checked by flatbuffers.py) and the
one runner.

`tflite(model, path, quantization=...)` converts the model's inference call with the TFLite
converter restricted to the built-in op set (no Select TF / Flex ops; the written file is checked
op by op): None (float32), "float16" (float16 weights), "dynamic" (int8 weights, float
activations) or "int8" (full integer quantization calibrated on `representative_data`, float32
input and output tensors). For "int8":
- the calibration data is checked *before* converting (not empty, finite, the model's input
  shape and channels), since the converter silently writes a mostly-float model otherwise;
- the result is checked to be full-integer: every operator between the input QUANTIZE and the
  output DEQUANTIZE computes on integer tensors, and no calibrated range is unbounded.
A refused conversion writes nothing; files are written atomically (`utils.atomic_write_bytes`),
so a failure leaves a previous file intact. `check_tflite_path` is the destination's check, run
early by the command line too (before its SavedModel is written).

`LiteRTRunner` is the one place that runs a .tflite file (tests, benchmarks, demo, notebooks):
float32 arrays in, float32 arrays out, any batch size, (de)quantizing integer input/output
tensors when a file has them.
"""

import contextlib
import os
import warnings

import numpy as np
import keras
import tensorflow as tf

from lambda_keras import runtime, utils
from lambda_keras.export.flatbuffers import (
    check_integer,
    check_quantization_scales,
    litert_schema,
    tflite_custom_ops,
)
from lambda_keras.layers import formulations

QUANTIZATIONS = (None, "float16", "dynamic", "int8")
# Operators that quantization="int8" keeps in float32 by default (see `tflite`): XNNPACK has no
# int8 kernel for the activation x activation BATCH_MATMULs of the lambda layers nor for the
# broadcast MULs of the squeeze-excitation gates, and LiteRT's own int8 kernels for them cost more
# than the whole rest of the network (benchmarks/README.md, "int8 LiteRT").
INT8_FLOAT_OPS = ("BATCH_MATMUL", "MUL")
# NOTE: TensorFlow's converter before 2.21 quantizes activation x activation BATCH_MATMULs
# inaccurately: a small LambdaLayer classifier (tests/test_export_api.py, 16 calibration images)
# agreed with its float model on the top-1 of 25% of them in int8 with TF 2.18 (max probability
# error 0.43) against 100% (0.02) with "BATCH_MATMUL" kept float or with TF 2.21; 2.19 and 2.20
# were not measured. `tflite` warns where such a file is asked for on those versions.
INT8_BATCH_MATMUL_MIN_TF = (2, 21)


# ------------------------------------------------------------------------------ calibration
def _check_calibration_batch(batch, input_shape, where):
    """One batch of calibration images as float32 [n, H, W, C], checked against the model."""
    try:
        batch = np.asarray(batch, dtype="float32")
    except (TypeError, ValueError) as error:
        raise TypeError(
            "`representative_data` must hold numeric images (normalised model inputs). "
            f"Received: {where} that is not numeric ({error})") from None
    received = batch.shape
    batch = batch[None] if batch.ndim == len(input_shape) - 1 else batch  # one image
    expected = "[samples, " + ", ".join(str(s) if s else "?" for s in input_shape[1:]) + "]"
    if batch.ndim != len(input_shape) or any(
            s is not None and s != b for s, b in zip(input_shape[1:], batch.shape[1:])):
        raise ValueError(
            f"`representative_data` must be normalised model inputs {expected} (the model's "
            f"input shape and channels). Received: {where} of shape {received}")
    if not np.isfinite(batch).all():
        bad = int(np.sum(~np.isfinite(batch)))
        raise ValueError(
            "`representative_data` must be finite: calibration ranges computed from NaN or "
            f"infinity make the int8 model compute garbage. Received: {where} with {bad} "
            "non-finite values")
    return batch


def calibration_samples(representative_data, input_shape):
    """The checked int8 calibration samples of a model, one image each.

    What `tflite(quantization="int8")` checks before converting: the converter silently writes
    a mostly-float model from calibration data it cannot use.

    Args:
        representative_data: an array [samples, H, W, C] or a tf.data.Dataset of images or
            (images, labels), batched or not.
        input_shape: the model's input shape (batch first; None for dynamic dimensions).

    Returns:
        A list of float32 [1, H, W, C] arrays, one per image.

    Raises:
        TypeError: not an array or a tf.data.Dataset, not numeric, or a dataset of dicts.
        ValueError: empty, non-finite, or not the model's input shape/channels.

    Example:

    >>> samples = calibration_samples(np.zeros((4, 32, 32, 3)), (None, 32, 32, 3))
    >>> len(samples), samples[0].shape, samples[0].dtype
    (4, (1, 32, 32, 3), dtype('float32'))
    """
    if isinstance(representative_data, tf.data.Dataset):
        batches = []
        for i, element in enumerate(representative_data):
            images = element[0] if isinstance(element, (tuple, list)) else element
            if isinstance(images, dict):
                raise TypeError(
                    "`representative_data` must yield images or (images, labels), not dicts. "
                    f"Received: element {i} with keys {sorted(images)}")
            batches.append(_check_calibration_batch(images, input_shape, f"dataset element {i}"))
    elif isinstance(representative_data, (np.ndarray, list, tuple)) or hasattr(
            representative_data, "__array__"):
        batches = [_check_calibration_batch(representative_data, input_shape, "an array")]
    else:
        raise TypeError(
            "`representative_data` must be an array [samples, H, W, C] or a tf.data.Dataset. "
            f"Received: representative_data of type {type(representative_data).__name__}")
    samples = [sample[None] for batch in batches for sample in batch]
    if not samples:
        raise ValueError(
            "`representative_data` must hold at least one image (a few hundred is typical) to "
            "calibrate the int8 activation ranges. Received: no images")
    return samples


# ------------------------------------------------------------------------------- conversion
def _tf_version():
    """TensorFlow's (major, minor) version."""
    return tuple(int(part) for part in tf.__version__.split(".")[:2])


def _check_float_ops(float_ops):
    if not isinstance(float_ops, (list, tuple)) or not all(isinstance(op, str) for op in float_ops):
        raise TypeError("`float_ops` must be a sequence of TFLite operator names such as "
                        f"('BATCH_MATMUL',). Received: float_ops={float_ops!r}")
    names = set(vars(litert_schema().BuiltinOperator))
    unknown = [op for op in float_ops if op not in names]
    if unknown:
        raise ValueError(f"`float_ops` must name TFLite builtin operators. Received: unknown "
                         f"{unknown} in float_ops={tuple(float_ops)!r}")
    return tuple(float_ops)


def _converter(model, quantization, samples, float_ops=()):
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
    # Lambda layers trace no loop over the images (`formulations.traced_without_loops`): the int8
    # converter keeps a WHILE in float.
    with formulations.traced_without_loops():
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
        converter.representative_dataset = lambda: ([sample] for sample in samples)
        if not float_ops:
            # Integer kernels for every op (conversion fails otherwise); float32 input/output.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def float32_model(model):
    """`model` if every layer computes in float32, else a float32 copy with the same weights.

    A model built under a mixed-precision policy (layers computing in bfloat16 or float16, with
    float32 variables) cannot be converted as it is: TFLite's built-in operators have no bfloat16
    kernels, and its float16 is a weight quantization (quantization="float16"), not a compute
    dtype. The copy holds the same float32 variables' values, so the file is the float32 model a
    mixed-precision training produced. Functional and Sequential models only (Keras'
    `clone_model`).
    """
    layers = list(model._flatten_layers(include_self=False))  # noqa: SLF001 (Keras 3's walk)
    if all(layer.compute_dtype == "float32" for layer in layers):
        return model

    def float32_layer(layer):
        if isinstance(layer, keras.Model):  # a nested model (a backbone): its layers too
            return keras.models.clone_model(layer, clone_function=float32_layer)
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    try:
        twin = keras.models.clone_model(model, clone_function=float32_layer)
    except ValueError as error:  # a subclassed model: no layer graph to clone
        raise ValueError(
            "`model` computes in a mixed precision and is not a functional or Sequential model, "
            "so no float32 copy can be made for TFLite; build it under the float32 policy and "
            f"load its weights. Received: model={model.name!r} ({error})") from None
    twin.set_weights(model.get_weights())
    return twin


def _convert(model, quantization, samples, float_ops):
    """The flatbuffer bytes; int8 with `float_ops` quantizes all other operators.

    The quantizer prints "fully_quantize: ..." lines from C++ whatever TF_CPP_MIN_LOG_LEVEL says;
    where that variable asks for silence (3, as the `lambda-keras` command sets it unless
    --verbose), the conversion runs with native stderr silenced (errors still raise).
    """
    quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3"
    with utils.native_stderr_silenced() if quiet else contextlib.nullcontext():
        return _convert_loud(model, quantization, samples, float_ops)


def _convert_loud(model, quantization, samples, float_ops):
    converter = _converter(model, quantization, samples, float_ops)
    if quantization != "int8" or not float_ops:
        return converter.convert()
    # NOTE: selective quantization through TFLite's public (experimental) QuantizationDebugger:
    # calibrate once, then quantize every operator except the denylisted types, which get
    # DEQUANTIZE/QUANTIZE around them. float32 input and output as in the full-integer mode.
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_ops=list(float_ops), fully_quantize=False)
    with warnings.catch_warnings():  # it loads its debug model with the deprecated tf.lite one
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([sample] for sample in samples),
            debug_options=options)
        return debugger.get_nondebug_quantized_model()


def check_tflite_path(path, overwrite, *, path_arg="path", overwrite_arg="overwrite=True"):
    """`path` (str) if `tflite` may write a file there; checked before anything is converted.

    Args:
        path: the destination file.
        overwrite: whether an existing file may be replaced.
        path_arg, overwrite_arg: how the messages name the path and the way to allow replacing
            (the command line checks its output file early with `--output`, `--overwrite`).

    Raises:
        TypeError: `path` is not a str or os.PathLike.
        ValueError: `path` is empty, a directory or under a file.
        FileExistsError: `path` exists and `overwrite` is False.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{path_arg}` must be a file path. Received: {path_arg}={path!r}")
    path = os.fspath(path)
    if not path:
        raise ValueError(
            f"`{path_arg}` must be a non-empty file path. Received: {path_arg}={path!r}")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not a file; choose another `{path_arg}`.")
    utils.check_not_under_a_file(path_arg, path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path!r} exists; pass {overwrite_arg} to replace it or choose "
                              f"another `{path_arg}`.")
    return path


def tflite(model, path, quantization=None, representative_data=None, float_ops=None,
           overwrite=True):
    """Converts `model` to a LiteRT (TFLite) flatbuffer at `path` with built-in ops only.

    The file computes the model's call only: inputs are normalised images, as for Keras (the
    served SavedModel signatures are what add decoding and preprocessing).

    Args:
        model: a Keras model (any outputs; the converted signature is the model's call).
        path: destination `.tflite` file, written atomically.
        quantization: None (float32), "float16", "dynamic" (int8 weights) or "int8" (full
            integer quantization of weights and activations, float32 input/output tensors).
        representative_data: for "int8" only: normalised model inputs for calibration, as an
            array [samples, H, W, 3] or a tf.data.Dataset of images or (images, labels); checked
            (not empty, finite, the model's input shape) before converting.
        float_ops: for "int8" only: TFLite operator types kept in float32 (with DEQUANTIZE and
            QUANTIZE around them), every other operator is integer. The default (None:
            `litert.INT8_FLOAT_OPS`, ("BATCH_MATMUL", "MUL")) keeps the lambda layers'
            activation x activation BATCH_MATMULs and the squeeze-excitation MULs in float,
            which LiteRT's CPU kernels run faster than int8 (2x-20x, see benchmarks/README.md).
            `()` gives a full-integer model (integer-only accelerators, microcontrollers). The
            written file is checked: no other operator computes in float.
        overwrite: replace an existing file at `path` (as `keras.Model.save`); False refuses
            one (FileExistsError) before converting.

    Returns:
        `path`.

    Raises:
        TypeError: `model` is not a keras.Model, `path` not a file path, `overwrite` not a bool,
            `float_ops` not a sequence of str, or `representative_data` not numeric images.
        ValueError: Keras on another backend than TensorFlow; an unknown `quantization`;
            `representative_data` missing for "int8" or given (like `float_ops`) with another
            quantization; calibration data that is empty, non-finite or not the model's input
            shape; an unknown operator in `float_ops`; `path` empty, a directory or under a
            file; a model with several inputs for "int8"; or an "int8" result with float
            operators besides `float_ops` or unbounded calibration ranges.
        FileExistsError: `path` exists and `overwrite` is False.

    Example:

    ```python
    export.tflite(model, "model_int8.tflite", quantization="int8",
                  representative_data=calibration_images)  # [n, H, W, 3], normalised
    probabilities = export.LiteRTRunner("model_int8.tflite")(images)
    ```
    """
    runtime.require_tensorflow_backend("`lambda_keras.export.tflite`")
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={type(model).__name__}")
    utils.check_choice("quantization", quantization, QUANTIZATIONS)
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            '`quantization="int8"` calibrates activation ranges and needs `representative_data` '
            "(a few hundred normalised images). Received: representative_data=None")
    if quantization != "int8" and representative_data is not None:
        raise ValueError(
            '`representative_data` is only used with quantization="int8". '
            f"Received: quantization={quantization!r}")
    if quantization != "int8" and float_ops is not None:
        raise ValueError(
            '`float_ops` is only used with quantization="int8". '
            f"Received: quantization={quantization!r}, float_ops={float_ops!r}")
    overwrite = utils.check_bool("overwrite", overwrite)
    path = check_tflite_path(path, overwrite)
    samples = None
    if quantization == "int8":
        if len(model.inputs) != 1:
            raise ValueError("int8 calibration supports models with one input. Received: "
                             f"{len(model.inputs)} inputs")
        samples = calibration_samples(representative_data, tuple(model.inputs[0].shape))
        float_ops = _check_float_ops(INT8_FLOAT_OPS if float_ops is None else float_ops)
        if "BATCH_MATMUL" not in float_ops and _tf_version() < INT8_BATCH_MATMUL_MIN_TF:
            warnings.warn(
                f"TensorFlow {tf.__version__} quantizes activation x activation BATCH_MATMULs "
                "(the lambda layers' products) inaccurately in int8 (measured with 2.18: top-1 "
                "agreement with the float model 25%); keep \"BATCH_MATMUL\" in `float_ops` (the "
                "default) or use TensorFlow >= 2.21.", UserWarning, stacklevel=2)
    else:
        float_ops = ()
    flatbuffer = _convert(float32_model(model), quantization, samples, float_ops)
    custom = tflite_custom_ops(flatbuffer)
    if custom:  # unreachable with the built-in op sets above; guards converter changes
        raise RuntimeError(f"The converted model uses non-builtin (Flex/custom) ops {custom}.")
    if quantization == "int8":
        check_quantization_scales(flatbuffer)
        check_integer(flatbuffer, float_ops)
    utils.atomic_write_bytes(path, flatbuffer)
    return path


# ----------------------------------------------------------------------------------- runner
class LiteRTRunner:
    """Runs a LiteRT (.tflite) model: float32 arrays in, float32 arrays out.

    The one interpreter loop of the package (tests, benchmarks, demo and notebooks use it). The
    input tensor is resized to each batch's shape when it differs from the last one; integer
    input/output tensors (a model converted with integer I/O) are (de)quantized with their
    scale and zero point. XNNPACK is applied as LiteRT does by default.

    Args:
        model: a .tflite file path or the flatbuffer bytes.
        num_threads: CPU threads of the interpreter (None: LiteRT's default).

    Call arguments:
        inputs: float32 array [batch, ...] (the model's only input).

    Returns:
        The model's first output as float32 [batch, ...].

    Raises:
        TypeError: `model` is neither a path nor bytes.
        FileNotFoundError: `model` is a path to no file.
        ValueError: `model` is empty, not a readable LiteRT flatbuffer (LiteRT's message is the
            cause) or a model with several inputs; in a call, `inputs` of another shape than
            the model's or an empty batch.

    Example:

    ```python
    runner = LiteRTRunner("model_int8.tflite", num_threads=2)
    probabilities = runner(images)                  # one invoke for the whole batch
    probabilities = runner.predict(images, batch_size=1)  # image by image
    ```
    """

    def __init__(self, model, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        num_threads = utils.check_int("num_threads", num_threads, optional=True)
        if isinstance(model, (bytes, bytearray)):
            if not model:
                raise ValueError("`model` must be a .tflite path or flatbuffer bytes. Received: "
                                 "model=b'' (no bytes)")
            source = dict(model_content=bytes(model))
            more = "..." if len(model) > 16 else ""
            received = f"model={bytes(model[:16])!r}{more} ({len(model)} bytes)"
        elif isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not path:
                raise ValueError(f"`model` must be a non-empty .tflite path or flatbuffer bytes. "
                                 f"Received: model={path!r}")
            if not os.path.exists(path):
                raise FileNotFoundError(f"`model` must be a .tflite path or flatbuffer bytes; "
                                        f"no file is at the path. Received: model={path!r}")
            source, received = dict(model_path=path), f"model={path!r}"
        else:
            raise TypeError("`model` must be a .tflite path or flatbuffer bytes. "
                            f"Received: model of type {type(model).__name__}")
        try:
            self.interpreter = Interpreter(**source, num_threads=num_threads)
        except ValueError as error:  # LiteRT: "The model is not a valid Flatbuffer buffer", ...
            reason = " ".join(str(error).split())  # one line (some versions end in "\n")
            raise ValueError(f"`model` must be a LiteRT (.tflite) flatbuffer, which LiteRT could "
                             f"not read ({reason}). Received: {received}") from error
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1:
            raise ValueError(f"LiteRTRunner runs models with one input. Received: {len(inputs)}")
        self._input, self._output = inputs[0], outputs[0]
        self._shape = None

    @property
    def ops(self):
        """The set of operator names in the model (builtin names, e.g. "CONV_2D")."""
        return {op["op_name"] for op in self.interpreter._get_ops_details()}

    @property
    def input_details(self):
        return self._input

    def __call__(self, inputs):
        inputs = np.asarray(inputs, dtype="float32")
        # [-1, H, W, C]: -1 where the model takes any size (the batch).
        expected = list(self._input.get("shape_signature", self._input["shape"]))
        if len(inputs.shape) != len(expected) or any(
                size not in (-1, got) for size, got in zip(expected[1:], inputs.shape[1:])):
            wanted = ", ".join("batch" if i == 0 else ("any" if d == -1 else str(d))
                               for i, d in enumerate(expected))
            raise ValueError(f"`inputs` must have shape [{wanted}] for this model. "
                             f"Received: inputs shape {inputs.shape}")
        if not inputs.shape[0]:  # LiteRT's RESHAPE kernels fail on an empty batch
            raise ValueError("`inputs` must hold at least one example. "
                             f"Received: inputs shape {inputs.shape}")
        if inputs.shape != self._shape:
            self.interpreter.resize_tensor_input(self._input["index"], list(inputs.shape))
            # The first allocation applies XNNPACK, whose C++ "Created ... delegate" line would
            # land in the caller's output (the CLI's, the demo's).
            with utils.native_stderr_silenced():
                self.interpreter.allocate_tensors()
            self._shape = inputs.shape
        if self._input["dtype"] != np.float32:  # integer input: quantise
            scale, zero = self._input["quantization"]
            info = np.iinfo(self._input["dtype"])
            inputs = np.clip(np.round(inputs / scale + zero), info.min, info.max).astype(
                self._input["dtype"])
        self.interpreter.set_tensor(self._input["index"], inputs)
        self.interpreter.invoke()
        outputs = self.interpreter.get_tensor(self._output["index"])
        if self._output["dtype"] != np.float32:
            scale, zero = self._output["quantization"]
            outputs = (outputs.astype("float32") - zero) * scale
        return np.array(outputs, dtype="float32")  # a copy: the next invoke reuses the buffer

    def predict(self, inputs, batch_size=None):
        """Runs `inputs` [n, ...] in batches of `batch_size` (None: one batch); [n, ...]."""
        inputs = np.asarray(inputs, dtype="float32")
        batch_size = utils.check_int("batch_size", batch_size, optional=True)
        if batch_size is None or len(inputs) <= batch_size:
            return self(inputs)
        return np.concatenate([self(inputs[i:i + batch_size])
                               for i in range(0, len(inputs), batch_size)])
