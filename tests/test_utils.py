"""lambda_keras.utils: the shared helpers tested here are those no caller's test pins down.

`dtype_policy` sets Keras' global policy for a block (layers built in it compute in it) and
restores the previous one after, also when the block raises (callers: `train`, the CLI's
`autotune`, the mixed-precision tests). `model_precision` reads the policy a model computes in
off its layers, where the Model object's own policy can say otherwise. `check_size_pair` (the
layers' `feature_size`, the data's `image_size`, presets' `input_size`) and `process_alive` (stale
leftovers of exports and downloads) are shared by callers that pin only a few of their cases."""

import os
import re

import keras
import pytest

from lambda_keras import utils


def test_dtype_policy_applies_inside_and_is_restored_even_after_an_error():
    before = keras.config.dtype_policy().name
    with utils.dtype_policy("mixed_bfloat16"):
        layer = keras.layers.Dense(2)
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert (layer.compute_dtype, layer.variable_dtype) == ("bfloat16", "float32")
    assert keras.config.dtype_policy().name == before
    with pytest.raises(RuntimeError, match="inside"):
        with utils.dtype_policy("mixed_float16"):
            raise RuntimeError("inside")
    assert keras.config.dtype_policy().name == before


def _net(name, head_dtype=None):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name=f"{name}_hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, dtype=head_dtype, name=f"{name}_head")(x),
                       name=name)


def test_model_precision_reads_the_layers_not_the_model_object(tmp_path):
    with utils.dtype_policy("mixed_bfloat16"):
        mixed = _net("mixed", head_dtype="float32")  # the usual float32 classifier
    assert utils.model_precision(mixed) == "mixed_bfloat16"
    path = str(tmp_path / "float32.keras")
    _net("plain").save(path)
    with utils.dtype_policy("mixed_float16"):
        loaded = keras.saving.load_model(path)
        inputs = keras.Input((4,))
        outer = keras.Model(inputs, keras.layers.Dense(2, name="outer_head")(loaded(inputs)))
    assert loaded.dtype_policy.name == "mixed_float16"  # the Model object says so ...
    assert utils.model_precision(loaded) == "float32"  # ... its layers compute in float32
    # Nested: a float32 backbone (the loaded file) under a float16 head computes in both.
    assert utils.model_precision(outer) == "float32+mixed_float16"
    with utils.dtype_policy("mixed_float16"):
        inputs = keras.Input((4,))
        x = keras.layers.Dense(2, dtype="float32")(keras.layers.Dense(3)(inputs))
        softmax = keras.Model(inputs, keras.layers.Activation("softmax", dtype="float32")(x))
        mid = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, dtype="float32"),
                                keras.layers.Dense(2)])
    assert utils.model_precision(softmax) == "mixed_float16"  # classifier, then a softmax layer
    assert utils.model_precision(mid) == "float32+mixed_float16"  # a float32 layer inside
    with utils.dtype_policy("mixed_bfloat16"):
        both = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                                 keras.layers.Dense(2, dtype="mixed_float16")])
    assert utils.model_precision(both) == "mixed_bfloat16+mixed_float16"
    assert utils.model_precision(keras.Sequential([keras.Input((4,))])) == "float32"
    # A keras.ops call at the head is an operation without weights (it crashed here once).
    with utils.dtype_policy("mixed_bfloat16"):
        inputs = keras.Input((4,))
        ops_head = keras.Model(inputs, keras.ops.softmax(
            keras.layers.Dense(2, dtype="float32")(keras.layers.Dense(3)(inputs))))
    assert utils.model_precision(ops_head) == "mixed_bfloat16"


@pytest.mark.parametrize("value, expected", [(5, (5, 5)), ((3, 4), (3, 4)), ([3, 4], (3, 4))])
def test_check_size_pair_accepts_an_int_or_a_pair(value, expected):
    assert utils.check_size_pair("size", value) == expected


@pytest.mark.parametrize("value, error", [
    ((6, 0), ValueError), ((32,), ValueError), (0, ValueError),  # ints, out of range or count
    (2.5, TypeError), (True, TypeError), ((1.0, 2), TypeError), ("ab", TypeError),  # not ints
])
def test_check_size_pair_refusals_name_the_argument(value, error):
    with pytest.raises(error, match=re.escape(f"`size` must be an int >= 1 or a (height, width) "
                                              f"pair of them. Received: size={value!r}")):
        utils.check_size_pair("size", value)


@pytest.mark.parametrize("value", [-1, 0, 5, float("nan")])
def test_check_number_reports_the_value_received(value):
    # An int stays an int in the message (timeout=-1, not the converted -1.0).
    with pytest.raises(ValueError, match=re.escape(
            f"`timeout` must be a finite number > 0 and <= 4. Received: timeout={value!r}") + "$"):
        utils.check_number("timeout", value, low=0, low_open=True, high=4)
    assert utils.check_number("timeout", 3, low=0) == 3.0
    assert isinstance(utils.check_number("timeout", 3, low=0), float)


def test_process_alive():
    assert utils.process_alive(os.getpid())
    assert not utils.process_alive(2**80)  # no pid is that large


def test_remove_temporaries_keeps_live_writers_files(tmp_path):
    """A leftover of a killed writer (its pid runs no more) goes; a live writer's temporary file
    (this process's, as `temp_path` names it) and every other file stay; `name` narrows the
    cleaning to one file's leftovers."""
    dead_pid = 2**22 + 17  # above Linux's pid_max: no such process
    live = utils.temp_path(tmp_path / "best.keras")
    dead = tmp_path / f"best.tmp-{dead_pid}.keras"
    other_dead = tmp_path / f"last.tmp-{dead_pid}.keras"
    kept = [tmp_path / "best.keras", tmp_path / "notes.tmp-x.txt"]  # no pid: not ours
    for path in (live, dead, other_dead, *kept):
        open(path, "wb").close()
    utils.remove_temporaries(tmp_path, "best.keras")
    assert not dead.exists() and other_dead.exists() and os.path.exists(live)
    utils.remove_temporaries(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(live)] + [p.name for p in kept])
    utils.remove_temporaries(tmp_path / "missing")  # a missing directory is fine


def test_failed_atomic_write_leaves_no_directory_it_created(tmp_path):
    """`atomic_write` creates the missing parents of `path`; a `write` that raises leaves none
    of them (was: `a/b/` stayed after a failed TFLite or JSON write), and never removes a
    directory that existed before; a write that succeeds keeps them."""
    def fail(temporary):
        with open(temporary, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    existing = tmp_path / "existing"
    existing.mkdir()
    for target in (tmp_path / "a" / "b" / "out.json", existing / "c" / "out.json"):
        with pytest.raises(RuntimeError, match="disk full"):
            utils.atomic_write(target, fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    assert list(existing.iterdir()) == []
    utils.write_json(tmp_path / "a" / "b" / "out.json", {"ok": True})
    assert (tmp_path / "a" / "b" / "out.json").read_text() == '{\n "ok": true\n}\n'
