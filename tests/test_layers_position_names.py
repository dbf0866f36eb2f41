"""LambdaLayer's former name of the "local" position mode, `position="conv"` (split from
tests/test_layers.py, which holds the other legacy configs: "einsum", `feature_size` beside
"local", position arguments beside None).

Independent expectations: the layer built with `position="local"` (same config but the name, same
variables, same outputs from the same weights); the `.keras` file of such a model with its config
rewritten to "conv", as files saved before the rename hold it.
"""

import json
import warnings
import zipfile

import keras
import pytest

from helpers import max_abs_diff
from lambda_keras.layers import LambdaLayer
from reference import SMALL, make_layer, random_input, randomize_statistics

KWARGS = dict(receptive_field=3, intra_depth=2, implementation="conv", position_bias=True)


def _same_layer(old, new, x):
    """`old` and `new` (unbuilt) hold the same variables and, from the same weights, give the
    same outputs in inference and training."""
    old.build(x.shape)
    new.build(x.shape)
    assert [(w.name, tuple(w.shape)) for w in old.weights] == [
        (w.name, tuple(w.shape)) for w in new.weights]
    randomize_statistics(old)
    new.set_weights(old.get_weights())
    for training in (False, True):
        assert max_abs_diff(old(x, training=training), new(x, training=training)) == 0.0


def test_former_position_name_warns_and_builds_the_local_layer():
    with pytest.warns(DeprecationWarning) as record:
        old = LambdaLayer(position="conv", **SMALL, **KWARGS)
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller
    assert 'position="conv" is the former name of position="local"' in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = LambdaLayer(position="local", **SMALL, **KWARGS)
    assert old.position == "local" and old.get_config()["position"] == "local"
    assert {**old.get_config(), "name": None} == {**new.get_config(), "name": None}
    _same_layer(old, new, random_input())


def test_config_with_the_former_position_name_loads_silently_as_local():
    """Configs saved before the rename hold "conv": from_config reads them as "local", without
    the constructor's warning."""
    layer = make_layer(position="local", **KWARGS)
    old_config = {**layer.get_config(), "position": "conv"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restored = LambdaLayer.from_config(old_config)
    assert restored.get_config() == layer.get_config()
    _same_layer(layer, restored, random_input())


def test_keras_file_saved_with_the_former_position_name_loads(tmp_path):
    inputs = keras.Input((6, 7, 6))
    model = keras.Model(inputs, make_layer(position="local", **KWARGS)(inputs))
    randomize_statistics(model.layers[-1])
    path, old_path = tmp_path / "new.keras", tmp_path / "old.keras"
    model.save(path)
    with zipfile.ZipFile(path) as new, zipfile.ZipFile(old_path, "w") as old:
        for item in new.infolist():
            data = new.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                layer_config = config["config"]["layers"][-1]["config"]
                assert layer_config["position"] == "local"
                layer_config["position"] = "conv"  # as files saved before the rename
                data = json.dumps(config).encode("utf-8")
            old.writestr(item, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        reloaded = keras.saving.load_model(old_path)
    assert reloaded.layers[-1].position == "local"
    x = random_input()
    assert max_abs_diff(reloaded(x), model(x)) == 0.0


def test_builders_take_the_former_position_name_warning_at_the_caller():
    from lambda_keras import models

    with pytest.warns(DeprecationWarning) as record:
        arch = models.resolve_architecture("LambdaResNet50", position="conv")
    assert len(record) == 1 and record[0].filename == __file__  # not the package's own line
    assert arch.lambda_spec.position == "local"
    assert arch == models.resolve_architecture("LambdaResNet50", position="local")
