"""Shared benchmark machinery: timing, peak memory, machine description, isolated worker processes.

Timing (`measure`, `measure_interleaved`): warm-up calls excluded (tracing, XLA compilation,
oneDNN primitive creation), then at least `min_repeats` and at most `max_repeats` timed calls,
stopping once about `budget_s` of timed calls have run; the median, min, max and quartiles of wall
time are reported, with the median process CPU time (all threads) as a load-insensitive
cross-check. Configurations that are compared with each other are timed in one process,
round-robin (`measure_interleaved`): on a shared machine the load changes within minutes, and
this way every configuration of a comparison sees the same load.

Peak memory, two methods (benchmarks/README.md discusses them):
- "allocator": TensorFlow's CPU allocator statistics, `tf.config.experimental.get_memory_info`.
  TensorFlow keeps them only with a BFC allocator, which it uses by default only where oneDNN is
  on (by default only on CPUs with AVX-512/VNNI/AMX); the workers therefore set
  TF_CPU_ALLOCATOR_USE_BFC=true, so the ruler is the same with oneDNN on and off. The peak of
  bytes in use during the timed calls minus the bytes in use before them is the call's working
  memory (activations, temporaries, gradients), exact to the byte and independent of what other
  configurations left in the pool.
- "rss": growth of the process' peak resident set size (VmHWM in /proc/self/status) over the RSS
  just before the configuration's first call, in a process that runs only that configuration.
  Used for PyTorch (no CPU allocator statistics) and reported beside "allocator" for TensorFlow,
  so that both frameworks are compared with the same ruler. It includes warm-up effects
  (graph tracing, XLA compilation) and allocator slack.

Command lines: `comma_list` is the argparse type of every comma-separated flag of the suites.

Every configuration runs in a worker process (`python -m benchmarks.worker`) started by
`run_groups`, which watches its RSS and kills it when it passes the memory budget; the
configuration is then recorded as skipped with the reason, and so are the larger ones after it.
"""

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1024 ** 3
MIB = 1024 ** 2
POLL_S = 0.2
PRIME_BELOW_S = 0.5  # round-robin calls shorter than this get an untimed call right before
PACKAGES = ("tensorflow", "keras", "torch", "timm", "ai-edge-litert", "numpy")


# ------------------------------------------------------------------------- command lines
def comma_list(choices=None, kind=str, length=None):
    """An argparse `type`: a comma-separated flag ("tf,xla", "14,28") as a tuple of `kind` values,
    each one of `choices` (when given), `length` of them (when given); anything else is refused
    with a message that argparse prefixes with the flag's name.

    Example:

    ```python
    parser.add_argument("--sizes", type=comma_list(kind=int), default="14,28")
    parser.parse_args(["--sizes", "56,112"]).sizes  # (56, 112)
    ```
    """
    what = f"{length} " if length else ""
    what += "integers" if kind is int else "names"

    def parse(text):
        items = tuple(item.strip() for item in text.split(",") if item.strip())
        try:
            items = tuple(kind(item) for item in items)
        except ValueError:
            items = ()
        if not items or (length and len(items) != length):
            raise argparse.ArgumentTypeError(
                f"expected {what}, comma-separated. Received: {text!r}")
        unknown = [item for item in items if choices is not None and item not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {unknown}: choose from {list(choices)}. Received: {text!r}")
        return items

    return parse


# ------------------------------------------------------------------------------- machine
def _meminfo_gib(key="MemTotal"):
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            match = re.search(rf"{key}:\s+(\d+) kB", f.read())
        return round(int(match.group(1)) * 1024 / GIB, 1)
    except (OSError, AttributeError):
        return None


def _package_versions():
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _gpus():
    """GPU names from nvidia-smi, [] when there is none."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def tensorflow_runtime(env):
    """`lambda_keras.runtime.describe()` as a worker started with `env` sees it: whether oneDNN is
    active (TensorFlow says, not the environment variable) and whether the CPU allocator keeps
    statistics (the "allocator" memory ruler). Runs in a subprocess: this process has no TF."""
    probe = ("import json, tensorflow as tf\n"
             "from lambda_keras import runtime\n"
             "info = runtime.describe()\n"
             "try:\n"
             "    tf.config.experimental.reset_memory_stats('CPU:0')\n"
             "    info['allocator_statistics'] = True\n"
             "except (ValueError, RuntimeError):\n"
             "    info['allocator_statistics'] = False\n"
             "print(json.dumps(info))\n")
    if importlib.util.find_spec("tensorflow") is None:
        return {"error": "TensorFlow is not installed"}  # e.g. a GPU machine with JAX and PyTorch
    try:
        out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO_ROOT, timeout=300,
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except subprocess.CalledProcessError as error:  # the exception's line, not the paths
        last = (error.stderr.strip().splitlines() or [""])[-1]  # of the command or traceback
        return {"error": f"exit status {error.returncode}: {last[-300:]}"}
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as error:
        return {"error": f"{type(error).__name__}: {error}"}


def machine_description(threads, onednn=None):
    """CPU (model, SIMD flags), cores, memory, GPUs, package versions, TensorFlow's oneDNN state
    and allocator in the benchmark workers: the context of every number."""
    from lambda_keras import runtime  # not at module level: a worker loads PyTorch before TF

    env = worker_env(threads, onednn)
    return {
        "cpu_model": runtime.cpu_model(),
        "cpu_flags": runtime.cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": runtime.usable_cores(),
        "threads_used": threads,
        "memory_gib": _meminfo_gib(),
        "memory_available_gib_at_start": _meminfo_gib("MemAvailable"),
        "gpus": _gpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": _package_versions(),
        "tensorflow_runtime": tensorflow_runtime(env),  # oneDNN and allocator as the workers run
    }


def load_average():
    return [round(x, 2) for x in os.getloadavg()]


# -------------------------------------------------------------------------------- timing
def summarize(times, cpu_times=()):
    """Median and spread of a list of seconds."""
    times = sorted(times)
    quartiles = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    stats = {
        "median_s": statistics.median(times),
        "min_s": times[0],
        "max_s": times[-1],
        "q1_s": quartiles[0],
        "q3_s": quartiles[2],
        "repeats": len(times),
    }
    if cpu_times:
        stats["cpu_median_s"] = statistics.median(cpu_times)
    return stats


def measure(fn, warmup=1, min_repeats=3, max_repeats=10, budget_s=5.0, warmup_s=0.0):
    """Times `fn()` (which must block until its result exists); returns summarize(...).

    Warm-up: `warmup` untimed calls, continued until `warmup_s` seconds have passed."""
    start = time.perf_counter()
    calls = 0
    while calls < warmup or time.perf_counter() - start < warmup_s:
        fn()
        calls += 1
    times, cpu_times = [], []
    start = time.perf_counter()
    while len(times) < max_repeats:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        if len(times) >= min_repeats and time.perf_counter() - start > budget_s:
            break
    return summarize(times, cpu_times)


def measure_interleaved(fns, warmup=1, min_repeats=3, max_repeats=10, budget_s=5.0,
                        tf_memory=()):
    """Times several callables round-robin, so that all of them see the same machine load.

    `fns`: {name: fn}; after `warmup` calls of each, each round calls every fn once, in an order
    rotated by one each round. A fn faster than PRIME_BELOW_S is called once untimed right before
    its timed call: the previous configuration's threads (PyTorch's OpenMP workers spin for a
    while after a parallel region) must not steal the cores from a short call, and its own
    threads are awake as in a training loop. Stops after `max_repeats` rounds, or after
    `min_repeats` rounds once about `budget_s` per fn has passed.
    Returns {name: summarize(...)} with "peak_bytes": the largest TensorFlow allocator peak over
    the timed calls for the names in `tf_memory` (None for the others).
    """
    prime = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            t0 = time.perf_counter()
            fn()
            prime[name] = time.perf_counter() - t0 < PRIME_BELOW_S
    times = {name: [] for name in fns}
    cpu_times = {name: [] for name in fns}
    peaks = {name: None for name in fns}
    names = list(fns)
    start = time.perf_counter()
    for rounds in range(1, max_repeats + 1):
        offset = (rounds - 1) % len(names)  # rotate: no configuration always follows another
        for name in names[offset:] + names[:offset]:
            fn = fns[name]
            if prime.get(name, True):
                fn()
            memory = TFAllocatorPeak() if name in tf_memory else None
            if memory:
                memory.__enter__()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu_times[name].append(time.process_time() - c0)
            if memory:
                memory.__exit__(None, None, None)
                if memory.peak_bytes is not None:
                    peaks[name] = max(peaks[name] or 0, memory.peak_bytes)
        if rounds >= min_repeats and time.perf_counter() - start > budget_s * len(fns):
            break
    return {name: {**summarize(times[name], cpu_times[name]), "peak_bytes": peaks[name],
                   "memory_method": "allocator" if peaks[name] is not None else None}
            for name in fns}


# -------------------------------------------------------------------------------- memory
def _status_kib(key, pid="self"):
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        match = re.search(rf"{key}:\s+(\d+) kB", f.read())
    return int(match.group(1)) if match else 0


def rss_bytes(pid="self"):
    return _status_kib("VmRSS", pid) * 1024


def peak_rss_bytes():
    return _status_kib("VmHWM") * 1024


class TFAllocatorPeak:
    """Peak bytes in use of TensorFlow's CPU allocator during a `with` block (None if
    unsupported)."""

    device = "CPU:0"

    def __init__(self):
        import tensorflow as tf

        self._tf = tf
        self.peak_bytes = None

    def __enter__(self):
        try:
            self._tf.config.experimental.reset_memory_stats(self.device)
            self._start = self._tf.config.experimental.get_memory_info(self.device)["current"]
        except (ValueError, RuntimeError):
            self._start = None
        return self

    def __exit__(self, *exc):
        if self._start is not None and exc[0] is None:
            peak = self._tf.config.experimental.get_memory_info(self.device)["peak"]
            self.peak_bytes = int(peak - self._start)
        return False


def gib(n_bytes):
    return None if n_bytes is None else n_bytes / GIB


# ----------------------------------------------------------------- worker-side set-up
_FRAMEWORKS_READY = set()


def setup_tensorflow(threads):
    """Thread pools of TensorFlow, set once per process before the first op."""
    import tensorflow as tf

    if "tf" not in _FRAMEWORKS_READY:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        _FRAMEWORKS_READY.add("tf")
    return tf


def setup_torch(threads):
    """PyTorch (and timm's layer module) with `threads` threads, once per process."""
    import torch

    if "torch" not in _FRAMEWORKS_READY:
        import timm.layers.lambda_layer  # noqa: F401 - loaded with torch, before TensorFlow

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
        _FRAMEWORKS_READY.add("torch")
    return torch


# --------------------------------------------------------------------------- processes
def worker_env(threads, onednn=None, backend="tensorflow"):
    """Environment of a benchmark worker.

    `onednn`: None keeps TensorFlow's default (or the user's TF_ENABLE_ONEDNN_OPTS); "0"/"1"
    sets it. `backend`: its KERAS_BACKEND.
    TF_CPU_ALLOCATOR_USE_BFC=true gives TensorFlow's CPU allocator statistics (the "allocator"
    memory ruler) whether oneDNN is on or off; without it they exist only with oneDNN on (where
    TF's oneDNN allocator is also a BFC allocator).
    """
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join([REPO_ROOT] + [p for p in [env.get("PYTHONPATH")] if p]),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TF_CPU_ALLOCATOR_USE_BFC": "true",
        "KERAS_BACKEND": backend,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "BENCH_THREADS": str(threads),
    })
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = str(onednn)
    return env


def _skip(job, reason):
    return {**job, "status": "skipped", "reason": reason}


def _watch(process, timeout_s, memory_budget_bytes):
    """Waits for the worker; kills it past the RSS budget or the time limit and says why."""
    start, peak_rss = time.monotonic(), 0
    while process.poll() is None:
        time.sleep(POLL_S)
        try:
            peak_rss = max(peak_rss, rss_bytes(process.pid))
        except OSError:
            continue
        reason = None
        if memory_budget_bytes and peak_rss > memory_budget_bytes:
            reason = (f"exceeded the memory budget: process RSS {gib(peak_rss):.1f} GiB > "
                      f"{gib(memory_budget_bytes):.1f} GiB (--memory-budget-gb)")
        elif time.monotonic() - start > timeout_s:
            reason = f"exceeded the time limit of {timeout_s:.0f} s per process (--timeout-s)"
        if reason:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return reason
    return None


def _run_process(jobs, threads, timeout_s, memory_budget_bytes, log, onednn=None):
    """Runs `jobs` in order in one worker process, on the Keras backend the jobs name (their
    "backend", TensorFlow by default; one per process); returns one result per job."""
    backends = {job.get("backend", "tensorflow") for job in jobs}
    if len(backends) != 1:
        raise ValueError(f"one Keras backend per worker process. Received: {sorted(backends)}")
    with tempfile.TemporaryDirectory(prefix="lk-bench-") as scratch:
        jobs_path = os.path.join(scratch, "jobs.json")
        results_path = os.path.join(scratch, "results.jsonl")
        with open(jobs_path, "w", encoding="utf-8") as f:
            json.dump(jobs, f)
        log_path = os.path.join(scratch, "worker.log")
        with open(log_path, "w", encoding="utf-8") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.worker", jobs_path, results_path],
                cwd=REPO_ROOT, env=worker_env(threads, onednn, backends.pop()), stdout=log_file,
                stderr=subprocess.STDOUT)
            try:
                reason = _watch(process, timeout_s, memory_budget_bytes)
            except BaseException:  # Ctrl-C or an error here: never leave the worker running
                process.kill()
                process.wait()
                raise
        results = []
        if os.path.exists(results_path):
            with open(results_path, encoding="utf-8") as f:
                results = [json.loads(line) for line in f if line.strip()]
        if reason is None and process.returncode != 0:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                tail = f.read()[-2000:]
            reason = f"worker exited with code {process.returncode}: ...{tail}"
    done = {r["id"] for r in results}
    pending = [job for job in jobs if job["id"] not in done]
    if pending:
        results.append(_skip(pending[0], reason or "worker produced no result"))
        results.extend(_skip(job, f"not run: {pending[0]['id']} before it was skipped ({reason})")
                       for job in pending[1:])
    for result in results:
        log(_describe(result))
    return results


def _describe_stats(name, entry):
    parts = []
    for phase in ("fwd", "train", "infer", "latency"):
        stats = entry.get(phase)
        if isinstance(stats, dict) and "median_s" in stats:
            mem = stats.get("peak_bytes")
            mem = "" if mem is None else f", peak {mem / MIB:.0f} MiB"
            parts.append(f"{phase} {stats['median_s'] * 1000:.1f} ms{mem}")
    return f"  {name}: " + ("; ".join(parts) or "ok")


def _describe(result):
    if result["status"] != "ok":
        return f"  {result['id']}: {result['status']} ({result.get('reason', '')[:160]})"
    nested = result.get("measured") or result.get("formats")
    if nested:  # one line per configuration of a round-robin job
        return "\n".join(_describe_stats(f"{result['id']} {name}", entry)
                         for name, entry in nested.items())
    return _describe_stats(result["id"], result)


def run_groups(groups, threads, timeout_s, memory_budget_bytes, isolate, log=print,
               onednn=None):
    """Runs job groups; a group's jobs run in order (typically increasing size).

    Jobs with a "skip_reason" (planned as too large) are recorded as skipped without running.
    isolate=True runs each job in its own process (clean RSS numbers); a job that is skipped for
    memory or time then skips the rest of its group. isolate=False runs each group in one process.
    `onednn`: TF_ENABLE_ONEDNN_OPTS of the workers (see `worker_env`).
    """
    results = []
    for group in groups:
        planned = [_skip(job, job["skip_reason"]) for job in group if "skip_reason" in job]
        runnable = [job for job in group if "skip_reason" not in job]
        for result in planned:
            log(_describe(result))
        if not isolate and runnable:
            results.extend(_run_process(runnable, threads, timeout_s, memory_budget_bytes, log,
                                        onednn))
        for i, job in enumerate(runnable if isolate else []):
            (result,) = _run_process([job], threads, timeout_s, memory_budget_bytes, log, onednn)
            results.append(result)
            if result["status"] == "skipped":
                for later in runnable[i + 1:]:
                    results.append(_skip(later, f"not run: {job['id']} was skipped "
                                                f"({result['reason']})"))
                    log(_describe(results[-1]))
                break
        results.extend(planned)
    return results


def read_json_folder(folder):
    """{name without ".json": its data} of every *.json file in `folder`, in name order."""
    found = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                found[name[:-len(".json")]] = json.load(f)
    return found


def position_mode(position):
    """A LambdaLayer position mode as read from a result file: "conv", the name of the "local"
    mode in files recorded before it was renamed (results/formulations/, results/paired/), as
    "local" (lambda_keras/layers/lambda_layer.py, `LEGACY_POSITION_MODES`); others unchanged."""
    from lambda_keras.layers.lambda_layer import LEGACY_POSITION_MODES

    return LEGACY_POSITION_MODES.get(position, position) if isinstance(position, str) else position
