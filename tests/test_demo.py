"""Tests for lambda_keras.demo, the main job (`make demo`), run short: one epoch at 32 px.

Independent expectations: the training run's own validation of the same weights on the same
held-out images (result.json, written by lambda_keras.training), which the demo's evaluation must
equal when it prepares the images as the run did; the evaluated checkpoint's probabilities
(loaded here), which the exported SavedModel and float32 LiteRT file (loaded and run here, not
the demo's own comparison) must reproduce on held-out images.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lambda_keras import data, demo, export, presets, utils


@pytest.mark.slow
def test_short_demo_evaluates_and_exports_what_it_trained(tmp_path, monkeypatch):
    written, atomic_write_bytes = [], utils.atomic_write_bytes

    def recording_write(path, data):
        written.append(os.path.basename(path))
        atomic_write_bytes(path, data)

    monkeypatch.setattr(utils, "atomic_write_bytes", recording_write)
    returned = demo.run(epochs=1, image_size=32, output_dir=str(tmp_path / "demo"))
    assert "summary.json" in written  # written atomically, like the run's result.json
    with open(tmp_path / "demo" / "result.json") as f:
        trained = json.load(f)  # the training run's summary
    with open(tmp_path / "demo" / "summary.json") as f:
        summary = json.load(f)
    assert summary == json.loads(json.dumps(returned))

    # The demo evaluates the last epoch's weights with the run's preprocessing (from scratch:
    # the default one, crop 0.875, not the ImageNet preset's): the run's own validation top-1.
    assert summary["recipe"] == "scratch"  # offline: no weights in the Keras cache
    assert summary["preprocessing"] == trained["preprocessing"]
    assert summary["preprocessing"]["crop_pct"] == 0.875
    assert summary["preprocessing"]["input_size"] == [32, 32]
    assert summary["held_out_accuracy"] == pytest.approx(trained["metrics"]["top1"], abs=1e-6)

    # What is exported serves what Keras computes: the files and the evaluated checkpoint,
    # loaded here, on held-out images the model tells apart.
    assert summary["evaluated_checkpoint"] == "last"
    preprocessing = presets.Preprocessing(**{
        k: tuple(v) if isinstance(v, list) else v for k, v in summary["preprocessing"].items()})
    held_out, _ = data.make_dataset("digits", "validation", image_size=32, batch_size=32,
                                    training=False, preprocessing=preprocessing)
    images, _ = next(held_out.as_numpy_iterator())  # [32, 32, 32, 3], normalised
    pixels = (images * np.float32(preprocessing.std) + np.float32(preprocessing.mean)) * 255.0
    checkpoint = keras.saving.load_model(summary["paths"]["last_checkpoint"])
    expected = keras.ops.convert_to_numpy(checkpoint(images, training=False))  # [32, 10]
    assert np.ptp(expected, axis=0).max() > 0.1, np.ptp(expected, axis=0)
    served = tf.saved_model.load(summary["paths"]["saved_model"]).signatures["serving_default"]
    exported = {
        "saved_model": served(images=tf.constant(pixels))["probabilities"].numpy(),
        "tflite_float32": export.LiteRTRunner(summary["paths"]["tflite_float32"])(images)}
    for name, probs in exported.items():
        np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-4, err_msg=name)
        np.testing.assert_array_equal(probs.argmax(-1), expected.argmax(-1), err_msg=name)
    # ... and the demo's own comparison reports as much.
    assert summary["saved_model_max_abs_diff"] <= 1e-4
    assert summary["tflite_float32_max_abs_diff"] <= 1e-4
    assert summary["tflite_float32_top1_agreement"] == 1.0
    for name in ("saved_model", "tflite_float32", "tflite_int8", "last_checkpoint"):
        assert os.path.exists(summary["paths"][name]), name
