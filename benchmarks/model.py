"""Model suite: LambdaResNet-50 vs keras.applications ResNet50 / EfficientNetV2B0 / EfficientNetB0.

All models are built with random weights (weights=None), 1000 classes, at `image_size` px, and
compiled with SGD (momentum 0.9) and sparse categorical cross-entropy. Inference is
`model.predict_on_batch(x)` and training `model.train_on_batch(x, y)` (forward, backward and the
optimizer update), Keras' own execution paths with `jit_compile` as given (False is what
`jit_compile="auto"` resolves to on a CPU-only machine). Throughput is batch / median step time. All
models of one batch size are built in one process and timed round-robin
(common.measure_interleaved), so that they see the same machine load.
Peak memory is the allocator method (common.py) over the timed steps, optimizer slots included.

LambdaResNet-50 variants:
- "lambda_resnet50": the paper layout (ResNet-RS backbone: ResNet-D stem, average-pool shortcut,
  SE 0.25; one lambda block in c4, every c5 block), with and without XLA;
- "lambda_resnet50_plain": the same lambda placement on a plain ResNet-50 backbone (classic stem,
  1x1 conv shortcut, no SE), the like-for-like comparison with keras' ResNet50;
- "lambda_resnet50_ccll_plain": every c4 and c5 block a lambda block (layout C->C->L->L of the
  paper's Table 5) on the plain backbone, the paper's ~40 % parameter reduction.
"""

import numpy as np

from benchmarks import common

FULL = dict(image_size=224, batches=(1, 8, 32),
            timing=dict(warmup=1, min_repeats=3, max_repeats=10, budget_s=4.0))
QUICK = dict(image_size=64, batches=(2,),
             timing=dict(warmup=1, min_repeats=2, max_repeats=2, budget_s=0.1))
CLASSES = 1000
PLAIN = dict(se_ratio=0.0, stem="classic", shortcut="conv")

# name: (builder, keyword arguments); "lambda_keras.X" or "keras.applications.X".
MODELS = {
    "lambda_resnet50": ("lambda_keras.LambdaResNet50", {}),
    "lambda_resnet50_plain": ("lambda_keras.LambdaResNet50", PLAIN),
    "lambda_resnet50_ccll_plain": ("lambda_keras.LambdaResNet50", dict(layout="CCLL", **PLAIN)),
    "resnet50": ("keras.applications.ResNet50", {}),
    "efficientnetv2b0": ("keras.applications.EfficientNetV2B0", {}),
    "efficientnetb0": ("keras.applications.EfficientNetB0", {}),
}
# Parameter counts only (not timed): the layouts discussed in benchmarks/README.md.
PARAMS_ONLY = {
    "lambda_resnet50_cccl_plain": ("lambda_keras.LambdaResNet50", dict(layout="CCCL", **PLAIN)),
    "lambda_resnet50_llll_plain": ("lambda_keras.LambdaResNet50", dict(layout="LLLL", **PLAIN)),
}
MODES = ("infer", "train")
# (model, jit_compile, modes) that are timed; --quick keeps one of each code path.
TIMED = (("lambda_resnet50", False, MODES), ("lambda_resnet50", True, MODES),
         ("lambda_resnet50_plain", False, MODES), ("lambda_resnet50_ccll_plain", False, MODES),
         ("resnet50", False, MODES), ("efficientnetv2b0", False, MODES),
         ("efficientnetb0", False, MODES))
QUICK_TIMED = (("lambda_resnet50", False, MODES), ("lambda_resnet50", True, ("infer",)),
               ("resnet50", False, MODES))


def plan(settings, memory_budget_bytes, quick=False):
    """One job (process) per batch size timing every model round-robin, inference then training.

    Parameter counts come from the timed jobs; the PARAMS_ONLY layouts get one job of their own
    (not in --quick).
    """
    models = [dict(tag=f"{name}{'_xla' if jit else ''}", model=name, jit_compile=jit,
                   modes=list(modes)) for name, jit, modes in (QUICK_TIMED if quick else TIMED)]
    jobs = [dict(suite="model", id=f"model/b{batch}", batch=batch, models=models,
                 image_size=settings["image_size"], timing=settings["timing"])
            for batch in settings["batches"]]
    if not quick:
        jobs.insert(0, dict(suite="model", id="model/params", mode="params",
                            image_size=settings["image_size"], models=sorted(PARAMS_ONLY)))
    return [[job] for job in jobs]


def expand(results):
    """Per-process job results -> one record per (model, mode, batch): "<job id prefix>/<tag>/
    <mode>/b<batch>" ("model/b8" -> "model/<tag>/<mode>/b8"; the backend suite's
    "backends/jax/b8" -> "backends/jax/<tag>/<mode>/b8")."""
    records = []
    for job in results:
        if job.get("mode") == "params":
            records.append(job)
            continue
        prefix = job["id"].rsplit("/", 1)[0]
        for entry in job["models"]:
            for mode in entry["modes"]:
                record = dict(suite=job["suite"],
                              id=f"{prefix}/{entry['tag']}/{mode}/b{job['batch']}",
                              tag=entry["tag"], model=entry["model"],
                              backend=job.get("backend", "tensorflow"),
                              jit_compile=entry["jit_compile"], mode=mode, batch=job["batch"],
                              image_size=job["image_size"])
                if job["status"] != "ok":
                    record.update(status=job["status"], reason=job.get("reason"))
                else:
                    measured = job["measured"][entry["tag"]]
                    record.update(status="ok", params=measured["params"], **{mode: measured[mode]})
                records.append(record)
    return records


# ------------------------------------------------------------------------ worker side
def build(name, image_size):
    import keras
    import lambda_keras

    path, kwargs = {**MODELS, **PARAMS_ONLY}[name]
    module, builder = path.rsplit(".", 1)
    factory = getattr(lambda_keras if module == "lambda_keras" else keras.applications, builder)
    return factory(weights=None, input_shape=(image_size, image_size, 3), classes=CLASSES,
                   **kwargs)


def _count_params(job):
    import keras

    counts = {}
    for name in job["models"]:
        model = build(name, job["image_size"])
        counts[name] = int(model.count_params())
        keras.backend.clear_session()
    return {"params": counts}


def run_job(job, threads, isolated):
    """Times the job's models round-robin on the Keras backend of this process
    (`job["backend"]`, TensorFlow by default: the worker's KERAS_BACKEND is set from it)."""
    backend = job.get("backend", "tensorflow")
    tf = common.setup_tensorflow(threads) if backend == "tensorflow" else None
    if backend == "torch":
        common.setup_torch(threads)
    import keras

    if keras.backend.backend() != backend:
        raise RuntimeError(f"KERAS_BACKEND is {keras.backend.backend()}, expected {backend}")
    if job.get("mode") == "params":
        return _count_params(job)
    rng = np.random.default_rng(0)
    size, batch = job["image_size"], job["batch"]
    x = rng.standard_normal((batch, size, size, 3)).astype("float32")
    y = rng.integers(0, CLASSES, (batch,))
    steps = {mode: {} for mode in MODES}
    measured = {}
    for entry in job["models"]:
        model = build(entry["model"], size)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss="sparse_categorical_crossentropy", jit_compile=entry["jit_compile"])
        measured[entry["tag"]] = {"params": int(model.count_params())}
        if "infer" in entry["modes"]:
            steps["infer"][entry["tag"]] = lambda m=model: m.predict_on_batch(x)
        if "train" in entry["modes"]:
            steps["train"][entry["tag"]] = lambda m=model: m.train_on_batch(x, y)
    # TensorFlow's allocator statistics are the memory ruler; other backends record none.
    for mode, fns in steps.items():
        stats = common.measure_interleaved(fns, **job["timing"],
                                           tf_memory=tuple(fns) if tf else ())
        for tag, entry in stats.items():
            entry["images_per_s"] = batch / entry["median_s"]
            measured[tag][mode] = entry
    return {"measured": measured, "backend": backend,
            "devices": _devices(backend)}


def _devices(backend):
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices()]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    import torch

    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
