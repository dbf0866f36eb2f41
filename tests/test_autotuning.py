"""`autotune`: formulations measured where a model runs, stored, and used by "auto".

Checks against independent expectations: the stored pick is the fastest of the times measured
in the same run (a property of the record, for every layer shape and phase); a model's "auto"
layers then trace that pick; a stored pick the rule would not make is followed and still gives
the NumPy reference's outputs (tests/reference.py); `LAMBDA_KERAS_AUTOTUNE=0` restores the
rule's pick; the memory guard skips exactly the formulations whose estimate passes the limit;
the file is merged and replaced atomically, and an unreadable one is ignored with a warning.
`check_autotune` also runs on the JAX and PyTorch backends (tests/test_backends.py).
"""

import contextlib
import json
import os
import re
import warnings

import keras
import numpy as np
import pytest

from reference import make_layer, random_input, randomize_statistics, reference_lambda_layer

from lambda_keras import utils
from lambda_keras.layers import formulations
from lambda_keras.layers.formulations import autotuning

MAP = 8  # 8 x 8 maps, r 5: every formulation applies and none is forced by the sizes
TRAINING = {"fwd": False, "train": True}


def small_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((MAP, MAP, 6))
    x = make_layer(receptive_field=5, name="first")(inputs)
    x = make_layer(receptive_field=5, name="second")(x)  # same shape: measured once
    x = make_layer(receptive_field=5, strides=2, name="strided")(x)
    return keras.Model(inputs, x)


def traced_formulation(layer, x, training):
    """The formulation a call of `layer` uses (eager on every backend: the runtime's engine is
    the one `autotune` measured with its default jit_compile on CPUs)."""
    layer(x, training=training)
    return layer._last_formulation


@contextlib.contextmanager
def picks_stored_at(path):
    """`autotune`'s file at `path`, the picks turned on; the environment restored after."""
    previous = {name: os.environ.get(name) for name in (autotuning.CACHE_ENV, autotuning.ENV)}
    os.environ[autotuning.CACHE_ENV] = path
    os.environ.pop(autotuning.ENV, None)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_autotune(workdir):
    """The whole contract on the current backend; returns a summary line."""
    path = os.path.join(str(workdir), "autotune.json")
    with picks_stored_at(path):
        model = small_model()
        report = autotuning.autotune(model, batch_size=2, repeats=2)
        picks = report["picks"]
        assert len(picks) == 4, sorted(picks)  # (unstrided, strided) x (fwd, train)
        for key, entry in picks.items():
            times = {f: r["ms"] for f, r in entry["results"].items() if "ms" in r}
            assert set(entry["results"]) == set(formulations.FORMULATIONS), key
            assert entry["formulation"] == min(times, key=times.get), (key, entry)
        assert picks[autotuning.layer_key(model.get_layer("first"), MAP, MAP, "fwd")][
            "layers"] == ["first", "second"]
        with open(path, encoding="utf-8") as f:
            assert json.load(f)["picks"][report["device"]] == picks

        for name in ("first", "strided"):
            layer = model.get_layer(name)
            x = random_input((2, MAP, MAP, layer.query_kernel.shape[0]))
            for phase, training in TRAINING.items():
                key = autotuning.layer_key(layer, MAP, MAP, phase)
                assert traced_formulation(layer, x, training) == picks[key]["formulation"]

        # A stored pick the rule would not make is followed, with the reference's outputs.
        layer = model.get_layer("first")
        x = random_input((2, MAP, MAP, 6))
        rule_pick = formulations.choose(
            "local", MAP, MAP, False, num_heads=layer.num_heads, key_dim=layer.key_dim,
            value_dim=layer.value_dim, intra_depth=layer.intra_depth, receptive_field=5,
            runtime=formulations.current_runtime())
        other = next(f for f in ("conv", "row_windows") if f != rule_pick)
        key = autotuning.layer_key(layer, MAP, MAP, "fwd")
        autotuning._write({report["device"]: {key: {**picks[key], "formulation": other}}}, path)
        randomize_statistics(layer)
        actual = keras.ops.convert_to_numpy(layer(x, training=False))
        assert layer._last_formulation == other
        expected = reference_lambda_layer(layer, x)
        error = float(np.max(np.abs(actual - expected)))
        assert error <= 1e-5 * max(1.0, float(np.max(np.abs(expected)))), error
        os.environ[autotuning.ENV] = "0"  # turned off: the rule again
        assert traced_formulation(layer, x, False) == rule_pick
        return (f"{report['device']}: " + ", ".join(
            f"{key.split()[6]} {key.split()[-1]} {entry['formulation']}"
            for key, entry in picks.items()) + f"; stored {other} followed (error {error:.1e})")


def check_autotune_mixed_precision(workdir, policy):
    """Under a mixed-precision policy (low-precision outputs, float32 weights and gradients)
    `autotune` times every formulation in both phases and stores the picks under the compute
    dtype, where the layer finds them; returns a summary line."""
    with utils.dtype_policy(policy):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((MAP, MAP, 6))
        model = keras.Model(inputs, make_layer(receptive_field=5, name="mixed")(inputs))
    layer = model.get_layer("mixed")
    path = os.path.join(str(workdir), f"autotune-{policy}.json")
    with picks_stored_at(path):
        report = autotuning.autotune(model, batch_size=2, repeats=1)
        x = random_input((2, MAP, MAP, 6))
        for phase, training in TRAINING.items():
            key = autotuning.layer_key(layer, MAP, MAP, phase)
            assert key.endswith(f" {layer.compute_dtype} {phase}"), key
            entry = report["picks"][key]
            assert {f for f, r in entry["results"].items() if "ms" in r} == \
                set(formulations.FORMULATIONS), entry["results"]
            assert traced_formulation(layer, x, training) == entry["formulation"]
    return f"{policy}: " + ", ".join(f"{key.split()[-1]} {entry['formulation']}"
                                     for key, entry in report["picks"].items())


def test_autotune_stores_the_fastest_and_auto_uses_it(tmp_path):
    print(check_autotune(tmp_path))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_autotune_under_mixed_precision_times_every_formulation(tmp_path, policy):
    print(check_autotune_mixed_precision(tmp_path, policy))


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "tuned" / "autotune.json"
    monkeypatch.setenv(autotuning.CACHE_ENV, str(path))
    monkeypatch.delenv(autotuning.ENV, raising=False)
    return path


def test_memory_guard_skips_the_formulations_over_the_limit(store):
    """With a limit of 1 byte only the formulations without n x m tensors run (their
    estimate is 0)."""
    layer = small_model().get_layer("first")
    runtime = formulations.current_runtime()
    results = autotuning.measure(layer, (MAP, MAP), "fwd", runtime, batch_size=2, repeats=1,
                                 memory_limit_bytes=1)
    skipped = {f for f, r in results.items() if "skipped" in r}
    assert skipped == {"queries_first", "lambdas_first", "query_windows"}, results
    assert {f for f, r in results.items() if "ms" in r} == {"row_windows", "conv"}
    # The estimate of queries_first is its q . E maps: b n m h u float32, once forward; the
    # reason gives it and the limit in bytes (was "0.0 GiB > 0.0 GiB" at small sizes).
    assert autotuning.estimate_bytes(formulations.Plan("queries_first"), MAP, MAP, 2,
                                     num_heads=2, key_dim=4, intra_depth=1, receptive_field=5,
                                     phase="fwd") == 2 * 64 * 64 * 2 * 4
    assert results["queries_first"]["skipped"] == (
        f"estimated {2 * 64 * 64 * 2 * 4:,} bytes > memory_limit_bytes=1")


def test_memory_guard_counts_one_part_of_a_recomputed_batch(store):
    """Training recomputes large query windows image by image (28^2, r 23; `Plan.image_loop`
    "recomputed"), so a step holds a few images' maps: the guard counts one image's in
    RECOMPUTED_BATCH_DIVISOR, and query windows are measured under a limit that their whole
    batch's maps pass, while the n x m formulations, which store theirs, are skipped."""
    keras.utils.set_random_seed(0)
    layer = make_layer(num_heads=4, key_dim=16, receptive_field=23)
    layer.build((None, 28, 28, 8))
    sizes = dict(num_heads=4, key_dim=16, intra_depth=1, receptive_field=23)
    whole = autotuning.estimate_bytes(formulations.Plan("query_windows"), 28, 28, 8, **sizes)
    part = autotuning.estimate_bytes(
        formulations.Plan("query_windows", image_loop="recomputed"), 28, 28, 8, **sizes)
    assert part == whole // 8 and autotuning.RECOMPUTED_BATCH_DIVISOR == 8  # one image of 8
    runtime = formulations.current_runtime()
    assert formulations.plan("query_windows", runtime, True, 1, 23, rows=28, cols=28,
                             num_heads=4).image_loop == "recomputed"
    results = autotuning.measure(layer, (28, 28), "train", runtime, batch_size=8, repeats=1,
                                 memory_limit_bytes=2 * part)
    assert {f for f, r in results.items() if "ms" in r} == {"query_windows", "row_windows",
                                                            "conv"}, results


def test_under_xla_the_picks_are_stored_for_the_xla_engine(store):
    import tensorflow as tf

    model = small_model()
    report = autotuning.autotune(model, batch_size=2, repeats=1, phases=("fwd",),
                                 jit_compile=True)
    assert report["device"].startswith("xla | tensorflow ")
    layer = model.get_layer("first")
    pick = report["picks"][autotuning.layer_key(layer, MAP, MAP, "fwd")]["formulation"]
    x = tf.constant(random_input((2, MAP, MAP, 6)))
    tf.function(lambda x: layer(x, training=False), jit_compile=True).get_concrete_function(x)
    assert layer._last_formulation == pick
    stored = json.loads(store.read_text())["picks"]
    assert list(stored) == [report["device"]]  # nothing for the graph-mode engine


def test_the_file_is_merged_and_replaced_atomically(store, monkeypatch):
    autotuning._write({"device a": {"layer 1": {"formulation": "conv"}}}, str(store))
    autotuning._write({"device b": {"layer 2": {"formulation": "row_windows"}}}, str(store))
    autotuning._write({"device a": {"layer 3": {"formulation": "row_windows"}}}, str(store))
    assert autotuning.stored_picks(str(store)) == {
        "device a": {"layer 1": {"formulation": "conv"}, "layer 3": {"formulation": "row_windows"}},
        "device b": {"layer 2": {"formulation": "row_windows"}}}
    before = store.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)  # the new file is written, not yet renamed
    with pytest.raises(OSError, match="disk full"):
        autotuning._write({"device c": {}}, str(store))
    assert store.read_bytes() == before
    assert os.listdir(store.parent) == ["autotune.json"]  # no temporary file left


def test_an_unreadable_file_is_ignored_with_a_warning(store):
    store.parent.mkdir()
    store.write_text('{"format": 1, "picks": {"tf')  # cut short
    layer = make_layer(receptive_field=5)
    x = random_input((2, MAP, MAP, 6))
    with pytest.warns(UserWarning, match="Ignoring the autotune file .*autotune.json"):
        layer(x)
    rule_pick = layer._last_formulation
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read once per version of the file: no second warning
        layer(x)
    assert layer._last_formulation == rule_pick
    store.write_text(json.dumps({"format": 99, "picks": {}}))
    with pytest.warns(UserWarning, match="not a format-1"):
        layer(x)
    store.write_text(json.dumps({"format": 1, "picks": {"device": ["query_windows"]}}))
    with pytest.warns(UserWarning, match="its picks are not"):
        layer(x)
    assert layer._last_formulation == rule_pick


def test_a_stored_pick_that_does_not_apply_is_ignored(store):
    """A "relative" layer cannot run the local formulations: a stored "conv" is not used. The
    same key first holds an applicable pick the rule would not make, which is followed (the file
    is read for this layer)."""
    layer = make_layer(position="relative")
    x = random_input((2, MAP, MAP, 6))
    layer(x)
    rule_pick = layer._last_formulation
    other = next(f for f in ("queries_first", "lambdas_first") if f != rule_pick)
    device = autotuning.device_key(formulations.current_runtime())
    key = autotuning.layer_key(layer, MAP, MAP, "fwd")
    autotuning._write({device: {key: {"formulation": other}}}, str(store))
    layer(x)
    assert layer._last_formulation == other
    autotuning._write({device: {key: {"formulation": "conv"}}}, str(store))
    layer(x)
    assert layer._last_formulation == rule_pick


def test_a_pick_stored_under_the_former_position_name_is_read(store):
    """Files written while "local" was named "conv" key its layers "conv r5 ...": still read; a
    pick under the current key takes precedence."""
    layer = make_layer(receptive_field=5)
    x = random_input((2, MAP, MAP, 6))
    layer(x)
    first, second = (f for f in ("row_windows", "conv", "query_windows")
                     if f != layer._last_formulation)
    device = autotuning.device_key(formulations.current_runtime())
    key = autotuning.layer_key(layer, MAP, MAP, "fwd")
    assert key.startswith("local r5 h2 ")
    autotuning._write({device: {"conv" + key[len("local"):]: {"formulation": first}}}, str(store))
    layer(x)
    assert layer._last_formulation == first
    autotuning._write({device: {key: {"formulation": second}}}, str(store))
    layer(x)
    assert layer._last_formulation == second


def test_dynamic_sizes_are_reported_not_tuned(store):
    inputs = keras.Input((None, None, 6))
    model = keras.Model(inputs, make_layer(receptive_field=5, name="dynamic")(inputs))
    report = autotuning.autotune(model, batch_size=1, repeats=1)
    assert report["picks"] == {} and report["dynamic"] == ["dynamic"]
    assert not store.exists()


@pytest.mark.parametrize("kwargs, match", [
    (dict(phases="fwd"), "`phases` must be"),
    (dict(phases=("fwd", "predict")), "`phases` must be"),
    (dict(phases=()), "`phases` must be"),
    (dict(phases=5), r"`phases` must be .*Received: phases=5"),  # was "'int' ... not iterable"
    (dict(batch_size=0), "`batch_size` must be"),
    (dict(repeats=0), "`repeats` must be"),
    (dict(memory_limit_bytes=0), "`memory_limit_bytes` must be"),
    (dict(jit_compile="yes"), "`jit_compile` must be one of"),
])
def test_bad_arguments_are_named(store, kwargs, match):
    with pytest.raises(ValueError, match=match):
        autotuning.autotune(small_model(), **kwargs)


def test_an_unbuilt_layer_is_refused(store):
    with pytest.raises(ValueError, match="`model` must be built.*'lonely'"):
        autotuning.autotune(make_layer(name="lonely"))


def test_enabled_reads_the_switch():
    assert autotuning.enabled({})
    assert autotuning.enabled({autotuning.ENV: "1"})
    assert not any(autotuning.enabled({autotuning.ENV: v}) for v in ("0", "false", "OFF", "no"))
    # One list of the values that turn the picks off, read by `enabled` and named in its docs
    # (the docs listed 0/false/off while the code also took "no").
    assert autotuning.OFF_VALUES == ("0", "false", "off", "no")
    assert "OFF_VALUES" in autotuning.enabled.__doc__
    assert not any(autotuning.enabled({autotuning.ENV: f" {v.upper()} "})
                   for v in autotuning.OFF_VALUES)
    assert autotuning.cache_path({"KERAS_HOME": "/k"}) == "/k/lambda_keras/autotune.json"
    assert autotuning.cache_path({autotuning.CACHE_ENV: "/x.json", "KERAS_HOME": "/k"}) == \
        "/x.json"


def test_a_model_name_is_refused_naming_the_argument():
    with pytest.raises(TypeError, match=r"`model` must be a built Keras model.*get_model.*"
                                        r"Received: model='lambda_resnet26t' of type str"):
        autotuning.autotune("lambda_resnet26t")


@pytest.mark.parametrize("where", ["variable", "under a file"])
def test_a_file_that_cannot_be_written_is_refused_before_measuring(where, store, tmp_path,
                                                                   monkeypatch):
    """Was: measured everything, then a raw IsADirectoryError on the rename (all lost)."""
    monkeypatch.setattr(autotuning, "measure", lambda *args, **kwargs: pytest.fail("measured"))
    blocker = tmp_path / "a file"
    blocker.write_text("")
    path, kwargs, given_by = {
        "variable": (tmp_path, {}, autotuning.CACHE_ENV),
        "under a file": (blocker / "autotune.json", {}, autotuning.CACHE_ENV),
    }[where]
    monkeypatch.setenv(autotuning.CACHE_ENV, str(path))
    problem = "is a directory" if path == tmp_path else f"{blocker} is not a directory"
    received = f"Received: {given_by}={str(path)!r}"
    with pytest.raises(ValueError, match=f"{re.escape(problem)}.*{re.escape(received)}"):
        autotuning.autotune(small_model(), **kwargs)
    assert os.listdir(tmp_path) == ["a file"]


def test_the_file_is_named_by_the_variable_only(store, tmp_path, monkeypatch):
    """`LAMBDA_KERAS_AUTOTUNE_CACHE` is the one way to name the file, for `autotune` and the
    layers alike. Was: `autotune(path=...)` wrote its picks there while "auto" read the
    variable's file, so a path of its own was silently never used."""
    monkeypatch.setattr(autotuning, "measure", lambda *args, **kwargs: pytest.fail("measured"))
    with pytest.raises(TypeError, match="path"):
        autotuning.autotune(small_model(), path=str(tmp_path / "elsewhere.json"))
    assert not (tmp_path / "elsewhere.json").exists()
