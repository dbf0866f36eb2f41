"""Paired speed of the lambda layer against timm's PyTorch layer, in alternating processes.

    python -m benchmarks.paired [--engines tf_onednn,tf] [--sizes 14,28,56,112] [--phases fwd]
                                [--pairs 3] [--calls 5] [--out benchmarks/results/paired] [--quick]
    python -m benchmarks.paired --history {runs,summary} [--out benchmarks/results/paired]

The formulation suite (benchmarks/formulations.py) times timm's layer once, in the "torch"
process, minutes to an hour before or after the other engines; a shared host's speed drifts by up
to 2x in that time (benchmarks/README.md), which moves its "timm / auto" column as much. Here
each (size, phase) runs `pairs` rounds; a round starts one process per engine and one for timm
(TensorFlow and PyTorch cannot share one), their order rotated from round to round, each building
its layer, warming it up (two calls, continued for `warmup_s` seconds) and timing `calls` calls
(median). A round's ratio is timm's median over the engine's; the result per cell is the median of
the rounds' ratios, with their range.
The lambda layer is `LambdaLayer(implementation="auto")` with the suite's r 23 shape (batch 8,
d 256, |k| 16, |h| 4) and its engines (formulations.ENGINES: backend, oneDNN and allocator,
XLA); its pick is recorded per round. Results: `<out>/<cpu kind>.json` (machine, CPU flags, each
engine's oneDNN state as TensorFlow reported it) and a Markdown table on stdout.
`--history runs` prints every stored run of the folder instead (one row per run and engine, then the
median and range of the runs' medians per CPU kind, warm-up and engine; `--history summary` those
rows of each CPU kind's latest warm-up only): the tables of README.md and benchmarks/README.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import common
from benchmarks import formulations as suite
from lambda_keras import runtime, utils

PEER = "timm"
# NOTE: warmup_s. TensorFlow's graph executor settles after tens of calls, timm's layer after two
# (PyTorch's first calls at a new shape create its oneDNN primitives): per-call times after
# tracing at 14² (r 23, batch 8, d 256; the AMD EPYC without AVX-512, 2026-12-07, two processes
# each, medians of calls 3-7 / 13-22 / 43-82 / 163-322): TensorFlow without oneDNN 5.2 / 4.6 /
# 4.1 / 4.4 ms and 4.8 / 4.1 / 4.3 / 4.3 ms, with oneDNN 5.6 / 5.4 / 4.7 / 4.3 and 4.1 / 3.9 / 3.6 /
# 3.6, timm 9.8 / 9.9 / 10.0 / 9.5 and 10.2 / 10.0 / 13.6 / 10.1. Runs before warmup_s (2 warm-up
# calls, then `calls` timed) caught TensorFlow 12-32% above its steady state at 14².
FULL = dict(batch=8, width=256, sizes=(14, 28, 56, 112), pairs=3, calls=5, warmup_s=1.0)
QUICK = dict(batch=2, width=32, sizes=(8,), pairs=2, calls=2, warmup_s=0.0)
RESULTS = os.path.join(common.REPO_ROOT, "benchmarks", "results", "paired")
WARMUP = 2  # warm-up calls at least, each engine and timm


# ---------------------------------------------------------------------------- worker side
def time_in_this_process(name, size, phase, settings, threads):
    """Median seconds of `calls` calls of engine `name`'s layer (or timm's, "timm") at a
    size x size map, after WARMUP calls; with the formulation "auto" picked and the runtime."""
    batch, width = settings["batch"], settings["width"]
    if name == PEER:
        from benchmarks import peer

        forward, forward_backward = peer.step_functions(size, width, batch, threads)
        step, pick, backend = {"fwd": forward, "train": forward_backward}[phase], None, "torch"
    else:
        backend, _, jit_compile = suite.ENGINES[name]
        if backend == "torch":
            common.setup_torch(threads)
        elif backend == "tensorflow":
            common.setup_tensorflow(threads)
        from lambda_keras.layers.formulations import autotuning

        layer = suite._make_layer(suite.SHAPES["r23"], "auto", size, width)
        x = np.random.default_rng(0).standard_normal((batch, size, size, width)).astype("float32")
        steps, trace = autotuning.STEPS[backend](layer, x, jit_compile)
        step, pick = steps[phase], suite._auto_pick(layer, trace, phase)
    stats = common.measure(step, warmup=WARMUP, min_repeats=settings["calls"],
                           max_repeats=settings["calls"], budget_s=0.0,
                           warmup_s=settings.get("warmup_s", 0.0))
    return dict(median_s=stats["median_s"], calls=settings["calls"], auto=pick,
                runtime=suite._runtime_description(backend))


# ---------------------------------------------------------------------------- driver side
def paired_ratios(rounds, engines):
    """Per engine, from rounds of {name: median seconds} that each hold timm's: the median of
    the rounds' timm / engine ratios, the lowest and highest, and every ratio in round order."""
    found = {}
    for engine in engines:
        ratios = [r[PEER] / r[engine] for r in rounds if PEER in r and r.get(engine)]
        if ratios:
            found[engine] = dict(median=statistics.median(ratios), low=min(ratios),
                                 high=max(ratios), ratios=ratios)
    return found


def round_order(names, index):
    """The processes of round `index`: `names` rotated by `index` (timm first, then last...)."""
    shift = index % len(names)
    return names[shift:] + names[:shift]


def markdown_table(data):
    """| engine | phase | <size>² ... | with "median (low-high)" speed-ups over timm per cell."""
    sizes = sorted({cell["size"] for cell in data["cells"]})
    lines = ["| engine (timm / lambda layer, median of paired rounds (range)) | phase | "
             + " | ".join(f"{size}²" for size in sizes) + " |",
             "|---" * (2 + len(sizes)) + "|"]
    for engine in data["engines"]:
        for phase in suite.PHASES:
            row = [_ratio_text(_cell_ratio(data, size, phase, engine)) for size in sizes]
            if any(value != "-" for value in row):
                lines.append(f"| {engine} | {phase} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def load_runs(folder):
    """Every paired run stored in `folder` (*.json files of this suite), oldest first."""
    runs = [data for data in common.read_json_folder(folder).values()
            if data.get("suite") == "paired"]
    return sorted(runs, key=lambda data: data["started"])


def run_group(data):
    """The runs one summary row may pool: the CPU kind, and the warm-up where a run had one
    beyond WARMUP calls ("amd-avx2", "amd-avx2, warm-up 1 s")."""
    warmup_s = data["settings"].get("warmup_s", 0.0)
    return data["cpu_kind"] + (f", warm-up {warmup_s:g} s" if warmup_s else "")


def latest_warmup_runs(runs):
    """`runs` (oldest first) less those of a CPU kind whose warm-up its latest run changed."""
    latest = {data["cpu_kind"]: data["settings"].get("warmup_s", 0.0) for data in runs}
    return [data for data in runs
            if data["settings"].get("warmup_s", 0.0) == latest[data["cpu_kind"]]]


def run_medians(runs, group=run_group):
    """The runs' medians grouped as {group(run): {(engine, phase): {size: [each run's median]}}},
    in run order."""
    found = {}
    for data in runs:
        for cell in data["cells"]:
            for engine, ratio in cell["ratios"].items():
                found.setdefault(group(data), {}).setdefault(
                    (engine, cell["phase"]), {}).setdefault(cell["size"], []).append(
                        ratio["median"])
    return found


def history_table(runs, per_run=True):
    """| run | engine | phase | <size>² ... |: each run's "median (low-high)" per engine and phase
    (`per_run`), then per `run_group` (of every run with `per_run`, else of each CPU kind's latest
    warm-up), engine and phase the median of the runs' medians with their lowest and highest."""
    sizes = sorted({cell["size"] for data in runs for cell in data["cells"]})
    lines = ["| run (CPU kind, started, rounds per cell) | engine | phase | "
             + " | ".join(f"{size}²" for size in sizes) + " |",
             "|---" * (3 + len(sizes)) + "|"]
    for data in runs if per_run else ():
        run = f"{run_group(data)}, {data['started']}, {data['settings']['pairs']}"
        for engine in data["engines"]:
            for phase in suite.PHASES:
                row = [_ratio_text(_cell_ratio(data, size, phase, engine)) for size in sizes]
                if any(value != "-" for value in row):
                    lines.append(f"| {run} | {engine} | {phase} | " + " | ".join(row) + " |")
    for group, by_key in run_medians(runs if per_run else latest_warmup_runs(runs)).items():
        for (engine, phase), by_size in by_key.items():
            row = [f"{statistics.median(by_size[size]):.1f}x ({min(by_size[size]):.1f}-"
                   f"{max(by_size[size]):.1f}), {_runs(len(by_size[size]))}" if size in by_size
                   else "-" for size in sizes]
            lines.append(f"| **{group}, all runs** | {engine} | {phase} | "
                         + " | ".join(row) + " |")
    return "\n".join(lines)


def _cell_ratio(data, size, phase, engine):
    """The speed-up summary ({median, low, high, ratios}) of an engine in a run's cell, or None."""
    return next((cell["ratios"].get(engine) for cell in data["cells"]
                 if cell["size"] == size and cell["phase"] == phase), None)


def _ratio_text(ratio):
    return f"{ratio['median']:.1f}x ({ratio['low']:.1f}-{ratio['high']:.1f})" if ratio else "-"


def _runs(count):
    return f"{count} run" + ("s" if count != 1 else "")


def _run_worker(name, size, phase, settings, threads):
    backend, env_update = ("torch", {}) if name == PEER else suite.ENGINES[name][:2]
    env = {**common.worker_env(threads, backend=backend), **env_update}
    with tempfile.TemporaryDirectory(prefix="bench-paired-") as folder:
        result = os.path.join(folder, "result.json")
        command = [sys.executable, "-m", "benchmarks.paired", "--worker", name, "--size",
                   str(size), "--phase", phase, "--settings", json.dumps(settings),
                   "--threads", str(threads), "--result", result]
        process = subprocess.run(command, env=env, cwd=common.REPO_ROOT)
        if process.returncode != 0 or not os.path.exists(result):
            raise RuntimeError(f"the {name} worker at {size}x{size} {phase} failed "
                               f"(exit code {process.returncode})")
        with open(result, encoding="utf-8") as f:
            return json.load(f)


def run(engines, settings, phases, threads, log=print):
    """Every (size, phase) cell: `pairs` rounds of one process per engine and one for timm."""
    data = dict(suite="paired", settings=settings, shape=dict(suite.LAYER, **suite.SHAPES["r23"]),
                engines=list(engines), machine=common.machine_description(threads),
                cpu_kind=runtime.cpu_kind(), started=time.strftime("%Y-%m-%d %H:%M"), cells=[])
    names = [PEER, *engines]
    for size in settings["sizes"]:
        for phase in phases:
            rounds, details = [], []
            for index in range(settings["pairs"]):
                timed = {name: _run_worker(name, size, phase, settings, threads)
                         for name in round_order(names, index)}
                rounds.append({name: result["median_s"] for name, result in timed.items()})
                details.append(timed)
                log(f"  {size}x{size} {phase} round {index + 1}: " + ", ".join(
                    f"{name} {1e3 * result['median_s']:.1f} ms"
                    + (f" ({result['auto']})" if result["auto"] else "")
                    for name, result in timed.items()))
            data["cells"].append(dict(size=size, phase=phase, rounds=details,
                                      ratios=paired_ratios(rounds, engines)))
    data["finished"] = time.strftime("%Y-%m-%d %H:%M")
    return data


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", type=common.comma_list(suite.ENGINES),
                        default="tf_onednn,tf")
    parser.add_argument("--sizes", type=common.comma_list(kind=int), default=None,
                        help="comma-separated map sizes")
    parser.add_argument("--phases", type=common.comma_list(suite.PHASES), default="fwd",
                        help="fwd, train or fwd,train")
    parser.add_argument("--pairs", type=int, default=None, help="rounds per cell")
    parser.add_argument("--calls", type=int, default=None, help="timed calls per process")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="directory of the per-machine results")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code only")
    parser.add_argument("--history", choices=("runs", "summary"), default=None,
                        help="print the stored runs of --out (no timing): every run, or only "
                             "the median of the runs per engine")
    for hidden in ("--worker", "--size", "--phase", "--settings", "--result"):
        parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return args
    for name in ("pairs", "calls"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1. Received: {getattr(args, name)}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    threads = args.threads or runtime.usable_cores()
    if args.worker:
        result = time_in_this_process(args.worker, int(args.size), args.phase,
                                      json.loads(args.settings), int(args.threads))
        with open(args.result, "w", encoding="utf-8") as f:
            json.dump(result, f)
        return 0
    if args.history:
        print(history_table(load_runs(args.out or RESULTS), per_run=args.history == "runs"))
        return 0
    settings = dict(QUICK if args.quick else FULL)
    if args.sizes:
        settings["sizes"] = args.sizes
    for name in ("pairs", "calls"):
        if getattr(args, name):
            settings[name] = getattr(args, name)
    data = run(args.engines, settings, args.phases, threads)
    out_dir = args.out or (tempfile.mkdtemp(prefix="bench-paired-") if args.quick else RESULTS)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{data['cpu_kind']}.json")
    utils.write_json(path, data)
    print(markdown_table(data))
    print(f"[paired] {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
