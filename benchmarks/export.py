"""Export suite: SavedModel (TF Serving) and LiteRT/TFLite latency per image and file size.

The model is LambdaResNet-50 (paper layout, random weights) at `image_size`, exported with
lambda_keras.export: `saved_model(...)` (served signature `serving_default`, raw 0..255 pixels,
normalisation in-graph) and `tflite(..., quantization=None | "float16" | "dynamic" | "int8")`
(int8 calibrated on `calibration_images` random normalised images; float32 input/output).
Latency is per image (batch 1): the Keras model's `predict_on_batch`, the loaded SavedModel's
signature, and `ai_edge_litert.interpreter.Interpreter(num_threads=threads)` set_tensor + invoke +
get_tensor, all timed round-robin in one process (the same load for every ratio). Each output is compared with the Keras model's probabilities on the same image
(max absolute difference, top-1 agreement) so that a fast but broken conversion shows.
"""

import os
import tempfile
import time

import numpy as np

from benchmarks import common

FULL = dict(image_size=224, classes=1000, calibration_images=8,
            timing=dict(warmup=2, min_repeats=5, max_repeats=30, budget_s=3.0))
QUICK = dict(image_size=64, classes=10, calibration_images=2,
             timing=dict(warmup=1, min_repeats=2, max_repeats=3, budget_s=0.1))
QUANTIZATIONS = (None, "float16", "dynamic", "int8")
MEAN = np.float32([0.485, 0.456, 0.406])
STD = np.float32([0.229, 0.224, 0.225])


def plan(settings, memory_budget_bytes):
    return [[dict(suite="export", id="export/lambda_resnet50", model="lambda_resnet50", **settings)]]


def _size_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def _compare(output, reference):
    output = np.asarray(output, "float32").reshape(reference.shape)
    return {"max_abs_diff": float(np.max(np.abs(output - reference))),
            "top1_agrees": bool(np.argmax(output) == np.argmax(reference))}


def _tflite_entry(model, directory, quantization, calibration, image, reference, threads):
    """Converts, loads into the LiteRT interpreter; returns (entry, run callable)."""
    from ai_edge_litert.interpreter import Interpreter
    from lambda_keras import export

    path = os.path.join(directory, f"model_{quantization or 'float32'}.tflite")
    started = time.perf_counter()
    export.tflite(model, path, quantization=quantization,
                  representative_data=calibration if quantization == "int8" else None)
    convert_s = time.perf_counter() - started
    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]

    def run():
        interpreter.set_tensor(input_index, image)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    entry = {"file_bytes": _size_bytes(path), "convert_s": convert_s, **_compare(run(), reference)}
    return entry, run


def run_job(job, threads, isolated):
    from benchmarks.common import setup_tensorflow

    tf = setup_tensorflow(threads)
    import lambda_keras
    from lambda_keras import export

    size = job["image_size"]
    model = lambda_keras.LambdaResNet50(weights=None, input_shape=(size, size, 3),
                                        classes=job["classes"])
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (1, size, size, 3)).astype("float32")
    image = (pixels / 255.0 - MEAN) / STD  # [1, H, W, 3] normalised
    calibration = rng.standard_normal((job["calibration_images"], size, size, 3)).astype("float32")
    reference = np.asarray(model.predict_on_batch(image), "float32")
    formats = {"keras": {"params": int(model.count_params())}}
    runs = {"keras": lambda: model.predict_on_batch(image)}
    with tempfile.TemporaryDirectory(prefix="lk-bench-export-") as directory:
        started = time.perf_counter()
        served = export.saved_model(model, os.path.join(directory, "saved_model"), version=1,
                                    warmup=False)
        export_s = time.perf_counter() - started
        signature = tf.saved_model.load(served).signatures["serving_default"]
        tensor = tf.constant(pixels)
        formats["saved_model"] = {
            "file_bytes": _size_bytes(served), "convert_s": export_s,
            **_compare(signature(images=tensor)["probabilities"].numpy(), reference)}
        runs["saved_model"] = lambda: signature(images=tensor)["probabilities"].numpy()
        for quantization in QUANTIZATIONS:
            key = f"tflite_{quantization or 'float32'}"
            try:
                formats[key], runs[key] = _tflite_entry(model, directory, quantization, calibration,
                                                        image, reference, threads)
            except Exception as error:  # noqa: BLE001 - one failing format must not hide the rest
                formats[key] = {"status": "error", "reason": f"{type(error).__name__}: {error}"}
        # All formats timed round-robin: the same machine load for every ratio.
        for key, stats in common.measure_interleaved(runs, **job["timing"]).items():
            formats[key]["latency"] = stats
    return {"formats": formats}
