"""Tests for lambda_keras/runtime.py: CPU flags, TensorFlow's oneDNN state, the CLI's default.

Independent expectations: TensorFlow's own answer (`IsMklEnabled`) in processes started with
TF_ENABLE_ONEDNN_OPTS=0 and =1, and the logits of one LambdaResNet-26T computed with oneDNN off
and on from the same weights, which must agree to float32 round-off (the command line turns
oneDNN on where TensorFlow leaves it off; that must not change what the model computes).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.common import REPO_ROOT
from lambda_keras import runtime


# Builds LambdaResNet-26T, loads or saves its weights, prints its logits on fixed images, what
# TensorFlow reports about oneDNN and the formulation each lambda layer traced; argv: weights path,
# "save" | "load", output .npy path. Before saving, the BNs get non-trivial statistics
# (test_backends.randomize_batch_norms) and the zero-initialised block-final gammas 0.1-0.3
# (helpers.activate_residual_branches): else every residual branch, and so every lambda layer,
# would add exactly zero to the logits. No softmax: a saturated one would hide differences.
LOGITS_SCRIPT = """
import json, sys
import numpy as np
import keras
from lambda_keras import models, runtime
from lambda_keras.layers import LambdaLayer

sys.path.insert(0, "tests")
from helpers import activate_residual_branches
from test_backends import randomize_batch_norms

weights, mode, out = sys.argv[1:]
keras.utils.set_random_seed(0)
model = models.LambdaResNet26T(weights=None, input_shape=(64, 64, 3), classes=10,
                               classifier_activation=None)
if mode == "save":
    activate_residual_branches(randomize_batch_norms(model))
    model.save_weights(weights)
else:
    model.load_weights(weights)
images = np.random.default_rng(1).standard_normal((4, 64, 64, 3)).astype("float32")
np.save(out, keras.ops.convert_to_numpy(model(images, training=False)))
traced = {layer.name: layer._last_formulation for layer in model.layers
          if isinstance(layer, LambdaLayer)}
print(json.dumps({**runtime.describe(), "formulations": traced}))
"""


def _python(code, *args, onednn=None, allocator=None, backend="tensorflow", timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in (runtime.ENV, runtime.ALLOCATOR_ENV)}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO_ROOT, KERAS_BACKEND=backend)
    if onednn is not None:
        env[runtime.ENV] = onednn
    if allocator is not None:
        env[runtime.ALLOCATOR_ENV] = allocator
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


# Calls each API that needs TensorFlow beyond keras.ops on another backend; prints, per call, its
# error and every file it left in the (empty) output directory. argv: the output directory.
TENSORFLOW_ONLY_SCRIPT = """
import json, os, sys
import keras
from lambda_keras import export, training

out = sys.argv[1]
model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(),
                          keras.layers.Dense(2, activation="softmax")])
calls = {
    "export.saved_model": lambda: export.saved_model(model, os.path.join(out, "serving")),
    "export.tflite": lambda: export.tflite(model, os.path.join(out, "model.tflite")),
    "training.train": lambda: training.train("lambda_resnet26t", "digits", "scratch",
                                             output_dir=os.path.join(out, "run"), weights=None),
    "training.evaluate": lambda: training.evaluate("lambda_resnet26t", "digits", weights=None),
}
errors = {}
for name, call in calls.items():
    try:
        call()
        errors[name] = None
    except Exception as error:
        errors[name] = f"{type(error).__name__}: {error}"
print(json.dumps({"backend": keras.backend.backend(), "errors": errors,
                  "written": sorted(os.listdir(out))}))
"""


def test_tensorflow_only_apis_refuse_another_backend_before_writing(tmp_path):
    """Export and training use TensorFlow beyond keras.ops (README "Backends": "TensorFlow
    only"); on JAX each refuses at once, naming KERAS_BACKEND, and writes nothing (was: an
    export failed inside TensorFlow with "Cannot iterate over a shape with unknown rank", JAX's
    train after its first epoch, leaving files, and PyTorch's trained unsupported)."""
    result = json.loads(_python(TENSORFLOW_ONLY_SCRIPT, str(tmp_path), backend="jax")[-1])
    assert result["backend"] == "jax" and result["written"] == []
    for name, error in result["errors"].items():
        assert error == (f"ValueError: `lambda_keras.{name}` needs Keras' TensorFlow backend "
                         '(README, "Backends"): set KERAS_BACKEND=tensorflow. '
                         "Received: KERAS_BACKEND='jax'"), name


def test_cpu_flags_are_read_from_the_cpu():
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    assert runtime.cpu_flags() == sorted(flags & set(runtime.RECORDED_FLAGS))


def test_has_avx512_reads_this_cpu_or_recorded_flags():
    assert runtime.has_avx512(["avx2", "avx512f", "fma"]) and not runtime.has_avx512(["avx2"])
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        flags = next(line for line in f if line.startswith("flags")).split(":", 1)[1].split()
    assert runtime.has_avx512() == ("avx512f" in flags)


def test_cpu_kind_names_vendor_and_widest_simd_of_this_or_a_recorded_cpu():
    """The kind the lambda layer's rule rows and the benchmark tables are keyed by."""
    assert runtime.cpu_kind("Intel(R) Xeon(R) CPU @ 2.20GHz", ["avx2", "avx512f"]) \
        == "intel-avx512"
    assert runtime.cpu_kind("AMD EPYC", ["avx2", "fma"]) == "amd-avx2"
    assert runtime.cpu_kind("AMD EPYC 9B14", ["avx2", "avx512f"]) == "amd-avx512"
    assert runtime.cpu_kind("unknown", []) == "cpu-simd"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        model = next(line for line in f if line.startswith("model name")).split(":", 1)[1]
    assert runtime.cpu_model() == model.strip()
    assert runtime.cpu_kind() == runtime.cpu_kind(model, runtime.cpu_flags())


def test_prefer_onednn_sets_the_default_and_never_overrides_the_user():
    environ = {}
    assert runtime.prefer_onednn(environ, tensorflow_imported=False) == "1"
    assert environ == {runtime.ENV: "1"}
    environ = {runtime.ENV: "0"}
    assert runtime.prefer_onednn(environ, tensorflow_imported=False) == "0"
    assert environ == {runtime.ENV: "0"}
    # Too late once TensorFlow is imported (it read the variable then): left unset, so nothing
    # after (a subprocess, the layer's rule, a result record) is told what TensorFlow did not do.
    environ = {}
    assert runtime.prefer_onednn(environ, tensorflow_imported=True) is None and environ == {}
    assert "tensorflow" in sys.modules  # this process: the default sees it
    assert runtime.prefer_onednn(environ) is None and environ == {}


def test_prefer_pooled_allocator_sets_the_default_until_tensorflow_has_run():
    name = runtime.ALLOCATOR_ENV
    environ = {}
    assert runtime.prefer_pooled_allocator(environ, runtime_started=False) == "true"
    assert environ == {name: "true"}
    environ = {name: "false"}
    assert runtime.prefer_pooled_allocator(environ, runtime_started=False) == "false"
    assert environ == {name: "false"}
    # TensorFlow reads the variable when its runtime starts: too late after that, left unset.
    environ = {}
    assert runtime.prefer_pooled_allocator(environ, runtime_started=True) is None
    assert environ == {}
    import tensorflow as tf

    tf.zeros((1,)).numpy()  # this process's TensorFlow has run: the default sees it
    assert runtime.tensorflow_started()
    assert runtime.prefer_pooled_allocator(environ) is None and environ == {}


# What the lambda layer's rule sees, and TensorFlow's own evidence of a pooling allocator: only
# a pooling (BFC or oneDNN) CPU allocator keeps statistics (get_memory_info raises otherwise).
# argv: the order of events before the package is imported ("imported": TensorFlow imported;
# "ran": TensorFlow imported and one op run, which starts its runtime and allocator).
ALLOCATOR_SCRIPT = """
import sys
import tensorflow as tf
if sys.argv[1] == "ran":
    tf.zeros((1,)).numpy()
from lambda_keras import runtime
from lambda_keras.layers import formulations
tf.zeros((1024,)).numpy()
try:
    tf.config.experimental.get_memory_info("CPU:0")
    statistics = True
except ValueError:
    statistics = False
print(runtime.pooled_allocator_active(), statistics, formulations.current_runtime().engine)
"""


@pytest.mark.parametrize("onednn, allocator, before, expected", [
    # The package asks for the pooling allocator, also after `import tensorflow` ...
    ("0", None, "imported", "True True tf"),
    # ... but not once TensorFlow has run: its default without oneDNN, malloc, stays (and is
    # reported as it is).
    ("0", None, "ran", "False False tf_malloc"),
    ("0", "false", "imported", "False False tf_malloc"),  # the user's choice wins
    ("0", "true", "ran", "True True tf"),
    ("1", None, "ran", "True True tf_onednn"),  # oneDNN's allocator pools
    ("1", "false", "imported", "True True tf_onednn"),
])
def test_pooled_allocator_is_what_tensorflow_uses(onednn, allocator, before, expected):
    assert _python(ALLOCATOR_SCRIPT, before, onednn=onednn, allocator=allocator)[-1] == expected


def test_pooled_allocator_reads_the_variable_as_tensorflow_does():
    onednn = runtime.onednn_active()  # unset or not a boolean: pooled only with oneDNN
    for value, expected in (("true", True), ("TRUE", True), ("1", True), ("false", onednn),
                            ("0", onednn), ("yes", onednn), (None, onednn)):
        environ = {} if value is None else {runtime.ALLOCATOR_ENV: value}
        assert runtime.pooled_allocator_active(environ) is expected, value


def test_cli_turns_onednn_on_before_tensorflow_is_imported_unless_the_user_chose():
    code = ("import os, sys\n"
            "from lambda_keras import cli\n"
            "assert 'tensorflow' not in sys.modules, 'lambda_keras.cli imported TensorFlow'\n"
            "try:\n"
            "    cli.main(['--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "from lambda_keras import runtime\n"
            "print(os.environ.get(runtime.ENV), runtime.onednn_active(),\n"
            "      os.environ.get(runtime.ALLOCATOR_ENV))\n")
    assert _python(code)[-1] == "1 True true"
    assert _python(code, onednn="0")[-1] == "0 False true"


@pytest.mark.slow
def test_onednn_on_and_off_give_the_same_logits(tmp_path):
    """What TensorFlow reports follows the variable, and the model's logits (its lambda layers
    contributing) agree to float32 round-off either way (different kernels, summation orders)."""
    weights = str(tmp_path / "model.weights.h5")
    logits, states = {}, {}
    for onednn, mode in (("0", "save"), ("1", "load")):
        out = str(tmp_path / f"logits{onednn}.npy")
        states[onednn] = json.loads(_python(LOGITS_SCRIPT, weights, mode, out, onednn=onednn)[-1])
        logits[onednn] = np.load(out)
    assert states["0"]["onednn_active"] is False and states["1"]["onednn_active"] is True
    # TF_CPU_ALLOCATOR_USE_BFC unset by the user: the package asked for TensorFlow's pooling
    # allocator (oneDNN's pools anyway).
    assert states["0"]["pooled_allocator_active"] is True
    assert states["0"]["tf_cpu_allocator_use_bfc"] == "true"
    assert states["1"]["pooled_allocator_active"] is True
    assert states["1"]["tf_enable_onednn_opts"] == "1"
    # The formulation each lambda layer traced (the rule rows are keyed by oneDNN's state too):
    # for the record, not asserted (on the development CPU both runs trace the same ones).
    print(f"\n[formulations] oneDNN off {states['0']['formulations']}, "
          f"on {states['1']['formulations']}")
    lambdas = {"stage3_block2_lambda", "stage4_block1_lambda", "stage4_block2_lambda"}
    assert set(states["0"]["formulations"]) == set(states["1"]["formulations"]) == lambdas
    scale = np.abs(logits["0"]).max()
    assert scale > 0 and np.all(np.isfinite(logits["0"]))
    assert np.abs(logits["1"] - logits["0"]).max() <= 1e-4 * scale
    assert (logits["1"].argmax(-1) == logits["0"].argmax(-1)).all()
