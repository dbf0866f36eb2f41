"""Helpers shared by the export tests (tests/test_export.py, tests/test_export_api.py,
tests/test_export_signatures.py)."""

import importlib.util
import os

import numpy as np
import keras
import tensorflow as tf

from benchmarks.common import REPO_ROOT
from lambda_keras import export, weights
from lambda_keras.layers import LambdaLayer

SIZE = 64
PREPROCESSING = weights.replace_input_size(weights.DEFAULT_PREPROCESSING, (SIZE, SIZE))
SERVING_TIMEOUT_S = 600


def jpeg(image, quality=95):
    return tf.io.encode_jpeg(np.asarray(image, "uint8"), quality=quality).numpy()


def png(image):
    return tf.io.encode_png(np.asarray(image, "uint8")).numpy()


def load_client(name):
    path = os.path.join(REPO_ROOT, "export", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tflite_run(path, inputs):
    """Runs a .tflite file on a batch with the package's one LiteRT runner (XNNPACK on)."""
    runner = export.LiteRTRunner(path)
    return runner(inputs), runner.ops


def tiny_classifier():
    """A small seeded classifier holding a LambdaLayer: 32x32 RGB in, 3 softmax classes out."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    x = LambdaLayer(key_dim=8, num_heads=4, receptive_field=5)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)
