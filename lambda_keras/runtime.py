"""What this process computes with: CPU features, TensorFlow's oneDNN state and CPU allocator, and
the defaults of the package and its command line.

TensorFlow (2.18 and later, x86) turns its oneDNN kernels on by default only on CPUs with AVX-512,
VNNI or AMX; elsewhere they are off unless `TF_ENABLE_ONEDNN_OPTS=1` is set before TensorFlow is
imported. The state decides speed (convolutions, matmuls) and whether the CPU allocator keeps
statistics, so benchmarks and the formulation choice of the lambda layer ask TensorFlow rather
than reading the environment variable:

- `cpu_flags()`: the SIMD features of this CPU that TensorFlow's default depends on;
  `has_avx512()`: whether they include AVX-512; `cpu_model()`: its model name;
  `usable_cores()`: the cores this process may run on; `cpu_kind()`:
  "<vendor>-<widest SIMD>" ("intel-avx512", "amd-avx2", "amd-avx512"), the kind of CPU the lambda
  layer's rule has rows for and benchmark tables are named by.
- `onednn_active()`: whether oneDNN is actually on in this process (imports TensorFlow).
- `pooled_allocator_active()`: whether TensorFlow's CPU allocator pools memory (BFC or oneDNN's).
- `describe()`: all of these, with the oneDNN and allocator variables as set, for result records.
- `backend_version()`, `backend_state()`, `device_name()`: a Keras backend's version, the
  settings that change its numbers or speed, and the name of the device it computes on (what
  benchmark records and `autotune`'s picks name).
- `Runtime`, `current_runtime()`: what executes the lambda layer being traced or run now (Keras
  backend, XLA or not, the oneDNN and allocator states, device, kind of CPU), from which its
  formulation rule picks a row (`Runtime.engine`, lambda_keras/layers/formulations/rule.py).
- `prefer_onednn()`: the command line's default, called before TensorFlow is imported:
  `TF_ENABLE_ONEDNN_OPTS=1` unless the user set the variable (theirs always wins).
- `prefer_pooled_allocator()`: the package's default, called by `import lambda_keras`:
  `TF_CPU_ALLOCATOR_USE_BFC=true` unless set, TensorFlow's pooling (BFC) CPU allocator, which TF
  uses by default only where oneDNN is on; it matters where oneDNN is off (TensorFlow's default
  on CPUs without AVX-512). TensorFlow reads the variable when its runtime starts (the first op,
  `tensorflow_started()`), not when it is imported, so the import order of the two packages does
  not matter; a process whose TensorFlow already ran is left as it is.

NOTE: why the command line turns oneDNN on where TensorFlow leaves it off. Measured on a 2-core
AMD EPYC without AVX-512 (TF 2.21, the demo's LambdaResNet-26T, batch 64 at 64 px, one
`train_on_batch`, medians of 5): 2.90 s with TensorFlow's default (oneDNN off) and 1.22 s with
`TF_ENABLE_ONEDNN_OPTS=1`; keras' ResNet50 6.23 s vs 2.14 s. `make demo` took 752 s with the
default there (over its 10-minute target). The outputs of both settings agree to float32 round-off
(tests/test_runtime.py checks LambdaResNet-26T's logits in two processes). The library itself
(`import lambda_keras`) never changes the oneDNN setting: a program that imports it decides for
itself.

NOTE: why the pooled allocator, and why the package (not only the command line) asks for it. With
oneDNN off TensorFlow allocates every tensor with malloc, and the lambda layer's large temporaries
(the q . E maps, 80 MB at 28^2 in batch 8; query windows' scores, ~250 MB at 56^2) are mapped and
zeroed by the kernel on every call. Measured on this project's 2-core Xeon (oneDNN off, TF 2.21,
inference batch 8 at 224 px, one process each, medians of 5-8): the C->C->L->L plain
LambdaResNet-50 0.555 s with malloc vs 0.474 s with `TF_CPU_ALLOCATOR_USE_BFC=true`, keras
ResNet50 0.432 vs 0.401 s; the 28^2 lambda layer's q . E position term 152 vs 87 ms. On the
2-core AMD EPYC (no AVX-512: oneDNN off is TensorFlow's default there) the r 23 layer's forward
pass (batch 8, d 256) ran 2x slower with malloc (56^2: 562 vs 278 ms; 112^2: 2571 vs 1234 ms),
0.7-1.1x timm's layer instead of 1.7-2.0x (benchmarks/README.md). TensorFlow itself pools where
oneDNN is on (oneDNN's allocator, on AVX-512 CPUs by default), so the package asks for the same
everywhere; outputs are the same, and memory a call frees stays in the pool for the next one (as
with oneDNN). The BFC pool is capped at 64 GiB unless `TF_CPU_BFC_MEM_LIMIT_IN_MB` says otherwise;
`TF_CPU_ALLOCATOR_USE_BFC=false` keeps malloc.

This module imports nothing heavy at import time.
"""

import dataclasses
import functools
import os
import sys

ENV = "TF_ENABLE_ONEDNN_OPTS"
ALLOCATOR_ENV = "TF_CPU_ALLOCATOR_USE_BFC"
# CPU flags (from /proc/cpuinfo) worth recording beside a measurement: TensorFlow's oneDNN default
# follows the AVX-512 / VNNI / AMX ones.
RECORDED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
ONEDNN_DEFAULT_FLAGS = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_flags():
    """The `RECORDED_FLAGS` this CPU has (empty where /proc/cpuinfo is missing), sorted."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return sorted(set(line.split(":", 1)[1].split()) & set(RECORDED_FLAGS))
    except OSError:
        pass
    return []


def has_avx512(flags=None):
    """Whether a CPU has AVX-512 (avx512f): this one, or the one whose `cpu_flags()` are given."""
    return "avx512f" in (cpu_flags() if flags is None else flags)


def cpu_model():
    """This CPU's model name (/proc/cpuinfo; else what `platform` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def usable_cores():
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_kind(model=None, flags=None):
    """"<vendor>-<widest SIMD>" of this CPU, or of a recorded `cpu_model()` and `cpu_flags()`:
    "intel-avx512", "amd-avx2", "amd-avx512" ("cpu-..." for an unknown vendor, "...-simd" without
    AVX2)."""
    model = (cpu_model() if model is None else model).lower()
    flags = set(cpu_flags() if flags is None else flags)
    vendor = next((name for name in ("intel", "amd", "arm") if name in model), "cpu")
    simd = "avx512" if has_avx512(flags) else "avx2" if "avx2" in flags else "simd"
    return f"{vendor}-{simd}"


def onednn_active():
    """Whether TensorFlow's oneDNN kernels are on in this process (imports TensorFlow)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def pooled_allocator_active(environ=None):
    """Whether TensorFlow's CPU allocator pools its memory in this process (imports TensorFlow).

    TensorFlow reads `TF_CPU_ALLOCATOR_USE_BFC` as a boolean ("true"/"1" or "false"/"0", any case;
    anything else counts as unset) when it creates its CPU allocator; unset, it pools only where
    oneDNN is on (oneDNN's allocator) and otherwise allocates with malloc.
    """
    environ = os.environ if environ is None else environ
    value = environ.get(ALLOCATOR_ENV, "").lower()
    if value in ("1", "true"):
        return True
    return onednn_active()


def describe():
    """{"cpu_flags", "onednn_active", "tf_enable_onednn_opts", "tf_cpu_allocator_use_bfc",
    "pooled_allocator_active"}: the context of a measurement.

    `tf_enable_onednn_opts` is the environment variable as set (None: TensorFlow's default, which
    is on only with one of `ONEDNN_DEFAULT_FLAGS`); `onednn_active` is what TensorFlow reports;
    `tf_cpu_allocator_use_bfc` the allocator variable as set (None: BFC only with oneDNN on);
    `pooled_allocator_active` what that means here (`pooled_allocator_active()`).
    """
    return {"cpu_flags": cpu_flags(), "onednn_active": onednn_active(),
            "tf_enable_onednn_opts": os.environ.get(ENV),
            "tf_cpu_allocator_use_bfc": os.environ.get(ALLOCATOR_ENV),
            "pooled_allocator_active": pooled_allocator_active()}


def require_tensorflow_backend(what):
    """ValueError unless Keras runs on its TensorFlow backend: `what` (a name for the message,
    e.g. "`lambda_keras.export.saved_model`") uses TensorFlow beyond `keras.ops` (tf.data,
    tf.distribute, SavedModel, the LiteRT converter). Called before anything is written."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(f"{what} needs Keras' TensorFlow backend (README, \"Backends\"): set "
                         f"KERAS_BACKEND=tensorflow. Received: KERAS_BACKEND={backend!r}")


def backend_version(backend):
    """The version of the package behind a Keras backend ("tensorflow", "jax", "torch")."""
    import importlib

    return getattr(importlib.import_module(backend), "__version__", "?")


def backend_state(backend):
    """{"version", ...}: a Keras backend's package version and the settings that change its
    numbers or speed, for result records: TensorFlow's oneDNN and CPU allocator ("onednn",
    "pooled_allocator", as TensorFlow reports them), JAX's default matmul precision
    ("matmul_precision"; None: XLA's default, TF32 on NVIDIA GPUs since Ampere), PyTorch's
    oneDNN ("mkldnn") and TF32 switches ("cuda_matmul_tf32", "cudnn_tf32")."""
    state = {"version": backend_version(backend)}
    if backend == "tensorflow":
        state.update(onednn=onednn_active(), pooled_allocator=pooled_allocator_active())
    elif backend == "jax":
        import jax

        state.update(matmul_precision=jax.config.jax_default_matmul_precision)
    elif backend == "torch":
        import torch

        state.update(mkldnn=torch.backends.mkldnn.is_available(),
                     cuda_matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
                     cudnn_tf32=torch.backends.cudnn.allow_tf32)
    return state


@functools.lru_cache(maxsize=None)
def device_name(backend, device):
    """The name of the `device` ("cpu", "gpu", "tpu") a Keras backend computes on: the
    accelerator's (first device), or the CPU's model and the cores this process may use."""
    if device == "gpu" and backend == "tensorflow":
        import tensorflow as tf

        gpu = tf.config.list_physical_devices("GPU")[0]
        return tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
    if device in ("gpu", "tpu") and backend == "jax":
        import jax

        return jax.devices()[0].device_kind
    if device == "gpu" and backend == "torch":
        import torch

        return torch.cuda.get_device_name(0)
    if device == "tpu":
        return "TPU"
    return f"{cpu_model()}, {usable_cores()} cores"


# ------------------------------------------------------------- what executes the lambda layer
@dataclasses.dataclass(frozen=True)
class Runtime:
    """What executes the layer: Keras backend, XLA or not, TF's oneDNN state and CPU allocator,
    device kind, kind of CPU."""

    backend: str = "tensorflow"  # keras.backend.backend()
    xla: bool = False  # compiled by XLA: TF jit_compile=True, or the JAX backend
    onednn: bool = False  # TensorFlow's oneDNN kernels (IsMklEnabled); False elsewhere
    device: str = "cpu"  # "cpu", "gpu" or "tpu"
    pooled_allocator: bool = True  # TF's CPU allocator pools (pooled_allocator_active)
    cpu: str = "intel-avx512"  # cpu_kind(): which measured CPU's rule rows apply

    @property
    def engine(self):
        """The row of the formulation rule that applies (formulations.ENGINES)."""
        if self.backend == "jax":
            return "jax"
        if self.xla or self.device == "tpu":
            return "xla"
        if self.backend == "torch":
            return "torch"
        if self.backend == "tensorflow" and self.device == "cpu":
            if self.onednn:
                return "tf_onednn"
            return "tf" if self.pooled_allocator else "tf_malloc"
        return "tf"


def current_runtime(jit_compile=False):
    """The `Runtime` of the code being traced or run now (TF: inside a jit_compile function?), or,
    with `jit_compile`, of code about to be compiled by XLA (`tf.function(jit_compile=True)`, which
    the current context cannot tell from outside)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return Runtime("tensorflow", xla=bool(jit_compile) or _tf_in_xla_context(),
                       onednn=_process_onednn(), device=_tf_device(),
                       pooled_allocator=_process_pooled_allocator(), cpu=_process_cpu_kind())
    if backend == "jax":
        return Runtime("jax", xla=True, device=_jax_device(), cpu=_process_cpu_kind())
    if backend == "torch":
        return Runtime("torch", device=_torch_device(), cpu=_process_cpu_kind())
    return Runtime(backend, cpu=_process_cpu_kind())


def _tf_in_xla_context():
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    if tf.executing_eagerly():
        return False
    # tf.function(jit_compile=True) traces its body inside an XLA control-flow context.
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


# A process's oneDNN state, allocator, CPU and devices do not change once TensorFlow (or JAX,
# PyTorch) runs: asked once per process, not at every trace.
@functools.lru_cache(maxsize=None)
def _process_onednn():
    return onednn_active()


@functools.lru_cache(maxsize=None)
def _process_pooled_allocator():
    return pooled_allocator_active()


@functools.lru_cache(maxsize=None)
def _process_cpu_kind():
    return cpu_kind()


@functools.lru_cache(maxsize=None)
def _tf_device():
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU"):
        return "tpu"
    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


@functools.lru_cache(maxsize=None)
def _jax_device():
    import jax

    return jax.default_backend()  # "cpu", "gpu", "tpu"


@functools.lru_cache(maxsize=None)
def _torch_device():
    from keras.src.backend.torch.core import get_device

    return "gpu" if str(get_device()).startswith("cuda") else "cpu"


# ---------------------------------------------------------------- the package's defaults
def prefer_onednn(environ=None, tensorflow_imported=None):
    """Sets `TF_ENABLE_ONEDNN_OPTS=1` unless already set; call before TensorFlow is imported.

    Returns the value in effect (None: unset). Once TensorFlow is imported (`tensorflow_imported`,
    None: in this process) the variable no longer counts, so it is left alone: a later reader (a
    subprocess, `pooled_allocator_active`, a result record) sees what TensorFlow read.
    """
    if tensorflow_imported is None:
        tensorflow_imported = "tensorflow" in sys.modules
    return _prefer(ENV, "1", environ, too_late=tensorflow_imported)


def prefer_pooled_allocator(environ=None, runtime_started=None):
    """Sets `TF_CPU_ALLOCATOR_USE_BFC=true` unless already set; `import lambda_keras` calls it.

    TensorFlow reads the variable when its runtime starts (`tensorflow_started`), so this works
    after `import tensorflow` too. Returns the value in effect (None: unset); leaves it alone once
    TensorFlow's runtime has started (`runtime_started`, None: `tensorflow_started()` in this
    process), as `prefer_onednn` does once TensorFlow is imported.
    """
    if runtime_started is None:
        runtime_started = tensorflow_started()
    return _prefer(ALLOCATOR_ENV, "true", environ, too_late=runtime_started)


def tensorflow_started():
    """Whether TensorFlow's runtime is up in this process: its eager context initialized, which
    creates the devices and their allocators (after that TensorFlow reads no allocator variable).
    Imports nothing."""
    context = sys.modules.get("tensorflow.python.eager.context")
    handle = getattr(context, "_context", None)
    # NOTE: `_initialized` is TensorFlow's private flag (2.18-2.21); a context without it counts as
    # started, the safe side (the variable is then left alone).
    return handle is not None and bool(getattr(handle, "_initialized", True))


def _prefer(name, value, environ, too_late):
    environ = os.environ if environ is None else environ
    if too_late:
        return environ.get(name)
    return environ.setdefault(name, value)
