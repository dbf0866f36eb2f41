"""Formulation suite: every position-term formulation of LambdaLayer on every engine.

    python -m benchmarks.formulations [--quick] [--engines tf_onednn,tf,xla,jax,torch]
                                      [--sizes 14,28] [--out benchmarks/results/formulations]
                                      [--machine TAG] [--table] [--picks-only]
                                      [--versus-timm] [--rows KIND --out DIR]

Measures "queries_first", "query_windows", "lambdas_first", "row_windows" and "conv" (selected
through `LambdaLayer(implementation=...)`) side by side, forward (`training=False`) and forward +
backward (gradient of mean(y^2) with respect to the input and every trainable weight), on:

- "tf_onednn" / "tf": TensorFlow graph mode (`tf.function`), TF_ENABLE_ONEDNN_OPTS=1 / 0, with
  the pooled (BFC) CPU allocator that every benchmark worker uses (common.worker_env);
- "tf_malloc": as "tf", with TensorFlow's default allocator there (TF_CPU_ALLOCATOR_USE_BFC=false:
  malloc);
- "xla": TensorFlow `tf.function(jit_compile=True)` (oneDNN setting left at its default);
- "jax": the JAX backend, `jax.jit` of `stateless_call` (and of its `jax.value_and_grad`);
- "torch": the PyTorch backend, eager (plus timm's PyTorch `LambdaLayer` at the r 23 shapes,
  benchmarks/peer.py, as the peer).

Each engine runs in its own process (KERAS_BACKEND and TF_ENABLE_ONEDNN_OPTS are per process;
TensorFlow and PyTorch cannot share one). Shapes: batch 8, d 256, |k| 16, |h| 4 (|v| 64), with
r 23 |u| 1 ("r23") and r 7 |u| 4 ("r7u4"), maps 14^2-112^2 (and 7^2, c5's map at 224 px, in
a run of `--sizes 7`), and the strided r 23 layer
("r23s2": a 3 x 3 stride-2 average pool follows, as in the first block of a LambdaResNet stage)
and r 7 |u| 4 strided ("r7u4s2") at 14^2-56^2; timm's r 9 layer ("r9", and "r9s2" with its 2 x 2
stride-2 pool) at 14^2 and 28^2 (the AVX2 EPYC's table predates some of these: it has no
"r7u4s2", strided 56^2, r 9 at 28^2 or 7^2; the Xeon's no 7^2).

Per cell (engine, shape, size, phase): each formulation gets one warm-up call (tracing, XLA
compilation) and one timed probe call; a formulation whose probe is > 10x the best probe is not
timed further ("hopeless", its probe time is kept); the others are then timed round-robin
(common.measure_interleaved), 1-2 more calls, and the median of the probe and those calls is
reported. An n x m formulation (queries_first, lambdas_first) > 3x the cell's fastest, or any
> 10x, is not run at larger sizes of that shape and phase (recorded as skipped, with the reason).
Formulations whose n x m tensors would pass `MEMORY_LIMIT_BYTES` are skipped before they start
(`estimate_bytes`, as the call's plan holds them: query windows recomputed in training count one
batch part's maps).
The formulation "auto" picks in that runtime is recorded per cell (found by tracing the layer
there: the XLA context, the oneDNN state and the backend are the real ones); its time is the
time of that formulation. Results: one table per kind of CPU, `results/formulations/<tag>.json`
(`lambda_keras.runtime.cpu_kind()`: "intel-avx512", "amd-avx2", "amd-avx512"; per engine:
machine, oneDNN state, package versions; per cell: every formulation's statistics, the fastest,
auto's pick and ratio).
`--rows KIND` is a what-if run: "auto" and query windows' blocks follow the rule rows of another
measured kind of CPU (the engines' records name it), to see whether that kind's rows would serve
this one. The rule must hold on every table (tests/test_formulation_rule.py);
benchmarks/formulation_tables.py reads them (`--table`, `--versus-timm`).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import common
from lambda_keras import runtime, utils

# The package's formulations (lambda_keras.layers.formulations.FORMULATIONS) in the order probed.
PROBE_ORDER = ("row_windows", "conv", "lambdas_first", "queries_first", "query_windows")
# name (the rule's engine, formulations.ENGINES): (KERAS_BACKEND, environment, jit_compile)
ENGINES = {
    "tf_onednn": ("tensorflow", {"TF_ENABLE_ONEDNN_OPTS": "1"}, False),
    "tf": ("tensorflow", {"TF_ENABLE_ONEDNN_OPTS": "0"}, False),
    "tf_malloc": ("tensorflow", {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPU_ALLOCATOR_USE_BFC": "false"},
                  False),
    "xla": ("tensorflow", {}, True),
    "jax": ("jax", {}, True),
    "torch": ("torch", {}, False),
}
SHAPES = {"r23": dict(receptive_field=23, intra_depth=1), "r7u4": dict(receptive_field=7,
                                                                      intra_depth=4),
          "r23s2": dict(receptive_field=23, intra_depth=1, strides=2),
          "r7u4s2": dict(receptive_field=7, intra_depth=4, strides=2),
          # timm's lambda layers (LambdaResNet26T, 50TS: r 9): at 14^2 q . E is no larger
          # than the lambdas (h n u <= k v) while the scope is a third of the map.
          "r9": dict(receptive_field=9, intra_depth=1),
          "r9s2": dict(receptive_field=9, intra_depth=1, strides=2, pool_size=2)}
# Shapes measured only up to a map size. The strided layer differs from "r23" where the pool is
# folded in (q . E first pools its maps, query windows their scores): up to 56^2, what a
# strided lambda layer meets in c3 at 224 px (layouts with lambda layers in c3) or in c4 at 448 px.
# r 9 (timm's LambdaResNet26T and 50TS: 16^2 and, strided, 32^2 at 256 px): 14^2, where `choose`
# decides between q . E first and query windows by the scope, and 28^2.
MAX_SIZE = {"r23s2": 56, "r7u4s2": 56, "r9": 28, "r9s2": 28}
# Tables recorded while "local" was named "conv" hold "position": "conv" (read as "local":
# common.position_mode).
LAYER = dict(key_dim=16, num_heads=4, position="local")
# rounds: (slow cells, others) round-robin calls after the probe; slow: best probe > budget_s.
FULL = dict(batch=8, width=256, sizes=(14, 28, 56, 112), rounds=(1, 2), budget_s=1.0)
QUICK = dict(batch=2, width=32, sizes=(8, 16), rounds=(1, 1), budget_s=0.05)
# An n x m formulation slower than this many times the best at one size is not run at the larger
# sizes of that shape and phase (`drop_from_larger_maps`).
DROP_AFTER = 3.0
QUADRATIC = ("queries_first", "lambdas_first")
# 8 GiB: query windows at 112^2 run forward (~3.3 GiB estimated, 3.1-4.2 GiB measured peak with
# TensorFlow's allocator) and forward + backward in half-scope blocks (~7 GiB estimated, 9.4-10.5
# GiB process peak); in 2-scope blocks (~11 GiB estimated stored) only where training recomputes
# them image by image (~1.4 GiB estimated: one image's in 8, `RECOMPUTED_BATCH_DIVISOR`). The
# tables recorded before the recomputation (up to 2026-12-05) counted the whole batch there and
# skipped those cells.
MEMORY_LIMIT_BYTES = 8 * 1024 ** 3
PHASES = ("fwd", "train")
TABLES = os.path.join(common.REPO_ROOT, "benchmarks", "results", "formulations")  # <cpu kind>.json
PLOT = os.path.join(common.REPO_ROOT, "benchmarks", "results", "formulations_versus_timm.png")


def estimate_bytes(formulation, size, batch, shape, phase, runtime):
    """`formulations.estimate_bytes` of a suite cell (LAYER and `shape` on a size x size map)
    whose calls run the `formulations.plan` of `runtime` (a `Runtime`): query windows' blocks,
    and, where training recomputes them image by image, those of a few images
    (`autotuning.RECOMPUTED_BATCH_DIVISOR`)."""
    from lambda_keras.layers import formulations

    layer = dict(num_heads=LAYER["num_heads"], intra_depth=shape["intra_depth"],
                 pool_size=shape.get("pool_size", 3))
    strides, receptive_field = shape.get("strides", 1), shape["receptive_field"]
    plan = formulations.plan(formulation, runtime, phase == "train", strides, receptive_field,
                             rows=size, cols=size, batch=batch, **layer)
    return formulations.estimate_bytes(
        plan, size, size, batch, key_dim=LAYER["key_dim"], **layer,
        receptive_field=receptive_field, strides=strides, phase=phase)


# ---------------------------------------------------------------------------- worker side
def _runtime_description(backend):
    """The backend's version and state (`runtime.backend_state`), and the device the layer runs
    on ("cpu", "gpu", "tpu" as `runtime.current_runtime` sees it, and its name)."""
    device = runtime.current_runtime().device
    return {"backend": backend, "device": device,
            "device_name": runtime.device_name(backend, device), **runtime.backend_state(backend)}


def _make_layer(shape, formulation, size, width, seed=0):
    import keras
    from lambda_keras.layers import LambdaLayer

    keras.utils.set_random_seed(seed)
    layer = LambdaLayer(**LAYER, **shape, implementation=formulation)
    layer.build((None, size, size, width))
    return layer


def run_engine(engine, settings, threads, out_path, log=print):
    """All cells of one engine, in this process (KERAS_BACKEND and oneDNN already set)."""
    backend, _, jit_compile = ENGINES[engine]
    if backend == "torch":
        common.setup_torch(threads)
    elif backend == "tensorflow":
        common.setup_tensorflow(threads).get_logger().setLevel("ERROR")  # no retracing notes
    import keras
    from lambda_keras.layers import formulations
    from lambda_keras.layers.formulations import autotuning

    if keras.backend.backend() != backend:
        raise RuntimeError(f"KERAS_BACKEND is {keras.backend.backend()}, expected {backend}")
    if settings.get("rows"):  # a what-if run: the rule and plans of another kind of CPU
        runtime._process_cpu_kind = lambda: settings["rows"]  # noqa: SLF001
    steps_for = autotuning.STEPS[backend]
    batch, width = settings["batch"], settings["width"]
    if settings.get("picks_only"):
        return _record_picks(engine, settings, steps_for, jit_compile, out_path)
    hopeless_before = {}  # (shape, phase) -> {formulation: size after which it is not run}
    traced_in = formulations.current_runtime(jit_compile)  # the one the steps trace in
    for shape_name, shape in _shapes(settings).items():
        for size in _sizes(shape_name, settings):
            x = np.random.default_rng(0).standard_normal(
                (batch, size, size, width)).astype("float32")
            steps = {f: steps_for(_make_layer(shape, f, size, width), x, jit_compile)
                     for f in PROBE_ORDER}
            auto_layer = _make_layer(shape, "auto", size, width)
            _, auto_trace = steps_for(auto_layer, x, jit_compile)
            for phase in PHASES:
                cell = dict(engine=engine, shape=shape_name, size=size, phase=phase,
                            batch=batch, width=width, results={},
                            auto=_auto_pick(auto_layer, auto_trace, phase))
                skipped = hopeless_before.setdefault((shape_name, phase), {})
                probes = {}
                for formulation in PROBE_ORDER:
                    estimate = estimate_bytes(formulation, size, batch, shape, phase,
                                              traced_in)
                    if estimate > MEMORY_LIMIT_BYTES:
                        cell["results"][formulation] = dict(
                            status="skipped", reason=f"estimated {common.gib(estimate):.1f} GiB "
                            f"of n x m tensors > {common.gib(MEMORY_LIMIT_BYTES):.0f} GiB")
                        continue
                    if formulation in skipped:
                        cell["results"][formulation] = dict(
                            status="skipped", reason=f"too slow at {skipped[formulation]}^2 "
                            "(an n x m formulation > 3x the fastest)")
                        continue
                    fn = steps[formulation][0][phase]
                    fn()  # warm-up: tracing, compilation
                    t0 = time.perf_counter()
                    fn()
                    probes[formulation] = time.perf_counter() - t0
                best = min(probes.values())
                timed = {}
                for formulation, probe in probes.items():
                    if probe > autotuning.HOPELESS * best:  # as `autotune`: not timed further
                        if drop_from_larger_maps(formulation, probe, best):
                            skipped[formulation] = size
                        cell["results"][formulation] = dict(
                            status="hopeless", median_s=probe, repeats=1,
                            reason=f"probe {probe / best:.0f}x the best")
                    else:
                        timed[formulation] = steps[formulation][0][phase]
                slow = best > settings["budget_s"]
                rounds = settings["rounds"][0] if slow else settings["rounds"][1]
                stats = common.measure_interleaved(
                    timed, warmup=0, min_repeats=rounds, max_repeats=rounds,
                    budget_s=settings["budget_s"])
                for formulation, entry in stats.items():
                    # 1 or 2 rounds (their min and max are the calls' times): the median of the
                    # probe and those calls; more (`--rounds`): the rounds' median alone.
                    rounds = [entry["min_s"], entry["max_s"]][:entry["repeats"]]
                    median = (float(np.median([probes[formulation]] + rounds))
                              if entry["repeats"] <= 2 else entry["median_s"])
                    entry = {**entry, "median_s": median,
                             "rounds_median_s": entry["median_s"],
                             "probe_s": probes[formulation], "status": "ok"}
                    entry.pop("peak_bytes", None), entry.pop("memory_method", None)
                    cell["results"][formulation] = entry
                _finish_cell(cell)
                fastest_s = cell["results"][cell["fastest"]]["median_s"]
                for formulation, result in cell["results"].items():
                    if drop_from_larger_maps(formulation, result.get("median_s", 0), fastest_s):
                        skipped.setdefault(formulation, size)
                log(_describe(cell))
                with open(out_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(cell) + "\n")
            del steps, auto_layer
            if backend == "torch" and shape_name == "r23":
                _time_timm(size, width, batch, threads, settings, out_path, log)


def drop_from_larger_maps(formulation, seconds, fastest_s):
    """Whether a formulation that took `seconds` in a cell whose fastest took `fastest_s` is not run
    at the larger maps of that shape and phase: an n x m formulation (QUADRATIC) more than
    DROP_AFTER times the fastest, which only falls further behind as the map grows. A linear one
    (row windows, query windows, the convolution) is probed again at every size, even after a
    hopeless probe: its cost relative to the others can shrink (JAX's r 23 query windows forward
    on the AMD EPYC with AVX-512: 18x q . E first at 14^2, 1.22x row windows at 56^2, the fastest
    at 112^2 in one run, 1.18x row windows in another)."""
    return formulation in QUADRATIC and seconds > DROP_AFTER * fastest_s


def _shapes(settings):
    return {name: SHAPES[name] for name in settings.get("shapes", SHAPES)}


def _sizes(shape_name, settings):
    return [s for s in settings["sizes"] if s <= MAX_SIZE.get(shape_name, s)]


def _record_picks(engine, settings, steps_for, jit_compile, out_path):
    """Only what "auto" picks in every cell (traced, not timed): after a change of the rule."""
    for shape_name, shape in _shapes(settings).items():
        for size in _sizes(shape_name, settings):
            x = np.zeros((settings["batch"], size, size, settings["width"]), "float32")
            layer = _make_layer(shape, "auto", size, settings["width"])
            _, trace = steps_for(layer, x, jit_compile)
            for phase in PHASES:
                cell = dict(engine=engine, shape=shape_name, size=size, phase=phase,
                            auto=_auto_pick(layer, trace, phase))
                with open(out_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(cell) + "\n")


def _auto_pick(layer, trace, phase):
    """The formulation the "auto" layer uses in this phase, recorded while tracing it."""
    layer._last_formulation = None  # noqa: SLF001 (own package: set by LambdaLayer.call)
    trace(phase)
    return layer._last_formulation  # noqa: SLF001


def _finish_cell(cell):
    timed = {f: r["median_s"] for f, r in cell["results"].items() if r["status"] == "ok"}
    fastest = min(timed, key=timed.get)
    cell["fastest"] = fastest
    auto = cell["auto"]
    cell["auto_vs_fastest"] = (cell["results"][auto]["median_s"] / timed[fastest]
                               if auto in cell["results"] and "median_s" in cell["results"][auto]
                               else None)


def _time_timm(size, width, batch, threads, settings, out_path, log):
    from benchmarks import peer

    forward, forward_backward = peer.step_functions(size, width, batch, threads)
    for phase, fn in (("fwd", forward), ("train", forward_backward)):
        fn()
        stats = common.measure_interleaved({"timm": fn}, warmup=0,
                                           min_repeats=settings["rounds"][1],
                                           max_repeats=settings["rounds"][1],
                                           budget_s=settings["budget_s"])["timm"]
        stats.pop("peak_bytes", None), stats.pop("memory_method", None)
        record = dict(engine="timm", shape="r23", size=size, phase=phase, batch=batch,
                      width=width, results={"timm": {**stats, "status": "ok"}})
        log(f"  timm r23 {size}x{size} {phase}: {1e3 * stats['median_s']:.1f} ms")
        with open(out_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _describe(cell):
    parts = []
    for formulation in PROBE_ORDER:
        result = cell["results"].get(formulation, {})
        if "median_s" in result:
            mark = "!" if result["status"] == "hopeless" else ""
            parts.append(f"{formulation} {1e3 * result['median_s']:.1f}{mark}")
        else:
            parts.append(f"{formulation} -")
    ratio = cell["auto_vs_fastest"]
    return (f"  {cell['engine']} {cell['shape']} {cell['size']}x{cell['size']} {cell['phase']}: "
            + ", ".join(parts) + f" ms | auto={cell['auto']} "
            + (f"{ratio:.2f}x best" if ratio else "(not timed)"))


# ---------------------------------------------------------------------------- driver side
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code only")
    parser.add_argument("--engines", type=common.comma_list(ENGINES), default=",".join(ENGINES))
    parser.add_argument("--sizes", type=common.comma_list(kind=int), default=None,
                        help="comma-separated map sizes")
    parser.add_argument("--shapes", type=common.comma_list(SHAPES), default=",".join(SHAPES),
                        help="comma-separated shapes (default: all); the stored cells of the "
                             "other shapes are kept")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rows", default=None,
                        help="what-if run: trace \"auto\" and size query windows' blocks with the "
                             "rule rows of this kind of CPU (e.g. amd-avx512) instead of this "
                             "machine's; the table records it (use --out: it is not this CPU's "
                             "table)")
    parser.add_argument("--rounds", type=common.comma_list(kind=int, length=2), default=None,
                        help="SLOW,OTHERS: round-robin calls per formulation after the probe, in "
                             "cells whose best probe is over budget_s and in the others "
                             f"(default {FULL['rounds'][0]},{FULL['rounds'][1]}; a GPU's calls "
                             "take milliseconds: more rounds cost little there)")
    parser.add_argument("--out", default=None, help="directory of the per-machine tables")
    parser.add_argument("--machine", default=None,
                        help="table to print or re-pick (default: this machine's tag)")
    parser.add_argument("--picks-only", action="store_true",
                        help="re-record only the formulation auto picks in each stored cell")
    parser.add_argument("--table", action="store_true",
                        help="print the Markdown tables of the stored results and exit")
    parser.add_argument("--versus-timm", action="store_true",
                        help="print auto's speed-up over timm's layer (r 23) per engine, on "
                             "every stored table, and exit")
    parser.add_argument("--plot", action="store_true",
                        help=f"write {os.path.relpath(PLOT, common.REPO_ROOT)} (auto's speed-up "
                             "over timm's layer, every stored table and paired run) and exit")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--jsonl", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows:
        from lambda_keras.layers.formulations import rule

        kinds = tuple(rule.CPU_RULES)
        if args.rows not in kinds:
            parser.error(f"`--rows` must be a measured kind of CPU out of {kinds}. "
                         f"Received: --rows={args.rows!r}")
        if not args.out:
            parser.error("`--rows` needs `--out`: a what-if run is not this CPU's table. "
                         f"Received: --rows={args.rows!r} without --out")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    threads = args.threads or runtime.usable_cores()
    if args.worker:
        settings = json.loads(args.settings)
        run_engine(args.worker, settings, threads, args.jsonl)
        with open(args.jsonl + ".runtime", "w", encoding="utf-8") as f:
            json.dump(_runtime_description(ENGINES[args.worker][0]), f)
        return 0

    settings = dict(QUICK if args.quick else FULL)
    if args.sizes:
        settings["sizes"] = args.sizes
    if args.rounds:
        settings["rounds"] = args.rounds
    if args.rows:
        settings["rows"] = args.rows
    shapes = list(args.shapes)
    out_dir = args.out or (tempfile.mkdtemp(prefix="bench-formulations-") if args.quick else TABLES)
    os.makedirs(out_dir, exist_ok=True)
    from benchmarks import formulation_tables
    if args.versus_timm or args.plot:
        tables = formulation_tables.load_tables(out_dir)
        if args.plot:
            print(f"[formulations] {formulation_tables.plot_versus_timm(tables, PLOT)}")
        else:
            print(formulation_tables.versus_timm_markdown(tables))
        return 0
    path = os.path.join(out_dir, f"{args.machine or runtime.cpu_kind()}.json")
    if args.table:
        with open(path, encoding="utf-8") as f:
            print(formulation_tables.markdown_tables(json.load(f)))
        return 0
    if args.picks_only:
        return _update_picks(path, args.engines, threads)
    # Engines run in one invocation or several: the cells of the engines run now replace theirs.
    data = dict(suite="formulations", quick=args.quick, settings=settings, layer=LAYER,
                shapes=SHAPES, machine=common.machine_description(threads), engines={}, cells=[])
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
        same = ("batch", "width")
        if all(previous["settings"][k] == settings[k] for k in same):
            data.update(engines=previous["engines"], cells=previous["cells"], settings=dict(
                settings, sizes=sorted({*previous["settings"]["sizes"], *settings["sizes"]})))
    for engine in args.engines:
        backend, env_update, jit_compile = ENGINES[engine]
        jsonl = os.path.join(out_dir, f".formulations-{engine}.jsonl")
        if os.path.exists(jsonl):
            os.remove(jsonl)
        env = {**common.worker_env(threads), "KERAS_BACKEND": backend, **env_update}
        command = [sys.executable, "-m", "benchmarks.formulations", "--worker", engine,
                   "--settings", json.dumps({**settings, "shapes": shapes}), "--jsonl", jsonl,
                   "--threads", str(threads)]
        print(f"[formulations] {engine} (KERAS_BACKEND={backend}, "
              f"{' '.join(f'{k}={v}' for k, v in env_update.items()) or 'defaults'})", flush=True)
        t0, load_before = time.time(), common.load_average()
        process = subprocess.run(command, env=env, cwd=common.REPO_ROOT)
        described = {}
        if os.path.exists(jsonl + ".runtime"):
            with open(jsonl + ".runtime", encoding="utf-8") as f:
                described = json.load(f)
            os.remove(jsonl + ".runtime")
        cells = []
        if os.path.exists(jsonl):
            with open(jsonl, encoding="utf-8") as f:
                cells = [json.loads(line) for line in f]
            os.remove(jsonl)
        run = dict(sizes=list(settings["sizes"]), returncode=process.returncode,
                   wall_s=round(time.time() - t0, 1), load_before=load_before,
                   load_after=common.load_average(), finished=time.strftime("%Y-%m-%d %H:%M"))
        record = dict(described, jit_compile=jit_compile, rule_engine=engine,
                      environment=env_update,
                      **({"rows": settings["rows"]} if settings.get("rows") else {}))
        merge_run(data, engine, cells, shapes, record, run)
        utils.write_json(path, data)
        print(f"[formulations] {engine}: {len(cells)} cells, {run['wall_s']:.0f} s -> {path}",
              flush=True)
    failed = [e for e, d in data["engines"].items()
              if d["returncode"] != 0 or any(r["returncode"] for r in d.get("runs", {}).values())]
    return 1 if failed else 0


def merge_run(data, engine, cells, shapes, record, run):
    """Puts one engine's run (`cells` of `shapes` at `run["sizes"]`) into the table `data`.

    The new cells replace the stored ones of that engine (and timm's, run by "torch" with r 23)
    at those shapes and sizes only. A run of every shape and of every size the table holds
    (`data["settings"]["sizes"]`) replaces the engine's record; a partial one updates it and
    is kept under `runs` ("r23", or "r23@112" for some sizes), where it replaces the stored runs
    whose cells it re-measured all of (their shapes and sizes within its own), so the runs name
    when each stored cell was timed.
    """
    sizes = run["sizes"]
    engines = {engine} | ({"timm"} if engine == "torch" and "r23" in shapes else set())
    data["cells"] = [c for c in data["cells"] if not (
        c["engine"] in engines and c["shape"] in shapes and c["size"] in sizes)] + cells
    every_size = set(sizes) >= set(data["settings"]["sizes"])
    if (set(shapes) == set(SHAPES) and every_size) or engine not in data["engines"]:
        data["engines"][engine] = dict(record, **run, shapes=shapes)
    else:
        data["engines"][engine].update(record)
        key = ",".join(shapes) + ("" if every_size else "@" + ",".join(map(str, sizes)))
        runs = data["engines"][engine].setdefault("runs", {})
        for stored in [k for k, r in runs.items() if set(k.partition("@")[0].split(","))
                       <= set(shapes) and set(r["sizes"]) <= set(sizes)]:
            del runs[stored]
        runs[key] = run


def _update_picks(path, engines, threads):
    """Re-records "auto"'s pick in every cell after a rule change: traced in the engine's real
    runtime on this machine's table; on another machine's table (not re-traceable here) from the
    rule and the runtime recorded with it (the engine gets `picks_from: "rule"`)."""
    from benchmarks import formulation_tables
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    foreign = os.path.basename(path) != f"{runtime.cpu_kind()}.json"
    for engine in engines:
        backend, env_update, _ = ENGINES[engine]
        measured = data["engines"].get(engine)
        if not measured:
            continue
        if foreign:
            for cell in data["cells"]:
                if cell["engine"] == engine:
                    cell["auto"] = formulation_tables.rule_pick(data, cell)
                    _finish_cell(cell)
            measured.update(rule_engine=engine, picks_from="rule")
            print(f"[formulations] {engine}: picks recomputed from the rule", flush=True)
            continue
        settings = dict(data["settings"], sizes=measured.get("sizes", data["settings"]["sizes"]),
                        picks_only=True)
        jsonl = path + f".{engine}.picks"
        env = {**common.worker_env(threads), "KERAS_BACKEND": backend, **env_update}
        subprocess.run([sys.executable, "-m", "benchmarks.formulations", "--worker", engine,
                        "--settings", json.dumps(settings), "--jsonl", jsonl,
                        "--threads", str(threads)], env=env, cwd=common.REPO_ROOT, check=True)
        with open(jsonl, encoding="utf-8") as f:
            picks = {(c["shape"], c["size"], c["phase"]): c["auto"] for c in map(json.loads, f)}
        os.remove(jsonl)
        for name in (jsonl + ".runtime",):
            if os.path.exists(name):
                os.remove(name)
        for cell in data["cells"]:
            key = (cell["shape"], cell["size"], cell["phase"])
            if cell["engine"] == engine and key in picks:
                cell["auto"] = picks[key]
                _finish_cell(cell)
        measured["rule_engine"] = engine  # the rule row it follows now
        measured.pop("picks_from", None)  # traced again
        print(f"[formulations] {engine}: picks re-recorded", flush=True)
    utils.write_json(path, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
