"""What this process computes with: CPU features, TensorFlow's oneDNN state, and the CLI's default.

TensorFlow (2.18 and later, x86) turns its oneDNN kernels on by default only on CPUs with AVX-512,
VNNI or AMX; elsewhere they are off unless `TF_ENABLE_ONEDNN_OPTS=1` is set before TensorFlow is
imported. The state decides speed (convolutions, matmuls) and whether the CPU allocator keeps
statistics, so benchmarks and the formulation choice of the lambda layer ask TensorFlow rather
than reading the environment variable:

- `cpu_flags()`: the SIMD features of this CPU that TensorFlow's default depends on;
  `has_avx512()`: whether they include AVX-512 (the lambda layer's rule has rows per CPU kind).
- `onednn_active()`: whether oneDNN is actually on in this process (imports TensorFlow).
- `pooled_allocator_active()`: whether TensorFlow's CPU allocator pools memory (BFC or oneDNN's).
- `describe()`: all of these, with the oneDNN and allocator variables as set, for result records.
- `prefer_onednn()`: the command line's default, called before TensorFlow is imported:
  `TF_ENABLE_ONEDNN_OPTS=1` unless the user set the variable (theirs always wins).
- `prefer_pooled_allocator()`: the command line's other default: `TF_CPU_ALLOCATOR_USE_BFC=true`
  unless set, TensorFlow's pooling (BFC) CPU allocator, which TF uses by default only where oneDNN
  is on; it matters where a user turns oneDNN off.

NOTE: why the command line turns oneDNN on where TensorFlow leaves it off. Measured on a 2-core
AMD EPYC without AVX-512 (TF 2.21, the demo's LambdaResNet-26T, batch 64 at 64 px, one
`train_on_batch`, medians of 5): 2.90 s with TensorFlow's default (oneDNN off) and 1.22 s with
`TF_ENABLE_ONEDNN_OPTS=1`; keras' ResNet50 6.23 s vs 2.14 s. `make demo` took 752 s with the
default there (over its 10-minute target). The outputs of both settings agree to float32 round-off
(tests/test_runtime.py checks LambdaResNet-26T's logits in two processes). The library itself
(`import lambda_keras`) never changes the setting: a program that imports it decides for itself.

NOTE: why the pooled allocator. With oneDNN off TensorFlow allocates every tensor with malloc, and
the lambda layer's large temporaries (the q . E maps, 80 MB at 28^2 in batch 8) are mapped and
zeroed by the kernel on every call. Measured on this project's 2-core Xeon (oneDNN off, TF 2.21,
inference batch 8 at 224 px, one process each, medians of 5-8): the C->C->L->L plain
LambdaResNet-50 0.555 s with malloc vs 0.474 s with `TF_CPU_ALLOCATOR_USE_BFC=true`, keras
ResNet50 0.432 vs 0.401 s; the 28^2 lambda layer's q . E position term 152 vs 87 ms.

This module imports nothing heavy at import time.
"""

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


def prefer_onednn(environ=None, tensorflow_imported=None):
    """Sets `TF_ENABLE_ONEDNN_OPTS=1` unless already set; call before TensorFlow is imported.

    Returns the value in effect (None: unset). Once TensorFlow is imported (`tensorflow_imported`,
    None: in this process) the variable no longer counts, so it is left alone: a later reader (a
    subprocess, `pooled_allocator_active`, a result record) sees what TensorFlow read.
    """
    return _prefer(ENV, "1", environ, tensorflow_imported)


def prefer_pooled_allocator(environ=None, tensorflow_imported=None):
    """Sets `TF_CPU_ALLOCATOR_USE_BFC=true` unless already set; call before TensorFlow is imported.

    Returns the value in effect (None: unset); leaves it alone once TensorFlow is imported (see
    `prefer_onednn`).
    """
    return _prefer(ALLOCATOR_ENV, "true", environ, tensorflow_imported)


def _prefer(name, value, environ, tensorflow_imported):
    environ = os.environ if environ is None else environ
    if tensorflow_imported is None:
        tensorflow_imported = "tensorflow" in sys.modules
    if tensorflow_imported:
        return environ.get(name)
    return environ.setdefault(name, value)
