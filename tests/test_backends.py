"""The layer and the models on Keras 3's JAX and PyTorch backends.

A Keras backend is fixed per process (and TensorFlow and PyTorch cannot share one), so each
backend runs all its checks in one subprocess (`python tests/test_backends.py BACKEND DIR`, with
KERAS_BACKEND set), which writes one JSON record per check; the tests below read them. Checks,
each against an independent expectation:

- the NumPy reference of the paper (tests/reference.py) for every position mode and every
  formulation, forced through `implementation` (tests/test_formulations.FORMULATION_CASES),
  inference and training;
- the same reference under `mixed_float16` and `mixed_bfloat16` (float32 weights, low-precision
  compute), inference and training, within the policy's round-off (1e-2 / 5e-2 of the outputs'
  scale);
- TensorFlow parity: a LambdaResNet26T whose weights TensorFlow wrote to a `.weights.h5` file
  gives TensorFlow's logits (<= 1e-4 relative), called directly and through `predict` (compiled:
  jax.jit on JAX, where "auto" follows the XLA rule); so does the paper's LambdaResNet-50 (3x3/2
  pools in its strided lambda blocks), called directly;
- timm parity: the same architecture loaded from a timm `lambda_resnet26t` safetensors file gives
  timm's logits (<= 1e-4 relative);
- LambdaResNet26RPT256 ("relative" positions, fixed 256 px input) builds and runs; the other
  builders share the generic builder these use (tests/test_models*.py cover them on TensorFlow);
- `.keras` and `.weights.h5` round trips of that LambdaResNet26T on that backend: identical
  outputs;
- a fit step of a small model with "local" and "relative" lambda layers: finite losses, every
  weight moves (Adam; BN statistics), finite outputs after it;
- `autotune` (tests/test_autotuning.check_autotune): the stored picks are the fastest measured
  under that backend's compiler, "auto" follows them (and a stored pick the rule would not make,
  with the NumPy reference's outputs), `LAMBDA_KERAS_AUTOTUNE=0` restores the rule; and under
  `mixed_bfloat16` every formulation is timed in both phases (check_autotune_mixed_precision);
- `lambda_keras.benchmark.compare` (tests/test_benchmark_cli.check_compare): both phases of a small
  lambda model against a convolutional baseline, summaries and ratios from the recorded rounds,
  the runtime record of that backend and its compiler;
- the formulations' index and weight tables (`formulations.static_tables`): on PyTorch a layer's
  first call converts them into tensors and its later calls convert no NumPy array (each such
  conversion is a blocking host-to-device copy on a GPU), unless they exceed the kept bytes
  (`DEVICE_TABLES_BYTES`, then converted per call); on JAX they stay NumPy arrays, which jit
  folds into constants.

JAX's `keras.distribution` (several devices): tests/test_backends_distribution.py.

The subprocess needs no TensorFlow (`python tests/test_backends.py BACKEND DIR` with DIR holding
TensorFlow's files): so it ran on a GPU machine (README "On a GPU"); there it sets float32
products first (`float32_on_gpus`).
"""

import json
import os
import subprocess
import sys
import time
import traceback

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ("jax", "torch")
SIZE, CLASSES, BATCH = 64, 10, 2
RELATIVE_TOLERANCE = 1e-4
# The paper's 50-layer model with random weights and BN statistics: measured 0.8-5e-4 between
# TensorFlow and JAX / PyTorch (JAX: the same before its pools moved into the layer), 2-4e-6 for
# its conv-only layout CCCC; float32 round-off through 16 blocks whose lambdas sum r^2 = 529
# terms. Misplaced 3x3/2 pool windows (what this check guards) gave 0.34.
PAPER_RELATIVE_TOLERANCE = 2e-3
GROUPS = ("reference", "mixed_precision", "tf_parity", "timm_parity", "builders", "fit", "saving",
          "autotune", "tables", "bench")


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, "float64"), np.asarray(expected, "float64")
    if actual.shape != expected.shape:
        raise AssertionError(f"shapes differ: {actual.shape} vs {expected.shape}")
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def builder_model(builder="LambdaResNet26T", **kwargs):
    """A lambda_keras builder at SIZE px with CLASSES logits, random weights unless given.
    "LambdaResNet50": the paper's model, 3x3/2 pools in its strided lambda blocks."""
    import lambda_keras

    return getattr(lambda_keras, builder)(**{"weights": None, "input_shape": (SIZE, SIZE, 3),
                                             "classes": CLASSES, "classifier_activation": None,
                                             **kwargs})


def randomize_batch_norms(model, seed=0):
    """Non-trivial BN affine and moving statistics (fresh ones are the identity); returns
    `model`."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape
            layer.gamma.assign(rng.uniform(0.5, 1.5, size))
            layer.beta.assign(rng.normal(0.0, 0.1, size))
            layer.moving_mean.assign(rng.normal(0.0, 0.1, size))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size))
    return model


def to_numpy(x):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x))


# ---------------------------------------------------------------- subprocess (one backend)
def _reference_checks(check):
    import keras
    from test_formulations import FORMULATION_CASES, TRAINING, check_against_reference

    for case in FORMULATION_CASES:
        for phase, training in TRAINING.items():
            def run(case=case, training=training):
                keras.utils.set_random_seed(0)
                return f"max abs error {check_against_reference(case, training):.2e}"

            check(f"reference/{case}/{phase}", run)


def _gradients(layer, x):
    """[training output, d sum(sin(y)) / d input, / d each trainable weight] as NumPy, by the
    backend's own autodiff (JAX: jax.grad of the stateless call; PyTorch: backward)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(trainable, x):
            y, _ = layer.stateless_call(trainable, non_trainable, x, training=True)
            return jnp.sum(jnp.sin(y)), y

        (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            trainable, jnp.asarray(x))
        return [to_numpy(t) for t in [y, grads[1], *grads[0]]]
    import torch

    inputs = torch.tensor(x, requires_grad=True)
    for variable in layer.trainable_variables:
        variable.value.grad = None
    y = layer(inputs, training=True)
    torch.sin(y).sum().backward()
    return [to_numpy(t.detach()) for t in [y, inputs.grad]
            + [v.value.grad for v in layer.trainable_variables]]


def _recomputation_checks(check):
    """Query windows recomputed image by image in training (a loop of `keras.remat`-ed images:
    jax.checkpoint in `lax.map`, torch.utils.checkpoint in a Python loop), as the plan of
    training calls on these backends says, give the outputs and gradients of the maps stored,
    unstrided and strided (tests/test_formulations.py does the same on TensorFlow); on JAX the
    compiled training step's temporary buffers (XLA's memory analysis) are then less than half
    of those with the maps stored (the 8 unrolled parts of an earlier plan saved nothing there:
    XLA ran them side by side)."""
    import dataclasses

    import keras

    from lambda_keras.layers import LambdaLayer, formulations
    from lambda_keras.layers.formulations import execution

    x = np.random.default_rng(9).standard_normal((3, 22, 9, 8)).astype("float32")
    for strides in (1, 2):
        def run(strides=strides):
            # what this backend's training calls do
            assert execution.plan("query_windows", formulations.current_runtime(), True,
                                  rows=56, cols=56).image_loop == "recomputed"
            results, wrapped, remat = [], [], keras.remat
            keras.remat = lambda f: wrapped.append(f) or remat(f)  # counts what is recomputed
            try:
                for image_loop, parts in ((None, 3), ("recomputed", 1)):
                    formulations.plan = lambda *a, loop=image_loop, n=parts, **k: (
                        dataclasses.replace(execution.plan(*a, **k), batch_parts=n,
                                            image_loop=loop))
                    keras.utils.set_random_seed(4)
                    layer = LambdaLayer(
                        output_dim=16, key_dim=4, num_heads=2, receptive_field=3,
                        intra_depth=2, strides=strides, implementation="query_windows",
                        position_bias=True,
                        position_initializer=keras.initializers.RandomNormal(stddev=0.5))
                    layer.build(x.shape)
                    results.append(_gradients(layer, x))
                    assert bool(wrapped) == bool(image_loop), (image_loop, len(wrapped))
            finally:
                formulations.plan, keras.remat = execution.plan, remat
            stored, recomputed = results
            errors = [float(np.max(np.abs(a - e)) / max(1.0, np.max(np.abs(e))))
                      for a, e in zip(recomputed, stored)]
            assert len(errors) == 2 + len(layer.trainable_variables) and max(errors) <= 1e-5, errors
            return f"{len(errors)} tensors, max relative difference {max(errors):.1e}"

        check(f"reference/recomputed_query_windows-s{strides}", run)
    if keras.backend.backend() == "jax":
        check("reference/recomputed_query_windows-memory", _jax_recomputation_memory)


def _jax_recomputation_memory():
    """The temporary bytes XLA assigns to a jitted training step of a query-windows layer at
    28^2 (batch 8, r 23, d 32), the plan's recomputation against the maps stored."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from lambda_keras.layers import LambdaLayer, formulations
    from lambda_keras.layers.formulations import execution

    x = jnp.zeros((8, 28, 28, 32), "float32")
    temporaries = {}
    try:
        for image_loop in (None, "recomputed"):
            formulations.plan = lambda *a, loop=image_loop, **k: dataclasses.replace(
                execution.plan(*a, **k), image_loop=loop, batch_parts=1)
            layer = LambdaLayer(output_dim=32, key_dim=16, num_heads=4, receptive_field=23,
                                implementation="query_windows")
            layer.build(x.shape)
            trainable = [v.value for v in layer.trainable_variables]
            non_trainable = [v.value for v in layer.non_trainable_variables]

            def loss(trainable, layer=layer):
                y, _ = layer.stateless_call(trainable, non_trainable, x, training=True)
                return jnp.mean(jnp.square(y))

            compiled = jax.jit(jax.grad(loss)).lower(trainable).compile()
            temporaries[image_loop] = compiled.memory_analysis().temp_size_in_bytes / 2**20
    finally:
        formulations.plan = execution.plan
    assert execution.plan("query_windows", formulations.current_runtime(), True, rows=28,
                          cols=28).image_loop == "recomputed"  # what training calls do here
    recomputed, stored = temporaries["recomputed"], temporaries[None]
    assert recomputed < 0.5 * stored, temporaries
    return f"temporaries {recomputed:.0f} MiB recomputed vs {stored:.0f} stored"


MIXED_PRECISION_RTOL = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}


def _mixed_precision_checks(check):
    """The layer under each mixed-precision policy (its weights float32, its compute low) against
    the float64 NumPy reference, relative to the outputs' scale, in inference and training."""
    import keras
    from reference import make_layer, random_input, randomize_statistics, reference_lambda_layer

    from lambda_keras import utils

    kwargs = dict(position="local", receptive_field=3, intra_depth=4, position_bias=True)
    for policy, rtol in MIXED_PRECISION_RTOL.items():
        for phase, training in (("fwd", False), ("train", True)):
            def run(policy=policy, rtol=rtol, training=training):
                with utils.dtype_policy(policy):
                    keras.utils.set_random_seed(0)
                    layer = make_layer(**kwargs)
                    x = random_input()
                    layer.build(x.shape)
                    randomize_statistics(layer)
                    actual = to_numpy(keras.ops.cast(layer(x, training=training), "float32"))
                expected = reference_lambda_layer(layer, x, training=training)
                error = float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
                assert error <= rtol, (policy, error)
                return f"max abs error / max |y| {error:.2e} ({layer.compute_dtype})"

            check(f"mixed_precision/{policy}/{phase}", run)


def _tf_parity_and_saving(workdir, backend):
    """TF's weights -> TF's logits; then .keras / .weights.h5 round trips of that model."""
    import keras

    model = builder_model()
    model.load_weights(os.path.join(workdir, "tf.weights.h5"))
    x = np.load(os.path.join(workdir, "x.npy"))
    expected = np.load(os.path.join(workdir, "tf_logits.npy"))
    outputs = to_numpy(model(x, training=False))
    direct = relative_error(outputs, expected)
    compiled = relative_error(model.predict(x, verbose=0), expected)
    assert max(direct, compiled) <= RELATIVE_TOLERANCE, (direct, compiled)
    parity = f"relative error direct {direct:.2e}, predict {compiled:.2e}"

    keras_path = os.path.join(workdir, f"{backend}.keras")
    model.save(keras_path)
    reloaded = keras.saving.load_model(keras_path)  # safe mode on
    keras_error = relative_error(to_numpy(reloaded(x, training=False)), outputs)
    weights_path = os.path.join(workdir, f"{backend}.weights.h5")
    model.save_weights(weights_path)
    fresh = builder_model()
    fresh.load_weights(weights_path)
    h5_error = relative_error(to_numpy(fresh(x, training=False)), outputs)
    assert keras_error == 0.0 and h5_error == 0.0, (keras_error, h5_error)
    return parity, ".keras and .weights.h5 reloads: identical outputs"


def _paper_parity(workdir):
    """TF's weights -> TF's logits for the paper's LambdaResNet-50. Its strided lambda blocks pool
    3x3/2 with "same" padding, which Keras' PyTorch backend pools with other windows on even maps
    (the layer's own pool does not: LambdaLayer's _same_average_pool)."""
    model = builder_model("LambdaResNet50")
    model.load_weights(os.path.join(workdir, "tf50.weights.h5"))
    x = np.load(os.path.join(workdir, "x.npy"))
    error = relative_error(to_numpy(model(x, training=False)),
                           np.load(os.path.join(workdir, "tf50_logits.npy")))
    assert error <= PAPER_RELATIVE_TOLERANCE, error
    return f"relative error {error:.2e}"


def _timm_parity(workdir):
    import torch
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    reference = timm.create_model("lambda_resnet26t", pretrained=False, num_classes=CLASSES)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial BN statistics, as tests/test_weights.py does
        for norm in (m for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            norm.weight.copy_(torch.rand(norm.num_features, generator=generator) * 0.5 + 0.5)
            norm.running_mean.copy_(torch.randn(norm.num_features, generator=generator) * 0.1)
            norm.running_var.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
    reference.eval()
    path = os.path.join(workdir, "timm_26t.safetensors")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    x = np.load(os.path.join(workdir, "x.npy"))
    with torch.no_grad():
        expected = reference(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    model = builder_model(weights=path)
    error = relative_error(to_numpy(model(x, training=False)), expected)
    assert error <= RELATIVE_TOLERANCE, error
    return f"relative error {error:.2e}"


def _builder_check(name):
    import lambda_keras

    builder = getattr(lambda_keras, name)
    # LambdaResNet26RPT256's relative embeddings are made for its 256 px input (16 x 16 maps).
    size = 256 if name == "LambdaResNet26RPT256" else SIZE
    model = builder(weights=None, input_shape=(size, size, 3), classes=CLASSES)
    x = np.random.default_rng(0).uniform(0, 1, (1, size, size, 3)).astype("float32")
    probabilities = to_numpy(model(x, training=False))
    assert probabilities.shape == (1, CLASSES)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-4 and np.isfinite(probabilities).all()
    return f"{model.count_params()} parameters"


def small_lambda_model(windows=False, first_layers=()):
    """A small model and its data (16 maps and labels): `first_layers`, then "local" (a
    position bias) and "relative" strided lambda layers with a batch norm between them on 8 x 8
    x 6 maps; with `windows`, one lambda layer of query windows on 12 x 12 x 6 maps (which a
    training call recomputes image by image where execution.REMAT_MIN_BYTES allows)."""
    import keras
    from lambda_keras.layers import LambdaLayer

    keras.utils.set_random_seed(0)
    size = 12 if windows else 8
    lambdas = ([LambdaLayer(16, key_dim=4, num_heads=2, receptive_field=5,
                            implementation="query_windows"), keras.layers.BatchNormalization()]
               if windows else
               [LambdaLayer(16, key_dim=4, num_heads=2, receptive_field=5, position_bias=True),
                keras.layers.BatchNormalization(), keras.layers.ReLU(),
                LambdaLayer(16, key_dim=4, num_heads=2, position="relative", strides=2)])
    model = keras.Sequential([keras.Input((size, size, 6)), *first_layers, *lambdas,
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    x = np.random.default_rng(2).standard_normal((16, size, size, 6)).astype("float32")
    return model, x, np.arange(16) % 3


def _fit():
    """A fit step of a small model with "local" and "relative" lambda layers."""
    import keras

    model, x, y = small_lambda_model()
    x, y = x[:8], y[:8]
    before = [to_numpy(w).copy() for w in model.weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = model.fit(x, y, batch_size=4, epochs=2, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)), losses
    # Trainable weights move by Adam, BN moving statistics by the training calls.
    unchanged = [w.path for w, old in zip(model.weights, before)
                 if np.array_equal(to_numpy(w), old)]
    assert not unchanged, unchanged
    assert np.isfinite(to_numpy(model(x, training=False))).all()
    return f"losses {', '.join(f'{v:.3f}' for v in losses)}; {len(before)} weights moved"


def _table_checks(check, backend):
    """Every formulation, unstrided and strided, at a map size no other check uses (so its
    first call builds its tables): on PyTorch the NumPy arrays the layer converts (counted at
    torch.as_tensor) in a first call, a second call and, with no bytes kept, two more."""
    import keras
    from lambda_keras.layers import LambdaLayer, formulations
    from lambda_keras.layers.formulations import position_term

    x = keras.ops.convert_to_tensor(
        np.random.default_rng(3).standard_normal((2, 13, 11, 16)).astype("float32"))
    if backend == "jax":
        def numpy_tables():
            tables = formulations.static_tables(formulations.relative_offsets, 3, 2, 5, 3, like=x)
            assert isinstance(tables, np.ndarray), type(tables)
            return "NumPy tables (jit constants)"

        check("tables/jax", numpy_tables)
        return
    import torch

    converted, as_tensor = [], torch.as_tensor

    def counting_as_tensor(data, *args, **kwargs):
        if isinstance(data, np.ndarray):
            converted.append(data.shape)
        return as_tensor(data, *args, **kwargs)

    def conversions(layer):
        converted.clear()
        torch.as_tensor = counting_as_tensor
        try:
            layer(x, training=False)
        finally:
            torch.as_tensor = as_tensor
        return len(converted)

    for formulation in formulations.FORMULATIONS:
        for strides in (1, 2):
            def run(formulation=formulation, strides=strides):
                layer = LambdaLayer(16, key_dim=4, num_heads=2, receptive_field=5,
                                    strides=strides, implementation=formulation)
                first, second = conversions(layer), conversions(layer)
                kept = position_term.DEVICE_TABLES_BYTES
                position_term.DEVICE_TABLES_BYTES = 0
                try:
                    position_term._DEVICE_TABLES.clear()  # noqa: SLF001 - what a budget of 0 keeps
                    unkept = [conversions(layer), conversions(layer)]
                finally:
                    position_term.DEVICE_TABLES_BYTES = kept
                # "conv" unstrided needs no table; every other case needs at least one. Kept
                # nowhere, a table is converted at each use (a strided layer pools twice).
                assert (first > 0) == (formulation != "conv" or strides == 2), first
                assert second == 0 and unkept[0] == unkept[1] >= first, (first, second, unkept)
                return f"NumPy conversions: first call {first}, then {second}; none kept {unkept}"

            check(f"tables/{formulation}-s{strides}", run)


def float32_on_gpus(backend):
    """On a GPU, float32 products in float32: XLA (JAX) runs them in TF32 there by default and
    cuDNN its convolutions, ~1e-3 relative (measured on an H200, README "On a GPU"), beyond these
    checks' 1e-5 / 1e-4. Returns what was set (None on a CPU, where nothing changes).
    Run on an H200 (README "On a GPU"): with these settings every check passed there but the
    paper LambdaResNet-50's, whose weights file did not travel."""
    from lambda_keras import runtime

    if runtime.current_runtime().device != "gpu":
        return None
    if backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
        return "jax_default_matmul_precision=highest"
    import torch

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    return "torch.backends.cudnn / cuda.matmul allow_tf32=False"


def run_checks(backend, workdir):
    """All checks of one backend, in this process; returns {name: {ok, detail, seconds}}."""
    sys.path.insert(0, TESTS)
    import keras

    if keras.backend.backend() != backend:
        raise RuntimeError(f"KERAS_BACKEND={keras.backend.backend()}, expected {backend}")
    precision = float32_on_gpus(backend)
    results = {}

    def check(name, fn):
        started = time.perf_counter()
        try:
            ok, detail = True, fn()
        except Exception as error:  # noqa: BLE001 - recorded; the parent test fails with it
            ok, detail = False, f"{type(error).__name__}: {error}\n{traceback.format_exc()[-2000:]}"
        results[name] = dict(ok=ok, detail=str(detail),
                             seconds=round(time.perf_counter() - started, 2))
        print(f"[{backend}] {name}: {'ok' if ok else 'FAILED'} {results[name]['seconds']} s",
              flush=True)
        with open(os.path.join(workdir, f"{backend}.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)  # after every check: a crash keeps what ran
        return detail

    _reference_checks(check)
    _recomputation_checks(check)
    _mixed_precision_checks(check)
    outcome = {}

    def tf_parity():
        outcome["tf_parity"], outcome["saving"] = _tf_parity_and_saving(workdir, backend)
        return outcome["tf_parity"]

    check("tf_parity/LambdaResNet26T", tf_parity)
    check("tf_parity/LambdaResNet50", lambda: _paper_parity(workdir))
    check("saving/LambdaResNet26T", lambda: outcome["saving"])
    check("timm_parity/lambda_resnet26t", lambda: _timm_parity(workdir))
    # LambdaResNet26T is built above; 26RPT256 adds "relative" positions and a fixed input size.
    # (LambdaResNet50TS and the paper family share their generic builder:
    # tests/test_models_family.py.)
    check("builders/LambdaResNet26RPT256", lambda: _builder_check("LambdaResNet26RPT256"))
    check("fit/lambda_layers", _fit)

    def autotune():
        from test_autotuning import check_autotune

        return check_autotune(workdir)

    check("autotune/small_model", autotune)

    def autotune_mixed_precision():
        from test_autotuning import check_autotune_mixed_precision

        return check_autotune_mixed_precision(workdir, "mixed_bfloat16")

    check("autotune/mixed_bfloat16", autotune_mixed_precision)
    _table_checks(check, backend)

    def bench():
        from test_benchmark_cli import check_compare

        return check_compare()

    check("bench/compare", bench)
    results["_modules"] = dict(ok=True, detail=json.dumps(
        {"tensorflow_imported": "tensorflow" in sys.modules, "keras": keras.__version__,
         "gpu_precision": precision}),
        seconds=0.0)
    return results


# -------------------------------------------------------------------- the tests (parent)
@pytest.fixture(scope="module")
def tf_reference(tmp_path_factory):
    """LambdaResNet26T and the paper's LambdaResNet-50 (random weights, non-trivial BN) written
    by TensorFlow, their logits."""
    import keras

    workdir = tmp_path_factory.mktemp("backends")
    model = builder_model()
    randomize_batch_norms(model)
    x = np.random.default_rng(1).uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype("float32")
    np.save(workdir / "x.npy", x)
    np.save(workdir / "tf_logits.npy", to_numpy(model(x, training=False)))
    model.save_weights(str(workdir / "tf.weights.h5"))
    keras.utils.set_random_seed(50)
    paper = builder_model("LambdaResNet50")
    randomize_batch_norms(paper)
    np.save(workdir / "tf50_logits.npy", to_numpy(paper(x, training=False)))
    paper.save_weights(str(workdir / "tf50.weights.h5"))
    return workdir


def subprocess_env(backend, **extra):
    """The environment of a subprocess of a test file: `backend`, the repository and the tests
    importable, TensorFlow's log quiet, and `extra` variables."""
    path = [os.path.dirname(TESTS), TESTS] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    return {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": os.pathsep.join(path), **extra}


@pytest.fixture(scope="module", params=BACKENDS)
def backend_results(request, tf_reference):
    backend = request.param
    started = time.perf_counter()
    process = subprocess.run([sys.executable, __file__, backend, str(tf_reference)],
                             env=subprocess_env(backend), capture_output=True, text=True,
                             timeout=900)
    path = tf_reference / f"{backend}.json"
    assert process.returncode == 0 and path.exists(), process.stderr[-4000:]
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    print(f"\n[{backend}] {len(results)} checks in {time.perf_counter() - started:.0f} s")
    return backend, results


@pytest.mark.slow
@pytest.mark.parametrize("group", GROUPS)
def test_backend(backend_results, group):
    backend, results = backend_results
    checks = {name: r for name, r in results.items() if name.split("/")[0] == group}
    assert checks, f"{backend}: no {group} checks ran"
    for name, result in checks.items():
        print(f"[{backend}] {name}: {result['detail'].splitlines()[0]} ({result['seconds']} s)")
    failed = {name: r["detail"] for name, r in checks.items() if not r["ok"]}
    assert not failed, f"{backend}: " + "\n".join(f"{n}: {d}" for n, d in failed.items())


def test_reference_covers_every_mode_and_formulation():
    """The cases the backends run reach every formulation and every position mode."""
    sys.path.insert(0, TESTS)
    from test_formulations import FORMULATION_CASES

    from lambda_keras.layers import IMPLEMENTATIONS, POSITION_MODES

    assert {c["implementation"] for c in FORMULATION_CASES.values()} == set(IMPLEMENTATIONS)
    assert {c["position"] for c in FORMULATION_CASES.values()} == set(POSITION_MODES)


if __name__ == "__main__":
    # PyTorch (timm parity) before anything that may load TensorFlow: Keras' data adapters import
    # it when installed, and PyTorch imported after TensorFlow crashes the process.
    import torch  # noqa: F401
    import timm  # noqa: F401

    run_checks(*sys.argv[1:])
