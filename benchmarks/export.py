"""Export suite: SavedModel and LiteRT latency per image, file size, per-op LiteRT profile.

The model is LambdaResNet-50 (paper layout, random weights; --quick: LambdaResNet26T, the same
code with half the layers to convert: tests/test_export.py converts LambdaResNet-50 to every
format already) at `image_size`, exported with
lambda_keras.export: `saved_model(...)` (served signature `serving_default`, raw 0..255 pixels,
normalisation in-graph) and `tflite(..., quantization=None | "float16" | "dynamic" | "int8")`
(int8 calibrated on `calibration_images` random normalised images; float32 input/output), the
int8 file twice: with the default `float_ops` (the lambda layers' activation x activation
BATCH_MATMULs and the squeeze-excitation MULs kept in float32) and full-integer (`float_ops=()`).
Latency is per image (batch 1): the Keras model's `predict_on_batch`, the loaded SavedModel's
signature, and `lambda_keras.export.LiteRTRunner(num_threads=threads)` (set_tensor + invoke +
get_tensor), all timed round-robin in one process (the same load for every ratio). Each output
is compared with the Keras model's probabilities on the same image (max absolute difference,
top-1 agreement) so that a fast but broken conversion shows.

Per-op profile (`op_profile`, the LiteRT formats in the settings' `profiled`): LiteRT's Python
API has no op profiler, so every operator is cut out into a single-op model fed with the real
activations of the image and timed alone; the result says which op types take the time and
whether XNNPACK delegated them (an int8 op that XNNPACK does not take runs on LiteRT's own
kernels).
"""

import os
import tempfile
import time

import numpy as np

from benchmarks import common

FULL = dict(model="lambda_resnet50", image_size=224, classes=1000, calibration_images=8,
            profile_repeats=7,
            profiled=["tflite_float32", "tflite_int8", "tflite_int8_full_integer"],
            timing=dict(warmup=2, min_repeats=5, max_repeats=30, budget_s=3.0))
QUICK = dict(model="lambda_resnet26t", image_size=64, classes=10, calibration_images=2,
             profile_repeats=2,
             profiled=["tflite_int8"],  # the smoke run exercises the profiler once
             timing=dict(warmup=1, min_repeats=2, max_repeats=3, budget_s=0.1))
# (format key, quantization, float_ops or None for the default)
TFLITE_FORMATS = (
    ("tflite_float32", None, None),
    ("tflite_float16", "float16", None),
    ("tflite_dynamic", "dynamic", None),
    ("tflite_int8", "int8", None),
    ("tflite_int8_full_integer", "int8", ()),
)


def plan(settings, memory_budget_bytes):
    return [[dict(suite="export", id=f"export/{settings['model']}", **settings)]]


def _size_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def _compare(output, reference):
    output = np.asarray(output, "float32").reshape(reference.shape)
    return {"max_abs_diff": float(np.max(np.abs(output - reference))),
            "top1_agrees": bool(np.argmax(output) == np.argmax(reference))}


def _tflite_entry(model, path, quantization, float_ops, calibration, image, reference, threads):
    """Converts, loads into the package's LiteRT runner; returns (entry, run callable)."""
    from lambda_keras import export

    kwargs = {} if float_ops is None else {"float_ops": float_ops}
    started = time.perf_counter()
    export.tflite(model, path, quantization=quantization,
                  representative_data=calibration if quantization == "int8" else None, **kwargs)
    convert_s = time.perf_counter() - started
    runner = export.LiteRTRunner(path, num_threads=threads)
    if quantization == "int8":
        kept = export.litert.INT8_FLOAT_OPS if float_ops is None else float_ops
    entry = {"file_bytes": _size_bytes(path), "convert_s": convert_s,
             "float_ops": list(kept) if quantization == "int8" else None,
             **_compare(runner(image), reference)}
    return entry, lambda: runner(image)


def run_job(job, threads, isolated):
    from benchmarks.common import setup_tensorflow

    tf = setup_tensorflow(threads)
    import lambda_keras
    from lambda_keras import export

    size = job["image_size"]
    # Seeded weights: the accuracy columns (max abs diff, top-1 agreement) of two runs compare.
    import keras

    keras.utils.set_random_seed(0)
    model = lambda_keras.get_model(job["model"], weights=None, input_shape=(size, size, 3),
                                   classes=job["classes"])
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (1, size, size, 3)).astype("float32")
    image = lambda_keras.preprocess_input(pixels)  # [1, H, W, 3], ImageNet mean and std
    calibration = rng.standard_normal((job["calibration_images"], size, size, 3)).astype("float32")
    reference = np.asarray(model.predict_on_batch(image), "float32")
    weight_bytes = sum(int(np.prod(v.shape)) * 4 for v in model.variables)
    formats = {"keras": {"params": int(model.count_params()), "weight_bytes": weight_bytes}}
    runs = {"keras": lambda: model.predict_on_batch(image)}
    paths = {}
    with tempfile.TemporaryDirectory(prefix="lk-bench-export-") as directory:
        started = time.perf_counter()
        served = export.saved_model(model, os.path.join(directory, "saved_model"), version=1,
                                    warmup=False)
        export_s = time.perf_counter() - started
        signature = tf.saved_model.load(served).signatures["serving_default"]
        tensor = tf.constant(pixels)
        formats["saved_model"] = {
            "file_bytes": _size_bytes(served), "convert_s": export_s,
            "variables_bytes": _size_bytes(os.path.join(served, "variables")),
            **_compare(signature(images=tensor)["probabilities"].numpy(), reference)}
        runs["saved_model"] = lambda: signature(images=tensor)["probabilities"].numpy()
        for key, quantization, float_ops in TFLITE_FORMATS:
            paths[key] = os.path.join(directory, f"model_{key}.tflite")
            try:
                formats[key], runs[key] = _tflite_entry(model, paths[key], quantization, float_ops,
                                                        calibration, image, reference, threads)
            except Exception as error:  # noqa: BLE001 - one failing format must not hide the rest
                formats[key] = {"status": "error", "reason": f"{type(error).__name__}: {error}"}
                runs.pop(key, None)
        # All formats timed round-robin: the same machine load for every ratio.
        for key, stats in common.measure_interleaved(runs, **job["timing"]).items():
            formats[key]["latency"] = stats
        for key in job["profiled"]:
            if key in runs:
                with open(paths[key], "rb") as f:
                    rows = op_profile(f.read(), image, threads, job["profile_repeats"])
                formats[key]["op_profile"] = summarize_profile(rows)
                formats[key]["op_profile_total_ms"] = sum(row["ms"] for row in rows)
    return {"formats": formats}


# ----------------------------------------------------------------------- per-op LiteRT profile
def _single_op_models(flatbuffer):
    """Yields (operator index, op name, output dtype, single-op flatbuffer, input tensor ids).

    LiteRT's Python API has no op profiler, so each operator of subgraph 0 is cut out into a
    model of its own: the same operator code and options, its constant inputs (weights) with
    their buffers, its other inputs as the model inputs. XNNPACK then delegates (or not) that
    op exactly as it would in the whole model.
    """
    import copy

    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    graph = model.subgraphs[0]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    for index, operator in enumerate(graph.operators):
        code = model.operatorCodes[operator.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        used = [t for t in [*operator.inputs, *operator.outputs] if t >= 0]
        remap = {t: i for i, t in enumerate(dict.fromkeys(used))}
        buffers, tensors, feeds = [schema.BufferT()], [], []
        for t in remap:
            tensor = copy.copy(graph.tensors[t])
            data = model.buffers[tensor.buffer].data if tensor.buffer else None
            if data is not None and len(data):
                buffers.append(model.buffers[tensor.buffer])
                tensor.buffer = len(buffers) - 1
            else:
                tensor.buffer = 0
                if t in operator.inputs:
                    feeds.append(t)
            tensors.append(tensor)
        single = copy.copy(operator)
        single.inputs = [remap[t] if t >= 0 else -1 for t in operator.inputs]
        single.outputs = [remap[t] for t in operator.outputs]
        single.intermediates = None
        subgraph = schema.SubGraphT()
        subgraph.tensors, subgraph.operators = tensors, [single]
        subgraph.inputs = [remap[t] for t in feeds]
        subgraph.outputs = list(single.outputs)
        out = schema.ModelT()
        out.version, out.operatorCodes, out.description = model.version, model.operatorCodes, b""
        out.subgraphs, out.buffers = [subgraph], buffers
        dtype = types.get(graph.tensors[operator.outputs[0]].type, "?")
        yield index, name, dtype, bytes(flatbuffer_utils.convert_object_to_bytearray(out)), feeds


def op_profile(flatbuffer, image, threads, repeats=20):
    """Per-operator latency of a .tflite model on `image` (the real activations flow in).

    Returns a list of {"index", "op", "dtype", "ms", "delegated"}: median over `repeats`
    invokes of the operator alone, and whether XNNPACK took it (a DELEGATE node appears).
    """
    from ai_edge_litert.interpreter import Interpreter

    # The whole model once, keeping every intermediate tensor: the inputs of each single op.
    whole = Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True)
    whole.allocate_tensors()
    whole.set_tensor(whole.get_input_details()[0]["index"], image)
    whole.invoke()
    rows = []
    for index, name, dtype, single, feeds in _single_op_models(flatbuffer):
        interpreter = Interpreter(model_content=single, num_threads=threads)
        details = interpreter.get_input_details()
        values = [whole.get_tensor(t) for t in feeds]
        for detail, value in zip(details, values):
            interpreter.resize_tensor_input(detail["index"], list(value.shape))
        interpreter.allocate_tensors()
        for detail, value in zip(details, values):
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - started)
        delegated = any(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
        rows.append({"index": index, "op": name, "dtype": dtype,
                     "ms": 1000 * float(np.median(times)), "delegated": delegated})
    return rows


def summarize_profile(rows):
    """{op (dtype): {"count", "ms", "delegated"}} sorted by total time, largest first."""
    table = {}
    for row in rows:
        entry = table.setdefault(f"{row['op']} ({row['dtype']})",
                                 {"count": 0, "ms": 0.0, "delegated": 0})
        entry["count"] += 1
        entry["ms"] += row["ms"]
        entry["delegated"] += int(row["delegated"])
    return dict(sorted(table.items(), key=lambda item: -item[1]["ms"]))
