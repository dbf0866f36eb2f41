"""Helpers shared by the export tests (tests/test_export.py, tests/test_export_api.py)."""

import importlib.util
from pathlib import Path

import numpy as np
import tensorflow as tf

from lambda_keras import export, weights

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
PREPROCESSING = weights.replace_input_size(weights.DEFAULT_PREPROCESSING, (SIZE, SIZE))
SERVING_TIMEOUT_S = 600


def jpeg(image, quality=95):
    return tf.io.encode_jpeg(np.asarray(image, "uint8"), quality=quality).numpy()


def png(image):
    return tf.io.encode_png(np.asarray(image, "uint8")).numpy()


def load_client(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "export" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tflite_run(path, inputs):
    """Runs a .tflite file on a batch with the package's one LiteRT runner (XNNPACK on)."""
    runner = export.LiteRTRunner(path)
    return runner(inputs), runner.ops
