"""`compare`: a model's inference (and training step) timed against a baseline on this machine.

What `lambda-keras bench` runs: the installed package's way to measure here what `make bench`
(benchmarks/, in the repository only: layer, formulation, timm, model, export and backend suites)
measures in full. Both models run in one process, interleaved: each round times the model and the
baseline, `calls` calls each, the order alternating between rounds (neither always runs first), and
keeps each one's median call; a round's ratio is baseline time / model time (> 1: the model is
faster). The report gives each model's median over the rounds and the median of the rounds'
ratios with their range: a slow spell of the machine (another process, a throttled core) slows
both models of a round and moves their ratio less than their times.

The steps are `autotune`'s (`autotuning.STEPS`), timed by its `time_round`, after one warm-up call
each (tracing, compilation): forward (`training=False`) and forward + backward (a loss and the
gradients of the input and every trainable weight), compiled as the backend runs them (TensorFlow
graph or XLA, `jax.jit`, PyTorch eager); each step waits for its result. The inputs are random
normal: weights and pixel values do not change the times.

NOTE: the "train" phase is the gradient computation, not `fit`'s whole step: no optimizer update
(small next to the backward pass for these models) and no input pipeline.

This module imports nothing heavy at import time; it needs no TensorFlow off the TensorFlow backend.
"""

import datetime
import platform

import numpy as np

from lambda_keras import runtime, utils

# --baseline: keras.applications builders, built with weights=None at the model's input and classes.
BASELINES = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152"}
NO_BASELINE = "none"


def check_baseline(name, arg="baseline"):
    """`name` (any case) as a key of `BASELINES`, or None for "none"; `arg` names the argument in
    the message (the command line's `--baseline`)."""
    valid = (*BASELINES, NO_BASELINE)
    if not isinstance(name, str) or name.lower() not in valid:
        raise ValueError(f"`{arg}` must be one of {', '.join(valid)}. Received: {arg}={name!r}")
    return None if name.lower() == NO_BASELINE else name.lower()


def baseline_model(name, input_shape, classes):
    """The keras.applications model `name` (a key of `BASELINES`, any case) with random weights,
    for `input_shape` (height, width, channels) and `classes`, under Keras' current dtype policy;
    None for "none"."""
    import keras

    name = check_baseline(name, "name")
    if name is None:
        return None
    builder = getattr(keras.applications, BASELINES[name])
    return builder(weights=None, input_shape=tuple(input_shape), classes=classes)


def compare(model, baseline=None, *, batch_size=8, phases=("fwd",), rounds=5, calls=3,
            jit_compile="auto"):
    """Times `model` against `baseline` on this machine, interleaved in this process.

    Args:
        model: a built Keras model of static input size, e.g.
            `lambda_keras.LambdaResNet26T(weights=None)`.
        baseline: a Keras model taking the same inputs in the same dtype policy (e.g.
            `baseline_model("resnet50", model.input_shape[1:], classes)`), or None: the model
            alone, no ratio.
        batch_size: images per call.
        phases: "fwd" (inference, `training=False`) and/or "train" (forward + backward).
        rounds: rounds of timing; each times both models, the order alternating.
        calls: timed calls per model and round, one after another; the round keeps their median.
        jit_compile: "auto" (as the project's training runs the backend: TensorFlow with XLA on
            a single GPU, not on CPUs; JAX always; PyTorch never), or True / False for
            TensorFlow (`autotuning.autotune_jit_compile`).

    Returns:
        {"model", "baseline" ({"name", "params"}; baseline None without one), "batch_size",
        "input_shape", "phases", "rounds", "calls", "runtime" (`runtime_record`), "results":
        {phase: {"model", "baseline": {"ms" (median of the rounds' medians, per batch),
        "images_per_s" (batch_size / ms), "rounds_ms" (each round's median)}, "ratio":
        {"median", "min", "max"} of the rounds' baseline ms / model ms}}}; without a baseline
        its entry and "ratio" are None.

    Raises:
        TypeError: `model` or `baseline` is not a Keras model.
        ValueError: a bad argument; a model of several inputs or of dynamic input size; a
            baseline that takes other inputs or computes in another dtype policy; a backend
            without steps.

    Example:

    >>> model = lambda_keras.LambdaResNet26T(weights=None, input_shape=(64, 64, 3))
    >>> baseline = benchmark.baseline_model("resnet50", (64, 64, 3), classes=1000)
    >>> result = benchmark.compare(model, baseline, batch_size=2, rounds=2, calls=1)
    >>> sorted(result["results"]["fwd"])  # ratio: the rounds' resnet50 ms / model ms
    ['baseline', 'model', 'ratio']
    >>> print(benchmark.format_report(result))  # the runtime, then a Markdown table
    """
    import keras

    from lambda_keras.layers.formulations import autotuning

    _check_model("model", model)
    if baseline is not None:
        _check_model("baseline", baseline)
        if tuple(baseline.input_shape[1:]) != tuple(model.input_shape[1:]):
            raise ValueError(f"`baseline` must take the model's inputs {model.input_shape}. "
                             f"Received: baseline with input shape {baseline.input_shape}")
        if utils.model_precision(baseline) != utils.model_precision(model):
            raise ValueError(f"`baseline` must compute in the model's dtype policy "
                             f"{utils.model_precision(model)!r}. Received: baseline in "
                             f"{utils.model_precision(baseline)!r}")
    phases = autotuning.check_phases(phases)
    batch_size = utils.check_int("batch_size", batch_size)
    rounds = utils.check_int("rounds", rounds)
    calls = utils.check_int("calls", calls)
    backend = keras.backend.backend()
    if backend not in autotuning.STEPS:
        raise ValueError(f"`compare` times models on the {', '.join(autotuning.STEPS)} backends. "
                         f"Received: KERAS_BACKEND={backend!r}")
    jit_compile = autotuning.autotune_jit_compile(jit_compile, backend)
    x = np.random.default_rng(0).standard_normal((batch_size, *model.input_shape[1:]))
    timed = {"model": model} if baseline is None else {"model": model, "baseline": baseline}
    steps = {role: autotuning.STEPS[backend](m, x.astype("float32"), jit_compile)[0]
             for role, m in timed.items()}
    results = {}
    for phase in phases:
        for role in timed:
            steps[role][phase]()  # warm-up: tracing, compilation
        rounds_ms = {role: [] for role in timed}
        for i in range(rounds):
            order = list(timed) if i % 2 == 0 else list(reversed(timed))
            seconds = autotuning.time_round({role: steps[role][phase] for role in order}, calls)
            for role, times in seconds.items():
                rounds_ms[role].append(1000 * float(np.median(times)))
        results[phase] = {role: _summary(rounds_ms.get(role), batch_size)
                          for role in ("model", "baseline")}
        results[phase]["ratio"] = None if baseline is None else _ratio(
            rounds_ms["baseline"], rounds_ms["model"])
    return {"model": _identity(model), "baseline": baseline and _identity(baseline),
            "batch_size": batch_size, "input_shape": list(model.input_shape[1:]),
            "phases": list(phases), "rounds": rounds, "calls": calls,
            "runtime": runtime_record(jit_compile, utils.model_precision(model)),
            "results": results}


def runtime_record(jit_compile, dtype_policy):
    """What the times were measured with: Keras backend and versions, device, engine (the lambda
    layer's rule row), CPU model, cores and `runtime.RECORDED_FLAGS`, `jit_compile`, dtype policy
    and its compute dtype; on the TensorFlow backend also `runtime.describe()` (oneDNN and the CPU
    allocator, as TensorFlow reports them and as the variables are set), on the others
    `runtime.backend_state` (JAX's matmul precision, PyTorch's oneDNN and TF32 switches)."""
    import keras

    import lambda_keras

    backend = keras.backend.backend()
    current = runtime.current_runtime(jit_compile)
    try:
        compute_dtype = keras.DTypePolicy(dtype_policy).compute_dtype
    except ValueError:  # layers in several policies ("float32+mixed_bfloat16")
        compute_dtype = dtype_policy
    state = runtime.backend_state(backend)
    measured = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {"backend": backend, "backend_version": state.pop("version"),
              "keras_version": keras.__version__,
              "lambda_keras_version": lambda_keras.__version__,
              "python_version": platform.python_version(), "device_kind": current.device,
              "device": runtime.device_name(backend, current.device),
              "engine": current.engine, "jit_compile": bool(jit_compile),
              "dtype_policy": dtype_policy, "compute_dtype": compute_dtype,
              "cpu_model": runtime.cpu_model(), "cores": runtime.usable_cores(),
              "cpu_flags": runtime.cpu_flags(), "measured": measured}
    record.update(runtime.describe() if backend == "tensorflow" else state)
    return record


def format_report(result):
    """`compare`'s result as text: the runtime in a few lines, then a Markdown table per phase."""
    run, model, baseline = result["runtime"], result["model"], result["baseline"]
    size = "x".join(str(n) for n in result["input_shape"])
    against = f" vs {baseline['name']} ({baseline['params'] / 1e6:.1f}M)" if baseline else ""
    lines = [
        f"{model['name']} ({model['params'] / 1e6:.1f}M params){against}, batch "
        f"{result['batch_size']} of {size}, {run['dtype_policy']} (compute {run['compute_dtype']})",
        f"runtime: {run['backend']} {run['backend_version']}, keras {run['keras_version']}, "
        f"engine {run['engine']}, jit_compile {run['jit_compile']}"
        + ("" if run["device_kind"] == "cpu" else f"; device: {run['device']}"),
        f"CPU: {run['cpu_model']}, {run['cores']} cores, flags {' '.join(run['cpu_flags']) or '-'}",
    ]
    if "onednn_active" in run:
        lines.append(
            f"oneDNN: {'on' if run['onednn_active'] else 'off'} (TF_ENABLE_ONEDNN_OPTS="
            f"{run['tf_enable_onednn_opts'] or 'unset'}); pooled CPU allocator: "
            f"{'on' if run['pooled_allocator_active'] else 'off'} (TF_CPU_ALLOCATOR_USE_BFC="
            f"{run['tf_cpu_allocator_use_bfc'] or 'unset'})")
    lines.append(f"rounds: {result['rounds']}, calls per model and round: {result['calls']}, "
                 "interleaved; medians" + ("; ratio: baseline ms / model ms (> 1: the model is "
                                           "faster), min-max over rounds" if baseline else ""))
    header = f"| phase | {model['name']} ms | images/s |"
    rule = "|---|--:|--:|"
    if baseline:
        header += f" {baseline['name']} ms | images/s | ratio | min-max |"
        rule += "--:|--:|--:|--:|"
    lines += ["", header, rule]
    for phase, entry in result["results"].items():
        row = f"| {phase} | {entry['model']['ms']:.1f} | {entry['model']['images_per_s']:.1f} |"
        if baseline:
            ratio = entry["ratio"]
            row += (f" {entry['baseline']['ms']:.1f} | {entry['baseline']['images_per_s']:.1f} |"
                    f" {ratio['median']:.2f} | {ratio['min']:.2f}-{ratio['max']:.2f} |")
        lines.append(row)
    return "\n".join(lines)


def _check_model(arg, model):
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(f"`{arg}` must be a built Keras model. Received: {arg}={model!r:.100} "
                        f"of type {type(model).__name__}")
    shape = model.input_shape
    if not isinstance(shape, tuple) or not all(s is None or isinstance(s, int) for s in shape):
        raise ValueError(f"`{arg}` must take one input, a batch of images. Received: {arg} "
                         f"{model.name!r} with inputs of shapes {shape}")
    if None in tuple(model.input_shape[1:]):
        raise ValueError(f"`{arg}` must take inputs of a static size (build it for one, e.g. "
                         f"input_shape=(224, 224, 3)). Received: input shape {model.input_shape}")


def _identity(model):
    return {"name": model.name, "params": int(model.count_params())}


def _summary(rounds_ms, batch_size):
    """A model's times in a phase: the median of its rounds' medians, and images/s from it."""
    if rounds_ms is None:
        return None
    ms = float(np.median(rounds_ms))
    return {"ms": ms, "images_per_s": 1000 * batch_size / ms, "rounds_ms": rounds_ms}


def _ratio(baseline_ms, model_ms):
    """The rounds' baseline / model time ratios: their median, min and max."""
    ratios = [b / m for b, m in zip(baseline_ms, model_ms)]
    return {"median": float(np.median(ratios)), "min": min(ratios), "max": max(ratios)}
