"""Autotuning: each lambda layer's formulation measured where it runs, once, and stored.

`choose` (rule.py) was measured on three kinds of CPU; on GPUs, TPUs and other CPUs its pick is a
guess (package docstring). `autotune(model)` times every formulation that applies to each lambda
layer of a model, at the layer's map size, forward (`training=False`) and forward + backward,
compiled the way the backend runs it (TensorFlow graph mode or `jit_compile=True`, `jax.jit`,
PyTorch eager), and stores the fastest per device, engine (`Runtime.engine`: backend, XLA, oneDNN,
CPU allocator), layer shape and phase in a JSON file. A layer with `implementation="auto"` then uses
the stored pick wherever one matches, and the rule elsewhere.

As cuDNN's benchmark mode, it is opt-in: nothing is measured unless `autotune` is called. Turn
it off with `LAMBDA_KERAS_AUTOTUNE=0` (or another of `OFF_VALUES`: "auto" ignores the stored
picks; the rule alone), or delete the file. The file: `LAMBDA_KERAS_AUTOTUNE_CACHE`, default
`lambda_keras/autotune.json` under `KERAS_HOME` (~/.keras), the one place `autotune` writes and
the layers read (`cache_path`); written atomically (a temporary file renamed over it), and an
unreadable one is ignored with a warning, never half-read. A path that cannot be written (a
directory, under a file, in a read-only folder) is refused before anything is measured.

NOTE: a pick holds for the batch size it was measured at (recorded in each entry; the layer
cannot see the batch of a call when it chooses); the formulations' memory grows with the batch
(`estimate_bytes` guards the measurement, not later calls).
"""

import contextlib
import datetime
import functools
import json
import os
import time
import warnings

import numpy as np
import keras
from keras import ops

from lambda_keras import utils
from lambda_keras.runtime import backend_version, current_runtime, device_name
from lambda_keras.layers.formulations import rule
from lambda_keras.layers.formulations.position_term import query_windows_bytes

ENV = "LAMBDA_KERAS_AUTOTUNE"  # one of OFF_VALUES: "auto" ignores the stored picks
OFF_VALUES = ("0", "false", "off", "no")  # values of ENV that turn the picks off (any case)
CACHE_ENV = "LAMBDA_KERAS_AUTOTUNE_CACHE"  # path of the file
FORMAT_VERSION = 1
PHASES = ("fwd", "train")
DEFAULT_MEMORY_LIMIT_BYTES = 4 * 1024 ** 3
# A formulation whose first timed call is this many times the best is not repeated (here and in
# the formulation benchmark, benchmarks/formulations.py).
HOPELESS = 10.0
# `estimate_bytes` counts the maps of a batch recomputed image by image in a loop
# (`Plan.image_loop` "recomputed") as those of batch / RECOMPUTED_BATCH_DIVISOR images (rounded
# up): the loop holds one image's at a time on JAX and PyTorch, a few on TensorFlow (its while
# loop runs up to 10 images side by side). The steps' peaks measured (execution.REMAT_MIN_BYTES),
# the layer's other tensors included, are of that count's size: TensorFlow's XLA at 28^2, r 23
# (14.3 MiB of maps per image, 3 copies counted in training), batch 8 51 MiB (counted: 43), batch
# 32 173 MiB (counted: 172), against 256 / 1024 MiB with the maps stored.
RECOMPUTED_BATCH_DIVISOR = 8


# ------------------------------------------------------------------------------- the store
def enabled(environ=None):
    """Whether "auto" uses stored picks: `LAMBDA_KERAS_AUTOTUNE` unset or not one of
    `OFF_VALUES` (any case, surrounding spaces ignored)."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip().lower()
    return value not in OFF_VALUES


def cache_path(environ=None):
    """The file of stored picks (read at call time, as KERAS_HOME is by the weights cache)."""
    environ = os.environ if environ is None else environ
    if environ.get(CACHE_ENV):
        return environ[CACHE_ENV]
    home = environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "lambda_keras", "autotune.json")


@functools.lru_cache(maxsize=8)
def _read(path, version):  # noqa: ARG001 (`version`: (mtime, size), re-read when it changes)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise ValueError(f"not a format-{FORMAT_VERSION} lambda_keras autotune file")
        picks = data["picks"]
        if not (isinstance(picks, dict) and all(
                isinstance(entries, dict) and all(isinstance(e, dict) for e in entries.values())
                for entries in picks.values())):
            raise ValueError("its picks are not {device: {layer shape: entry}}")
        return picks
    except (OSError, ValueError, KeyError) as error:
        warnings.warn(f"Ignoring the autotune file {path} ({error}); delete it or run "
                      "lambda_keras.autotune again. The layers use the formulation rule.",
                      stacklevel=3)
        return {}


def stored_picks(path=None):
    """{device key: {layer key: entry}} of the file (empty where it is missing or unreadable)."""
    path = path or cache_path()
    try:
        status = os.stat(path)
    except OSError:
        return {}
    return _read(path, (status.st_mtime_ns, status.st_size))


def _write(picks, path):
    """Merge `picks` ({device key: {layer key: entry}}) into the file, atomically."""
    merged = {device: dict(entries) for device, entries in stored_picks(path).items()}
    for device, entries in picks.items():
        merged.setdefault(device, {}).update(entries)
    text = json.dumps({"format": FORMAT_VERSION, "picks": merged}, indent=1, sort_keys=True)
    utils.atomic_write_bytes(path, text.encode("utf-8"))


def _check_writable(path, given_by):
    """Raises ValueError unless `_write` can write the file `path`: not a directory, its nearest
    existing folder writable. `given_by`: what set the path (the variable or the default), for
    the message. Run before measuring, so that no measurement is lost."""
    problem = None
    if os.path.isdir(path):
        problem = "is a directory; it must name a file"
    else:
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            problem = f"cannot be created: {parent} is not a directory"
        elif not os.access(parent, os.W_OK | os.X_OK):
            problem = f"cannot be written: the folder {parent} is not writable"
    if problem:
        raise ValueError(f"The autotune file {path} {problem}. Received: {given_by}")


def _given_by():
    """What set `autotune`'s file (`cache_path()`): `CACHE_ENV` or the default."""
    if os.environ.get(CACHE_ENV):
        return f"{CACHE_ENV}={os.environ[CACHE_ENV]!r}"
    return f"the default file under KERAS_HOME ({CACHE_ENV} unset)"


def device_key(runtime):
    """What the picks are measured on: engine, backend and its version, device name."""
    return f"{runtime.engine} | {runtime.backend} {backend_version(runtime.backend)} | " \
           f"{device_name(runtime.backend, runtime.device)}"


def layer_key(layer, rows, cols, phase):
    """The shape of a call the picks are measured for: a LambdaLayer on a rows x cols map."""
    scope = f"r{layer.receptive_field} " if layer.position == "local" else ""
    return (f"{layer.position} {scope}h{layer.num_heads} k{layer.key_dim} v{layer.value_dim} "
            f"u{layer.intra_depth} s{layer.strides} p{layer.pool_size} {rows}x{cols} "
            f"{layer.compute_dtype} {phase}")


def _legacy_layer_key(key):
    """The key a file written under a position mode's former name (`LEGACY_POSITION_MODES`:
    "conv" for "local") holds for the layer key `key` (still read), or None."""
    from lambda_keras.layers.lambda_layer import LEGACY_POSITION_MODES

    for former, mode in LEGACY_POSITION_MODES.items():
        if key.startswith(mode + " "):
            return former + key[len(mode):]
    return None


def tuned_formulation(layer, rows, cols, training, runtime):
    """The stored pick for this layer's call in `runtime`, or None (none stored, turned off, or
    not applicable to the layer: then the rule decides)."""
    if not enabled():
        return None
    picks = stored_picks()
    if not picks:
        return None
    entries = picks.get(device_key(runtime), {})
    key = layer_key(layer, rows, cols, rule.phase_of(training))
    entry = entries.get(key, entries.get(_legacy_layer_key(key)))
    formulation = entry.get("formulation") if isinstance(entry, dict) else None
    return formulation if formulation in candidates(layer) else None


# ------------------------------------------------------------------------- measurement
def candidates(layer):
    """The formulations that apply to a LambdaLayer with a static map size."""
    from lambda_keras.layers import formulations

    return tuple(f for f in formulations.FORMULATIONS
                 if layer.position == "local" or f not in formulations.LOCAL_ONLY)


def estimate_bytes(plan, rows, cols, batch, *, num_heads, key_dim, intra_depth,
                   receptive_field, strides=1, pool_size=3, phase="train"):
    """Bytes of the n x m tensors a call run as `plan` (a `formulations.Plan`) stores on a
    rows x cols map: one copy forward, 3 forward + backward; for query_windows, of its window
    scores and their spread over a block's context rows (`query_windows_bytes` of the plan's
    blocks). A batch cut into parts (`Plan.batch_parts`) counts whole: its parts run side by
    side, as do up to 10 images of a forward pass's loop (`Plan.image_loop` "forward"); but
    where the images are recomputed in a loop ("recomputed"), those of batch /
    RECOMPUTED_BATCH_DIVISOR images (the loop holds them: at 56^2, batch 8, d 256, r 23, 244 MiB
    estimated; the step's measured peaks, the layer's other tensors included, 315-616 MiB
    recomputed, 1.7-1.8 GiB stored). The other formulations' tensors grow as n, not n x m."""
    copies = 1 if phase == "fwd" else 3
    h, u = num_heads, intra_depth
    if plan.formulation == "query_windows":
        held = batch
        if plan.image_loop == "recomputed":
            held = -(-batch // RECOMPUTED_BATCH_DIVISOR)
        return copies * held * query_windows_bytes(
            rows, cols, receptive_field, h, u, pool_size if strides == 2 else 1, strides,
            **plan.blocks)
    per_pair = {"queries_first": batch * h * u, "lambdas_first": u * key_dim}.get(
        plan.formulation, 0)
    positions = rows * cols
    return copies * positions * positions * per_pair * 4


def _summed(tensors):
    """The sum of every entry of `tensors` (a tensor, or a structure of them: a model's several
    outputs, e.g. a backbone's maps; gradients), in float32."""
    return sum(ops.sum(ops.cast(t, "float32")) for t in keras.tree.flatten(tensors))


def _loss(outputs):
    """mean(y^2) of each output, summed, in float32 (as Keras' losses are under a mixed-precision
    policy, where the outputs are bfloat16 or float16)."""
    return sum(ops.mean(ops.square(ops.cast(y, "float32"))) for y in keras.tree.flatten(outputs))


def tensorflow_steps(model, jit_compile):
    """(forward, forward + backward) tf.functions of a Keras layer or model, each returning a
    float32 scalar: the sum of the outputs, and the mean of y^2 (summed over the outputs of a
    model with several, e.g. a backbone's feature maps) plus the sum of its gradients with
    respect to the input and every trainable weight. Sums and loss are taken in float32, as
    Keras' losses are under a mixed-precision policy (the outputs are then bfloat16 or float16
    and the gradients of the float32 weights float32)."""
    import tensorflow as tf

    @tf.function(jit_compile=jit_compile)
    def forward(x):
        return _summed(model(x, training=False))

    @tf.function(jit_compile=jit_compile)
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = _loss(model(x, training=True))
        return loss + _summed(tape.gradient(loss, [x] + model.trainable_variables))

    return forward, forward_backward


def _steps_tensorflow(layer, x, jit_compile):
    import tensorflow as tf

    x = tf.constant(x)
    forward, forward_backward = tensorflow_steps(layer, jit_compile)

    def trace(phase):  # trace only: the formulation "auto" picks under this compiler
        (forward if phase == "fwd" else forward_backward).get_concrete_function(x)

    return {"fwd": lambda: float(forward(x)), "train": lambda: float(forward_backward(x))}, trace


def _steps_jax(layer, x, jit_compile):  # noqa: ARG001 (JAX always compiles)
    import jax
    import jax.numpy as jnp

    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    x = jnp.asarray(x)

    def forward(trainable, non_trainable, inputs):
        outputs, _ = layer.stateless_call(trainable, non_trainable, inputs, training=False)
        return _summed(outputs)

    def loss(trainable, inputs, non_trainable):  # as in tensorflow_steps
        outputs, updated = layer.stateless_call(trainable, non_trainable, inputs, training=True)
        return _loss(outputs), updated

    def forward_backward(trainable, non_trainable, inputs):
        (value, _), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            trainable, inputs, non_trainable)
        return value + _summed(grads)

    forward, forward_backward = jax.jit(forward), jax.jit(forward_backward)

    def trace(phase):
        (forward if phase == "fwd" else forward_backward).trace(trainable, non_trainable, x)

    return {"fwd": lambda: float(forward(trainable, non_trainable, x)),
            "train": lambda: float(forward_backward(trainable, non_trainable, x))}, trace


def _steps_torch(layer, x, jit_compile):  # noqa: ARG001 (eager)
    import torch

    from keras.src.backend.torch.core import get_device

    x = torch.from_numpy(x).to(get_device())

    def forward():
        with torch.no_grad():
            return float(_summed(layer(x, training=False)))

    def forward_backward():
        inputs = x.clone().requires_grad_(True)
        for variable in layer.trainable_variables:
            variable.value.grad = None
        loss = _loss(layer(inputs, training=True))  # as tensorflow_steps
        loss.backward()
        return float(loss.detach())

    def trace(phase):  # eager: one call of a tiny batch records the pick
        with torch.no_grad():
            layer(x[:1], training=phase == "train")

    return {"fwd": forward, "train": forward_backward}, trace


# Per backend: (layer, inputs, jit_compile) -> ({phase: step returning a float}, trace(phase)).
# A step returns a Python float, so it waits for the device.
STEPS = {"tensorflow": _steps_tensorflow, "jax": _steps_jax, "torch": _steps_torch}


def autotune_jit_compile(jit_compile, backend):
    """`jit_compile` of `autotune` for a backend: "auto" as the project's training runs it
    (TensorFlow: `lambda_keras.training.resolve_jit_compile` in the default strategy, XLA on a
    GPU and not on CPUs; JAX: always; PyTorch: never); a bool must be possible on the
    backend."""
    utils.check_choice("jit_compile", jit_compile, ("auto", True, False))
    if backend == "tensorflow":
        if jit_compile != "auto":
            return jit_compile
        import tensorflow as tf

        from lambda_keras.training.strategy import resolve_jit_compile as training_jit_compile

        return training_jit_compile(jit_compile, tf.distribute.get_strategy())
    if jit_compile == "auto":
        return backend == "jax"
    if (backend == "jax" and not jit_compile) or (backend == "torch" and jit_compile):
        raise ValueError(f"`jit_compile={jit_compile}` is not how the {backend} backend runs the "
                         "layer (JAX always compiles with XLA; PyTorch runs eagerly). "
                         f'Use "auto". Received: jit_compile={jit_compile!r}')
    return jit_compile


def check_phases(phases):
    """`phases` of `autotune` and `lambda_keras.benchmark.compare`: a non-empty tuple (or list)
    of PHASES, returned as a tuple; anything else (a string, a number) raises ValueError."""
    if (not isinstance(phases, (tuple, list)) or not phases
            or any(p not in PHASES for p in phases)):
        raise ValueError(f"`phases` must be a non-empty tuple of {PHASES}. Received: "
                         f"phases={phases!r}")
    return tuple(phases)


def time_round(steps, calls=1):
    """One round of round-robin timing: each step of `steps` ({name: step}, steps of `STEPS`,
    which return a float and so wait for the device) called `calls` times in a row, in the
    dict's order; warm them up first. `measure` (formulations) and `lambda_keras.benchmark`
    (models) time with it.

    Returns:
        {name: [seconds of each call]}.
    """
    seconds = {}
    for name, step in steps.items():
        seconds[name] = []
        for _ in range(calls):
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def measure(layer, map_size, phase, runtime, *, batch_size=8, jit_compile=False, repeats=5,
            memory_limit_bytes=DEFAULT_MEMORY_LIMIT_BYTES):
    """Times every applicable formulation of a built LambdaLayer's call on a map of `map_size`
    (`runtime`: the `Runtime` the steps run in, for query_windows' blocks).

    Returns:
        {formulation: {"ms": median milliseconds} or {"skipped": reason}}.
    """
    rows, cols = map_size
    channels = layer.query_kernel.shape[0]
    x = np.random.default_rng(0).standard_normal((batch_size, rows, cols, channels))
    x = x.astype("float32")
    results, steps = {}, {}  # steps: formulation -> (step, [seconds of its timed calls])
    with _quiet_retracing(keras.backend.backend()):
        for formulation in candidates(layer):
            plan = layer._plan(  # noqa: SLF001 (own package): what the call would run
                formulation, rows, cols, phase == "train", runtime, batch=batch_size)
            estimate = estimate_bytes(
                plan, rows, cols, batch_size, num_heads=layer.num_heads,
                key_dim=layer.key_dim, intra_depth=layer.intra_depth,
                receptive_field=layer.receptive_field, strides=layer.strides,
                pool_size=layer.pool_size, phase=phase)
            if estimate > memory_limit_bytes:
                results[formulation] = {"skipped": f"estimated {estimate:,} bytes > "
                                                   f"memory_limit_bytes={memory_limit_bytes:,}"}
                continue
            clone = type(layer).from_config({**layer.get_config(), "implementation": formulation})
            clone.build((None, rows, cols, channels))
            clone.set_weights(layer.get_weights())
            step = STEPS[keras.backend.backend()](clone, x, jit_compile)[0][phase]
            try:
                step()  # warm-up: tracing, compilation
                first = time_round({formulation: step})[formulation]
            except Exception as error:  # noqa: BLE001 (an out-of-memory is a result here)
                results[formulation] = {"skipped": f"{type(error).__name__}: {str(error)[:200]}"}
                continue
            steps[formulation] = (step, first)
        if not steps:
            raise RuntimeError(f"No formulation of {layer.name} could run on {rows}x{cols} maps: "
                               f"{results}")
        best = min(times[0] for _, times in steps.values())
        for _ in range(repeats - 1):  # round-robin: the formulations share the machine's moods
            hopeful = {f: step for f, (step, times) in steps.items() if times[0] <= HOPELESS * best}
            for formulation, seconds in time_round(hopeful).items():
                steps[formulation][1].extend(seconds)
    for formulation, (_, times) in steps.items():
        results[formulation] = {"ms": round(1000 * float(np.median(times)), 3)}
    return results


@contextlib.contextmanager
def _quiet_retracing(backend):
    """TensorFlow warns when many tf.functions of one Python function trace: a clone of the
    layer per formulation is the point here."""
    if backend != "tensorflow":
        yield
        return
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def lambda_layers(model):
    """{(LambdaLayer, (rows, cols))} of a built model or layer, static map sizes only, and the
    names of the layers whose size is dynamic (the rule's convolution serves them)."""
    from lambda_keras.layers.lambda_layer import LambdaLayer

    found, dynamic = [], []
    for layer in model._flatten_layers(include_self=True):  # noqa: SLF001 (Keras 3's walk)
        if isinstance(layer, LambdaLayer):
            if not layer.built:
                raise ValueError(f"`model` must be built: call it on a batch or give its "
                                 f"input shape. Received: an unbuilt layer {layer.name!r}")
            size = layer._built_map_size  # noqa: SLF001 (own package)
            (found if None not in size else dynamic).append((layer, size))
    return found, [layer.name for layer, _ in dynamic]


def autotune(model, *, batch_size=8, phases=PHASES, jit_compile="auto", repeats=5,
             memory_limit_bytes=DEFAULT_MEMORY_LIMIT_BYTES):
    """Measures the formulations of every lambda layer of `model` here and stores the fastest.

    The picks go to `cache_path()`: the file `LAMBDA_KERAS_AUTOTUNE_CACHE` names (default
    `lambda_keras/autotune.json` under `KERAS_HOME`), the one the layers read. One that cannot
    be written (a directory, a read-only folder) is refused before anything is measured.

    Args:
        model: a built Keras model or layer holding `LambdaLayer`s (nested ones too), e.g.
            `lambda_keras.LambdaResNet50(weights=None)`.
        batch_size: the batch the formulations are timed at.
        phases: "fwd" (inference, `training=False`) and/or "train" (forward + backward).
        jit_compile: "auto" (as the project's training runs the backend: TensorFlow with XLA
            on a single GPU, not on CPUs (`lambda_keras.training.resolve_jit_compile`); JAX
            always; PyTorch never), or True / False for TensorFlow.
        repeats: timed calls per formulation (after one warm-up call), round-robin; the
            median counts. A formulation 10x slower than the best on its first call is not
            repeated.
        memory_limit_bytes: formulations whose n x m tensors would pass it are not run.

    Returns:
        {"device": device key, "picks": {layer key: entry}, "dynamic": names of layers of
        dynamic map size (not tuned)}; entry: {"formulation", "results" (per formulation:
        "ms" or "skipped"), "batch_size", "layers" (names), "measured" (UTC date)}.

    Raises:
        TypeError: `model` is not a Keras layer or model (a model name: build it first), or
            `batch_size`, `repeats` or `memory_limit_bytes` is not an int.
        ValueError: `phases` is not a non-empty tuple of "fwd" / "train"; `batch_size`,
            `repeats` or `memory_limit_bytes` is below 1; a `jit_compile` other than "auto",
            True or False, or one the backend does not run (False on JAX, True on PyTorch); a
            backend other than TensorFlow, JAX or PyTorch; a lambda layer of `model` is not
            built; the cache file cannot be written (before anything is measured).
        RuntimeError: no formulation of a layer could run: each was over
            `memory_limit_bytes` or failed (e.g. out of memory).

    Example:

    ```python
    model = lambda_keras.LambdaResNet26T(weights=None, input_shape=(64, 64, 3))
    report = lambda_keras.autotune(model, batch_size=2, repeats=2)  # "auto" uses them now
    sorted(report)  # ['device', 'dynamic', 'picks']
    ```
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"`model` must be a built Keras model or layer (a model name: build it "
                        f"first, e.g. `lambda_keras.get_model(name, weights=None)`). Received: "
                        f"model={model!r:.100} of type {type(model).__name__}")
    phases = check_phases(phases)
    batch_size = utils.check_int("batch_size", batch_size)
    repeats = utils.check_int("repeats", repeats)
    memory_limit_bytes = utils.check_int("memory_limit_bytes", memory_limit_bytes)
    backend = keras.backend.backend()
    if backend not in STEPS:
        raise ValueError(f"`autotune` times the layers on the {', '.join(STEPS)} backends. "
                         f"Received: KERAS_BACKEND={backend!r}")
    jit_compile = autotune_jit_compile(jit_compile, backend)
    runtime = current_runtime(jit_compile)
    layers, dynamic = lambda_layers(model)
    given_by, path = _given_by(), cache_path()
    if layers:
        _check_writable(path, given_by)
    picks = {}
    for layer, size in layers:
        for phase in phases:
            key = layer_key(layer, *size, phase)
            if key in picks:
                picks[key]["layers"].append(layer.name)
                continue
            results = measure(layer, size, phase, runtime, batch_size=batch_size,
                              jit_compile=jit_compile, repeats=repeats,
                              memory_limit_bytes=memory_limit_bytes)
            timed = {f: r["ms"] for f, r in results.items() if "ms" in r}
            picks[key] = {"formulation": min(timed, key=timed.get), "results": results,
                          "batch_size": batch_size, "layers": [layer.name],
                          "measured": datetime.datetime.now(datetime.timezone.utc)
                          .strftime("%Y-%m-%d")}
    device = device_key(runtime)
    if picks:
        _write({device: picks}, path)
    return {"device": device, "picks": picks, "dynamic": dynamic}
