"""Tests for lambda_keras.demo, the main job (`make demo`), run short: one epoch at 32 px.

Independent expectations: the training run's own validation of the same weights on the same
held-out images (result.json, written by lambda_keras.training), which the demo's evaluation must
equal when it prepares the images as the run did; the Keras model's probabilities, which the
exported SavedModel and float32 LiteRT file must reproduce.
"""

import json
import os

import pytest

from lambda_keras import demo, utils


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

    # What is exported serves what Keras computes.
    assert summary["saved_model_max_abs_diff"] <= 1e-4
    assert summary["tflite_float32_max_abs_diff"] <= 1e-4
    assert summary["tflite_float32_top1_agreement"] == 1.0
    for name in ("saved_model", "tflite_float32", "tflite_int8", "last_checkpoint"):
        assert os.path.exists(summary["paths"][name]), name
