"""Layer suite: LambdaLayer variants vs global multi-head self-attention vs a 3x3 Conv2D.

Every layer maps a [batch, s, s, d] feature map to [batch, s, s, d] (d = 256, the c4 width of a
ResNet-50 bottleneck, in the full run):
- LambdaLayer with the paper's defaults (|k| = 16, |h| = 4, |u| = 1, so |v| = 64) and position
  lambdas "local" (r = 23; implementation "auto", "row_windows", "conv"; "auto" also under XLA),
  "relative", "global", and None (content only); every formulation on every backend and
  compiler is in the formulation suite (benchmarks/formulations.py). The variants "lambda_local*"
  are the "local" ones (the lambda convolution);
- `keras.layers.MultiHeadAttention` over the flattened s*s positions, 8 heads of depth d / 8
  (global self-attention as in the paper's footnote);
- `keras.layers.Conv2D(d, 3, padding="same")`.
"fwd" is `model(x, training=False)`; "train" is forward + backward: the gradient of
mean(y^2) with respect to the input and every trainable weight (no optimizer update), as one
`tf.function` (with `jit_compile` for the *_xla variants). Both return a scalar, read back with
`.numpy()`, so that the timed call blocks until the work is done.

Configurations whose n^2 tensors alone would exceed the memory budget are skipped before they
run, with the estimate as the reason (`ESTIMATES`); the runner kills any that pass it anyway.
"""

import numpy as np

from benchmarks import common

# peer_sizes: where timm's layer is timed in the same process (round-robin) for the speed ratio.
FULL = dict(batch=4, width=256, sizes=(14, 28, 56, 112, 160), peer_sizes=(14, 28, 56, 112),
            timing=dict(warmup=1, min_repeats=3, max_repeats=10, budget_s=4.0))
QUICK = dict(batch=2, width=32, sizes=(8, 16), peer_sizes=(8, 16),
             timing=dict(warmup=1, min_repeats=2, max_repeats=3, budget_s=0.2))
LAMBDA_DEFAULTS = dict(key_dim=16, num_heads=4, intra_depth=1, receptive_field=23)
ATTENTION_HEADS = 8
FLOAT_BYTES = 4

# name: (family, LambdaLayer keyword arguments, jit_compile)
VARIANTS = {
    "lambda_local": ("lambda", dict(position="local"), False),
    "lambda_local_xla": ("lambda", dict(position="local"), True),
    "lambda_local_row_windows": ("lambda", dict(position="local",
                                                implementation="row_windows"), False),
    "lambda_local_conv": ("lambda", dict(position="local", implementation="conv"), False),
    "lambda_relative": ("lambda", dict(position="relative"), False),
    "lambda_global": ("lambda", dict(position="global"), False),
    "lambda_content": ("lambda", dict(position=None), False),
    "attention": ("attention", {}, False),
    "conv3x3": ("conv", {}, False),
}
# The lambda variant the targets and the peer comparison use: the layer as users get it.
DEFAULT_LAMBDA = "lambda_local"


def _n2_estimate(copies, per_pair):
    """Bytes of `copies` tensors of n^2 x per_pair floats (fwd + bwd), n = positions."""
    return lambda n, batch, key_dim: copies * n * n * per_pair(batch, key_dim) * FLOAT_BYTES


# Lower bounds of the memory of the n^2 terms (forward + backward), used to skip configurations
# that cannot fit before starting them.
ESTIMATES = {
    "attention": _n2_estimate(4, lambda b, k: b * ATTENTION_HEADS),  # logits, softmax + grads
    "lambda_global": _n2_estimate(3, lambda b, k: k),  # E, its gradient, one transposed copy
    "lambda_relative": _n2_estimate(3, lambda b, k: k),  # gathered E, gradient, copy
}


def estimate_bytes(variant, positions, batch):
    estimate = ESTIMATES.get(variant)
    return None if estimate is None else estimate(positions, batch, LAMBDA_DEFAULTS["key_dim"])


def plan(settings, memory_budget_bytes, variants=None):
    """One job (process) per map size, timing all its variants (and timm's layer) round-robin.

    Variants over the memory budget are left out of the job and recorded as skipped by `expand`.
    Returns [[job, ...]] (one group: sizes in increasing order).
    """
    jobs = []
    for size in settings["sizes"]:
        runnable, skipped = [], {}
        for variant in variants or VARIANTS:
            estimate = estimate_bytes(variant, size * size, settings["batch"])
            if memory_budget_bytes and estimate and estimate > memory_budget_bytes:
                skipped[variant] = (f"estimated n^2 memory {common.gib(estimate):.1f} GiB > budget "
                                    f"{common.gib(memory_budget_bytes):.1f} GiB")
            else:
                runnable.append(variant)
        peer = size in settings.get("peer_sizes", ()) and _timm_available()
        jobs.append(dict(suite="layer", id=f"layer/{size}x{size}", size=size, positions=size * size,
                         batch=settings["batch"], width=settings["width"], variants=runnable,
                         peer=peer, planned_skips=skipped, timing=settings["timing"]))
    return [jobs]


def _timm_available():
    from importlib.util import find_spec

    return find_spec("timm") is not None and find_spec("torch") is not None


def expand(results):
    """Per-size job results -> one record per (variant, size), id "layer/<variant>/<s>x<s>"."""
    records = []
    for job in results:
        size = job["size"]
        base = dict(suite="layer", size=size, positions=job["positions"], batch=job["batch"],
                    width=job["width"])
        names = list(job["variants"]) + (["timm_lambda"] if job.get("peer") else [])
        for variant in names:
            record = dict(base, id=f"layer/{variant}/{size}x{size}", variant=variant)
            if job["status"] != "ok":
                record.update(status=job["status"], reason=job.get("reason"))
            else:
                record.update(status="ok", **job["measured"][variant])
            records.append(record)
        for variant, reason in job["planned_skips"].items():
            records.append(dict(base, id=f"layer/{variant}/{size}x{size}", variant=variant,
                                status="skipped", reason=reason))
    return records


# ------------------------------------------------------------------------ worker side
def build_model(variant, size, width):
    import keras
    from lambda_keras.layers import LambdaLayer

    family, kwargs, _ = VARIANTS[variant]
    inputs = keras.Input((size, size, width))
    if family == "lambda":
        outputs = LambdaLayer(**LAMBDA_DEFAULTS, **kwargs, name="lambda")(inputs)
    elif family == "attention":
        tokens = keras.layers.Reshape((size * size, width))(inputs)  # [b, n, d]
        attended = keras.layers.MultiHeadAttention(
            ATTENTION_HEADS, width // ATTENTION_HEADS)(tokens, tokens)  # [b, n, d]
        outputs = keras.layers.Reshape((size, size, width))(attended)
    else:
        outputs = keras.layers.Conv2D(width, 3, padding="same")(inputs)
    return keras.Model(inputs, outputs)


def step_functions(model, jit_compile):
    """(forward, forward + backward) tf.functions returning a scalar (the library's, which
    `lambda_keras.autotune` times)."""
    from lambda_keras.layers.formulations import autotuning

    return autotuning.tensorflow_steps(model, jit_compile)


def lambda_formulations(model, steps, x):
    """The position-term formulation the layer traced for inference and for training."""
    layer = model.get_layer("lambda")
    if layer.position is None:
        return None
    picks = {}
    for phase, fn in zip(("fwd", "train"), steps):
        fn.get_concrete_function(x)  # traces (under XLA too) without running
        picks[phase] = layer._last_formulation  # noqa: SLF001 (own package)
    return picks


def _timm_steps(size, width, batch, threads):
    """timm's LambdaLayer (benchmarks/peer.py) as (forward, forward + backward) callables."""
    from benchmarks import peer

    return peer.step_functions(size, width, batch, threads)


def run_job(job, threads, isolated):
    from benchmarks.common import setup_tensorflow

    tf = setup_tensorflow(threads)
    size, width, batch = job["size"], job["width"], job["batch"]
    x = tf.constant(np.random.default_rng(0).standard_normal(
        (batch, size, size, width)).astype("float32"))
    fwd_fns, train_fns, measured = {}, {}, {}
    for variant in job["variants"]:
        model = build_model(variant, size, width)
        forward, forward_backward = step_functions(model, VARIANTS[variant][2])
        fwd_fns[variant] = lambda f=forward: f(x).numpy()
        train_fns[variant] = lambda f=forward_backward: f(x).numpy()
        measured[variant] = {"params": int(model.count_params()),
                             "jit_compile": VARIANTS[variant][2]}
        if VARIANTS[variant][0] == "lambda":
            measured[variant]["formulation"] = lambda_formulations(
                model, (forward, forward_backward), x)
    if job.get("peer"):
        fwd_fns["timm_lambda"], train_fns["timm_lambda"] = _timm_steps(size, width, batch, threads)
        measured["timm_lambda"] = {"framework": "torch"}
    tf_names = tuple(job["variants"])
    for phase, fns in (("fwd", fwd_fns), ("train", train_fns)):
        stats = common.measure_interleaved(fns, **job["timing"], tf_memory=tf_names)
        for name, entry in stats.items():
            measured[name][phase] = entry
    return {"measured": measured,
            "tf_devices": [d.name for d in tf.config.list_physical_devices()]}
