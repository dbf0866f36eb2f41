"""Tests for lambda_keras.training's fit glue: train() and evaluate(), their argument errors,
outputs (checkpoints, history, curves, TensorBoard), precision, given models and files, and the
refusals around an output folder's backup (strategies and runs over several devices or processes,
resume after a kill: tests/test_training_distributed.py; the recipes and their optimizer:
tests/test_recipes.py).

Independent expectations: NumPy top-1 of the model's own predictions (for `evaluate`); the
weights before and after each phase (for frozen layers); a NumPy float16 softmax (for the float16
overflow the lambda layer avoids); the files an earlier run left, byte for byte (for a refused
rerun); recording fakes of the TPU API (no TPU here; tests/conftest.py).

The model is a tiny network around a real LambdaLayer (a few thousand weights) on the bundled
digits at 32x32, so each training run takes seconds on two cores.
"""

import dataclasses
import json
import os
import re

import numpy as np
import pytest
import keras
import tensorflow as tf

from helpers import TINY, graph_op_dtypes, tiny_lambda_net, weights_by_path
from lambda_keras import LambdaLayer, data, presets, training, utils


def test_train_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown recipe field\(s\) \['lr'\]"):
        training.train(tiny_lambda_net, output_dir=tmp_path, lr=0.1)
    with pytest.raises(ValueError, match=r"`jit_compile` must be one of \(True, False, 'auto'\)\. "
                                         r"Received: jit_compile='yes'"):
        training.train(tiny_lambda_net, output_dir=tmp_path, jit_compile="yes")
    for number in (1, 0):  # equal to True/False but not bools: refused, not passed on
        with pytest.raises(ValueError, match=f"Received: jit_compile={number}"):
            training.resolve_jit_compile(number, tf.distribute.get_strategy())
    with pytest.raises(ValueError, match=r"`model` must be a builder name .* "
                                         r"Received: model='resnet50'"):
        training.train("resnet50", output_dir=tmp_path, **TINY)
    with pytest.raises(ValueError, match=r"`mixed_precision` must be one of"):
        training.train(tiny_lambda_net, output_dir=tmp_path, mixed_precision="half")
    for given in (tiny_lambda_net((32, 32, 3), 10), str(tmp_path / "given.keras")):
        with pytest.raises(ValueError, match=r"a keras.Model or .keras file has its own .*"
                                             r"Received: weights='imagenet'"):
            training.train(given, output_dir=tmp_path / "run", weights="imagenet", **TINY)
        with pytest.raises(ValueError, match=r"has its own .*Received: weights='imagenet'"):
            training.evaluate(given, weights="imagenet")
    with pytest.raises(ValueError, match=r"takes 32x32 images; .* Received: image_size=64"):
        training.evaluate(tiny_lambda_net((32, 32, 3), 10), image_size=64)
    outside = tiny_lambda_net((32, 32, 3), 10)  # made outside the strategy's scope
    with pytest.raises(ValueError, match=r"must be created inside `strategy.scope\(\)`"):
        training.train(outside, output_dir=tmp_path, **TINY,
                       strategy=training.resolve_strategy(devices=["/cpu:0"]))
    with pytest.raises(ValueError, match=r"`model` has 3 outputs; the data has 10 classes"):
        training.train(tiny_lambda_net((32, 32, 3), 3), output_dir=tmp_path, **TINY)

    class TPUStrategy(tf.distribute.OneDeviceStrategy):  # a real Strategy with a TPU's replicas
        num_replicas_in_sync = 8

    with pytest.raises(ValueError, match=r"divisible by the 8 replicas of TPUStrategy. "
                                         r"Received: batch_size=12"):
        training.train(tiny_lambda_net, output_dir=tmp_path, batch_size=12,
                       strategy=TPUStrategy("/cpu:0"), **TINY)


@pytest.mark.parametrize("bad, error, message", [
    # Flags: "no" was taken as true (overwrite: test_rerun_of_a_finished_run_is_refused_...).
    (dict(deterministic="no"), TypeError, r"`deterministic` must be a bool. "
                                          r"Received: deterministic='no'"),
    (dict(verify_images="no"), TypeError, r"`verify_images` must be a bool. "
                                          r"Received: verify_images='no'"),
    # Were NumPy's "Seed must be between 0 and 2**32 - 1", naming nothing.
    (dict(seed=-1), ValueError, r"`seed` must be an int in \[0, 4294967295\] or None. "
                                r"Received: seed=-1"),
    (dict(seed=2**40), ValueError, r"Received: seed=1099511627776"),
    (dict(seed="7"), TypeError, r"`seed` must be an int .*Received: seed='7'"),
    # Were accepted (and passed on to Keras' progress bar).
    (dict(verbose="loud"), ValueError, r"`verbose` must be one of \('auto', 0, 1, 2\). "
                                       r"Received: verbose='loud'"),
    (dict(verbose=7), ValueError, r"Received: verbose=7"),
    # Were a TypeError / AttributeError from inside fit, after preprocessing.json and
    # tensorboard/ were written.
    (dict(callbacks=[1]), TypeError, r"`callbacks` must be None or a list of keras.callbacks."
                                     r"Callback instances. Received: callbacks=\[1\]"),
    (dict(callbacks=5), TypeError, r"Received: callbacks=5"),
    (dict(callbacks=keras.callbacks.Callback()), TypeError, r"Received: callbacks=<"),
    # Was AttributeError: 'str' object has no attribute 'num_replicas_in_sync'.
    (dict(strategy="mirrored"), TypeError, r"`strategy` must be a tf.distribute.Strategy .*"
                                           r"Received: strategy='mirrored'"),
])
def test_bad_plain_arguments_are_refused_before_anything_is_written(bad, error, message,
                                                                    tmp_path):
    out = tmp_path / "run"
    with pytest.raises(error, match=message):
        training.train(tiny_lambda_net, "digits", "scratch", output_dir=out,
                       steps_per_epoch=2, validation_spec=None, **{**TINY, **bad})
    assert not out.exists()


def test_data_specs_are_named_as_train_and_evaluate_name_them(tmp_path):
    """Were make_dataset's `spec`, from inside step 3 of train, which has no such argument."""
    out, missing = tmp_path / "run", f"folder:{tmp_path / 'missing'}"
    with pytest.raises(ValueError, match=r"`data_spec` .*Received: data_spec='nope:x'"):
        training.train(tiny_lambda_net, "nope:x", "scratch", output_dir=out, **TINY)
    with pytest.raises(ValueError, match=rf"Received: validation_spec='{re.escape(missing)}'"):
        training.train(tiny_lambda_net, "digits", "scratch", output_dir=out,
                       validation_spec=missing, **TINY)
    assert not out.exists()
    with pytest.raises(TypeError, match=r"`data_spec` must be a string. Received: data_spec=3"):
        training.evaluate(tiny_lambda_net((None, None, 3), 10), 3)


def test_evaluate_argument_errors():
    """Were: image_size=0 evaluated at the default size; verbose="loud" was accepted;
    strategy="x" an AttributeError."""
    dynamic = tiny_lambda_net((None, None, 3), 10)
    for bad, error, message in (
            (dict(image_size=0), ValueError, r"`image_size` must be an int >= 1 or None. "
                                             r"Received: image_size=0"),
            (dict(image_size=-1), ValueError, r"Received: image_size=-1"),
            (dict(image_size="64"), TypeError, r"Received: image_size='64'"),
            (dict(verbose="loud"), ValueError, r"`verbose` must be one of \('auto', 0, 1, 2\). "
                                               r"Received: verbose='loud'"),
            (dict(verbose=True), ValueError, r"Received: verbose=True"),
            (dict(strategy="x"), TypeError, r"`strategy` must be a tf.distribute.Strategy .*"
                                            r"Received: strategy='x'")):
        with pytest.raises(error, match=message):
            training.evaluate(dynamic, "digits", **{"verbose": 0, **bad})


# --------------------------------------------------------------------------- training
def _event_tags(directory):
    tags = set()
    for root, _, names in os.walk(directory):
        for name in names:
            if name.startswith("events.out.tfevents"):
                for record in tf.data.TFRecordDataset(os.path.join(root, name)):
                    event = tf.compat.v1.Event.FromString(record.numpy())
                    tags.update(value.tag for value in event.summary.value)
    return tags


def test_short_training_run_learns_digits(tmp_path):
    result = training.train(tiny_lambda_net, "digits", "scratch", output_dir=tmp_path,
                            epochs=4, learning_rate=3e-3, **TINY)
    history = result.history
    print("short run: loss", history["loss"][0], "->", history["loss"][-1], result.metrics)
    # Thresholds: chance is 10% top-1 and a loss of ln(10) = 2.30 (label smoothing 0.1 keeps the
    # minimum near 0.5). This network reaches about 0.80 / 1.62 after 4 epochs (88 steps); the
    # bounds leave room for run-to-run noise yet fail for a run that does not learn.
    assert history["epoch"] == [1, 2, 3, 4]
    assert history["loss"][-1] < history["loss"][0] - 0.4
    assert history["loss"][-1] < 0.8 * np.log(10)
    assert result.metrics["top1"] >= 0.6  # held-out split, 6x chance
    assert result.metrics["top5"] >= 0.9
    assert history["val_accuracy"][-1] == pytest.approx(result.metrics["top1"], abs=1e-6)

    # evaluate() on the saved checkpoint = NumPy top-1 of the checkpoint's own predictions.
    reloaded = keras.saving.load_model(result.last_checkpoint)
    metrics = training.evaluate(result.last_checkpoint, "digits", image_size=32)
    dataset, info = data.make_dataset("digits", "validation", image_size=32, batch_size=64)
    predictions, labels = [], []
    for images, batch_labels in dataset:
        predictions.append(reloaded.predict_on_batch(images))
        labels.append(batch_labels.numpy())
    top1 = np.mean(np.argmax(np.concatenate(predictions), -1) == np.concatenate(labels))
    assert metrics["num_examples"] == info.num_examples == 360
    assert metrics["top1"] == pytest.approx(top1, abs=1e-6)
    assert metrics["top1"] == pytest.approx(result.metrics["top1"], abs=1e-6)

    # Files: checkpoints, curves, history, TensorBoard scalars + learning rate + batch images.
    assert os.path.exists(result.best_checkpoint)
    checkpoints = os.listdir(os.path.dirname(result.best_checkpoint))
    assert sorted(checkpoints) == ["best.keras", "last.keras", "preprocessing.json"]  # no temp
    # Beside them, the preprocessing they were trained with (from scratch: the default one).
    assert presets.preprocessing_beside(result.last_checkpoint) == result.preprocessing
    assert result.preprocessing == dataclasses.replace(presets.DEFAULT_PREPROCESSING,
                                                       input_size=(32, 32))
    with open(result.plot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(result.history_json) as f:
        assert json.load(f) == history
    with open(os.path.join(tmp_path, "result.json")) as f:
        assert json.load(f) == json.loads(json.dumps(result.summary()))
    assert not os.path.exists(os.path.join(tmp_path, "backup"))  # deleted when done
    tags = _event_tags(result.tensorboard_dir)
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "training batch"} <= tags


def test_freeze_backbone_and_batch_norm_options(tmp_path):
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(weights_by_path(self.model))

    model_start = {}

    class Start(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if not model_start:
                model_start.update(weights_by_path(self.model))

    training.train(tiny_lambda_net, "digits", "finetune", output_dir=tmp_path, epochs=2,
                   freeze_backbone_epochs=1, freeze_batch_norm=True, steps_per_epoch=3,
                   validation_spec=None, callbacks=[Start(), Snapshot()], **TINY)
    start, after_frozen, after_all = model_start, *snapshots
    changed = {k for k in start if not np.array_equal(start[k], after_frozen[k])}
    assert changed == {"predictions/kernel", "predictions/bias"}  # epoch 1: classifier only
    changed = {k for k in start if not np.array_equal(after_frozen[k], after_all[k])}
    assert "conv1/kernel" in changed and "lambda/query_kernel" in changed  # epoch 2: everything
    frozen_bn = {k for k in start if "moving_" in k or "/gamma" in k or "/beta" in k}
    assert frozen_bn and not frozen_bn & changed  # BN (incl. the lambda's q/v BN) stays frozen


def test_mixed_float16_training_stays_finite(tmp_path):
    # The failure being avoided: a lambda layer computing its key softmax in float16. exp()
    # overflows float16 (max 65504) once keys exceed ~11.1, and exp/sum is then inf/inf = NaN.
    keys = np.array([[2.0, 8.0, 12.0, 20.0]], "float16")  # one query's keys over 4 positions
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(keys) / np.sum(np.exp(keys), axis=-1, keepdims=True)
    assert np.isnan(naive).any()
    # LambdaLayer under mixed_float16 on inputs that make such keys: finite (softmax in float32).
    layer = LambdaLayer(output_dim=8, key_dim=4, num_heads=2, receptive_field=3,
                        key_initializer=keras.initializers.Constant(1.0), dtype="mixed_float16")
    x = np.full((1, 4, 4, 8), 3.0, "float32")
    x[0, 0, 0] = 0.0  # keys = 8 * x per position: 24 (exp overflows float16) and 0
    y = keras.ops.convert_to_numpy(layer(x))
    assert y.dtype == np.float16 and np.isfinite(y).all()
    # Finite alone would not show it (ops.softmax subtracts the max, in float16 too): the
    # traced graph's one Softmax runs in float32.
    assert graph_op_dtypes(lambda t: layer(t, training=True), x, "Softmax") == ["float32"]

    result = training.train(tiny_lambda_net, "digits", "scratch", output_dir=tmp_path, epochs=1,
                            steps_per_epoch=6, mixed_precision="mixed_float16", **TINY)
    model = result.model
    assert model.dtype_policy.name == "mixed_float16"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)  # Keras adds it
    assert np.isfinite(result.history["loss"]).all() and np.isfinite(result.metrics["loss"])
    assert all(np.isfinite(w).all() for w in weights_by_path(model).values())
    assert keras.config.dtype_policy().name == "float32"  # train() restored the global policy


def test_a_checkpoint_is_evaluated_with_the_preprocessing_recorded_beside_it(tmp_path):
    """`train` records its preprocessing beside its checkpoints; `evaluate` (and the command
    line, tests/test_cli.py) of such a file prepares the images that way, not the default way."""
    path = str(tmp_path / "model.keras")
    tiny_lambda_net((32, 32, 3), 10).save(path)
    recorded = dataclasses.replace(presets.DEFAULT_PREPROCESSING, crop_pct=0.5,
                                   interpolation="bilinear", input_size=(32, 32))
    presets.save_preprocessing(str(tmp_path), recorded)
    model = keras.saving.load_model(path)

    def loss(model, preprocessing=None):
        return training.evaluate(model, "digits", image_size=32, preprocessing=preprocessing,
                                 verbose=0)["loss"]

    assert loss(path) == pytest.approx(loss(model, recorded), rel=1e-6)
    assert abs(loss(path) - loss(model, presets.DEFAULT_PREPROCESSING)) > 1e-4

    with open(tmp_path / presets.PREPROCESSING_FILE, "w") as f:
        f.write('{"crop": 0.5}')
    with pytest.raises(ValueError, match=r"preprocessing.json .*is not a preprocessing record"):
        training.evaluate(path, "digits", image_size=32, verbose=0)


def test_a_given_model_or_file_is_trained_as_it_is_or_refused(tmp_path):
    """A .keras file's layers keep the policy they were saved with, also when loaded under
    another one (the Model object then reports the global policy): `mixed_precision` that
    contradicts them is refused before anything is written, "auto" trains the file as saved and
    the result reports what its layers computed in. An image size the file's input does not take
    is refused too; without one the run takes the file's."""
    path = str(tmp_path / "float32.keras")
    tiny_lambda_net((32, 32, 3), 10).save(path)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"model loaded from '.*float32.keras' computes in "
                                         r"'float32'.*Received: mixed_precision='mixed_bfloat16'"):
        training.train(path, "digits", "scratch", output_dir=out, **TINY,
                       mixed_precision="mixed_bfloat16")
    with pytest.raises(ValueError, match=r"computes in 'float32'.*mixed_precision='mixed_float16'"):
        training.train(path, "digits", "scratch", output_dir=out, **TINY,
                       precision="mixed_float16")  # the recipe's field asks the same
    with pytest.raises(ValueError, match=r"keras.Model 'tiny_lambda_net' computes in 'float32'"):
        training.train(tiny_lambda_net((32, 32, 3), 10), output_dir=out, **TINY,
                       mixed_precision="mixed_bfloat16")

    def float32_builder(input_shape, classes):  # sets its layers' dtype whatever the policy
        model = tiny_lambda_net(input_shape, classes)
        return keras.Model.from_config({**model.get_config(), "layers": [
            {**layer, "config": {**layer["config"], "dtype": "float32"}}
            for layer in model.get_config()["layers"]]})

    with pytest.raises(ValueError, match=r"built by 'float32_builder' computes in 'float32'"):
        training.train(float32_builder, output_dir=out, **TINY, mixed_precision="mixed_float16")
    assert not out.exists()

    with utils.dtype_policy("mixed_bfloat16"):  # what the Model object of a loaded file reports
        assert keras.saving.load_model(path).dtype_policy.name == "mixed_bfloat16"
    with pytest.raises(ValueError, match=r"`model` takes 32x32 images; the run's image size is "
                                         r"64.*Received: image_size=64"):
        training.train(path, "digits", "scratch", output_dir=out, image_size=64)
    assert not out.exists()
    # "auto": the file's own policy; no image_size: the file's input size (not a default 224).
    result = training.train(path, "digits", "scratch", output_dir=out, epochs=1, steps_per_epoch=3,
                            validation_spec=None, seed=0, verbose=0)
    assert result.precision == "float32"
    assert result.model.get_layer("lambda").compute_dtype == "float32"
    bfloat16 = _short_run(tmp_path / "bf16", epochs=1, mixed_precision="mixed_bfloat16")
    assert bfloat16.precision == "mixed_bfloat16"  # the float32 classifier does not count
    assert bfloat16.model.get_layer("lambda").compute_dtype == "bfloat16"


@pytest.mark.parametrize("weights,expected", [("default", "lambda_resnet26t.c1_in1k"),
                                              (None, None), ("my.weights.h5", "my.weights.h5")])
def test_a_model_name_means_its_default_weights(weights, expected, tmp_path, monkeypatch):
    """As get_model and every CLI command: a preset name trains from its weights unless told."""
    from lambda_keras import models

    built = []

    def builder(input_shape, classes, weights=None, **unused):
        built.append(weights)
        return tiny_lambda_net(input_shape, classes)

    monkeypatch.setitem(models.BUILDERS, "lambda_resnet26t", builder)
    kwargs = {} if weights == "default" else {"weights": weights}  # "default": the default
    training.train("lambda_resnet26t.c1_in1k", "digits", "scratch", output_dir=tmp_path,
                   epochs=1, steps_per_epoch=1, validation_spec=None, **TINY, **kwargs)
    assert built == [expected]


def test_atomic_save_never_leaves_a_half_written_file(tmp_path):
    path = str(tmp_path / "best.keras")
    with open(path, "w") as f:
        f.write("previous checkpoint")

    def crash_mid_write(target):
        with open(target, "w") as f:
            f.write("half")
        raise KeyboardInterrupt  # what a kill would do halfway

    with pytest.raises(KeyboardInterrupt):
        training.atomic_save(path, crash_mid_write)
    with open(path) as f:
        assert f.read() == "previous checkpoint"
    assert os.listdir(tmp_path) == ["best.keras"]
    assert training.temp_path(path).endswith(".keras")  # Keras checks the suffix


def test_validation_data_of_other_classes_is_refused_before_training(tmp_path):
    """Label i must name one class in both splits: other class names (the same count would
    train and report a meaningless accuracy) or another count (it failed after an epoch). One
    class alone is refused too (it trained to loss 0, accuracy 1)."""
    from PIL import Image

    def folder(root, names):
        for name in names:
            os.makedirs(root / name)
            for i in range(5):
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / name / f"{i}.png")
        return f"folder:{root}"

    train_spec = folder(tmp_path / "train", ["cat", "dog"])
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"needs at least 2 classes; .* has \(1: 'cat'\)"):
        training.train(tiny_lambda_net, folder(tmp_path / "one", ["cat"]), "scratch",
                       output_dir=out, batch_size=2, **TINY)
    for names, shown in ((["ant", "bee"], r"\(2: 'ant', 'bee'\)"),
                         (["cat", "dog", "eel"], r"\(3: 'cat', 'dog', 'eel'\)")):
        spec = folder(tmp_path / "_".join(names), names)
        with pytest.raises(ValueError, match=rf"validation data's classes {shown} are not the "
                                             r"training data's \(2: 'cat', 'dog'\)"):
            training.train(tiny_lambda_net, train_spec, "scratch", output_dir=out,
                           validation_spec=spec, batch_size=2, **TINY)
    assert not out.exists()


def test_refused_train_creates_no_output_folders(tmp_path):
    out = tmp_path / "run"
    for bad in (dict(epochs=0), dict(jit_compile="yes"), dict(steps_per_epoch=0)):
        with pytest.raises((ValueError, TypeError)):
            training.train(tiny_lambda_net, "digits", "scratch", output_dir=out, **TINY, **bad)
    with pytest.raises(ValueError, match=r"`model` has 3 outputs"):
        training.train(tiny_lambda_net((32, 32, 3), 3), output_dir=out, **TINY)
    assert not out.exists()


def _short_run(out, **kwargs):
    return training.train(tiny_lambda_net, "digits", "scratch", output_dir=out,
                          steps_per_epoch=3, validation_spec=None, **{**TINY, **kwargs})


def test_resume_refuses_a_backup_that_is_not_this_runs(tmp_path):
    """A backup claiming a later epoch than the run has (it used to train nothing, exit 0 and
    delete the backup), a corrupt or foreign state.json, another model, other settings (seed,
    recipe, sizes): a clear error naming the file and the folder to delete; the backup stays."""
    out = tmp_path / "run"
    backup = out / "backup"

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt  # a kill after 2 epochs: backup/ holds epoch 2

    with pytest.raises(KeyboardInterrupt):
        _short_run(out, epochs=4, callbacks=[Stop()])
    state = json.loads((backup / "state.json").read_text())
    assert (state["epoch"], state["step"], state["model"]) == (2, 0, "tiny_lambda_net")
    files = sorted(os.listdir(backup))
    state_file = re.escape(str(backup / "state.json"))
    delete = rf"Delete the folder {re.escape(str(backup))}"
    # The run is now asked for 1 epoch: the backup is past its end.
    with pytest.raises(ValueError, match=rf"{state_file}: it is at epoch 2 step 0, past the end "
                                         rf"of this run \(1 epochs of 3 steps\). {delete}"):
        _short_run(out, epochs=1)
    assert sorted(os.listdir(backup)) == files  # nothing deleted
    # Another model for the same output_dir.
    def other_net(input_shape, classes, **unused):
        model = tiny_lambda_net(input_shape, classes)
        return keras.Model(model.inputs, model.outputs, name="other_net")

    with pytest.raises(ValueError, match=rf"written for model 'tiny_lambda_net'; this run has "
                                         rf"'other_net'. {delete}"):
        training.train(other_net, "digits", "scratch", output_dir=out, epochs=4,
                       steps_per_epoch=3, validation_spec=None, **TINY)
    # The same model and output_dir with other settings: an explicit other seed, a recipe field,
    # the data's size (each named; "auto" would resume silently with the backup's).
    with pytest.raises(ValueError, match=rf"written with seed 0; this run asks for 1. {delete}"):
        _short_run(out, epochs=4, seed=1)
    with pytest.raises(ValueError, match=r"other settings: base_learning_rate \S+ \(now 0.5\), "
                                         rf"batch_size 64 \(now 32\). {delete}"):
        _short_run(out, epochs=4, batch_size=32, base_learning_rate=0.5)
    with pytest.raises(ValueError, match=r"other settings: image_size 32 \(now 48\)"):
        _short_run(out, epochs=4, image_size=48)
    # Corrupt and foreign state files.
    original = (backup / "state.json").read_text()
    for text, problem in (("{not json", r"it is not readable JSON"),
                          ("[1, 2]", r"it holds a list, not a JSON object"),
                          (json.dumps({**state, "epoch": "2"}),
                           r"field 'epoch' must be a non-neg"),
                          (json.dumps({**state, "weights": "../x.h5"}),
                           r"its weights file '../x.h5' is not a file")):
        (backup / "state.json").write_text(text)
        with pytest.raises(ValueError, match=rf"{state_file}: {problem}.*{delete}"):
            _short_run(out, epochs=4)
    # A weights file that does not load into the model.
    (backup / "state.json").write_text(original)
    (backup / state["weights"]).write_bytes(b"not an h5 file")
    with pytest.raises(ValueError, match=rf"its weights file .*{re.escape(state['weights'])} "
                                         rf"does not load into this model.*{delete}"):
        _short_run(out, epochs=4)
    assert sorted(os.listdir(backup)) == files


def test_rerun_of_a_finished_run_is_refused_unless_overwrite(tmp_path):
    """A finished run leaves no backup: rerunning its call used to train anew over its
    checkpoints, history and TensorBoard logs. Now refused, everything kept; overwrite=True
    replaces the earlier run's files, the new history holding only the new run's epochs."""
    out = tmp_path / "run"
    _short_run(out, epochs=2)
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {"result.json", "history.json", "best.keras", "last.keras"} <= {p.name for p in files}
    events = [p for p in files if p.name.startswith("events.")]
    assert events and not (out / "backup").exists()
    with pytest.raises(ValueError, match=r"holds an earlier run \(result.json, history.json, "
                                         r"checkpoints/best.keras, checkpoints/last.keras\) and "
                                         r"no backup to resume from; pass overwrite=True"):
        _short_run(out, epochs=1)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files  # untouched
    for value in ("no", 0):  # were taken as True / False: "no" deleted the earlier run
        with pytest.raises(TypeError, match=rf"`overwrite` must be a bool. "
                                            rf"Received: overwrite={value!r}"):
            _short_run(out, epochs=1, overwrite=value)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files  # untouched
    # callbacks=None means none, as in Keras' fit (was TypeError: 'NoneType' is not iterable).
    result = _short_run(out, epochs=1, overwrite=True, callbacks=None)
    assert json.loads((out / "history.json").read_text())["epoch"] == [1]
    assert len(result.history["loss"]) == 1
    assert not any(p.exists() for p in events)  # the earlier run's TensorBoard logs went too


def test_training_stops_at_the_first_non_finite_loss_keeping_the_last_good_state(tmp_path):
    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.params and self._epoch == 1 and batch == 0:  # 2nd epoch, 1st step
                kernel = self.model.get_layer("conv1").kernel
                kernel.assign(np.full(kernel.shape, np.nan, "float32"))

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

    with pytest.raises(training.NonFiniteError, match=r"Training stopped at epoch 2, step 2: the "
                                                      r"training loss is nan.*last.keras"):
        _short_run(tmp_path, epochs=3, callbacks=[Poison()])
    last = keras.saving.load_model(tmp_path / "checkpoints" / "last.keras")  # epoch 1's
    assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in last.weights)
    state = json.loads((tmp_path / "backup" / "state.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 0)  # the backup of the last good epoch
    with open(tmp_path / "history.json") as f:
        assert json.load(f)["epoch"] == [1]
