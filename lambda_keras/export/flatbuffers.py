"""Reading written LiteRT (TFLite) flatbuffers: their operators and quantization, through
ai-edge-litert's generated schema.

`tflite_custom_ops` and `float_operators` list what a file holds (`lambda_keras.export` exports
them); `check_integer` and `check_quantization_scales` are the checks `litert.tflite` runs on an
int8 file before writing it, each refusing with a ValueError that says what to change.
"""

import numpy as np

# Float operators an int8 model may hold besides `float_ops`: the (de)quantization around them and
# SHAPE (its int32 output is the same whatever the input type).
_FLOAT_INTERFACE_OPS = ("QUANTIZE", "DEQUANTIZE", "SHAPE")
# int8 tensors with a larger scale (a range of +-1e12) come from infinite calibration ranges.
MAX_QUANTIZATION_SCALE = 1e10
_INTEGER_TYPES = ("INT8", "UINT8", "INT16", "INT32", "INT64", "BOOL")


def litert_schema():
    """ai-edge-litert's generated flatbuffer schema module (imported on first use)."""
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _operator_codes(schema, model):
    """(name, custom) of each operator code of `model`, by opcode index: a built-in operator's
    name, or a custom (Flex / Select TF) operator's code with custom True."""
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            codes.append(((code.CustomCode() or b"?").decode(), True))
        else:
            codes.append((names.get(builtin, str(builtin)), False))
    return codes


def tflite_custom_ops(flatbuffer):
    """Names of the non-builtin (custom, Flex/Select TF) operators in a .tflite flatbuffer.

    `tflite` writes built-in operators only and checks its file with this.

    Args:
        flatbuffer: the bytes of a .tflite file.

    Returns:
        A list of the custom operators' names, one per operator code (empty: built-in only).

    Raises:
        TypeError: `flatbuffer` is not bytes-like (a path: read the file first).
        struct.error: `flatbuffer` is too short for the offsets it holds (bytes that are not a
            flatbuffer are not otherwise detected).

    Example:

    ```python
    with open("model.tflite", "rb") as f:
        assert export.tflite_custom_ops(f.read()) == []  # no Flex / Select TF operators
    ```
    """
    schema = litert_schema()
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    return [name for name, custom in _operator_codes(schema, model) if custom]


def float_operators(flatbuffer):
    """The operators of an integer-quantized .tflite that compute on float tensors.

    The QUANTIZE ops of the float32 input and the DEQUANTIZE ops of the float32 outputs are the
    interface of a full-integer model and are not listed.

    Args:
        flatbuffer: the bytes of a .tflite file.

    Returns:
        A list of (operator index, op name, output tensor name) tuples, in graph order; empty
        for a full-integer model.

    Raises:
        TypeError: `flatbuffer` is not bytes-like (a path: read the file first).
        struct.error: `flatbuffer` is too short for the offsets it holds (bytes that are not a
            flatbuffer are not otherwise detected).

    Example:

    ```python
    with open("model_int8.tflite", "rb") as f:
        export.float_operators(f.read())  # [(17, 'BATCH_MATMUL', '...'), ...] kept float
    ```
    """
    schema = litert_schema()
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = _operator_codes(schema, model)
    found = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        interface = set(graph.InputsAsNumpy().tolist()) | set(graph.OutputsAsNumpy().tolist())
        for o in range(graph.OperatorsLength()):
            operator = graph.Operators(o)
            name, _ = codes[operator.OpcodeIndex()]
            tensors = [t for t in [*operator.InputsAsNumpy(), *operator.OutputsAsNumpy()] if t >= 0]
            floats = [t for t in tensors
                      if types.get(graph.Tensors(t).Type()) not in _INTEGER_TYPES]
            if name in ("QUANTIZE", "DEQUANTIZE") and set(floats) <= interface:
                continue
            if floats:
                outputs = operator.OutputsAsNumpy()
                out_name = graph.Tensors(outputs[0]).Name().decode() if len(outputs) else "?"
                found.append((o, name, out_name))
    return found


def check_integer(flatbuffer, float_ops):
    """Refuses an int8 model with float operators other than `float_ops` and their interface."""
    allowed = set(float_ops) | (set(_FLOAT_INTERFACE_OPS) if float_ops else set())
    floats = [item for item in float_operators(flatbuffer) if item[1] not in allowed]
    if floats:
        listed = ", ".join(f"{name} ({tensor!r})" for _, name, tensor in floats[:4])
        kept = f" besides float_ops={tuple(float_ops)}" if float_ops else ""
        raise ValueError(
            f"The int8 conversion left {len(floats)} operators computing in float{kept}, e.g. "
            f"{listed}: the file would not be an integer model (it was not written). Check "
            "`representative_data` (normalised images like the model's inputs).")


def check_quantization_scales(flatbuffer):
    """Refuses int8 models whose calibration produced unusable scales (e.g. from -inf values)."""
    schema = litert_schema()
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
