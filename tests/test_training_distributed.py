"""Tests for lambda_keras.training's strategies and the runs they make over several devices or
processes: resolve_strategy (TPU, TF_CONFIG cluster, devices), the step a TPU runs,
MirroredStrategy over two logical CPUs, MultiWorkerMirroredStrategy over two processes, runs of
both interrupted mid-epoch and resumed, and a run killed while writing a backup and resumed (the
fit glue: tests/test_training.py).

Independent expectations: the same run on one device (for MirroredStrategy over two logical
CPUs) and on the other worker (MultiWorkerMirroredStrategy over two processes); an uninterrupted
run (for a run SIGKILLed while writing a backup and restarted, and for a MirroredStrategy or
two-process run interrupted mid-epoch and resumed); recording fakes of the TPU API (no TPU here;
tests/conftest.py).

The model is a tiny network around a real LambdaLayer (a few thousand weights) on the bundled
digits at 32x32; the multi-device and multi-process runs (marked slow) train in fresh Python
processes, killed after SUBPROCESS_TIMEOUT.
"""

import fnmatch
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import keras
import tensorflow as tf

from helpers import TINY, max_relative_diff, tiny_lambda_net
from lambda_keras import data, training

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
SUBPROCESS_TIMEOUT = 420  # seconds; a hung collective must not hang the suite


def _write_script(tmp_path, body, name):
    """`body` after a prelude that puts tests/ and the repository first on sys.path (and quiets
    TensorFlow), written to tmp_path / name; returns its path."""
    script = tmp_path / name
    script.write_text(textwrap.dedent(f"""\
        import os, sys
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        sys.path[:0] = [{TESTS_DIR!r}, {ROOT!r}]
        """) + textwrap.dedent(body))
    return script


def _run_script(tmp_path, body, *args, env=None, expect_rc=0, name="script.py"):
    """Run `body` (after the prelude of `_write_script`) in a fresh Python; kill it on timeout.
    Returns the completed process."""
    script = _write_script(tmp_path, body, name)
    process = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=ROOT,
                             env={**os.environ, **(env or {})}, capture_output=True, text=True,
                             timeout=SUBPROCESS_TIMEOUT)
    if expect_rc is not None and process.returncode != expect_rc:
        raise AssertionError(f"{name} exited {process.returncode}, expected {expect_rc}:\n"
                             f"{process.stdout[-3000:]}\n{process.stderr[-6000:]}")
    return process


# ---------------------------------------------------------------------------- strategies
def test_resolve_strategy_tpu_paths(fake_tpu):
    injected = object()
    strategy = training.resolve_strategy(cluster_resolver=injected)
    assert fake_tpu == [("connect", injected), ("initialize", injected),
                        ("TPUStrategy", injected)]
    assert training.is_tpu_strategy(strategy)
    # TPU settings: bfloat16 activations, XLA through TPUStrategy rather than Keras' jit.
    assert training.resolve_precision("auto", strategy) == "mixed_bfloat16"
    assert training.resolve_jit_compile("auto", strategy) is False

    fake_tpu.clear()
    training.resolve_strategy(tpu="local")  # a TPU VM: no remote cluster to connect to
    assert [c[0] for c in fake_tpu] == ["TPUClusterResolver", "initialize", "TPUStrategy"]
    assert fake_tpu[0] == ("TPUClusterResolver", "local")

    fake_tpu.clear()
    training.resolve_strategy(tpu="grpc://10.0.0.2:8470")
    assert [c[0] for c in fake_tpu] == ["TPUClusterResolver", "connect", "initialize",
                                        "TPUStrategy"]

    fake_tpu.clear()  # "auto" without a TPU goes on to the other strategies
    assert training.resolve_strategy(tpu="auto") is tf.distribute.get_strategy()
    assert fake_tpu == [("TPUClusterResolver", None)]
    assert training.resolve_precision("auto", tf.distribute.get_strategy()) == "float32"
    assert training.resolve_jit_compile("auto", tf.distribute.get_strategy()) is False  # CPU

    with pytest.raises(TypeError, match=r"`tpu` must be None, 'local', 'auto' or a TPU "
                                        r"name/address string. Received: tpu=1"):
        training.resolve_strategy(tpu=1)


def test_resolve_strategy_without_a_tpu_says_so(monkeypatch, fake_tpu):
    """Was TF's own error: InvalidArgumentError / NotFoundError "... No OpKernel ...
    'ConfigureDistributedTPU'" from the initialisation, a bare URLError for a TPU name."""
    import urllib.error

    def initialize_tpu_system(resolver):  # what TF 2.21 raises on a machine without a TPU
        raise tf.errors.NotFoundError(None, None, "TPUs not found in the cluster. Failed in "
                                      "initialization: No OpKernel was registered to support "
                                      "Op 'ConfigureDistributedTPU' used by {{node ...}}")

    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", initialize_tpu_system)
    for tpu, arg in (("local", "tpu"), ("local", "--tpu"), ("grpc://10.0.0.2:8470", "tpu")):
        with pytest.raises(ValueError, match=rf"^No TPU found for {arg}={tpu!r}: .*"
                                             r"\(NotFoundError: TPUs not found in the cluster\)"):
            training.resolve_strategy(tpu=tpu, tpu_arg=arg)
    with pytest.raises(ValueError, match=r"No TPU found for the given `cluster_resolver`"):
        training.resolve_strategy(cluster_resolver=object())

    class TPUClusterResolver:  # a TPU name is looked up on the Cloud TPU API: offline here
        def __init__(self, tpu=None):
            raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", TPUClusterResolver)
    with pytest.raises(ValueError, match=r"^The TPU named by --tpu='mytpu' could not be "
                                         r"resolved: .*\(\[Errno -2\] Name or service not"):
        training.resolve_strategy(tpu="mytpu", tpu_arg="--tpu")
    assert training.resolve_strategy(tpu="auto") is tf.distribute.get_strategy()  # goes on


def test_resolve_strategy_cluster_and_devices(monkeypatch, fake_tpu):
    created = []

    class MultiWorkerMirroredStrategy:
        def __init__(self):
            created.append(json.loads(os.environ["TF_CONFIG"]))

    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", MultiWorkerMirroredStrategy)
    cluster = {"cluster": {"worker": ["localhost:1", "localhost:2"]},
               "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    assert isinstance(training.resolve_strategy(), MultiWorkerMirroredStrategy)
    assert created == [cluster]
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert training.resolve_strategy() is tf.distribute.get_strategy()  # one worker: no cluster
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match=r"TF_CONFIG is not valid JSON"):
        training.resolve_strategy()
    monkeypatch.delenv("TF_CONFIG")
    strategy = training.resolve_strategy(devices=["/cpu:0"])
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.extended.worker_devices == ("/job:localhost/replica:0/task:0/device:CPU:0",)


def test_tpu_train_step_compiles_with_xla_bfloat16_static_shapes(tmp_path, fake_tpu):
    """The step a TPU runs: train's own model/optimizer/loss/metrics under the precision the
    TPU path resolves (mixed_bfloat16), compiled with XLA (jit_compile=True on CPU stands in
    for TPUStrategy's compilation), on train's datasets with TPU (static) shapes."""
    tpu = training.resolve_strategy(cluster_resolver=object())
    precision = training.resolve_precision("auto", tpu)
    recipe = training.get_recipe("paper-imagenet", batch_size=16, epochs=1, warmup_epochs=0)
    train_ds, val_ds, _ = training.training_data(
        "digits", recipe, image_size=32, seed=0, static_shapes=training.is_tpu_strategy(tpu),
        preprocessing=data.DEFAULT_PREPROCESSING)
    for dataset in (train_ds, val_ds):
        for spec in dataset.element_spec:
            assert spec.shape.is_fully_defined(), spec  # XLA on TPU needs static shapes
    # (the fake TPUStrategy has no scope: the step itself runs on the default strategy)
    result = training.train(
        tiny_lambda_net, "digits", "paper-imagenet", output_dir=tmp_path, epochs=1,
        batch_size=16, steps_per_epoch=3, warmup_epochs=0, validation_spec=None,
        mixed_precision=precision, jit_compile=True, strategy=tf.distribute.get_strategy(),
        **TINY)
    model = result.model
    assert result.jit_compile is True and model.jit_compile is True  # Keras kept XLA on
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("lambda").compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.weights)
    assert np.isfinite(result.history["loss"]).all()
    assert model.optimizer.use_ema  # the paper recipe's EMA runs inside the compiled step


# ----------------------------------------------------------------- multi-device / process
MIRRORED = """
import fnmatch
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from lambda_keras import training
from helpers import max_relative_diff, tiny_lambda_net, weights_by_path

def run(name, strategy, sync):
    result = training.train(tiny_lambda_net, "digits", "scratch", output_dir=sys.argv[1] + name,
                            epochs=1, batch_size=32, steps_per_epoch=8, image_size=32,
                            validation_spec=None, seed=0, verbose=0, strategy=strategy,
                            sync_batch_norm=sync)
    return result.model, weights_by_path(result.model)

two = training.resolve_strategy(devices=["/cpu:0", "/cpu:1"])
model, mirrored = run("two", two, sync=True)
_, single = run("one", tf.distribute.get_strategy(), sync=True)
_, plain = run("plain", two, sync=False)
keras_init = weights_by_path(tiny_lambda_net((32, 32, 3), 10))
print(json.dumps({
    "replicas": two.num_replicas_in_sync,
    "diff": max_relative_diff(mirrored, single),
    "plain_bn_diff": max_relative_diff(plain, single),
    "moved": float(np.abs(single["conv1/kernel"] - keras_init["conv1/kernel"]).max()),
}))
"""


@pytest.mark.slow
def test_mirrored_two_logical_cpus_equals_one_device(tmp_path):
    out = _run_script(tmp_path, MIRRORED, tmp_path / "run-").stdout
    numbers = json.loads(out.strip().splitlines()[-1])
    print("mirrored vs one device:", numbers)
    assert numbers["replicas"] == 2
    assert numbers["moved"] > 1e-2  # 8 steps changed the weights
    # Same global batch of 32 split 16 + 16, summed gradients: equal up to float32 round-off.
    # BN: with per-replica statistics (plain BN) each half-batch is normalised by its own mean
    # and variance, a different function from the full batch's; sync_batch_norm all-reduces the
    # statistics, so two replicas compute exactly the one-device batch statistics.
    assert numbers["diff"] <= 1e-4
    assert numbers["plain_bn_diff"] > 10 * max(numbers["diff"], 1e-5)


MIRRORED_RESUME = """
import fnmatch
import json
import keras
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from lambda_keras import training
from helpers import tiny_lambda_net

class Stop(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == 7:  # backups at 2, 4, 5, 6
            raise KeyboardInterrupt

def run(out, callbacks=()):
    return training.train(tiny_lambda_net, "digits", "scratch", output_dir=out, epochs=2,
                          batch_size=32, steps_per_epoch=5, backup_every=2, image_size=32,
                          validation_spec=None, seed=0, verbose=0, deterministic=True,
                          strategy=training.resolve_strategy(devices=["/cpu:0", "/cpu:1"]),
                          callbacks=list(callbacks))
try:
    run(sys.argv[1] + "resumed", [Stop()])
except KeyboardInterrupt:
    pass
with open(sys.argv[1] + "resumed/backup/state.json") as f:
    state = json.load(f)
print(json.dumps({"state": [state["epoch"], state["step"]],
                  "resumed": run(sys.argv[1] + "resumed").history,
                  "reference": run(sys.argv[1] + "reference").history}))
"""


@pytest.mark.slow
def test_mirrored_resume_mid_epoch_keeps_the_epochs_averages(tmp_path):
    """The resumed epoch's metric totals come back into MirroredStrategy's per-replica (sum on
    read) variables: the history equals an uninterrupted run's."""
    out = json.loads(_run_script(tmp_path, MIRRORED_RESUME, tmp_path / "run-").stdout.strip()
                     .splitlines()[-1])
    assert out["state"] == [1, 1]  # killed mid-epoch 2: its first step's totals in the backup
    assert out["resumed"].keys() == out["reference"].keys()
    for key, values in out["resumed"].items():
        np.testing.assert_allclose(values, out["reference"][key], rtol=1e-6, err_msg=key)


MULTI_WORKER = """
import numpy as np
from lambda_keras import training
from helpers import tiny_lambda_net, weights_by_path
index = int(sys.argv[2])
result = training.train(tiny_lambda_net, "digits", "scratch", output_dir=sys.argv[1], epochs=1,
                        batch_size=32, steps_per_epoch=6, image_size=32, seed=0, verbose=0,
                        sync_batch_norm=True)
assert result.strategy == "MultiWorkerMirroredStrategy", result.strategy
np.savez(os.path.join(sys.argv[1], f"weights-{index}.npz"), **weights_by_path(result.model))
print("TOP1", result.metrics["top1"], result.best_checkpoint)
"""


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(tmp_path, body, *args, name="worker.py"):
    """Run `body` (after the prelude of `_write_script`) as the two workers of a TF_CONFIG
    cluster on localhost, with argv `*args` then the worker's index; kill both on timeout.
    Returns each worker's stdout, after checking that both exited 0."""
    script = _write_script(tmp_path, body, name)
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    processes = []
    try:
        for index in range(2):
            config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            processes.append(subprocess.Popen(
                [sys.executable, str(script), *map(str, args), str(index)], cwd=ROOT,
                env={**os.environ, "TF_CONFIG": json.dumps(config)},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [p.communicate(timeout=SUBPROCESS_TIMEOUT) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for index, (p, (out, err)) in enumerate(zip(processes, outputs)):
        assert p.returncode == 0, f"worker {index}: {out[-2000:]}\n{err[-6000:]}"
    return [out for out, _ in outputs]


@pytest.mark.slow
def test_multi_worker_two_processes_end_with_identical_weights(tmp_path):
    outputs = _run_workers(tmp_path, MULTI_WORKER, tmp_path)
    chief, other = (dict(np.load(tmp_path / f"weights-{i}.npz")) for i in range(2))
    # Every variable, BN moving statistics included (sync_batch_norm: statistics all-reduced).
    assert max_relative_diff(chief, other) == 0.0
    assert "TOP1" in outputs[0] and "None" in outputs[1].split("TOP1")[1]  # the chief writes
    assert os.path.exists(tmp_path / "checkpoints" / "last.keras")


MULTI_WORKER_RESUME = """
import fnmatch
import json
import keras
from lambda_keras import training
from helpers import max_relative_diff, tiny_lambda_net, weights_by_path

out, index = sys.argv[1], int(sys.argv[2])
strategy = training.resolve_strategy()  # TF_CONFIG: the process's one MultiWorkerMirroredStrategy

class Stop(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == 7:  # backups at 2, 4, 5, 6
            raise KeyboardInterrupt  # both workers, after the same step

def run(name, callbacks=()):
    return training.train(tiny_lambda_net, "digits", "scratch", output_dir=out + name, epochs=2,
                          batch_size=32, steps_per_epoch=5, backup_every=2, image_size=32,
                          validation_spec=None, seed=0, verbose=0, deterministic=True,
                          strategy=strategy, callbacks=list(callbacks))
try:
    run("resumed", [Stop()])
except KeyboardInterrupt:
    pass
backup = "backup" if index == 0 else f"backup-worker{index}"
with open(os.path.join(out + "resumed", backup, "state.json")) as f:
    state = json.load(f)
resumed, reference = run("resumed"), run("reference")
print(json.dumps({"strategy": resumed.strategy, "state": [state["epoch"], state["step"]],
                  "resumed": resumed.history, "reference": reference.history,
                  "weights_diff": max_relative_diff(weights_by_path(resumed.model),
                                                    weights_by_path(reference.model))}))
"""


@pytest.mark.slow
def test_multi_worker_resume_mid_epoch_keeps_the_epochs_averages(tmp_path):
    """Two processes (MultiWorkerMirroredStrategy) interrupted mid-epoch and resumed, each from
    its own backup: the chief's history equals an uninterrupted two-process run's, and both
    workers end with the uninterrupted run's weights."""
    chief, other = (json.loads(out.strip().splitlines()[-1])
                    for out in _run_workers(tmp_path, MULTI_WORKER_RESUME, tmp_path / "run-"))
    for worker in (chief, other):
        assert worker["strategy"] == "MultiWorkerMirroredStrategy"
        assert worker["state"] == [1, 1]  # stopped mid-epoch 2: its first step's totals saved
        assert worker["weights_diff"] == 0.0
    assert other["resumed"] is None and other["reference"] is None  # the chief logs
    assert chief["resumed"].keys() == chief["reference"].keys()
    for key, values in chief["resumed"].items():
        np.testing.assert_allclose(values, chief["reference"][key], rtol=1e-6, err_msg=key)


RESUMABLE = """
import signal
import numpy as np
import keras
from lambda_keras import training
from helpers import tiny_lambda_net, weights_by_path

out, kill_at, weights_out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
marker = os.path.join(out, "killed-once")
save_weights = keras.Model.save_weights

def dying_save_weights(self, filepath, *args, **kwargs):
    # The first run is killed while writing the backup of global step `kill_at`: half a file.
    step = int(keras.ops.convert_to_numpy(self.optimizer.iterations))
    if kill_at and step == kill_at and not os.path.exists(marker):
        save_weights(self, filepath, *args, **kwargs)
        with open(filepath, "r+b") as f:
            f.truncate(os.path.getsize(filepath) // 2)
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return save_weights(self, filepath, *args, **kwargs)

keras.Model.save_weights = dying_save_weights
result = training.train(tiny_lambda_net, "digits", "scratch", output_dir=out, epochs=3,
                        batch_size=32, steps_per_epoch=10, backup_every=4, image_size=32,
                        seed=0, deterministic=True, verbose=2)
np.savez(weights_out, **weights_by_path(result.model))
"""


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    resumed, reference = tmp_path / "resumed", tmp_path / "reference"
    # Backups every 4 steps (10 steps per epoch): 4, 8, 10 (epoch end), 12, 16, ... The first run
    # dies writing the step-16 backup, mid-epoch 2, leaving half a file: the restart must ignore
    # it, resume at epoch 2 step 2 (global step 12) and skip that epoch's first 2 steps.
    first = _run_script(tmp_path, RESUMABLE, resumed, 16, tmp_path / "unused.npz",
                        expect_rc=-signal.SIGKILL)
    assert "Epoch 2/3" in first.stdout and "Epoch 3/3" not in first.stdout
    with open(resumed / "backup" / "state.json") as f:
        state = json.load(f)
    assert (state["epoch"], state["step"], state["phase"]) == (1, 2, 0)
    assert any(training.TEMP_MARK in name for name in os.listdir(resumed / "backup"))
    for name in fnmatch.filter(os.listdir(resumed / "checkpoints"), "*.keras"):  # all whole
        keras.saving.load_model(resumed / "checkpoints" / name)

    second = _run_script(tmp_path, RESUMABLE, resumed, 16, tmp_path / "resumed.npz")
    assert "Epoch 1/3" not in second.stdout and "Epoch 2/3" in second.stdout
    _run_script(tmp_path, RESUMABLE, reference, 0, tmp_path / "reference.npz")
    a, b = (dict(np.load(tmp_path / f"{n}.npz")) for n in ("resumed", "reference"))
    # Tolerance 0: the backup restores weights, optimizer slots and step count bit for bit, the
    # data stream is a function of the global step, and op determinism fixes the reduction
    # order; any skipped or replayed step would move the weights by about the learning rate.
    assert max_relative_diff(a, b) == 0.0
    # The resumed epoch's loss and accuracy average all its 10 steps, 2 of them before the
    # kill (the backup keeps the running totals), as in the uninterrupted run.
    history, expected = (json.loads((run / "history.json").read_text())
                         for run in (resumed, reference))
    assert history["epoch"] == [1, 2, 3] and history.keys() == expected.keys()
    for key in history:  # loss, accuracy, top5_accuracy, val_..., learning_rate
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-6, err_msg=key)
    assert not os.path.exists(resumed / "backup")
