"""Tests for benchmarks/ and for the position-term formulations the benchmarks chose.

- The QUICK benchmark run (every suite, tiny sizes) works end to end: every configuration runs,
  the JSON files, plots and summary hold the expected keys and finite ratios. Speed is not
  checked; the memory ruler is, against an independent expectation: global attention's peak
  memory must grow quadratically with the positions and exceed its own logits' size.
- Every formulation of LambdaLayer's position term (queries_first, lambdas_first, row_windows,
  conv; layers.py) matches the NumPy reference of tests/test_layers.py, forced one at a time, and
  `_formulation` picks each where the module docstring says it does.
"""

import json
import math
import os

import numpy as np
import keras
import pytest

from benchmarks import layer as layer_suite
from benchmarks import report, run
from lambda_keras.layers import LambdaLayer
from helpers import assert_close
from test_layers import make_layer, random_input, randomize_statistics, reference_lambda_layer

SUITES = ("layer", "peer", "model", "export")
TARGETS = ("lambda_memory_vs_attention", "lambda_vs_timm", "lambda_resnet50_vs_resnet50", "xla",
           "tflite_int8_vs_float32")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------ quick run
@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert run.main(["--quick", "--out", str(out)]) == 0
    return out


def _load(out, name):
    with open(os.path.join(out, name), encoding="utf-8") as f:
        return json.load(f)


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_run_measures_every_configuration(quick_results):
    for suite in SUITES:
        data = _load(quick_results, f"{suite}.json")
        assert data["quick"] is True and data["machine"]["cpu_model"]
        assert data["results"], suite
        failed = [(r["id"], r.get("reason")) for r in data["results"] if r["status"] != "ok"]
        assert not failed, failed
    layer = _load(quick_results, "layer.json")
    measured = {(r["variant"], r["size"]) for r in layer["results"]}
    variants = list(layer_suite.VARIANTS) + ["timm_lambda"]
    assert measured == {(v, s) for v in variants for s in layer_suite.QUICK["sizes"]}
    for result in layer["results"]:
        for phase in ("fwd", "train"):
            stats = result[phase]
            assert stats["min_s"] <= stats["median_s"] <= stats["max_s"]
            assert stats["repeats"] >= layer_suite.QUICK["timing"]["min_repeats"]
            if result["variant"] != "timm_lambda":  # TensorFlow: allocator statistics
                assert stats["memory_method"] == "allocator" and stats["peak_bytes"] >= 0


@pytest.mark.slow
def test_quick_run_summary_has_every_target_and_finite_ratios(quick_results):
    summary = _load(quick_results, "summary.json")
    assert set(summary["targets"]) == set(TARGETS)
    for name in TARGETS:
        assert summary["targets"][name]["met"] in (True, False), name
    memory = summary["targets"]["lambda_memory_vs_attention"]
    assert all(_positive(row["ratio"]) for row in memory["rows"])
    assert all(_positive(row["train_speedup"]) and _positive(row["fwd_speedup"])
               for row in summary["targets"]["lambda_vs_timm"]["rows"])
    for row in summary["targets"]["lambda_resnet50_vs_resnet50"]["rows"]:
        assert all(_positive(r) for r in row["inference_ratio"].values())
        assert row["params"] > 1e7
    assert _positive(summary["targets"]["tflite_int8_vs_float32"]["speedup"])
    assert all(_positive(row["speedup"]) for row in summary["targets"]["xla"]["rows"])
    exports = {row["format"] for row in summary["tables"]["export"]["rows"] if "error" not in row}
    assert exports == {"keras", "saved_model", "tflite_float32", "tflite_float16",
                       "tflite_dynamic", "tflite_int8"}
    for plot in summary["plots"]:
        with open(os.path.join(quick_results, plot), "rb") as f:
            assert f.read(8) == PNG_MAGIC, plot
    with open(os.path.join(quick_results, "summary.md"), encoding="utf-8") as f:
        assert "**Targets**" in f.read()


@pytest.mark.slow
def test_quick_run_memory_ruler_sees_attention_grow_quadratically(quick_results):
    """Independent expectation: attention stores b x h x n x n logits, so its peak memory is at
    least that many floats and doubles in exponent with the positions."""
    layer = _load(quick_results, "layer.json")
    batch = layer["settings"]["batch"]
    points = []
    for result in layer["results"]:
        if result["variant"] == "attention":
            n, peak = result["positions"], result["train"]["peak_bytes"]
            assert peak >= batch * layer_suite.ATTENTION_HEADS * n * n * 4
            points.append((n, peak))
    assert 1.5 <= report.fit_slope(points) <= 2.5


# ----------------------------------------------------------------- report helpers, CLI
def test_fit_slope_recovers_power_laws():
    assert report.fit_slope([(n, 3.0 * n * n) for n in (100, 400, 1600)]) == pytest.approx(2.0)
    # Only maps of at least SLOPE_MIN_POSITIONS count once two of them exist.
    points = [(16, 1e9), (784, 784.0), (3136, 3136.0)]
    assert report.fit_slope(points) == pytest.approx(1.0)
    assert report.fit_slope([(16, 5.0)]) is None


def test_unknown_suite_is_refused(capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["--only", "layer,speed"])
    assert "--only='layer,speed'" in capsys.readouterr().err


def test_oversized_configurations_are_planned_as_skipped():
    (jobs,) = layer_suite.plan(layer_suite.FULL, memory_budget_bytes=8 * 1024 ** 3)
    by_size = {job["size"]: job for job in jobs}
    assert "attention" in by_size[112]["planned_skips"]
    assert "attention" in by_size[28]["variants"]
    assert "lambda_conv" in by_size[160]["variants"]
    records = layer_suite.expand([{**by_size[112], "status": "skipped", "reason": "killed"}])
    status = {r["variant"]: (r["status"], r["reason"]) for r in records}
    assert status["attention"][1].startswith("estimated n^2 memory")
    assert status["lambda_conv"] == ("skipped", "killed")


# ------------------------------------------------- formulations of the position term
FORMULATION_CASES = {
    "queries_first-conv-u2-bias": ("queries_first", dict(position="conv", receptive_field=5,
                                                         intra_depth=2, position_bias=True)),
    "queries_first-relative-s2": ("queries_first", dict(position="relative", strides=2)),
    "queries_first-global-u2": ("queries_first", dict(position="global", intra_depth=2)),
    "lambdas_first-conv-r23": ("lambdas_first", dict(position="conv")),
    "row_windows-conv-u2-bias": ("row_windows", dict(position="conv", receptive_field=5,
                                                     intra_depth=2, position_bias=True)),
    "row_windows-conv-r23-s2": ("row_windows", dict(position="conv", strides=2)),
    "row_windows-conv-r3": ("row_windows", dict(position="conv", receptive_field=3)),
    "conv-conv-u2": ("conv", dict(position="conv", receptive_field=5, intra_depth=2)),
}


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("case", FORMULATION_CASES)
def test_each_formulation_matches_numpy_reference(case, training, monkeypatch):
    formulation, kwargs = FORMULATION_CASES[case]
    monkeypatch.setattr(LambdaLayer, "_formulation", lambda self, *args, **kw: formulation)
    layer = make_layer(**kwargs)
    x = random_input()
    layer.build(x.shape)
    randomize_statistics(layer)
    expected = reference_lambda_layer(layer, x, training=training)
    actual = keras.ops.convert_to_numpy(layer(x, training=training))
    assert_close(actual, expected, atol=1e-5, what=f"{case} ({formulation})")


PAPER = dict(key_dim=16, num_heads=4, output_dim=256)  # |v| = 64: k v = 1024 = h m at 16 x 16
SELECTION_CASES = [
    (dict(position="conv"), (14, 14), True, "queries_first"),
    (dict(position="conv"), (16, 16), False, "queries_first"),
    (dict(position="conv"), (20, 20), True, "lambdas_first"),
    (dict(position="conv"), (20, 20), False, "conv"),
    (dict(position="conv"), (28, 28), True, "row_windows"),
    (dict(position="conv"), (28, 28), None, "conv"),
    (dict(position="conv"), (None, 28), True, "conv"),
    (dict(position="conv", implementation="einsum"), (28, 28), False, "row_windows"),
    (dict(position="conv", implementation="einsum"), (24, 24), False, "lambdas_first"),
    (dict(position="conv", implementation="conv"), (7, 7), True, "conv"),
    (dict(position="relative"), (16, 16), True, "queries_first"),
    (dict(position="global"), (20, 20), False, "lambdas_first"),
]


@pytest.mark.parametrize("kwargs, size, training, expected", SELECTION_CASES)
def test_formulation_choice(kwargs, size, training, expected):
    layer = LambdaLayer(**PAPER, **kwargs)
    layer.build((None, 4, 4, 8) if kwargs["position"] == "conv" else (None,) + size + (8,))
    assert layer._formulation(*size, training=training) == expected


def test_row_windows_equal_the_convolution_on_a_large_map():
    """implementation="einsum" on a 28 x 28 map with r = 23 (row_windows) gives the outputs of
    implementation="conv" (the lambda convolution), in inference and training."""
    layer = LambdaLayer(**PAPER, implementation="einsum",
                        position_initializer=keras.initializers.RandomNormal(stddev=0.1))
    x = np.random.default_rng(3).standard_normal((2, 28, 28, 32)).astype("float32")
    layer.build(x.shape)
    randomize_statistics(layer)
    reference = LambdaLayer.from_config({**layer.get_config(), "implementation": "conv"})
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    for training in (False, True):
        assert layer._formulation(28, 28, training) == "row_windows"
        expected = keras.ops.convert_to_numpy(reference(x, training=training))
        actual = keras.ops.convert_to_numpy(layer(x, training=training))
        assert_close(actual, expected, atol=1e-4, what=f"28x28 training={training}")
