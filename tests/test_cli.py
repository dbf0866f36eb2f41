"""The `lambda-keras` command, end to end on a tiny `.keras` model (the heavy paths behind it are
tested in the module tests): predict agrees with the model itself, export writes a TFLite file
that reproduces the model, evaluate reports the accuracy the model really has, and user errors
exit with a message instead of a traceback."""

import json

import numpy as np
import keras
import pytest
from PIL import Image

from lambda_keras import cli, data, weights
from lambda_keras.layers import LambdaLayer

SIZE = 32


def _save_tiny_model(path, classes):
    """A small LambdaLayer classifier saved as .keras; returns the path."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        LambdaLayer(key_dim=8, num_heads=2, receptive_field=5),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(classes, activation="softmax", name="predictions"),
    ])
    model.save(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    """Over the 1000 ImageNet classes, so that predict decodes ImageNet labels."""
    return _save_tiny_model(tmp_path_factory.mktemp("cli") / "tiny.keras", 1000)


def test_predict_prints_the_models_own_top5(tiny_model_path, tmp_path, capsys):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    image_path = tmp_path / "photo.png"
    Image.fromarray(image).save(image_path)

    assert cli.main(["predict", str(image_path), "--model", tiny_model_path]) == 0
    printed = capsys.readouterr().out.splitlines()

    model = keras.saving.load_model(tiny_model_path)
    prep = weights.replace_input_size(weights.resolve_preprocessing(None), (SIZE, SIZE))
    probs = model.predict(np.asarray(data.eval_transform(image, prep))[None], verbose=0)
    expected = weights.decode_predictions(probs, top=5)[0]
    assert printed[0] == str(image_path)
    assert [line.split(None, 1)[1] for line in printed[1:6]] == [label for _, label, _ in expected]
    np.testing.assert_allclose([float(line.split()[0]) for line in printed[1:6]],
                               [score for _, _, score in expected], atol=1e-4)


def test_export_tflite_reproduces_the_model(tiny_model_path, tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter

    out = tmp_path / "export"
    assert cli.main(["export", "--model", tiny_model_path, "--format", "tflite",
                     "--output", str(out)]) == 0
    assert "TFLite:" in capsys.readouterr().out
    interpreter = Interpreter(model_path=str(out / "model_float32.tflite"))
    interpreter.allocate_tensors()
    x = np.random.default_rng(1).normal(size=(1, SIZE, SIZE, 3)).astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    expected = keras.saving.load_model(tiny_model_path).predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_evaluate_reports_the_models_accuracy(tmp_path, capsys):
    tiny_model_path = _save_tiny_model(tmp_path / "digits.keras", 10)
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


@pytest.mark.parametrize("argv, message", [
    (["predict", "x.png", "--model", "lambda_resnet9000"], "unknown --model"),
    (["predict", "x.png", "--model", "missing.keras"], "--model file not found"),
])
def test_bad_model_arguments_exit_with_a_message(argv, message):
    with pytest.raises(SystemExit, match=message):
        cli.main(argv)


def test_unknown_data_spec_is_reported_not_raised(tiny_model_path, capsys):
    assert cli.main(["evaluate", "--model", tiny_model_path, "--data", "ftp:nowhere"]) == 2
    assert "spec" in capsys.readouterr().err
