"""Helpers shared by the command-line tests (tests/test_cli.py, tests/test_cli_errors.py): the
tiny `.keras` model the commands run on (`save_tiny_model`; conftest.py's `tiny_model_path` is one
of 1000 classes) and `one_error_line`, the check of every expected failure."""

import keras

from lambda_keras import cli
from lambda_keras.layers import LambdaLayer

SIZE = 32


def save_tiny_model(path, classes, size=SIZE):
    """A small LambdaLayer classifier saved as .keras (size None: any image size); returns the
    path."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((size, size, 3)),
        keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        LambdaLayer(key_dim=8, num_heads=2, receptive_field=5),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(classes, activation="softmax", name="predictions"),
    ])
    model.save(path)
    return str(path)


# Every expected failure: exit status 2 and one `error:` line naming the file or argument on
# stderr, no traceback; `--verbose` raises (the traceback) instead.
def one_error_line(capsys, argv, *names):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]
