"""The Python examples of README.md and export/README.md run as printed, and give what the
text around them says.

Each ```python block runs in a fresh namespace, in a temporary directory, with `keras` and
`lambda_keras` imported (as the first examples do), the names the README leaves to the reader
(`x`, `mask`, `images`, ...) bound to small random arrays and, for the export example, `model`
bound to a small classifier. Offline, ImageNet weights cannot be downloaded: the two examples
that load them run with `weights=None` (the only edit made to a block; the download, its cache
and the weights' exactness are tested with local files in tests/test_weights_download.py and
tests/test_weights.py). A block no check below claims fails the test, so a new example cannot go
untested.
"""

import importlib
import os
import re
import shlex

import keras
import numpy as np
import pytest

import lambda_keras
from benchmarks.common import REPO_ROOT
from lambda_keras.layers import formulations

READMES = ("README.md", os.path.join("export", "README.md"))
OFFLINE_EDITS = (('weights="imagenet"', "weights=None"),
                 ("LambdaResNet50TS()", "LambdaResNet50TS(weights=None)"))


def _read(readme):
    with open(os.path.join(REPO_ROOT, readme), encoding="utf-8") as f:
        return f.read()


def _fenced(text, language):
    """The bodies of a Markdown text's ```<language> blocks."""
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.S | re.M)


def _blocks():
    return [block for readme in READMES for block in _fenced(_read(readme), "python")]


def _inputs():
    rng = np.random.default_rng(0)
    return dict(
        x=rng.standard_normal((2, 32, 256)).astype("float32"),
        mask=np.arange(32)[None, :] < np.array([[32], [20]]),  # the second sequence padded
        c=rng.standard_normal((2, 12, 256)).astype("float32"),
        c_mask=np.ones((2, 12), bool),
        images_0_255=rng.uniform(0, 255, (2, 256, 256, 3)).astype("float32"),
        images=rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32"),
        class_names=[f"class {i}" for i in range(10)],
        calibration_images=rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32"),
    )


def _api_in_five_lines(ns, tmp_path):
    assert isinstance(ns["model"], keras.Model) and ns["model"].output_shape == (None, 1000)
    assert isinstance(ns["layer"], lambda_keras.LambdaLayer)
    version = tmp_path / "runs" / "serving" / "lambda_resnet" / "1"
    assert (version / "saved_model.pb").is_file()


def _layer(ns, tmp_path):
    assert ns["model"].output_shape == (None, 14, 14, 256)
    assert ns["layer"].num_heads == 4 and ns["layer"].receptive_field == 23


def _autotune(ns, tmp_path):
    picks = ns["report"]["picks"]
    phases = {key.rsplit(" ", 1)[1] for key in picks}
    assert phases == {"fwd", "train"}, picks.keys()
    for pick in picks.values():
        assert pick["formulation"] in formulations.FORMULATIONS
        assert set(pick["results"]) <= set(formulations.FORMULATIONS)


def _sequences(ns, tmp_path):
    assert tuple(ns["y"].shape) == (2, 32, 256)


def _family(ns, tmp_path):
    features = ns["backbone"].output
    assert sorted(features) == ["c2", "c3", "c4", "c5"]
    sizes = {name: tuple(tensor.shape[1:3]) for name, tensor in features.items()}
    assert sizes == {"c2": (256, 256), "c3": (128, 128), "c4": (64, 64), "c5": (32, 32)}
    assert ns["model"].input_shape == (None, 224, 224, 3)


def _pretrained(ns, tmp_path):
    probs = np.asarray(ns["probs"])
    assert probs.shape == (2, 1000) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def _export(ns, tmp_path):
    assert (tmp_path / "runs" / "demo" / "export" / "saved_model" / "1").is_dir()
    probabilities = np.asarray(ns["probabilities"])
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=2e-2)  # int8 output


def _serving_kit(ns, tmp_path):
    version = tmp_path / "runs" / "demo" / "export" / "saved_model" / "1"
    assert (version / "saved_model.pb").is_file()
    labels = (version / "assets" / "labels.txt").read_text(encoding="utf-8")
    assert labels.split() == [str(i) for i in range(10)]


# What each example must give, found by a line it contains.
CHECKS = {
    "layer = lambda_keras.LambdaLayer(key_dim=16, num_heads=4)": _api_in_five_lines,
    "keras.Sequential([inputs, layer": _layer,
    "lambda_keras.autotune(model": _autotune,
    "SequenceLambdaLayer(256, position=\"global\")": _sequences,
    "lambda_keras.LambdaResNet101(include_top=False, features=True": _family,
    "lambda_keras.decode_predictions(probs": _pretrained,
    "export.LiteRTRunner(": _export,
    "weights.replace_input_size(weights.DEFAULT_PREPROCESSING, 64)": _serving_kit,
}


def test_every_example_is_checked():
    blocks = _blocks()
    assert len(blocks) == len(CHECKS), "a README example without a check in CHECKS (or a gone one)"
    for marker in CHECKS:
        assert sum(marker in block for block in blocks) == 1, marker
    for printed, _ in OFFLINE_EDITS:  # each edit still meets an example
        assert any(printed in block for block in blocks), printed


@pytest.mark.slow
@pytest.mark.parametrize("marker", list(CHECKS))
def test_readme_example_runs_as_printed(marker, tmp_path, monkeypatch):
    (source,) = [block for block in _blocks() if marker in block]
    for printed, offline in OFFLINE_EDITS:
        source = source.replace(printed, offline)
    monkeypatch.chdir(tmp_path)
    namespace = dict(_inputs(), keras=keras, lambda_keras=lambda_keras)  # imported earlier
    if CHECKS[marker] is _export:  # the export example exports the reader's `model`
        namespace["model"] = lambda_keras.LambdaResNet26T(weights=None, input_shape=(64, 64, 3),
                                                          classes=10)
    exec(compile(source, f"README example ({marker})", "exec"), namespace)
    CHECKS[marker](namespace, tmp_path)


# ------------------------------------------------------------------- the printed commands
def _commands(program):
    """Every `program ...` command the READMEs print, as argv lists: the lines of their bash
    blocks (continuation lines joined, comments dropped) and the inline code spans that give
    flags (`lambda-keras train --recipe help`; a bare `lambda-keras bench` names the command; a
    synopsis with [optional] parts is no command)."""
    commands = []
    for readme in READMES + (os.path.join("benchmarks", "README.md"),):
        text = _read(readme)
        lines = [line for block in _fenced(text, "bash")
                 for line in block.replace("\\\n", " ").splitlines()]
        lines += [span for span in re.findall(r"`([^`\n]+)`", text) if " --" in span]
        commands += [shlex.split(line, comments=True) for line in lines
                     if line.startswith(program + " ") and " [" not in line]
    return commands


def _lambda_keras_commands():
    return [argv[1:] for argv in _commands("lambda-keras")]


def test_printed_commands_are_found():
    """The command lists below are not empty by accident (a README's format changed)."""
    subcommands = {argv[0] for argv in _lambda_keras_commands()}
    assert {"train", "export", "predict", "bench", "autotune", "convert"} <= subcommands
    assert sum(argv[0] == "train" for argv in _lambda_keras_commands()) >= 4
    modules = {argv[2] for argv in _commands("python -m")}
    assert {"benchmarks.backends", "benchmarks.paired", "benchmarks.formulations"} <= modules


@pytest.mark.parametrize("argv", _lambda_keras_commands(), ids=" ".join)
def test_printed_lambda_keras_command_parses(argv, capsys):
    """Each printed `lambda-keras` command is one its parser takes (`--help` and `--recipe help`
    print and exit 0), and a printed `train` command's recipe, with its `--set` overrides and
    flags, passes the recipe's own checks (the TPU example's steps_per_execution=32 once met the
    paper recipe's backup_every=1000: not a multiple)."""
    from lambda_keras import cli

    try:
        args = cli.build_parser().parse_args(argv)
    except SystemExit as stop:
        assert stop.code == 0 and ("--help" in argv or "help" in argv), capsys.readouterr().err
        return
    if args.command == "train":
        overrides = cli.recipe_overrides(args)
        assert set(overrides) >= {field.partition("=")[0] for field in args.set or []}


@pytest.mark.parametrize("argv", [argv for argv in _commands("python -m")
                                  if argv[2].startswith("benchmarks.")], ids=" ".join)
def test_printed_benchmark_command_parses(argv):
    """Each printed `python -m benchmarks.<suite> ...` command is one its parser takes."""
    module = importlib.import_module(argv[2])
    module.parse_args(argv[3:])
