"""The `lambda-keras` command, end to end on a tiny `.keras` model (the heavy paths behind it are
tested in the module tests): predict agrees with the model itself, export writes a TFLite file
that reproduces the model, evaluate reports the accuracy the model really has, autotune stores the
fastest formulation it printed; every kind of model name means the same architecture and weights
in every subcommand; TensorFlow's C++ log lines stay off the output, and every option has help.

User errors (exit status 2 and one `error:` line, no traceback): tests/test_cli_errors.py. The tiny
model and the check of an error line: tests/cli_helpers.py (the fixture `tiny_model_path`:
conftest.py)."""

import dataclasses
import json

import numpy as np
import keras
import pytest
from PIL import Image

from lambda_keras import cli, data, presets, weights
from lambda_keras.layers import LambdaLayer

from cli_helpers import SIZE, one_error_line, save_tiny_model


# ---------------------------------------------------------------------------------- predict
def test_predict_prints_the_models_own_top5(tiny_model_path, tmp_path, capsys):
    """Each image's block: its path, then the model's own top 5 of that image (images of
    several sizes, predicted in one batch, in the order given)."""
    rng = np.random.default_rng(0)
    images = {tmp_path / "photo.png": rng.integers(0, 256, (48, 40, 3), dtype=np.uint8),
              tmp_path / "wide.png": rng.integers(0, 256, (30, 64, 3), dtype=np.uint8)}
    for path, image in images.items():
        Image.fromarray(image).save(path)

    assert cli.main(["predict", *map(str, images), "--model", tiny_model_path]) == 0
    printed = capsys.readouterr().out.splitlines()

    model = keras.saving.load_model(tiny_model_path)
    prep = weights.replace_input_size(weights.resolve_preprocessing(None), (SIZE, SIZE))
    assert len(printed) == 6 * len(images)
    for block, (path, image) in enumerate(images.items()):
        lines = printed[6 * block:6 * block + 6]
        probs = model.predict(np.asarray(data.eval_transform(image, prep))[None], verbose=0)
        expected = weights.decode_predictions(probs, top=5)[0]
        assert lines[0] == str(path)
        assert [line.split(None, 1)[1] for line in lines[1:]] == [label for _, label, _ in expected]
        np.testing.assert_allclose([float(line.split()[0]) for line in lines[1:]],
                                   [score for _, _, score in expected], atol=1e-4)


def test_a_checkpoint_is_predicted_and_exported_with_its_recorded_preprocessing(tmp_path, capsys):
    """`train` records its preprocessing beside its checkpoints (presets.PREPROCESSING_FILE);
    `predict` and `export` of such a file prepare images that way (here a 0.5 crop, bilinear),
    not the default way, and the served model computes what predict prints."""
    import tensorflow as tf

    (tmp_path / "run").mkdir()
    path = save_tiny_model(tmp_path / "run" / "best.keras", 10)  # scores far from uniform
    recorded = dataclasses.replace(presets.DEFAULT_PREPROCESSING, crop_pct=0.5,
                                   interpolation="bilinear", input_size=(SIZE, SIZE))
    presets.save_preprocessing(str(tmp_path / "run"), recorded)
    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    image_path = tmp_path / "photo.png"
    Image.fromarray(image).save(image_path)
    model = keras.saving.load_model(path)
    probs = {prep.crop_pct: model.predict(np.asarray(data.eval_transform(image, prep))[None],
                                          verbose=0)[0]
             for prep in (recorded, weights.replace_input_size(None, (SIZE, SIZE)))}
    assert np.abs(probs[0.5] - probs[0.875]).max() > 1e-3  # the crop shows in the scores

    assert cli.main(["predict", str(image_path), "--model", path, "--top", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    order = np.argsort(-probs[0.5], kind="stable")[:3]
    np.testing.assert_allclose([float(line.split()[0]) for line in printed[1:4]],
                               probs[0.5][order], atol=1e-4)

    out = tmp_path / "export"
    assert cli.main(["export", "--model", path, "--format", "saved_model", "--output",
                     str(out), "--no-warmup"]) == 0
    served = tf.saved_model.load(str(out / "saved_model" / "1")).signatures["serving_bytes"]
    result = served(image_bytes=tf.constant([image_path.read_bytes()]))
    np.testing.assert_allclose(np.asarray(result["probabilities"])[0], probs[0.5], atol=1e-4)


def test_predict_names_the_classes_of_any_model(tmp_path, capsys):
    """A model of 10 classes (what `train` on the digits writes): class numbers, or --labels;
    labels of another count and a --top past the classes are errors naming them."""
    path = save_tiny_model(tmp_path / "digits.keras", 10)
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    image_path = tmp_path / "photo.png"
    Image.fromarray(image).save(image_path)
    model = keras.saving.load_model(path)
    prep = weights.replace_input_size(weights.resolve_preprocessing(None), (SIZE, SIZE))
    probs = model.predict(np.asarray(data.eval_transform(image, prep))[None], verbose=0)[0]
    order = np.argsort(-probs)[:3]
    names = [f"digit {i}" for i in range(10)]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(names) + "\n")
    for extra, expected in (([], [str(i) for i in order]), (["--labels", str(labels)],
                                                            [names[i] for i in order])):
        argv = ["predict", str(image_path), "--model", path, "--top", "3", *extra]
        assert cli.main(argv) == 0
        printed = capsys.readouterr().out.splitlines()
        assert [line.split(None, 1)[1] for line in printed[1:]] == expected
        np.testing.assert_allclose([float(line.split()[0]) for line in printed[1:]],
                                   probs[order], atol=1e-4)
    labels.write_text("a\nb\n")
    line = one_error_line(capsys, ["predict", str(image_path), "--model", path,
                                    "--labels", str(labels)], "10 strings")
    assert "Received: 2 labels" in line
    one_error_line(capsys, ["predict", str(image_path), "--model", path, "--top", "11"],
                    "--top", "11")
    three = save_tiny_model(tmp_path / "three.keras", 3)  # the default top 5 -> all 3
    assert cli.main(["predict", str(image_path), "--model", three]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]] == [
        str(i) for i in np.argsort(-keras.saving.load_model(three).predict(
            np.asarray(data.eval_transform(image, prep))[None], verbose=0)[0])]


def test_predict_image_size_of_a_keras_file(tmp_path, capsys):
    """A file of any input size predicts at --image-size; a fixed one refuses another size
    (every command loads files through the same function)."""
    keras.utils.set_random_seed(1)
    peaked = keras.initializers.RandomNormal(stddev=30.0)  # scores that move with the size
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalMaxPooling2D(),
                              keras.layers.Dense(1000, activation="softmax",
                                                 kernel_initializer=peaked)])
    path = str(tmp_path / "any_size.keras")
    model.save(path)
    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    image_path = tmp_path / "photo.png"
    Image.fromarray(image).save(image_path)
    assert cli.main(["predict", str(image_path), "--model", path, "--image-size", "40"]) == 0
    printed = capsys.readouterr().out.splitlines()
    probs = {}
    for size in (40, 224):  # 224: the preprocessing's default size
        prep = weights.replace_input_size(weights.resolve_preprocessing(None), (size, size))
        probs[size] = model.predict(np.asarray(data.eval_transform(image, prep))[None], verbose=0)
    top = weights.decode_predictions(probs[40], top=5)[0]
    assert [line.split(None, 1)[1] for line in printed[1:6]] == [label for _, label, _ in top]
    np.testing.assert_allclose([float(line.split()[0]) for line in printed[1:6]],
                               [score for _, _, score in top], atol=1e-4)
    assert np.abs(probs[224] - probs[40]).max() > 0.01  # the size shows in the scores
    fixed = save_tiny_model(tmp_path / "fixed.keras", 1000)
    for command in (["predict", str(image_path)], ["export", "--output", str(tmp_path / "out")]):
        line = one_error_line(capsys, [*command, "--model", fixed, "--image-size", "40"],
                               "Received: --image-size=40", f"{SIZE}x{SIZE}")
        assert fixed in line
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------- autotune
def test_autotune_stores_the_fastest_it_printed(tiny_model_path, tmp_path, monkeypatch, capsys):
    from lambda_keras.layers.formulations import autotuning

    path = tmp_path / "autotune.json"
    monkeypatch.setenv(autotuning.CACHE_ENV, str(path))
    assert cli.main(["autotune", "--model", tiny_model_path, "--batch-size", "1",
                     "--repeats", "1", "--phases", "fwd"]) == 0
    out = capsys.readouterr().out
    (device, picks), = json.loads(path.read_text())["picks"].items()
    (key, entry), = picks.items()
    times = {f: r["ms"] for f, r in entry["results"].items() if "ms" in r}
    # A fastest one (the file sorts its keys, so a tie at the microsecond may list another first).
    assert times[entry["formulation"]] == min(times.values()), times
    assert f"device: {device}" in out and f"{key}: {entry['formulation']} (ms: " in out
    assert key.endswith(" 16x16 float32 fwd") and f"stored in {path}" in out
    assert cli.main(["autotune", "--model", tiny_model_path, "--phases", "fwd,predict"]) == 2
    assert "`--phases` must be" in capsys.readouterr().err


def test_autotune_tunes_under_the_policy_train_will_use(tiny_model_path, tmp_path, monkeypatch,
                                                         capsys):
    """`--mixed-precision` builds the model under that policy, so the picks are stored for the
    compute dtype `train --mixed-precision` runs (picks are keyed by it); a .keras file keeps
    its own policy, and a flag that contradicts it is an error naming the flag."""
    from lambda_keras.layers.formulations import autotuning

    path = tmp_path / "autotune.json"
    monkeypatch.setenv(autotuning.CACHE_ENV, str(path))
    assert cli.main(["autotune", "--model", "lambda_resnet26t", "--image-size", "32",
                     "--batch-size", "1", "--repeats", "1", "--phases", "fwd",
                     "--mixed-precision", "mixed_bfloat16"]) == 0
    (_, picks), = json.loads(path.read_text())["picks"].items()
    assert picks and all(key.endswith(" bfloat16 fwd") for key in picks), sorted(picks)
    assert all("ms" in r for entry in picks.values() for r in entry["results"].values())
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    capsys.readouterr()
    assert cli.main(["autotune", "--model", tiny_model_path, "--phases", "fwd",
                     "--mixed-precision", "mixed_bfloat16"]) == 2
    error = capsys.readouterr().err
    assert "--mixed-precision" in error and "'float32'" in error and "mixed_bfloat16" in error


def test_autotune_tunes_a_keras_file_of_any_size_at_image_size(tmp_path, monkeypatch, capsys):
    """A file saved with keras.Input((None, None, 3)): --image-size gives the map sizes (was:
    "not tuned (dynamic map size)", the flag ignored); without it, nothing is stored."""
    from lambda_keras.layers.formulations import autotuning

    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((None, None, 3)),
        keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        LambdaLayer(key_dim=8, num_heads=2, receptive_field=5, name="lambda"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    path = str(tmp_path / "dyn.keras")
    model.save(path)
    store = tmp_path / "autotune.json"
    monkeypatch.setenv(autotuning.CACHE_ENV, str(store))
    argv = ["autotune", "--model", path, "--batch-size", "1", "--repeats", "1", "--phases", "fwd"]
    assert cli.main(argv) == 0
    assert "not tuned (dynamic map size" in capsys.readouterr().out and not store.exists()
    assert cli.main([*argv, "--image-size", "24"]) == 0
    out = capsys.readouterr().out
    (_, picks), = json.loads(store.read_text())["picks"].items()
    (key, entry), = picks.items()
    assert key.endswith(" 12x12 float32 fwd") and entry["layers"] == ["lambda"], key
    assert "not tuned" not in out and f"{key}: {entry['formulation']}" in out


# ------------------------------------------------------------------------- export, evaluate
def test_export_tflite_reproduces_the_model(tiny_model_path, tmp_path, capsys):
    from lambda_keras.export import LiteRTRunner

    out = tmp_path / "export"
    assert cli.main(["export", "--model", tiny_model_path, "--format", "tflite",
                     "--output", str(out)]) == 0
    assert "TFLite:" in capsys.readouterr().out
    x = np.random.default_rng(1).normal(size=(1, SIZE, SIZE, 3)).astype("float32")
    got = LiteRTRunner(out / "model_float32.tflite")(x)
    expected = keras.saving.load_model(tiny_model_path).predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_export_of_a_keras_file_of_any_size_takes_image_size(tmp_path, capsys):
    """A file saved with keras.Input((None, None, 3)) exports at --image-size, with its weights
    (was: an error about `input_size=(None, None)`); without the flag, an error naming it."""
    from lambda_keras.export import LiteRTRunner

    path = save_tiny_model(str(tmp_path / "dyn.keras"), classes=3, size=None)
    model = keras.saving.load_model(path)
    one_error_line(capsys, ["export", "--model", path, "--output", str(tmp_path / "none")],
                    "takes images of any size", "--image-size")
    assert not (tmp_path / "none").exists()
    out = tmp_path / "out"
    assert cli.main(["export", "--model", path, "--format", "tflite", "--image-size", "24",
                     "--output", str(out)]) == 0
    x = np.random.default_rng(3).normal(size=(1, 24, 24, 3)).astype("float32")
    runner = LiteRTRunner(out / "model_float32.tflite")
    np.testing.assert_allclose(runner(x), model.predict(x, verbose=0), atol=1e-5)


def test_evaluate_reports_the_models_accuracy(tmp_path, capsys):
    tiny_model_path = save_tiny_model(tmp_path / "digits.keras", 10)
    assert cli.main(["evaluate", "--model", tiny_model_path, "--data", "digits",
                     "--image-size", str(SIZE)]) == 0
    metrics = _last_json(capsys)
    dataset, _ = data.make_dataset("digits", "validation", image_size=SIZE, batch_size=64,
                                   training=False)
    model = keras.saving.load_model(tiny_model_path)
    correct = total = 0
    for x, y in dataset.as_numpy_iterator():
        correct += int((model.predict(x, verbose=0).argmax(-1) == y).sum())
        total += len(y)
    assert metrics["top1"] == pytest.approx(correct / total, abs=1e-6)


def _last_json(capsys):
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


# ------------------------------------------------------------------------------ model names
# Every kind of model name, the architecture it means and its default weights (the same in every
# subcommand and in lambda_keras.get_model): a preset means its weights, the timm variants'
# builders and registry keys "imagenet", the paper family none.
NAMES = [
    ("lambda_resnet26t", "lambda_resnet26t", "imagenet"),
    ("LambdaResNet26T", "lambda_resnet26t", "imagenet"),
    ("lambda_resnet26t.c1_in1k", "lambda_resnet26t", "lambda_resnet26t.c1_in1k"),
    ("LambdaResNet50", "lambda_resnet50", None),
    ("lambda_resnet50", "lambda_resnet50", None),
]


@pytest.fixture
def recorded_builds(monkeypatch):
    """Replaces models.get_model (what the CLI builds named models with) by a tiny model; records
    (name, kwargs) of every call. `classes` defaults to 1000 as the real builders."""
    from lambda_keras import models

    calls = []

    def fake_get_model(name, **kwargs):
        calls.append((name, kwargs))
        keras.utils.set_random_seed(2)
        size = (kwargs.get("input_shape") or (SIZE, SIZE, 3))[0]
        return keras.Sequential([
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(kwargs.get("classes", 1000), activation="softmax",
                               name="predictions"),
        ])

    monkeypatch.setattr(models, "get_model", fake_get_model)
    return calls


def _expected_weights(default, flag):
    return {None: default, "none": None}.get(flag, flag)


@pytest.mark.parametrize("name,arch,default", NAMES)
@pytest.mark.parametrize("flag", [None, "none"])
def test_predict_resolves_every_name(name, arch, default, flag, recorded_builds, tmp_path,
                                     capsys):
    image_path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image_path)
    argv = ["predict", str(image_path), "--model", name, "--image-size", str(SIZE)]
    assert cli.main(argv + ([] if flag is None else ["--weights", flag])) == 0
    assert recorded_builds == [(arch, {"weights": _expected_weights(default, flag),
                                       "input_shape": (SIZE, SIZE, 3)})]
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 6  # the image, then its top 5
    assert ("randomly initialised" in err) == (_expected_weights(default, flag) is None)


@pytest.mark.parametrize("name,arch,default", NAMES)
def test_export_resolves_every_name(name, arch, default, recorded_builds, tmp_path, monkeypatch,
                                    capsys):
    from lambda_keras import export, presets

    seen = {}
    monkeypatch.setattr(export, "saved_model",
                        lambda model, path, **kwargs: seen.update(kwargs) or path)
    assert cli.main(["export", "--model", name, "--format", "saved_model",
                     "--output", str(tmp_path)]) == 0
    assert recorded_builds == [(arch, {"weights": default})]
    # The served preprocessing is the name's (crop 0.94 for lambda_resnet26t, 0.875 for the paper
    # family), at the model's input size.
    expected = presets.replace_input_size(presets.resolve_preprocessing(arch), (SIZE, SIZE))
    assert seen["preprocessing"] == expected
    assert "SavedModel:" in capsys.readouterr().out


@pytest.mark.parametrize("name,arch,default", NAMES)
def test_evaluate_resolves_every_name(name, arch, default, recorded_builds, monkeypatch, capsys):
    from lambda_keras import presets, training

    seen = {}

    def fake_evaluate(model, data_spec, **kwargs):
        seen.update(kwargs, model=model, data_spec=data_spec)
        return {"top1": 0.5}

    monkeypatch.setattr(training, "evaluate", fake_evaluate)
    assert cli.main(["evaluate", "--model", name, "--data", "digits",
                     "--image-size", str(SIZE)]) == 0
    assert recorded_builds == [(arch, {"weights": default, "input_shape": (SIZE, SIZE, 3)})]
    assert seen["preprocessing"] == presets.replace_input_size(
        presets.resolve_preprocessing(arch), SIZE)
    assert _last_json(capsys) == {"top1": 0.5}


@pytest.mark.parametrize("name,arch,default", NAMES)
@pytest.mark.parametrize("flag", [None, "none", "my.weights.h5"])
def test_train_resolves_every_name(name, arch, default, flag, monkeypatch, tmp_path, capsys):
    from lambda_keras import training

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.weights.h5").write_bytes(b"")  # --weights are checked before train runs
    seen = {}

    class Result:
        def summary(self):
            return {"done": True}

    def fake_train(model, data_spec, **kwargs):
        seen.update(kwargs, model=model)
        return Result()

    monkeypatch.setattr(training, "train", fake_train)
    argv = ["train", "--model", name, "--data", "digits", "--recipe", "scratch"]
    assert cli.main(argv + ([] if flag is None else ["--weights", flag])) == 0
    # training.train gets the registry key, which it accepts (tests/test_training.py).
    assert seen["model"] == arch and seen["weights"] == _expected_weights(default, flag)
    assert _last_json(capsys) == {"done": True}


def test_train_recipe_fields_by_flag_or_set(monkeypatch, capsys):
    """--epochs / --batch-size / --image-size and --set FIELD=VALUE reach the recipe alike."""
    from lambda_keras import training

    seen = []

    class Result:
        def summary(self):
            return {}

    monkeypatch.setattr(training, "train",
                        lambda model, data_spec, **kwargs: seen.append(kwargs) or Result())
    argv = ["train", "--model", "lambda_resnet50", "--weights", "none"]
    assert cli.main(argv + ["--set", "epochs=3", "--set", "batch_size=16", "--image-size",
                            "64"]) == 0
    assert cli.main(argv + ["--epochs", "3", "--set", "epochs=3", "--overwrite"]) == 0  # agree
    assert [{k: kw.get(k) for k in ("epochs", "batch_size", "image_size", "overwrite")}
            for kw in seen] == [
        {"epochs": 3, "batch_size": 16, "image_size": 64, "overwrite": False},
        {"epochs": 3, "batch_size": None, "image_size": None, "overwrite": True}]
    one_error_line(capsys, argv + ["--epochs", "2", "--set", "epochs=3"], "--epochs 2",
                    "epochs=3")


def test_keras_files_load_through_the_packages_loader(tiny_model_path, monkeypatch):
    """`.keras` files load with lambda_keras.models.load_model (the package's layers and
    optimizer registered), safe mode on; `load_model` takes no `classes` (no caller gave it)."""
    import inspect

    from lambda_keras import models

    calls = []
    real = models.load_model
    monkeypatch.setattr(models, "load_model",
                        lambda path, **kwargs: calls.append((path, kwargs)) or real(path, **kwargs))
    model = cli.load_model(tiny_model_path)
    assert calls == [(tiny_model_path, {"safe_mode": True})]
    assert model.output_shape == (None, 1000)
    assert list(inspect.signature(cli.load_model).parameters) == ["model", "weights", "image_size"]


def test_python_api_uses_the_same_defaults():
    from lambda_keras import models
    from lambda_keras.training import model_setup

    for name, arch, default in NAMES:
        resolved = models.resolve_model(name)
        assert (resolved.arch, resolved.default_weights) == (arch, default)
        # training.train / evaluate resolve model names through the same resolver.
        assert model_setup.zoo_builder(name) == (arch, models.BUILDERS[arch])
        assert model_setup.resolve_weights(name, model_setup.DEFAULT_WEIGHTS) == default
        assert model_setup.resolve_weights(name, None) is None  # random initialisation
    assert model_setup.zoo_builder("resnet50") == (None, None)


# ---------------------------------------------------------------------------- logs and help
def test_cli_output_has_no_tensorflow_cpp_log_lines(tiny_model_path, tmp_path):
    """A fresh process (TensorFlow not yet imported): no C++ log lines (I0000 ..., E0000 ...,
    absl's "WARNING: All log messages before absl::InitializeLog()") on stderr."""
    import os
    import re
    import subprocess
    import sys

    image_path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image_path)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "lambda_keras.cli", "predict", str(image_path), "--model",
         tiny_model_path], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.splitlines()) == 6
    cpp_line = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d\.\d+|WARNING: All log messages before)",
                          re.MULTILINE)
    assert not cpp_line.search(result.stderr), result.stderr[-3000:]


def test_verbose_keeps_tensorflow_logging(monkeypatch, tiny_model_path, tmp_path):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    image_path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image_path)
    assert cli.main(["--verbose", "predict", str(image_path), "--model", tiny_model_path]) == 0
    assert "TF_CPP_MIN_LOG_LEVEL" not in __import__("os").environ
    assert cli.main(["predict", str(image_path), "--model", tiny_model_path]) == 0
    assert __import__("os").environ["TF_CPP_MIN_LOG_LEVEL"] == cli.QUIET_LOG_LEVEL


def test_native_stderr_silenced_restores_stderr(capfd):
    import os

    from lambda_keras import utils

    with pytest.raises(RuntimeError):
        with utils.native_stderr_silenced():
            os.write(2, b"I0000 native log line\n")
            raise RuntimeError("propagates")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_train_recipe_help_lists_every_recipe_without_a_model(capsys):
    """`lambda-keras train --recipe help` prints the recipe table (training.describe_recipes) and
    exits 0, like --help, before `--model` is required."""
    from lambda_keras import training

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--recipe", "help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.strip() == training.describe_recipes().strip()
    assert all(name in out for name in training.RECIPES)


def test_every_option_has_help_and_shows_its_default():
    """Every argument of every subcommand explains itself; one with a default says it."""
    import argparse

    subcommands = next(a for a in cli.build_parser()._actions
                       if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subcommands) == {"train", "evaluate", "export", "predict", "autotune", "bench",
                                "convert", "demo"}
    for command, parser in subcommands.items():
        for action in parser._actions:
            name = f"{command} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), name
            shown = action.default not in (None, False, argparse.SUPPRESS)
            assert not shown or "%(default)s" in action.help, name
        parser.format_help()  # every %(default)s expands
