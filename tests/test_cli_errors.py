"""The `lambda-keras` command's user errors: every expected failure exits with status 2 and one
`error:` line on stderr naming the file or the flag (the command line's own names, not those of
the Python arguments behind them), without a traceback and before anything is built or written;
`--verbose` raises instead (the traceback). Unknown models and data, outputs in the way, files that
are not images or not weights, weights beside a .keras file, a corrupted backup, damaged images, a
symlink loop, out-of-range numbers, a missing TPU, `convert`'s `src` and `--model`.

The commands at work: tests/test_cli.py; the tiny model and `one_error_line`:
tests/cli_helpers.py."""

import os

import keras
import numpy as np
import pytest
from PIL import Image

from lambda_keras import cli

from cli_helpers import SIZE, one_error_line


# --- models, data, outputs ------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["predict", "x.png", "--model", "lambda_resnet9000"], "unknown --model"),
    (["predict", "x.png", "--model", "missing.keras"], "--model file not found"),
])
def test_bad_model_arguments_exit_with_a_message(argv, message, capsys):
    assert message in one_error_line(capsys, argv)  # exit status 2, as every expected failure


def test_unknown_data_spec_is_reported_not_raised(tiny_model_path, capsys):
    assert cli.main(["evaluate", "--model", tiny_model_path, "--data", "ftp:nowhere"]) == 2
    assert "Received: --data='ftp:nowhere'" in capsys.readouterr().err


def test_export_again_refuses_to_replace_a_tflite_file(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    earlier = out / "model_float32.tflite"
    earlier.write_bytes(b"an earlier export")
    line = one_error_line(capsys, ["export", "--model", tiny_model_path, "--output", str(out)],
                           earlier, "--overwrite")
    assert earlier.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in out.iterdir()) == ["model_float32.tflite"], line  # no SavedModel
    assert cli.main(["export", "--model", tiny_model_path, "--format", "tflite", "--output",
                     str(out), "--overwrite"]) == 0
    assert earlier.read_bytes()[4:8] == b"TFL3"  # the flatbuffer's identifier


def test_export_onto_an_existing_version_names_the_flags(tiny_model_path, tmp_path, capsys):
    """Was "pass overwrite=True ... `version`" (saved_model's own names), after loading."""
    version = tmp_path / "export" / "saved_model" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"an earlier export")
    line = one_error_line(capsys, ["export", "--model", tiny_model_path, "--format",
                                    "saved_model", "--version", "1", "--output",
                                    str(tmp_path / "export")],
                           version, "pass --overwrite", "`--version`")
    assert "overwrite=True" not in line and "`version`" not in line
    assert os.listdir(version) == ["saved_model.pb"]


@pytest.mark.parametrize("flags, names", [
    (["--format", "saved_model", "--quantization", "int8", "--calibration-data", "folder:/nope"],
     ["--quantization, --calibration-data would be ignored: --format saved_model writes no "
      "TFLite file", "Received: --quantization='int8', --calibration-data='folder:/nope'"]),
    (["--format", "saved_model", "--calibration-steps", "8"],
     ["--calibration-steps would be ignored", "Received: --calibration-steps=8"]),
    (["--format", "tflite", "--version", "3", "--labels", "labels.txt", "--no-warmup"],
     ["--version, --labels, --no-warmup would be ignored: --format tflite writes no SavedModel",
      "Received: --version=3, --labels='labels.txt', --no-warmup=True"]),
    (["--format", "all", "--quantization", "dynamic", "--calibration-data", "digits"],
     ["--calibration-data would be ignored: only --quantization int8 calibrates",
      "Received: --calibration-data='digits'"]),
    (["--calibration-steps", "8"], ["--calibration-steps would be ignored: only --quantization "
                                    "int8 calibrates", "Received: --calibration-steps=8"]),
])
def test_export_flags_of_a_format_not_written_are_refused(flags, names, tiny_model_path,
                                                          tmp_path, capsys):
    """Were ignored (exit 0, a float32 SavedModel only for the first): each flag the export
    would not use is named, before the model is loaded or anything is written."""
    one_error_line(capsys, ["export", "--model", tiny_model_path, *flags, "--output",
                            str(tmp_path / "out")], *names)
    assert not (tmp_path / "out").exists()


# --- issue 19: reliability ------------------------------------------------------------------
def test_predict_on_a_non_image_file(tiny_model_path, tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    line = one_error_line(capsys, ["predict", str(text), "--model", tiny_model_path], text)
    assert "not a readable image" in line


def test_predict_refuses_a_model_that_takes_no_rgb_images(tmp_path, capsys):
    """Images are decoded to RGB: a model of another input depth is named with its shapes (was
    Keras' input-spec error from inside `predict`)."""
    keras.utils.set_random_seed(0)
    path = tmp_path / "eight.keras"
    keras.Sequential([keras.Input((SIZE, SIZE, 8)), keras.layers.GlobalAveragePooling2D(),
                      keras.layers.Dense(2, activation="softmax")]).save(path)
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    line = one_error_line(capsys, ["predict", str(image), "--model", str(path)], "`--model`")
    assert line.endswith("must take one batch of RGB images [batch, height, width, 3]. "
                         f"Received: input shapes [(None, {SIZE}, {SIZE}, 8)]"), line


def test_predict_reads_every_image_before_printing_any(tiny_model_path, tmp_path, capsys):
    good, bad = tmp_path / "good.png", tmp_path / "notimg.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    bad.write_text("not an image\n")
    assert cli.main(["predict", str(good), str(bad), "--model", tiny_model_path]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "notimg.png is not a readable image" in captured.err


def test_export_output_at_an_existing_file(tiny_model_path, tmp_path, capsys):
    existing = tmp_path / "export"
    existing.write_bytes(b"precious")
    line = one_error_line(capsys, ["export", "--model", tiny_model_path, "--format", "tflite",
                                    "--output", str(existing)], existing, "--output")
    assert "not a directory" in line
    assert existing.read_bytes() == b"precious"  # nothing lost


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_weights_that_is_not_a_file(kind, tmp_path, capsys):
    path = tmp_path / "model.weights.h5"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    line = one_error_line(capsys, ["predict", "x.png", "--model", "lambda_resnet50",
                                    "--image-size", "32", "--weights", str(path)], path)
    assert "does not exist" not in line
    assert ("is a directory" if kind == "directory" else "not a regular file") in line


@pytest.mark.parametrize("command", [["predict", "x.png"], ["evaluate", "--data", "digits"],
                                     ["train"]])
@pytest.mark.parametrize("weights", ["imagenet", "none"])
def test_weights_beside_a_keras_file_is_refused_not_ignored(tiny_model_path, command, weights,
                                                            tmp_path, capsys):
    output = ["--output", str(tmp_path / "run")] if command[0] == "train" else []
    line = one_error_line(capsys, [*command, "--model", tiny_model_path, *output,
                                    "--weights", weights], tiny_model_path, "--weights")
    assert "carries its own weights" in line
    assert not (tmp_path / "run").exists()


def test_keras_file_of_random_bytes(tmp_path, capsys):
    path = tmp_path / "model.keras"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    line = one_error_line(capsys, ["predict", str(image), "--model", str(path)], path)
    assert "not a Keras .keras file" in line and "File not found" not in line


def test_verbose_keeps_the_traceback(tiny_model_path, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    with pytest.raises(ValueError, match="not a readable image"):
        cli.main(["predict", str(text), "--model", tiny_model_path, "--verbose"])


def test_corrupted_backup_is_one_line_naming_state_json(tmp_path, capsys):
    backup = tmp_path / "run" / "backup"
    backup.mkdir(parents=True)
    (backup / "state.json").write_text('{"epoch": 3, "step": ')  # cut mid-write
    line = one_error_line(capsys, ["train", "--model", "lambda_resnet50", "--weights", "none",
                                    "--image-size", "32", "--epochs", "1", "--batch-size", "4",
                                    "--steps-per-epoch", "1", "--output", str(tmp_path / "run")],
                           "state.json")
    assert "from scratch" in line


def test_train_verify_images_names_a_file_damaged_inside(tmp_path, capsys):
    """--verify-images (train's `verify_images`): a PNG whose data is damaged (header and end
    intact) is named before training; without the flag it would stop training mid-epoch."""
    import io

    root = tmp_path / "images"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((8, 8, 3), 50 * i, np.uint8)).save(root / name / f"{i}.png")
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)).save(
        png, "PNG")
    damaged = bytearray(png.getvalue())
    damaged[damaged.index(b"IDAT") + 6] ^= 0xFF  # the image data's CRC no longer matches
    (root / "b" / "damaged.png").write_bytes(bytes(damaged))
    line = one_error_line(capsys, ["train", "--model", "lambda_resnet50", "--weights", "none",
                                    "--data", f"folder:{root}", "--verify-images",
                                    "--output", str(tmp_path / "run")], "damaged.png")
    assert "cannot be decoded" in line
    assert not (tmp_path / "run").exists()


def test_symlink_loop_in_a_data_folder(tiny_model_path, tmp_path, capsys):
    root = tmp_path / "images"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / name / "x.png")
    (root / "a" / "loop").symlink_to(root / "a", target_is_directory=True)
    line = one_error_line(capsys, ["evaluate", "--model", tiny_model_path,
                                    "--data", f"folder:{root}"], "loop")
    assert "symlink loop" in line and "not images" not in line


# --- the command line names its own arguments -----------------------------------------------
def _argv(command, tmp_path, *flags):
    """`command` with `flags`, and an --output under tmp_path for the commands that write one."""
    writes = command[0] in ("train", "export", "demo")
    return [*command, *flags, *(["--output", str(tmp_path / "out")] if writes else [])]


@pytest.mark.parametrize("command", [
    ["autotune"], ["predict", "x.png"], ["evaluate", "--data", "digits"], ["export"], ["train"],
    ["demo"]])
@pytest.mark.parametrize("size", ["0", "-5", "16"])
def test_image_size_out_of_range_names_the_flag(command, size, tmp_path, capsys):
    """0 was ignored (the default size was used), -5 and 16 were refused naming the builder's
    `input_shape`: every command refuses them naming --image-size, before building anything."""
    argv = _argv(command, tmp_path, "--model", "lambda_resnet26t", "--image-size", size)
    line = one_error_line(capsys, argv, f"Received: --image-size={size}", ">= 32")
    assert "input_shape" not in line and "image_size=" not in line
    assert not (tmp_path / "out").exists()


def test_image_size_of_a_keras_file_is_any_positive_size(tiny_model_path, tmp_path, capsys):
    """A .keras file says what it takes: any positive size passes the flag's check (its own
    check then names its size), 0 does not."""
    one_error_line(capsys, ["autotune", "--model", tiny_model_path, "--image-size", "0"],
                    "`--image-size` must be an int >= 1", "Received: --image-size=0")
    one_error_line(capsys, ["autotune", "--model", tiny_model_path, "--image-size", "16"],
                    "Received: --image-size=16", f"{SIZE}x{SIZE}")


@pytest.mark.parametrize("argv, flag, low", [
    (["autotune", "--model", "lambda_resnet26t"], "--batch-size", 1),
    (["autotune", "--model", "lambda_resnet26t"], "--repeats", 1),
    (["evaluate", "--model", "lambda_resnet26t", "--data", "digits"], "--batch-size", 1),
    (["export", "--model", "lambda_resnet26t"], "--calibration-steps", 1),
    (["export", "--model", "lambda_resnet26t"], "--version", 0),
    (["train", "--model", "lambda_resnet26t"], "--epochs", 1),
    (["train", "--model", "lambda_resnet26t"], "--steps-per-epoch", 1),
    (["demo"], "--epochs", 1),
])
def test_integer_flags_name_themselves(argv, flag, low, tmp_path, capsys):
    line = one_error_line(capsys, _argv(argv, tmp_path, flag, str(low - 1)),
                           f"`{flag}` must be an int >= {low}", f"Received: {flag}={low - 1}")
    assert f"Received: {flag[2:].replace('-', '_')}=" not in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_out_of_numpys_range_names_the_flag(seed, tmp_path, capsys):
    """Was NumPy's "Seed must be between 0 and 2**32 - 1" (naming nothing), after the data was
    read; now refused with the other integer flags, before anything is built."""
    line = one_error_line(capsys, _argv(["train", "--model", "lambda_resnet26t"], tmp_path,
                                        "--seed", seed),
                          "`--seed` must be an int in [0, 4294967295]", f"Received: --seed={seed}")
    assert "Received: seed=" not in line
    assert not (tmp_path / "out").exists()


def test_evaluate_split_names_the_flag(tiny_model_path, tmp_path, capsys):
    """Was "`split` must be one of ... Received: split='bogus'" (make_dataset's argument), for
    every source: the digits' hold-out, a folder of split folders."""
    evaluate = ["evaluate", "--model", tiny_model_path, "--split"]
    line = one_error_line(capsys, [*evaluate, "bogus", "--data", "digits"],
                          "`--split` must be one of ('train', 'validation', 'val', 'test', 'all')",
                          "Received: --split='bogus'")
    assert "`split`" not in line and "split=" not in line.replace("--split=", "")
    (tmp_path / "train" / "cat").mkdir(parents=True)  # split folders: train/ only
    line = one_error_line(capsys, [*evaluate, "test", "--data", f"folder:{tmp_path}"],
                          "`--split` has no split folder", "Received: --split='test'")
    assert "`split`" not in line and "split=" not in line.replace("--split=", "")


TRAIN = ["train", "--model", "lambda_resnet50", "--weights", "none"]


@pytest.mark.parametrize("argv, names, library_name", [
    ([*TRAIN, "--data", "folder:/nope"],
     ["`--data` names a folder that does not exist", "Received: --data='folder:/nope'"], "spec"),
    ([*TRAIN, "--validation-data", "mnist"],
     ["`--validation-data` must be 'tfds:NAME[:SPLIT]'", "Received: --validation-data='mnist'"],
     "spec"),
    (["evaluate", "--model", "lambda_resnet50", "--data", "folder:/nope"],
     ["`--data` names a folder", "Received: --data='folder:/nope'"], "spec"),
    (["export", "--model", "lambda_resnet50", "--format", "tflite", "--quantization", "int8",
      "--calibration-data", "folder:/nope"],
     ["`--calibration-data` names a folder", "Received: --calibration-data='folder:/nope'"],
     "spec"),
    ([*TRAIN, "--output", "{file}"], ["--output {file} exists and is not a directory"],
     "output_dir"),
    (["predict", "{file}", "--model", "{tiny}", "--labels", "missing.txt"],
     ["`--labels` names a file that cannot be read", "No such file or directory",
      "Received: --labels='missing.txt'"], "`labels`"),
    (["demo", "--data", "folder:/nope"],
     ["`--data` names a folder that does not exist", "Received: --data='folder:/nope'"], "spec"),
])
def test_flags_name_themselves_not_the_python_arguments(argv, names, library_name,
                                                        tiny_model_path, tmp_path, capsys):
    """Was "`spec` ...", "`output_dir` ...", "[Errno 2] ... 'missing.txt'"; refused before
    anything is built or written."""
    afile = tmp_path / "afile"
    afile.write_bytes(b"precious")
    argv = [arg.format(file=afile, tiny=tiny_model_path) for arg in argv]
    if argv[0] in ("train", "demo") and "--output" not in argv:
        argv += ["--output", str(tmp_path / "out")]
    names = [name.format(file=afile) for name in names]
    line = one_error_line(capsys, argv, *names)
    assert library_name not in line
    assert sorted(os.listdir(tmp_path)) == ["afile"] and afile.read_bytes() == b"precious"


def test_train_without_a_tpu_names_the_flag(fake_tpu, monkeypatch, tiny_model_path, tmp_path,
                                           capsys):
    """Was a traceback of InvalidArgumentError: No OpKernel ... 'ConfigureDistributedTPU'
    (--tpu local), or `error: <urlopen error ...>` (a TPU name, looked up over the network)."""
    import urllib.error

    import tensorflow as tf

    def initialize_tpu_system(resolver):  # what TF 2.21 raises on a machine without a TPU
        raise tf.errors.NotFoundError(None, None, "TPUs not found in the cluster. Failed in "
                                      "initialization: No OpKernel was registered to support "
                                      "Op 'ConfigureDistributedTPU'")

    class TPUClusterResolver:
        def __init__(self, tpu=None):
            if tpu != "local":
                raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", initialize_tpu_system)
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", TPUClusterResolver)
    for command in (TRAIN, ["evaluate", "--model", tiny_model_path, "--data", "digits"]):
        one_error_line(capsys, _argv([*command, "--tpu", "local"], tmp_path),
                        "No TPU found for --tpu='local'", "TPUs not found in the cluster")
        one_error_line(capsys, _argv([*command, "--tpu", "mytpu"], tmp_path),
                        "TPU named by --tpu='mytpu' could not be resolved",
                        "Name or service not known")
    assert not (tmp_path / "out").exists()


def test_autotune_to_a_directory_is_refused_before_measuring(tiny_model_path, tmp_path,
                                                            monkeypatch, capsys):
    from lambda_keras.layers.formulations import autotuning

    monkeypatch.setenv(autotuning.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(autotuning, "measure", lambda *args, **kwargs: pytest.fail("measured"))
    one_error_line(capsys, ["autotune", "--model", tiny_model_path],
                    autotuning.CACHE_ENV, repr(str(tmp_path)), "is a directory")


def test_autotune_phases_names_the_flag(tiny_model_path, monkeypatch, capsys):
    """Was "`phases` must be a non-empty tuple ... Received: phases=('bad',)"; refused before the
    model is loaded."""
    monkeypatch.setattr(cli, "load_model", lambda *args, **kwargs: pytest.fail("loaded"))
    line = one_error_line(capsys, ["autotune", "--model", tiny_model_path, "--phases", "fwd,bad"],
                          "`--phases` must be a comma-separated list of fwd, train",
                          "Received: --phases='fwd,bad'")
    assert "phases=(" not in line


@pytest.mark.parametrize("command", [["predict", "x.png"], ["evaluate", "--data", "digits"],
                                     ["export"], ["train"]])
@pytest.mark.parametrize("weights, message", [
    ("imagenet", "No pretrained weights 'imagenet' for architecture 'lambda_resnet50'"),
    ("lambda_resnet26t.c1_in1k", "No pretrained weights 'lambda_resnet26t.c1_in1k'"),
    ("model.pth", "Pickle checkpoints are refused"),
    ("missing.weights.h5", "does not exist"),
])
def test_weights_name_the_flag(command, weights, message, tmp_path, capsys):
    """Was "... Received: weights='imagenet'" (the Python argument); refused before anything is
    built or written."""
    argv = [*command, "--model", "lambda_resnet50", "--weights", weights]
    line = one_error_line(capsys, _argv(argv, tmp_path), message,
                          f"Received: --weights={weights!r}")
    assert "weights=" not in line.replace("--weights=", "")
    assert not (tmp_path / "out").exists()


def test_convert_names_src_and_model(tmp_path, monkeypatch, capsys):
    """The CLI's own names (`src`, `--model`), not convert_timm's (`weights`, `arch_name`);
    a valid --model reaches convert_timm as its architecture."""
    from safetensors.numpy import save_file

    from lambda_keras import weights

    dst = str(tmp_path / "out.weights.h5")
    folder = tmp_path / "model.safetensors"
    folder.mkdir()
    for src, names in ((tmp_path / "missing.safetensors", ["does not exist"]),
                       (folder, ["is a directory"]),
                       (tmp_path / "model.pth", ["Pickle checkpoints are refused"]),
                       (tmp_path / "model.npz", [".safetensors file. Received"])):
        line = one_error_line(capsys, ["convert", str(src), dst], f"Received: src={str(src)!r}",
                               *names)
        assert "weights=" not in line
    src = tmp_path / "timm.safetensors"
    src.write_bytes(b"{}")
    for model in ("lambda_resnet50", "resnet9000"):
        line = one_error_line(capsys, ["convert", str(src), dst, "--model", model],
                               f"Received: --model={model!r}", "lambda_resnet26t")
        assert "arch_name" not in line
    line = one_error_line(capsys, ["convert", str(src), dst], src, "as `src`")
    assert "or a Keras .weights.h5 file" not in line  # was: convert refuses those
    foreign = tmp_path / "foreign.safetensors"  # another architecture's tensors
    save_file({"stem.conv1.conv.weight": np.zeros((4, 3, 3, 3), np.float32)}, str(foreign))
    line = one_error_line(capsys, ["convert", str(foreign), dst], "pass `--model`")
    assert "arch_name" not in line and not os.path.exists(dst)
    seen = []
    monkeypatch.setattr(weights, "convert_timm", lambda src, dst, arch_name, arch_arg:
                        seen.append((arch_name, arch_arg)) or dst)
    for model, arch in (("LambdaResNet26T", "lambda_resnet26t"), (None, None),
                        ("lambda_resnet26t.c1_in1k", "lambda_resnet26t")):
        assert cli.main(["convert", str(src), dst, *(["--model", model] if model else [])]) == 0
        assert seen.pop() == (arch, "--model") and f"wrote {dst}" in capsys.readouterr().out
