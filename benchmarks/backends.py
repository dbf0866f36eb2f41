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
"""

from benchmarks import model as model_suite

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
