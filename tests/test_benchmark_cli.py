"""`lambda-keras bench` and `lambda_keras.benchmark.compare`: a model timed against a
keras.applications baseline in one process, interleaved.

Checked against independent expectations: the JSON holds both models' times per phase and each
summary is the median of the recorded rounds (the ratio: the median of the rounds' baseline /
model ratios, recomputed here); the rounds alternate the order; steps of known cost (sleeps) give
their known ratio, the right way round; the runtime record is what `runtime.describe()` and
TensorFlow's `IsMklEnabled()` say; `--mixed-precision` builds both models in that policy;
`--baseline none` gives no ratio; every bad argument is one error line naming the flag, before
anything is built; a failed run leaves `--output` as it was.
"""

import json
import os
import statistics
import time

import keras
import numpy as np
import pytest

from lambda_keras import benchmark, cli, runtime
from lambda_keras.layers import LambdaLayer
from lambda_keras.layers.formulations import autotuning

from cli_helpers import one_error_line, save_tiny_model

RESNET50_PARAMS = 25_636_712  # keras.applications.ResNet50, 1000 classes (Keras' table: 25.6M)
TINY = ["--image-size", "32", "--batch-size", "2", "--calls", "1"]


def test_bench_records_both_models_per_phase_and_the_rounds_ratio(tmp_path, monkeypatch, capsys):
    orders = []
    time_round = autotuning.time_round

    def recording(steps, calls=1):
        orders.append(list(steps))
        return time_round(steps, calls)

    monkeypatch.setattr(autotuning, "time_round", recording)
    out = tmp_path / "results.json"
    assert cli.main(["bench", "--model", "lambda_resnet26t", *TINY, "--rounds", "3",
                     "--phases", "fwd,train", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left
    assert result["model"]["name"] == "lambda_resnet26t"
    assert result["baseline"] == {"name": "resnet50", "params": RESNET50_PARAMS}
    assert (result["batch_size"], result["input_shape"]) == (2, [32, 32, 3])
    # Each phase: 3 rounds, the order alternating (model first in the first round).
    first, second = ["model", "baseline"], ["baseline", "model"]
    assert orders == [first, second, first] * 2
    assert list(result["results"]) == ["fwd", "train"]
    for phase, entry in result["results"].items():
        for role in ("model", "baseline"):
            times = entry[role]["rounds_ms"]
            assert len(times) == 3 and min(times) > 0, (phase, role)
            assert entry[role]["ms"] == pytest.approx(statistics.median(times))
            assert entry[role]["images_per_s"] == pytest.approx(2000 / statistics.median(times))
        ratios = [b / m for b, m in zip(entry["baseline"]["rounds_ms"],
                                        entry["model"]["rounds_ms"])]
        assert entry["ratio"] == pytest.approx(
            {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)})
        # The printed table shows the JSON's numbers.
        assert (f"| {phase} | {entry['model']['ms']:.1f} | {entry['model']['images_per_s']:.1f} "
                f"| {entry['baseline']['ms']:.1f} |") in printed
        assert f"| {entry['ratio']['median']:.2f} |" in printed
    assert f"wrote {out}" in printed


def test_bench_records_the_runtime_as_tensorflow_reports_it(tmp_path, capsys):
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    out = tmp_path / "results.json"
    assert cli.main(["bench", "--model", "lambda_resnet26t", *TINY, "--rounds", "1",
                     "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())["runtime"]
    assert record["onednn_active"] is bool(_pywrap_util_port.IsMklEnabled())
    assert {key: record[key] for key in runtime.describe()} == runtime.describe()
    assert (record["backend"], record["backend_version"]) == ("tensorflow", tf.__version__)
    assert record["keras_version"] == keras.__version__
    assert (record["cpu_model"], record["cores"]) == (runtime.cpu_model(), runtime.usable_cores())
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        flags = set(f.read().split())
    assert set(record["cpu_flags"]) == flags & {"avx2", "fma", "avx512f", "avx512_vnni",
                                                "avx512_bf16", "amx_tile", "amx_bf16"}
    on_gpu = bool(tf.config.list_logical_devices("GPU"))
    assert record["jit_compile"] is on_gpu  # "auto": XLA on a single GPU only
    assert (record["dtype_policy"], record["compute_dtype"]) == ("float32", "float32")
    assert f"oneDNN: {'on' if record['onednn_active'] else 'off'}" in printed
    assert all(flag in printed for flag in record["cpu_flags"])


def test_bench_builds_both_models_in_the_mixed_precision_policy(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert cli.main(["bench", "--model", "lambda_resnet26t", "--image-size", "32",
                     "--batch-size", "1", "--rounds", "1", "--calls", "1",
                     "--mixed-precision", "mixed_bfloat16", "--output", str(out)]) == 0
    record = json.loads(out.read_text())["runtime"]
    assert (record["dtype_policy"], record["compute_dtype"]) == ("mixed_bfloat16", "bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert "mixed_bfloat16 (compute bfloat16)" in capsys.readouterr().out


def test_bench_without_a_baseline_times_the_model_alone(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert cli.main(["bench", "--model", tiny_model_path, "--baseline", "none", "--rounds", "2",
                     "--calls", "2", "--batch-size", "1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["baseline"] is None and result["input_shape"] == [32, 32, 3]
    (phase, entry), = result["results"].items()
    assert phase == "fwd" and entry["baseline"] is None and entry["ratio"] is None
    assert len(entry["model"]["rounds_ms"]) == 2
    assert "ratio" not in printed and "| fwd |" in printed


def check_compare():
    """`compare` on the current backend (tests/test_backends.py runs it on JAX and PyTorch, the
    test below on TensorFlow): a small lambda model against a small convolutional baseline, both
    phases, each summary and ratio recomputed from the recorded rounds, and the runtime record
    of this backend and its compiler. Returns a summary line."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 8))
    features = LambdaLayer(key_dim=4, num_heads=2, receptive_field=5)(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(features), name="small")
    baseline = keras.Sequential([keras.Input((12, 12, 8)), keras.layers.Conv2D(8, 3),
                                 keras.layers.GlobalAveragePooling2D()], name="conv")
    result = benchmark.compare(model, baseline, batch_size=2, phases=("fwd", "train"), rounds=2,
                               calls=1)
    assert list(result["results"]) == ["fwd", "train"], result["results"]
    for phase, entry in result["results"].items():
        for role in ("model", "baseline"):
            times = entry[role]["rounds_ms"]
            assert len(times) == 2 and min(times) > 0, (phase, role, times)
            assert entry[role]["ms"] == pytest.approx(statistics.median(times))
        ratios = [b / m for b, m in zip(entry["baseline"]["rounds_ms"],
                                        entry["model"]["rounds_ms"])]
        assert entry["ratio"]["median"] == pytest.approx(statistics.median(ratios)), phase
    record, backend = result["runtime"], keras.backend.backend()
    assert record["backend"] == backend and record["keras_version"] == keras.__version__
    # "auto": XLA as the project runs each backend: JAX always, TensorFlow on a GPU, PyTorch never.
    expected_xla = backend == "jax" or (backend == "tensorflow" and record["device_kind"] == "gpu")
    assert record["jit_compile"] is expected_xla, record
    # The backend's settings that change its numbers, as the backend reports them.
    state = {"tensorflow": ("onednn_active", "pooled_allocator_active"),
             "jax": ("matmul_precision",), "torch": ("mkldnn", "cuda_matmul_tf32", "cudnn_tf32")}
    if backend == "jax":
        import jax

        assert record["matmul_precision"] == jax.config.jax_default_matmul_precision
    elif backend == "torch":
        import torch

        assert record["cudnn_tf32"] is torch.backends.cudnn.allow_tf32
    assert all(key in record for key in state[backend]), record
    assert "| train |" in benchmark.format_report(result)
    # A model of several outputs (a backbone's feature maps, as `features=True` builds): its
    # steps sum every output (the forward step's value against NumPy's sum of the outputs),
    # and both phases are timed (was a TypeError inside the traced step on TensorFlow).
    backbone = keras.Model(inputs, {"c3": features, "c4": LambdaLayer(
        key_dim=4, num_heads=2, receptive_field=3, strides=2)(features)}, name="backbone")
    x = np.random.default_rng(0).standard_normal((2, 12, 12, 8)).astype("float32")
    outputs = backbone(x, training=False)
    expected = sum(float(np.sum(keras.ops.convert_to_numpy(outputs[key]).astype("float64")))
                   for key in ("c3", "c4"))
    steps, _ = autotuning.STEPS[backend](backbone, x, record["jit_compile"])
    assert steps["fwd"]() == pytest.approx(expected, rel=1e-4, abs=1e-3)
    several = benchmark.compare(backbone, batch_size=2, phases=("fwd", "train"), rounds=1,
                                calls=1)
    assert all(several["results"][phase]["model"]["ms"] > 0 for phase in ("fwd", "train"))
    return (f"{backend}: fwd {result['results']['fwd']['ratio']['median']:.2f}x, "
            f"train {result['results']['train']['ratio']['median']:.2f}x the conv baseline")


def test_compare_times_both_phases_on_tensorflow():
    check_compare()


def test_compare_gives_the_ratio_of_steps_of_known_cost(monkeypatch):
    """Steps that sleep 4 ms (the model) and 12 ms (the baseline): a ratio of about 3, > 1
    because the model is the faster one."""
    cost = {}

    def sleeping_steps(model, x, jit_compile):  # noqa: ARG001 (STEPS' signature)
        def step():
            time.sleep(cost[model.name])
            return 0.0

        return {"fwd": step, "train": step}, None

    monkeypatch.setitem(autotuning.STEPS, keras.backend.backend(), sleeping_steps)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Dense(2)], name="fast")
    baseline = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Dense(2)], name="slow")
    cost.update(fast=0.004, slow=0.012)
    result = benchmark.compare(model, baseline, rounds=3, calls=2)
    entry = result["results"]["fwd"]
    assert 2.0 < entry["ratio"]["median"] < 3.5, entry
    assert entry["model"]["ms"] == pytest.approx(4, abs=3)
    assert entry["baseline"]["ms"] == pytest.approx(12, abs=3)


def test_compare_refuses_a_baseline_of_other_inputs_or_policy():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Dense(2)])
    other = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="`baseline` must take the model's inputs"):
        benchmark.compare(model, other)
    low = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Dense(2, dtype="bfloat16")])
    with pytest.raises(ValueError, match="`baseline` must compute in the model's dtype policy"):
        benchmark.compare(model, low)
    with pytest.raises(ValueError, match=r"`phases` must be .*Received: phases='fwd'"):
        benchmark.compare(model, phases="fwd")
    with pytest.raises(TypeError, match="`model` must be a built Keras model"):
        benchmark.compare("lambda_resnet26t")


def test_compare_refuses_a_model_of_several_inputs_and_phases_of_a_wrong_type():
    # Were NumPy's "'tuple' object cannot be interpreted as an integer" and "'int' object is
    # not iterable".
    first, second = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    pair = keras.Model([first, second], keras.layers.Add()([first, second]), name="pair")
    with pytest.raises(ValueError, match=r"`model` must take one input, a batch of images\. "
                                         r"Received: model 'pair' with inputs of shapes "
                                         r"\[\(None, 8, 8, 3\), \(None, 8, 8, 3\)\]"):
        benchmark.compare(pair, batch_size=1, rounds=1, calls=1)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"`phases` must be .*Received: phases=5"):
        benchmark.compare(model, phases=5)


# --- errors: one line naming the flag, nothing built or written -------------------------------
@pytest.mark.parametrize("flags, names", [
    (["--phases", "fwd,predict"], ["`--phases`", "fwd,predict"]),
    (["--rounds", "0"], ["`--rounds`", "Received: --rounds=0"]),
    (["--calls", "0"], ["`--calls`", "Received: --calls=0"]),
    (["--batch-size", "0"], ["`--batch-size`", "Received: --batch-size=0"]),
    (["--baseline", "vgg16"], ["`--baseline`", "'vgg16'", "resnet50, resnet101, resnet152, none"]),
    (["--output", "results.txt"], ["`--output`", "results.txt"]),
])
def test_bad_bench_arguments_are_one_error_line(flags, names, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    built = []
    monkeypatch.setattr(cli.commands, "timed_model", lambda args: built.append(args))
    one_error_line(capsys, ["bench", "--model", "lambda_resnet26t", *flags], *names)
    assert not built and os.listdir(tmp_path) == []


def test_bench_output_must_not_be_a_directory(tmp_path, capsys):
    folder = tmp_path / "results.json"
    folder.mkdir()
    one_error_line(capsys, ["bench", "--model", "lambda_resnet26t", "--output", str(folder)],
                   "`--output`", str(folder))


def test_bench_of_a_keras_file_of_any_size_needs_image_size(tmp_path, capsys):
    path = save_tiny_model(tmp_path / "any.keras", classes=3, size=None)
    one_error_line(capsys, ["bench", "--model", path], "--image-size")
    assert cli.main(["bench", "--model", path, "--image-size", "48", "--batch-size", "1",
                     "--rounds", "1", "--calls", "1", "--baseline", "none"]) == 0
    assert "batch 1 of 48x48x3" in capsys.readouterr().out


def test_a_failed_bench_leaves_the_earlier_output_as_it_was(tiny_model_path, tmp_path,
                                                            monkeypatch, capsys):
    out = tmp_path / "results.json"
    out.write_text('{"earlier": true}\n')

    def failing(steps, calls=1):
        raise ValueError("the machine ran out of memory (simulated)")

    monkeypatch.setattr(autotuning, "time_round", failing)
    one_error_line(capsys, ["bench", "--model", tiny_model_path, "--output", str(out)],
                   "simulated")
    assert out.read_text() == '{"earlier": true}\n' and os.listdir(tmp_path) == ["results.json"]
    # A .keras file keeps its policy: a contradicting --mixed-precision fails before timing.
    one_error_line(capsys, ["bench", "--model", tiny_model_path, "--mixed-precision",
                            "mixed_bfloat16", "--output", str(out)], "--mixed-precision")
    assert out.read_text() == '{"earlier": true}\n'
