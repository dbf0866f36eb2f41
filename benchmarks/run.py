"""Benchmark entry point: `python -m benchmarks.run [--quick]
[--only layer,peer,model,export,backends] [--out DIR] [--onednn default|0|1]`.

Runs the selected suites (layer, peer, model, export, backends; all by default) in worker
processes, then writes to DIR (default benchmarks/results, or a temporary directory with --quick):
  <suite>.json   every configuration: settings, timings (median, min, max, quartiles), peak memory
  summary.json   machine, load averages, durations and the targets with their measured ratios
  summary.md     the same as Markdown tables (the README's Performance section is pasted from it)
  *.png          plots (peak memory and time vs positions, model throughput, export latency,
                 models per Keras backend)
Every ratio in summary.json compares numbers measured in one suite of one run. A full run of some
suites (--only) into a directory that holds other suites' results keeps those in the summary,
marked as from an earlier run (`suites_from_earlier_runs`).

--quick shrinks every suite (tiny maps and models, few repeats) to check that the benchmark code
works in a few minutes; its numbers say nothing about speed.
"""

import argparse
import json
import os
import sys
import tempfile
import time

from benchmarks import backends, common, export, layer, model, peer, plots, report
from lambda_keras import runtime, utils

SUITES = {"layer": layer, "peer": peer, "model": model, "export": export, "backends": backends}
# Suites whose jobs each get their own process in a full run: a layer map size (its variants
# timed round-robin), a timm size (clean RSS peak). Model and export jobs are one process each.
ISOLATED = ("layer", "peer")
TIMEOUT_S = {"layer": 1800, "peer": 900, "model": 3000, "export": 2400, "backends": 1800}
DEFAULT_OUT = os.path.join(common.REPO_ROOT, "benchmarks", "results")
DEFAULT_BUDGET_GB = 16.0  # the model suite's batch-32 process needs ~12 GiB of RSS


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and repeats: checks that the code works (minutes)")
    parser.add_argument("--only", type=common.comma_list(SUITES), default=",".join(SUITES),
                        help=f"comma-separated suites out of {','.join(SUITES)} (default: all)")
    parser.add_argument("--out", default=None,
                        help="results directory (default: benchmarks/results; --quick: a temp dir)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for TensorFlow, PyTorch and LiteRT (default: usable cores)")
    parser.add_argument("--memory-budget-gb", type=float, default=DEFAULT_BUDGET_GB,
                        help="skip (and kill) configurations above this RSS (default: %(default)s)")
    parser.add_argument("--onednn", choices=("default", "0", "1"), default="default",
                        help="TF_ENABLE_ONEDNN_OPTS for the workers: TensorFlow's default for this "
                             "CPU (or your environment's), off (0) or on (1); the summary records "
                             "what TensorFlow actually ran with")
    parser.add_argument("--timeout-s", type=float, default=None,
                        help="limit per worker process (default: per suite, 900-3000 s)")
    args = parser.parse_args(argv)
    args.suites = [s for s in SUITES if s in args.only]
    if args.threads is None:
        args.threads = runtime.usable_cores()
    if args.threads <= 0:
        parser.error(f"`--threads` must be positive. Received: --threads={args.threads}")
    args.onednn = None if args.onednn == "default" else args.onednn
    if args.out is None:
        args.out = (os.path.join(tempfile.gettempdir(), "lambda_keras_bench_quick") if args.quick
                    else DEFAULT_OUT)
    return args


def earlier_suites(out_dir, run_now):
    """{suite: its <suite>.json} for the suites not in `run_now` whose results are in `out_dir`:
    a run of some suites keeps the others' last full results in its summary."""
    earlier = {}
    for name in SUITES:
        path = os.path.join(out_dir, f"{name}.json")
        if name not in run_now and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if not data.get("quick"):
                earlier[name] = data
    return earlier


def run_suite(name, args, log):
    module = SUITES[name]
    settings = module.QUICK if args.quick else module.FULL
    budget = int(args.memory_budget_gb * common.GIB)
    groups = (module.plan(settings, budget, quick=args.quick) if name == "model"
              else module.plan(settings, budget))
    log(f"[{name}] {sum(len(g) for g in groups)} configurations; load {common.load_average()}")
    load_before, started = common.load_average(), time.perf_counter()
    if args.quick and not getattr(module, "ONE_PROCESS_PER_GROUP", False):
        # one process per suite: start-up time dominates tiny configurations
        groups = [[job for group in groups for job in group]]
    results = common.run_groups(
        groups, args.threads, args.timeout_s or TIMEOUT_S[name], budget,
        isolate=name in ISOLATED and not args.quick, log=log, onednn=args.onednn)
    if hasattr(module, "expand"):  # per-process jobs -> one record per configuration
        results = module.expand(results)
    return {"suite": name, "quick": args.quick, "settings": settings,
            "load_average_before": load_before, "load_average_after": common.load_average(),
            "duration_s": time.perf_counter() - started, "results": results}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def log(message):
        print(message, flush=True)

    started = time.perf_counter()
    machine = common.machine_description(args.threads, args.onednn)
    machine["load_average_at_start"] = common.load_average()
    log(f"lambda_keras benchmarks -> {args.out}\n  {machine['cpu_model']}, "
        f"{machine['usable_cores']} usable cores, {args.threads} threads, GPUs: "
        f"{machine['gpus'] or 'none'}, load {machine['load_average_at_start']}\n"
        f"  CPU flags {machine['cpu_flags']}; {report.describe_onednn(machine)}")
    suites = {}
    for name in args.suites:
        suites[name] = run_suite(name, args, log)
        suites[name]["machine"] = machine
        utils.write_json(os.path.join(args.out, f"{name}.json"), suites[name])
    earlier = {} if args.quick else earlier_suites(args.out, args.suites)
    suites.update(earlier)
    summary = report.summarize(suites, machine, quick=args.quick,
                               duration_s=time.perf_counter() - started,
                               options={"threads": args.threads,
                                        "memory_budget_gb": args.memory_budget_gb,
                                        "onednn": args.onednn or "default",
                                        "suites": args.suites,
                                        "suites_from_earlier_runs": sorted(earlier)})
    summary["plots"] = plots.make_all(suites, args.out)
    utils.write_json(os.path.join(args.out, "summary.json"), summary)
    markdown = report.markdown(summary)
    utils.atomic_write_bytes(os.path.join(args.out, "summary.md"), markdown.encode("utf-8"))
    log("\n" + markdown)
    log(f"done in {summary['duration_s'] / 60:.1f} min; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
