"""Backend suite: LambdaResNet-50 and keras' ResNet50 on every Keras 3 backend.

The model suite's models and steps (benchmarks/model.py: random weights, 1000 classes,
`predict_on_batch` for inference, `train_on_batch` with SGD momentum 0.9 for training) on
TensorFlow, JAX and PyTorch, one worker process per backend (KERAS_BACKEND is read once per
process, and TensorFlow and PyTorch cannot share one). Each backend runs what Keras gives it on
this machine: TensorFlow graph mode (`jit_compile=False`, what "auto" resolves to on a CPU-only
machine; oneDNN as the run's `--onednn`), JAX always compiled by XLA (`jit_compile=True`, Keras'
default there), PyTorch eager (`jit_compile=False`, Keras' default there: no `torch.compile`).
Within a process the models are timed round-robin, so a ratio to ResNet50 compares models under
the same load and backend; across backends the processes run one after the other.

Models: "lambda_resnet50" (the paper layout), "lambda_resnet50_ccll_plain" (every c4 and c5 block
a lambda block, plain ResNet-50 backbone: the like-for-like comparison with ResNet50) and
"resnet50". Memory is recorded on TensorFlow only (its allocator statistics).

`make bench` runs this suite through benchmarks/run.py. On its own, for a machine of another kind
(a GPU machine without TensorFlow, a larger batch):

    python -m benchmarks.backends --backends jax,torch --batch 32 --out results/backends_gpu.json

writes the suite's record there and prints its Markdown table (the H200's run:
benchmarks/README.md).
"""

import argparse
import os
import sys

from benchmarks import common, report
from benchmarks import model as model_suite
from lambda_keras import runtime, utils

# backend: jit_compile (what Keras' "auto" resolves to there on a CPU)
BACKENDS = {"tensorflow": False, "jax": True, "torch": False}
MODELS = ("lambda_resnet50", "lambda_resnet50_ccll_plain", "resnet50")
FULL = dict(image_size=224, batch=8, models=MODELS, backends=tuple(BACKENDS),
            timing=dict(warmup=1, min_repeats=3, max_repeats=6, budget_s=4.0))
# --quick: one lambda model (JAX compiles each model and step once: minutes on 2 cores), and not
# TensorFlow: the model suite's quick run times the same models and steps there (model.run_job).
QUICK = dict(image_size=64, batch=2, models=MODELS[1:], backends=("jax", "torch"),
             timing=dict(warmup=1, min_repeats=2, max_repeats=2, budget_s=0.1))
# run.py: even a --quick run keeps one process per job (one backend per process).
ONE_PROCESS_PER_GROUP = True


def plan(settings, memory_budget_bytes):
    """One job (process) per backend, timing every model round-robin, inference then training."""
    del memory_budget_bytes  # the worker's RSS is watched by common.run_groups
    return [[dict(suite="backends", id=f"backends/{backend}/b{settings['batch']}",
                  backend=backend, batch=settings["batch"], image_size=settings["image_size"],
                  timing=settings["timing"],
                  models=[dict(tag=name, model=name, jit_compile=jit,
                               modes=list(model_suite.MODES)) for name in settings["models"]])]
            for backend, jit in BACKENDS.items() if backend in settings["backends"]]


def run_job(job, threads, isolated):
    return model_suite.run_job(job, threads, isolated)


def expand(results):
    """Per-backend job results -> "backends/<backend>/<model>/<mode>/b<batch>" records."""
    return model_suite.expand(results)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backends",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--backends", type=common.comma_list(BACKENDS),
                        default=",".join(BACKENDS),
                        help=f"comma-separated, out of {','.join(BACKENDS)} (default: all)")
    parser.add_argument("--batch", type=int, default=FULL["batch"])
    parser.add_argument("--image-size", type=int, default=FULL["image_size"])
    parser.add_argument("--threads", type=int, default=runtime.usable_cores())
    parser.add_argument("--timeout-s", type=float, default=1800)
    parser.add_argument("--out", required=True, help="the JSON record to write")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = dict(FULL, batch=args.batch, image_size=args.image_size, backends=args.backends)
    results = expand(common.run_groups(plan(settings, None), args.threads, args.timeout_s, None,
                                       isolate=False))
    suite = {"suite": "backends", "quick": False, "settings": settings, "results": results,
             "machine": common.machine_description(args.threads)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    utils.write_json(args.out, suite)
    print("\n".join(report.backends_markdown(report.backends_table(suite))))


if __name__ == "__main__":
    main()
