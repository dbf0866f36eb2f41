"""Tests for benchmarks/ (the formulations of the lambda layer's position term and the rule that
picks one are tested in tests/test_formulations.py and tests/test_formulation_rule.py).

- The QUICK benchmark run (every suite, tiny sizes) works end to end: every configuration runs,
  the JSON files, plots and summary hold the expected keys and finite ratios. Speed is not
  checked; the memory ruler is, against an independent expectation: global attention's peak
  memory must grow quadratically with the positions and exceed its own logits' size.
"""

import json
import math
import os
import time

import pytest

from benchmarks import backends as backends_suite
from benchmarks import common, report, run
from benchmarks import formulation_tables
from benchmarks import formulations as formulations_suite
from benchmarks import paired
from benchmarks import layer as layer_suite
from benchmarks import sequence as sequence_suite
from lambda_keras import runtime, utils

SUITES = ("layer", "peer", "model", "export", "backends")
# Each target of the summary and the suites it is computed from.
TARGET_SUITES = {"lambda_memory_vs_attention": ("layer",), "lambda_vs_timm": ("layer",),
                 "lambda_resnet50_vs_resnet50": ("model",), "xla": ("layer",),
                 "tflite_int8_vs_float32": ("export",)}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------ quick run
# The quick run under both oneDNN settings, whatever TensorFlow's default on this CPU: with oneDNN
# off TensorFlow's CPU allocator keeps no statistics unless the workers ask for its BFC allocator,
# and the formulation choice of the lambda layer depends on the state. Every suite runs with oneDNN
# off; the layer suite, whose formulation choice depends on the state, also with it on.
QUICK_RUNS = {"0": SUITES, "1": ("layer",)}


@pytest.fixture(scope="module", params=sorted(QUICK_RUNS), ids=lambda v: f"onednn{v}")
def quick_results(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"bench-onednn{request.param}")
    suites = QUICK_RUNS[request.param]
    assert run.main(["--quick", "--onednn", request.param, "--only", ",".join(suites),
                     "--out", str(out)]) == 0
    return out, request.param, suites


def _load(out, name):
    with open(os.path.join(out, name), encoding="utf-8") as f:
        return json.load(f)


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_run_records_the_onednn_state_tensorflow_reports(quick_results):
    out, onednn, _ = quick_results
    machine = _load(out, "summary.json")["machine"]
    state = machine["tensorflow_runtime"]
    assert state["onednn_active"] is (onednn == "1"), state  # asked of TensorFlow in a worker
    assert state["tf_enable_onednn_opts"] == onednn and state["allocator_statistics"] is True
    assert set(machine["cpu_flags"]) <= set(runtime.RECORDED_FLAGS)
    with open(os.path.join(out, "summary.md"), encoding="utf-8") as f:
        assert (f"oneDNN {'on' if onednn == '1' else 'off'} (TF_ENABLE_ONEDNN_OPTS={onednn})"
                in f.read())


def test_machine_without_tensorflow_records_no_paths(monkeypatch):
    """A machine without TensorFlow (the GPU machine's JAX and PyTorch runs) records that it has
    none, not the failed probe's command line with its interpreter's path."""
    find_spec = common.importlib.util.find_spec
    monkeypatch.setattr(common.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else find_spec(name, *a))
    assert common.tensorflow_runtime(common.worker_env(1)) == {
        "error": "TensorFlow is not installed"}


@pytest.mark.slow
def test_quick_run_measures_every_configuration(quick_results):
    out, _, suites = quick_results
    for suite in suites:
        data = _load(out, f"{suite}.json")
        assert data["quick"] is True and data["machine"]["cpu_model"]
        assert data["results"], suite
        failed = [(r["id"], r.get("reason")) for r in data["results"] if r["status"] != "ok"]
        assert not failed, failed
    layer = _load(out, "layer.json")
    measured = {(r["variant"], r["size"]) for r in layer["results"]}
    variants = list(layer_suite.VARIANTS) + ["timm_lambda"]
    assert measured == {(v, s) for v in variants for s in layer_suite.QUICK["sizes"]}
    for result in layer["results"]:
        # Every layer computes its [batch, s, s, d] float32 output inside the measured call.
        output_bytes = result["batch"] * result["size"] ** 2 * result["width"] * 4
        for phase in ("fwd", "train"):
            stats = result[phase]
            assert stats["min_s"] <= stats["median_s"] <= stats["max_s"]
            assert stats["repeats"] >= layer_suite.QUICK["timing"]["min_repeats"]
            if result["variant"] != "timm_lambda":  # TensorFlow: allocator statistics
                assert stats["memory_method"] == "allocator", result["id"]
                assert stats["peak_bytes"] >= output_bytes > 0, (result["id"], phase, stats)
    for record in _load(out, "model.json")["results"] if "model" in suites else ():
        if record.get("mode") == "train":  # a train_on_batch allocates activations and gradients
            stats = record["train"]
            assert stats["memory_method"] == "allocator" and stats["peak_bytes"] > 0, record["id"]


@pytest.mark.slow
def test_quick_run_summary_has_every_target_and_finite_ratios(quick_results):
    out, _, suites = quick_results
    summary = _load(out, "summary.json")
    targets = {name for name, value in summary["targets"].items() if value is not None}
    expected = {name for name, needs in TARGET_SUITES.items() if set(needs) <= set(suites)}
    assert targets == expected
    for name in targets:
        assert summary["targets"][name]["met"] in (True, False), name
    memory = summary["targets"]["lambda_memory_vs_attention"]
    assert all(_positive(row["ratio"]) for row in memory["rows"])
    assert all(_positive(row["train_speedup"]) and _positive(row["fwd_speedup"])
               for row in summary["targets"]["lambda_vs_timm"]["rows"])
    for row in (summary["targets"]["lambda_resnet50_vs_resnet50"] or {}).get("rows", ()):
        assert all(_positive(r) for r in row["inference_ratio"].values())
        assert row["params"] > 1e7
    assert all(_positive(row["speedup"]) for row in summary["targets"]["xla"]["rows"])
    if "export" in suites:
        assert _positive(summary["targets"]["tflite_int8_vs_float32"]["speedup"])
        exports = {row["format"] for row in summary["tables"]["export"]["rows"]
                   if "error" not in row}
        assert exports == {"keras", "saved_model", "tflite_float32", "tflite_float16",
                           "tflite_dynamic", "tflite_int8", "tflite_int8_full_integer"}
    for plot in summary["plots"]:
        with open(os.path.join(out, plot), "rb") as f:
            assert f.read(8) == PNG_MAGIC, plot
    with open(os.path.join(out, "summary.md"), encoding="utf-8") as f:
        assert "**Targets**" in f.read()


@pytest.mark.slow
@pytest.mark.parametrize("quick_results", ["0"], indirect=True)  # the run with every suite
def test_quick_run_times_every_model_on_every_keras_backend(quick_results):
    """The backend suite ran each backend in its own process (the worker reports the backend it
    ran on, and JAX compiled with XLA), every model in both modes; its table divides by the same
    backend's ResNet50 (exactly 1 for ResNet50 itself)."""
    out, _, suites = quick_results
    assert "backends" in suites
    records = _load(out, "backends.json")["results"]
    seen = {(r["backend"], r["model"], r["mode"]) for r in records if r["status"] == "ok"}
    models = backends_suite.QUICK["models"]
    assert "resnet50" in models and len(models) >= 2
    assert seen == {(b, m, mode) for b in backends_suite.QUICK["backends"] for m in models
                    for mode in ("infer", "train")}
    assert all(r["jit_compile"] is (r["backend"] == "jax") for r in records)
    table = _load(out, "summary.json")["tables"]["backends"]
    assert len(table["rows"]) == len(backends_suite.QUICK["backends"]) * len(models)
    for row in table["rows"]:
        assert _positive(row["infer_images_per_s"]) and _positive(row["train_images_per_s"])
        if row["model"] == "resnet50":
            assert row["infer_vs_resnet50"] == row["train_vs_resnet50"] == 1.0
        assert _positive(row["infer_vs_resnet50"]) and _positive(row["train_vs_resnet50"])
    assert "backends_throughput.png" in _load(out, "summary.json")["plots"]


def test_backends_run_in_their_own_worker_processes():
    """One backend per process: the environment names it, and a mixed group is refused."""
    groups = backends_suite.plan(backends_suite.FULL, memory_budget_bytes=None)
    assert [g[0]["backend"] for g in groups] == list(backends_suite.BACKENDS)
    quick = backends_suite.plan(backends_suite.QUICK, memory_budget_bytes=None)
    assert [g[0]["backend"] for g in quick] == ["jax", "torch"]
    assert common.worker_env(1, backend="jax")["KERAS_BACKEND"] == "jax"
    with pytest.raises(ValueError, match="one Keras backend per worker process"):
        common._run_process([groups[0][0], groups[1][0]], 1, 10, None, log=lambda m: None)


def test_backends_command_runs_the_backends_asked_and_writes_the_suites_record(
        tmp_path, monkeypatch, capsys):
    """`python -m benchmarks.backends` (the GPU machine's run: no TensorFlow there, batch 32)
    plans one worker per backend asked, at the batch and size asked, and writes a record that
    the report reads; unknown backends are refused."""
    planned = []

    def run_groups(groups, *args, **kwargs):
        planned.extend(groups)
        return [dict(job, status="ok") for group in groups for job in group]

    monkeypatch.setattr(common, "run_groups", run_groups)
    monkeypatch.setattr(backends_suite, "expand", lambda results: results)
    out = tmp_path / "gpu" / "backends.json"
    backends_suite.main(["--backends", "jax,torch", "--batch", "32", "--out", str(out)])
    assert [(g[0]["backend"], g[0]["batch"], g[0]["image_size"]) for g in planned] == [
        ("jax", 32, 224), ("torch", 32, 224)]
    record = _load(str(out.parent), "backends.json")
    assert record["settings"]["backends"] == ["jax", "torch"] and record["machine"]["cpu_model"]
    assert "224 px, batch 32" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_run_memory_ruler_sees_attention_grow_quadratically(quick_results):
    """Independent expectation: attention stores b x h x n x n logits, so its peak memory is at
    least that many floats and doubles in exponent with the positions."""
    layer = _load(quick_results[0], "layer.json")
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


# Every comma-separated flag of the suites, a value it takes and the parsed tuple, and values it
# refuses (an unknown name, a non-integer, an empty list, a wrong count).
COMMA_FLAGS = [
    (run, "--only", "peer, layer", ("peer", "layer"), ("layer,speed", ",")),
    (backends_suite, "--backends", "jax,torch", ("jax", "torch"), ("tensorflow,tpu",)),
    (paired, "--engines", "tf,xla", ("tf", "xla"), ("tf,cuda",)),
    (paired, "--phases", "fwd,train", ("fwd", "train"), ("backward",)),
    (paired, "--sizes", "14,28", (14, 28), ("14,2x8", "")),
    (formulations_suite, "--shapes", "r7u4", ("r7u4",), ("r5",)),
    (formulations_suite, "--rounds", "3,5", (3, 5), ("3", "3,5,7")),
    (formulations_suite, "--sizes", "56", (56,), ("56.5",)),
    (sequence_suite, "--lengths", "256,512", (256, 512), ("256,long",)),
]


@pytest.mark.parametrize("module, flag, good, parsed, refused", COMMA_FLAGS,
                         ids=[f"{m.__name__.split('.')[-1]}{f}" for m, f, *_ in COMMA_FLAGS])
def test_comma_separated_flags_parse_to_tuples_and_refuse_bad_lists(
        module, flag, good, parsed, refused, capsys):
    """Each suite's comma-separated flag parses to a tuple of names or integers, and a bad list
    exits with the flag's name and the value received (no traceback later in the run)."""
    required = ["--out", "x.json"] if module is backends_suite else []
    args = module.parse_args([flag, good, *required])
    assert getattr(args, flag[2:]) == parsed
    for value in refused:
        with pytest.raises(SystemExit):
            module.parse_args([flag, value, *required])
        assert f"argument {flag}: " in (err := capsys.readouterr().err)
        assert f"Received: {value!r}" in err


def test_a_run_of_some_suites_keeps_the_other_suites_last_full_results(tmp_path):
    for name, quick in (("model", False), ("export", True), ("layer", False)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"suite": name, "quick": quick}))
    earlier = run.earlier_suites(str(tmp_path), ["layer", "backends"])
    assert earlier == {"model": {"suite": "model", "quick": False}}  # not re-run, not quick


def test_oversized_configurations_are_planned_as_skipped():
    (jobs,) = layer_suite.plan(layer_suite.FULL, memory_budget_bytes=8 * 1024 ** 3)
    by_size = {job["size"]: job for job in jobs}
    assert "attention" in by_size[112]["planned_skips"]
    assert "attention" in by_size[28]["variants"]
    assert "lambda_local" in by_size[160]["variants"]
    records = layer_suite.expand([{**by_size[112], "status": "skipped", "reason": "killed"}])
    status = {r["variant"]: (r["status"], r["reason"]) for r in records}
    assert status["attention"][1].startswith("estimated n^2 memory")
    assert status["lambda_local"] == ("skipped", "killed")


# ------------------------------------------------------------- formulation suite summary
def _cell(engine, size, phase, auto, **medians):
    results = {name: dict(median_s=seconds, status="ok") for name, seconds in medians.items()}
    return dict(engine=engine, shape="r23", size=size, phase=phase, auto=auto, results=results)


def test_versus_timm_divides_timms_time_by_autos_pick():
    """The summary of the formulation tables (README, "The lambda layer against timm's"): timm's
    median over the median of the formulation auto picked, per engine, phase and size; cells
    without timm, other shapes and hopeless picks give no ratio."""
    cells = [_cell("timm", 14, "fwd", None, timm=0.030), _cell("timm", 28, "fwd", None, timm=0.2),
             _cell("timm", 14, "train", None, timm=0.5),
             _cell("tf", 14, "fwd", "conv", conv=0.010, queries_first=0.005),
             _cell("tf", 28, "fwd", "query_windows", query_windows=0.080),
             _cell("tf", 14, "train", "queries_first", queries_first=0.125),
             _cell("tf", 56, "fwd", "conv", conv=1.0),  # no timm cell at 56^2
             dict(_cell("tf", 14, "fwd", "conv", conv=0.001), shape="r7u4"),
             _cell("jax", 14, "fwd", "conv", conv=0.3)]
    cells[-1]["results"]["conv"]["status"] = "hopeless"
    data = dict(cells=cells, engines={"torch": dict(finished="2026-12-01 10:00")},
                machine=dict(cpu_model="Some CPU"))
    assert formulation_tables.versus_timm(data) == {
        ("tf", "fwd"): {14: pytest.approx(3.0), 28: pytest.approx(2.5)},
        ("tf", "train"): {14: pytest.approx(4.0)}}
    text = formulation_tables.versus_timm_markdown({"cpu-a": data})
    assert "| tf | 3.0 / 2.5 | 4.0 / - |" in text
    assert "| jax |" not in text and "cpu-a (Some CPU) 2026-12-01 10:00" in text
    # Runs of some shapes and sizes: those that timed timm's r 23 cells, the full run first.
    data["engines"]["torch"]["runs"] = {
        "r23,r7u4@7": dict(finished="2026-12-02 09:00"), "r9,r9s2@28": dict(finished="x"),
        "r23": dict(finished="2026-12-01 11:00")}
    text = formulation_tables.versus_timm_markdown({"cpu-a": data})
    assert text.endswith("cpu-a (Some CPU) 2026-12-01 11:00, 2026-12-02 09:00 (7²).")


def test_versus_timm_on_the_committed_tables():
    """On every committed table, each r 23 cell's speed-up (the summary's, and the per-cell
    table's "timm / auto" column) is timm's median over the median of the formulation auto
    picked in that cell, recomputed here from the raw cells."""
    for name, data in formulation_tables.load_tables(formulations_suite.TABLES).items():
        timm = {(c["size"], c["phase"]): c["results"]["timm"]["median_s"]
                for c in data["cells"] if c["engine"] == "timm"}
        expected = {(c["engine"], c["phase"], c["size"]):
                    timm[c["size"], c["phase"]] / c["results"][c["auto"]]["median_s"]
                    for c in data["cells"] if c["engine"] != "timm" and c["shape"] == "r23"
                    and c["results"].get(c["auto"], {}).get("status") == "ok"}
        found = {(engine, phase, size): ratio for (engine, phase), by_size
                 in formulation_tables.versus_timm(data).items()
                 for size, ratio in by_size.items()}
        engines = {c["engine"] for c in data["cells"]} - {"timm"}
        # every engine's r 23 cells at 14^2-112^2, inference and training
        assert found == pytest.approx(expected) and len(found) >= 8 * len(engines), name
        column = {}
        for line in formulation_tables.markdown_tables(data).splitlines()[2:]:
            fields = [field.strip() for field in line.strip("|").split("|")]
            if fields[-1]:
                column[(fields[0], fields[3], int(fields[2].rstrip("²")))] = fields[-1]
        assert column == {key: f"{ratio:.1f}x" for key, ratio in expected.items()}, name


def test_tables_with_the_former_position_name_give_the_local_modes_picks():
    """Tables recorded before the rename say "position": "conv", the former name of "local";
    the rule's picks from them are the "local" mode's (`common.position_mode`), where
    `formulations.choose` itself refuses "conv"."""
    for data in formulation_tables.load_tables(formulations_suite.TABLES).values():
        old, new = ({**data, "layer": {**data["layer"], "position": name}}
                    for name in ("conv", "local"))
        cells = [c for c in data["cells"] if c["engine"] in data["engines"]]
        picks = [formulation_tables.rule_pick(old, cell) for cell in cells]
        assert picks == [formulation_tables.rule_pick(new, cell) for cell in cells]
        assert {"conv", "query_windows"} & set(picks)  # local formulations: not a whole-map mode
    assert [common.position_mode(p) for p in ("conv", "local", "relative", None)] == [
        "local", "local", "relative", None]


# ---------------------------------------------------------------- paired layer vs timm
def test_measure_warms_up_for_its_calls_and_its_seconds():
    """`common.measure`: `warmup` untimed calls at least, continued until `warmup_s` has passed;
    then the timed calls only (the paired runs time TensorFlow once its executor has settled)."""
    def timed_calls(**warmup):
        stamps = []

        def fn():
            stamps.append(time.perf_counter())
            time.sleep(0.002)

        stats = common.measure(fn, min_repeats=3, max_repeats=3, budget_s=0.0, **warmup)
        return stamps, stats["repeats"]

    stamps, repeats = timed_calls(warmup=2)
    assert (len(stamps), repeats) == (5, 3)
    stamps, repeats = timed_calls(warmup=2, warmup_s=0.05)
    assert repeats == 3 and len(stamps) >= 2 + 3
    assert stamps[-3] - stamps[0] >= 0.05  # the first timed call starts after the warm-up
    assert stamps[-4] - stamps[0] < 0.05  # and the warm-up stopped once it had lasted 0.05 s


def test_paired_rounds_rotate_and_ratios_are_per_round():
    """Each round rotates the process order (timm first, then last, ...), and a cell's speed-up
    is the median of the rounds' timm / engine ratios, not a ratio of medians."""
    names = ["timm", "tf_onednn", "tf"]
    assert [paired.round_order(names, i) for i in range(3)] == [
        ["timm", "tf_onednn", "tf"], ["tf_onednn", "tf", "timm"], ["tf", "timm", "tf_onednn"]]
    rounds = [dict(timm=1.0, tf=0.5), dict(timm=3.0, tf=1.0), dict(timm=1.0, tf=1.0)]
    found = paired.paired_ratios(rounds, ["tf", "jax"])
    assert found == {"tf": dict(median=2.0, low=1.0, high=3.0, ratios=[2.0, 3.0, 1.0])}
    # The ratio of the medians (timm 1.0 / tf 1.0) would say 1.0x: the host drifted by 3x.
    data = dict(engines=["tf", "jax"], cells=[dict(size=14, phase="fwd", ratios=found)])
    assert paired.markdown_table(data).splitlines()[2:] == ["| tf | fwd | 2.0x (1.0-3.0) |"]


def test_committed_paired_results_follow_from_their_rounds():
    """Every committed paired run (the README quotes them): each cell's speed-ups are the median
    and range of its rounds' timm / engine ratios, recomputed from the stored medians; every
    round timed timm and each engine, on the machine kind the file names."""
    folder = os.path.join(common.REPO_ROOT, "benchmarks", "results", "paired")
    names = sorted(name for name in os.listdir(folder) if name.endswith(".json"))
    assert names
    for name in names:
        data = _load(folder, name)
        assert name.startswith(data["cpu_kind"]) and data["machine"]["cpu_flags"], name
        for cell in data["cells"]:
            rounds = [{engine: timed["median_s"] for engine, timed in r.items()}
                      for r in cell["rounds"]]
            assert all(set(r) == {paired.PEER, *data["engines"]} for r in rounds), name
            # JSON keeps Python's floats exactly: the same arithmetic gives the same numbers.
            assert paired.paired_ratios(rounds, data["engines"]) == cell["ratios"], (
                name, cell["size"], cell["phase"])


def test_paired_history_lists_every_run_oldest_first_and_their_median(tmp_path):
    """`--history`: one row per stored run and engine in the order the runs started (not the
    file names'), then per CPU kind and warm-up, engine and phase the median of the runs' medians
    and their range over the runs that timed the size; other suites' files are ignored."""
    def run(started, medians, cpu_kind="amd-avx512", **settings):
        cells = [dict(size=size, phase="fwd", rounds=[],
                      ratios={"tf": dict(median=m, low=m - 0.5, high=m + 0.5, ratios=[m])})
                 for size, m in medians.items()]
        return dict(suite="paired", cpu_kind=cpu_kind, started=started, engines=["tf"],
                    settings=dict(pairs=3, **settings), cells=cells)

    for name, data in (("b.json", run("2026-12-04 01:00", {14: 1.5, 28: 3.0})),
                       ("a.json", run("2026-12-04 02:00", {14: 2.5})),
                       ("c.json", run("2026-12-04 03:00", {14: 2.0})),
                       ("e.json", run("2026-12-04 04:00", {14: 1.0}, "intel-avx512")),
                       ("f.json", run("2026-12-04 05:00", {14: 2.4}, warmup_s=1.0)),
                       ("d.json", dict(suite="formulations", started="2026-12-04 00:00"))):
        utils.write_json(os.path.join(tmp_path, name), data)
    runs = paired.load_runs(tmp_path)
    assert [data["started"][-5:] for data in runs] == ["01:00", "02:00", "03:00", "04:00", "05:00"]
    assert paired.history_table(runs).splitlines()[2:] == [
        "| amd-avx512, 2026-12-04 01:00, 3 | tf | fwd | 1.5x (1.0-2.0) | 3.0x (2.5-3.5) |",
        "| amd-avx512, 2026-12-04 02:00, 3 | tf | fwd | 2.5x (2.0-3.0) | - |",
        "| amd-avx512, 2026-12-04 03:00, 3 | tf | fwd | 2.0x (1.5-2.5) | - |",
        "| intel-avx512, 2026-12-04 04:00, 3 | tf | fwd | 1.0x (0.5-1.5) | - |",
        "| amd-avx512, warm-up 1 s, 2026-12-04 05:00, 3 | tf | fwd | 2.4x (1.9-2.9) | - |",
        "| **amd-avx512, all runs** | tf | fwd | 2.0x (1.5-2.5), 3 runs | 3.0x (3.0-3.0), 1 run |",
        "| **intel-avx512, all runs** | tf | fwd | 1.0x (1.0-1.0), 1 run | - |",
        "| **amd-avx512, warm-up 1 s, all runs** | tf | fwd | 2.4x (2.4-2.4), 1 run | - |"]
    # The summary pools each CPU kind's runs of its latest warm-up only (the README's table).
    assert paired.history_table(runs, per_run=False).splitlines()[2:] == [
        "| **intel-avx512, all runs** | tf | fwd | 1.0x (1.0-1.0), 1 run | - |",
        "| **amd-avx512, warm-up 1 s, all runs** | tf | fwd | 2.4x (2.4-2.4), 1 run | - |"]
    committed = paired.load_runs(paired.RESULTS)  # the README's table: every file is a run
    assert len(committed) == len([n for n in os.listdir(paired.RESULTS) if n.endswith(".json")])


def test_versus_timm_plot_draws_every_table_and_the_paired_medians(tmp_path):
    """`--plot`: the paired runs' medians grouped per CPU kind, engine, phase and size (each run's
    median, in run order), and a PNG of the committed tables and runs."""
    def run(kind, medians, warmup_s=0.0):
        return dict(cpu_kind=kind, settings=dict(warmup_s=warmup_s), cells=[dict(
            size=size, phase="fwd", ratios={"tf": dict(median=m, low=m, high=m)})
            for size, m in medians.items()])

    runs = [run("cpu-a", {14: 1.5, 28: 3.0}), run("cpu-a", {14: 2.5}), run("cpu-b", {14: 2.0}),
            run("cpu-b", {14: 3.0}, warmup_s=1.0)]
    assert paired.run_medians(runs) == {
        "cpu-a": {("tf", "fwd"): {14: [1.5, 2.5], 28: [3.0]}},
        "cpu-b": {("tf", "fwd"): {14: [2.0]}},
        "cpu-b, warm-up 1 s": {("tf", "fwd"): {14: [3.0]}}}
    # The plot's points: each CPU kind's latest warm-up, keyed by the kind (its table's tag).
    assert paired.run_medians(paired.latest_warmup_runs(runs),
                              group=lambda data: data["cpu_kind"]) == {
        "cpu-a": {("tf", "fwd"): {14: [1.5, 2.5], 28: [3.0]}},
        "cpu-b": {("tf", "fwd"): {14: [3.0]}}}
    path = formulation_tables.plot_versus_timm(
        formulation_tables.load_tables(formulations_suite.TABLES), str(tmp_path / "versus.png"))
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_readmes_quote_the_tables_the_committed_results_give():
    """The speed-up tables of README.md and benchmarks/README.md are what the tools print from the
    committed results (`benchmarks.paired --history summary / runs`, `benchmarks.formulations
    --versus-timm`), so a new run cannot leave them stale."""
    def read(*path):
        with open(os.path.join(common.REPO_ROOT, *path), encoding="utf-8") as f:
            return f.read()

    runs = paired.load_runs(paired.RESULTS)
    tables = formulation_tables.load_tables(formulations_suite.TABLES)
    readme, log = read("README.md"), read("benchmarks", "README.md")
    stale = "a stale table: paste the output of `python -m benchmarks.{}` into {}"
    assert paired.history_table(runs, per_run=False) in readme, stale.format(
        "paired --history summary", "README.md")
    assert paired.history_table(runs) in log, stale.format(
        "paired --history runs", "benchmarks/README.md (measurement log)")
    assert formulation_tables.versus_timm_markdown(tables) in readme, stale.format(
        "formulations --versus-timm", "README.md")


@pytest.mark.slow
def test_paired_quick_run_times_the_layer_and_timm_in_their_own_processes(tmp_path):
    """End to end: a TensorFlow worker and a timm worker per round, their medians and the
    formulation "auto" traced, the ratio of each round recomputable from the stored medians."""
    assert paired.main(["--quick", "--engines", "tf", "--pairs", "2", "--out",
                        str(tmp_path)]) == 0
    (name,) = os.listdir(tmp_path)
    data = _load(tmp_path, name)
    assert name == f"{runtime.cpu_kind()}.json" and data["machine"]["cpu_flags"]
    (cell,) = data["cells"]
    assert [list(r) for r in cell["rounds"]] == [["timm", "tf"], ["tf", "timm"]]
    for timed in cell["rounds"]:
        assert timed["tf"]["runtime"]["backend"] == "tensorflow"
        assert timed["tf"]["runtime"]["onednn"] is False  # the "tf" engine: oneDNN off
        assert timed["tf"]["auto"] in ("queries_first", "query_windows", "lambdas_first",
                                       "row_windows", "conv")
        assert timed["timm"]["runtime"]["backend"] == "torch" and timed["timm"]["auto"] is None
    ratios = [r["timm"]["median_s"] / r["tf"]["median_s"] for r in cell["rounds"]]
    assert cell["ratios"]["tf"]["ratios"] == pytest.approx(ratios)


def test_paired_refuses_fewer_than_one_pair_or_call(capsys):
    for flag in ("--pairs", "--calls"):
        with pytest.raises(SystemExit):
            paired.parse_args([flag, "0"])
        assert flag in capsys.readouterr().err


@pytest.mark.slow
def test_formulation_suite_probes_every_formulation_of_the_package():
    """A formulation added to the layer is timed by the suite too (its own probe order)."""
    from lambda_keras.layers import formulations

    assert sorted(formulations_suite.PROBE_ORDER) == sorted(formulations.FORMULATIONS)
    assert len(set(formulations_suite.PROBE_ORDER)) == len(formulations_suite.PROBE_ORDER)


def test_formulations_what_if_run_traces_the_rows_of_another_kind_of_cpu(tmp_path):
    """`--rows KIND` times a table with the rule rows of another measured CPU: its worker traces
    "auto" with that kind's rows (a cell where they pick differently from this CPU's), and the
    table records the kind, so `rule_pick` recomputes the same picks."""
    from lambda_keras.layers import formulations

    here = runtime.cpu_kind()
    without_avx512 = formulations.cpu_rows(here) is formulations.WITHOUT_AVX512_RULE
    other = "intel-avx512" if without_avx512 else "amd-avx2"
    # TensorFlow's malloc allocator, r 7 |u| 4 at 20^2 (8 scopes), forward: the convolution on the
    # CPU without AVX-512 (query windows on maps of up to 6 scopes), query windows with AVX-512.
    picks = {cpu: formulations.choose(
        "local", 20, 20, False, num_heads=4, key_dim=16, value_dim=8, intra_depth=4,
        receptive_field=7, runtime=formulations.Runtime("tensorflow", pooled_allocator=False,
                                                        cpu=cpu))
        for cpu in (other, here)}
    assert picks[other] != picks[here], picks
    assert formulations_suite.main(["--quick", "--engines", "tf_malloc", "--shapes", "r7u4",
                                    "--sizes", "20", "--rows", other, "--out",
                                    str(tmp_path)]) == 0
    data = _load(tmp_path, f"{here}.json")
    assert data["engines"]["tf_malloc"]["rows"] == other
    (cell,) = [c for c in data["cells"] if c["phase"] == "fwd"]
    assert cell["auto"] == picks[other] == formulation_tables.rule_pick(data, cell)


def test_formulations_what_if_run_needs_a_measured_kind_and_its_own_folder(capsys, tmp_path):
    for argv, named in ((["--rows", "arm-neon", "--out", str(tmp_path)], "arm-neon"),
                        (["--rows", "amd-avx2"], "--out")):
        with pytest.raises(SystemExit):
            formulations_suite.parse_args(argv)
        assert named in capsys.readouterr().err
