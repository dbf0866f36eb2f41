"""Tests for lambda_keras.layers.formulations: the five formulations of the position term and
the rule that picks one.

- Every formulation, forced through `LambdaLayer(implementation=...)`, matches the NumPy
  reference of the paper (tests/reference.py) in every position mode it applies to, inference
  and training; row windows equal the convolution on a 28 x 28 map with the paper's r = 23;
  query windows equal the convolution on tall maps cut into several blocks of query rows, with
  and without the strided layer's pools folded in.
- The rule (`formulations.choose`) against its own measurements: in every cell of every
  machine's table (benchmarks/results/formulations/<cpu>.json, e.g. intel-avx512 and amd-avx2)
  its pick is within 1.2x of the fastest formulation.
- The runtime the rule sees is the real one: XLA inside `tf.function(jit_compile=True)`, not
  outside; TensorFlow's oneDNN state as TF reports it.

`FORMULATION_CASES` is pure data: tests/test_backends.py runs the same cases on JAX and PyTorch.
"""

import dataclasses
import glob
import json
import os

import numpy as np
import keras
import pytest

from benchmarks import formulation_tables
from benchmarks import formulations as bench_formulations
from lambda_keras import runtime as runtime_module
from lambda_keras.layers import LambdaLayer, formulations
from lambda_keras.layers.formulations import position_term
from reference import (force_plan, make_layer, random_input, randomize_statistics,
                       reference_lambda_layer)

RESULTS = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "benchmarks", "results", "formulations", "*.json")))  # one table per CPU kind
MACHINES = {os.path.splitext(os.path.basename(path))[0]: path for path in RESULTS}

# id: LambdaLayer arguments. Every formulation in every position mode it applies to, |u| 1 and 2,
# strides, bias, r smaller and larger (23) than the 6 x 7 map.
FORMULATION_CASES = {
    "queries_first-conv-u2-bias": dict(implementation="queries_first", position="conv",
                                       receptive_field=5, intra_depth=2, position_bias=True),
    "queries_first-relative-s2": dict(implementation="queries_first", position="relative",
                                      strides=2),
    "queries_first-conv-r23-s2p2-bias": dict(implementation="queries_first", position="conv",
                                             strides=2, pool_size=2, position_bias=True),
    "queries_first-global-u2": dict(implementation="queries_first", position="global",
                                    intra_depth=2),
    "lambdas_first-conv-r23": dict(implementation="lambdas_first", position="conv"),
    "lambdas_first-relative-u2-bias": dict(implementation="lambdas_first", position="relative",
                                           intra_depth=2, position_bias=True),
    "lambdas_first-global-s2p2": dict(implementation="lambdas_first", position="global",
                                      strides=2, pool_size=2),
    "query_windows-conv-u2-bias": dict(implementation="query_windows", position="conv",
                                       receptive_field=5, intra_depth=2, position_bias=True),
    "query_windows-conv-r23-s2": dict(implementation="query_windows", position="conv",
                                      strides=2),
    "query_windows-conv-r3-u2-s2p2-bias": dict(implementation="query_windows", position="conv",
                                               receptive_field=3, intra_depth=2, strides=2,
                                               pool_size=2, position_bias=True),
    "row_windows-conv-u2-bias": dict(implementation="row_windows", position="conv",
                                     receptive_field=5, intra_depth=2, position_bias=True),
    "row_windows-conv-r23-s2": dict(implementation="row_windows", position="conv", strides=2),
    "row_windows-conv-r3": dict(implementation="row_windows", position="conv", receptive_field=3),
    "conv-conv-u2": dict(implementation="conv", position="conv", receptive_field=5,
                         intra_depth=2),
    "conv-conv-r23-s2p2-bias": dict(implementation="conv", position="conv", strides=2,
                                    pool_size=2, position_bias=True),
    "auto-conv": dict(implementation="auto", position="conv", receptive_field=5),
    "auto-relative": dict(implementation="auto", position="relative", intra_depth=2),
    "auto-none-u2-s2p3": dict(implementation="auto", position=None, intra_depth=2, strides=2),
}
TRAINING = {"inference": False, "training": True}


def check_against_reference(case, training):
    """Max abs error of the forced formulation vs the NumPy reference (asserts <= 1e-5 scale)."""
    layer = make_layer(**FORMULATION_CASES[case])
    x = random_input()
    layer.build(x.shape)
    randomize_statistics(layer)
    expected = reference_lambda_layer(layer, x, training=training)
    actual = keras.ops.convert_to_numpy(layer(x, training=training))
    forced = FORMULATION_CASES[case]["implementation"]
    if forced != "auto" and layer.position is not None:  # the forced formulation ran
        assert layer._last_formulation == forced
    error = float(np.max(np.abs(actual - expected)))
    scale = max(1.0, float(np.max(np.abs(expected))))
    assert error <= 1e-5 * scale, f"{case} training={training}: {error:.3g} > 1e-5 x {scale:.3g}"
    return error


@pytest.mark.parametrize("training", TRAINING)
@pytest.mark.parametrize("case", FORMULATION_CASES)
def test_each_formulation_matches_numpy_reference(case, training):
    check_against_reference(case, TRAINING[training])


QUERIES_FIRST_CASES = [case for case in FORMULATION_CASES if case.startswith("queries_first")]


@pytest.mark.parametrize("case", QUERIES_FIRST_CASES)
def test_queries_first_forms_match_the_reference_and_each_others_gradients(case, monkeypatch):
    """Both forms of q . E, the einsum and the matmul batched over (b, n) with E broadcast (the
    rule's BROADCAST_EMBEDDINGS_ENGINES) whose maps meet V in one matmul per image (as in
    TensorFlow without oneDNN: SEPARATE_PRODUCTS_ENGINES), on every machine whatever its engine:
    outputs against the NumPy reference in inference and training, and the gradients of one
    against the other's (input and every weight)."""
    import tensorflow as tf

    x = random_input()
    gradients = {}
    for broadcast in (False, True):
        force_plan(monkeypatch, broadcast_embeddings=broadcast, separate_products=broadcast)
        for training in TRAINING.values():
            check_against_reference(case, training)
        keras.utils.set_random_seed(3)
        layer = make_layer(**FORMULATION_CASES[case])
        inputs = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(tf.sin(layer(inputs, training=True)))
        gradients[broadcast] = [g.numpy() for g in tape.gradient(
            loss, [inputs] + [w.value for w in layer.trainable_weights])]
    for einsum, broadcast in zip(gradients[False], gradients[True]):
        np.testing.assert_allclose(broadcast, einsum, rtol=1e-4, atol=1e-5 * np.abs(einsum).max())


PAPER = dict(key_dim=16, num_heads=4, output_dim=256)  # |v| = 64: k v = 1024 = h m at 16 x 16


def test_row_windows_equal_the_convolution_on_a_large_map():
    """row_windows on a 28 x 28 map with r = 23 (query tiles, clipped row offsets) gives the
    outputs of the lambda convolution, in inference and training."""
    layer = LambdaLayer(**PAPER, implementation="row_windows",
                        position_initializer=keras.initializers.RandomNormal(stddev=0.1))
    x = np.random.default_rng(3).standard_normal((2, 28, 28, 32)).astype("float32")
    layer.build(x.shape)
    randomize_statistics(layer)
    reference = LambdaLayer.from_config({**layer.get_config(), "implementation": "conv"})
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    for training in (False, True):
        expected = keras.ops.convert_to_numpy(reference(x, training=training))
        actual = keras.ops.convert_to_numpy(layer(x, training=training))
        scale = max(1.0, float(np.abs(expected).max()))
        assert np.abs(actual - expected).max() <= 1e-4 * scale, f"training={training}"


@pytest.mark.parametrize("block_columns,block_scopes", [(1, 2), (2, 2), (4, 0.5), (1, 0.5)])
@pytest.mark.parametrize("strides,pool_size", [(1, 3), (2, 3), (2, 2)])
def test_query_windows_equal_the_convolution_on_tall_maps(strides, pool_size, block_columns,
                                                          block_scopes, monkeypatch):
    """query_windows on a 22 x 9 map with r = 3 (blocks of 2 scopes of query rows: 4 blocks
    unstrided, 3 strided; of half a scope: 11, and 6 or 11 strided; the last one padded;
    column windows reaching past both sides; 1, 2 or 4 query columns per block, the last group
    padded) equals the lambda convolution (pooled afterwards), inference and training, with
    |u| = 2; and so do its gradients."""
    force_plan(monkeypatch, block_columns=block_columns, block_scopes=block_scopes)
    kwargs = dict(output_dim=16, key_dim=4, num_heads=2, receptive_field=3, intra_depth=2,
                  strides=strides, pool_size=pool_size,
                  position_initializer=keras.initializers.RandomNormal(stddev=0.5))
    x = np.random.default_rng(7).standard_normal((2, 22, 9, 8)).astype("float32")
    layer = LambdaLayer(implementation="query_windows", **kwargs)
    layer.build(x.shape)
    randomize_statistics(layer)
    reference = LambdaLayer(implementation="conv", **kwargs)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    for training in (False, True):
        expected = keras.ops.convert_to_numpy(reference(x, training=training))
        actual = keras.ops.convert_to_numpy(layer(x, training=training))
        assert layer._last_formulation == "query_windows"
        np.testing.assert_allclose(actual, expected, atol=2e-5 * max(1, np.abs(expected).max()))
    # Its gradients (through the gathers) are the convolution's: input and every weight.
    import tensorflow as tf

    inputs = tf.constant(x)
    grads = []
    for model in (layer, reference):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(tf.square(model(inputs, training=True)))
        grads.append(tape.gradient(loss, [inputs] + [w.value for w in model.trainable_weights]))
    for actual, expected in zip(*grads):
        np.testing.assert_allclose(actual, expected, atol=1e-4 * max(1, np.abs(expected).max()))


def test_separate_products_equal_one_batched_matmul():
    """`batched_matmul(separate=True)` (the rule's SEPARATE_PRODUCTS_ENGINES) gives np.matmul's
    products as one 2-D matmul per item of a static batch, in TensorFlow's graph; a batch unknown
    while tracing stays one batched matmul, with the same products."""
    import tensorflow as tf

    rng = np.random.default_rng(5)
    a, b = (rng.standard_normal(shape).astype("float32") for shape in ((5, 6, 7), (5, 7, 3)))
    expected = np.matmul(a, b)
    for separate, signature, matmuls in ((True, (5, None, None), {"MatMul": 5}),
                                         (False, (5, None, None), {"BatchMatMulV2": 1}),
                                         (True, (None, None, None), {"BatchMatMulV2": 1})):
        spec = [tf.TensorSpec(signature, tf.float32)] * 2
        product = tf.function(lambda x, y, separate=separate: formulations.batched_matmul(
            x, y, separate), input_signature=spec)
        np.testing.assert_allclose(product(a, b).numpy(), expected, rtol=1e-5, atol=1e-5)
        ops = [op.type for op in product.get_concrete_function().graph.get_operations()]
        assert {kind: ops.count(kind) for kind in ("MatMul", "BatchMatMulV2")
                if kind in ops} == matmuls, (separate, signature)


@pytest.mark.parametrize("strides", [1, 2])
def test_query_windows_separate_products_match_the_batched_ones(strides, monkeypatch):
    """Query windows with step 3's products as separate matmuls (TensorFlow without oneDNN) give
    the outputs and gradients (input and every weight) of the batched matmul, grouped columns and
    half-scope blocks, unstrided and strided."""
    import tensorflow as tf

    seen = []  # the `separate` of every product the layer formed
    batched_matmul = position_term.batched_matmul
    monkeypatch.setattr(position_term, "batched_matmul", lambda a, b, separate=False: (
        seen.append(separate) or batched_matmul(a, b, separate)))
    x = tf.constant(np.random.default_rng(8).standard_normal((2, 22, 9, 8)).astype("float32"))
    results = []
    for separate in (False, True):
        force_plan(monkeypatch, block_columns=2, block_scopes=0.5, separate_products=separate)
        keras.utils.set_random_seed(4)
        layer = LambdaLayer(output_dim=16, key_dim=4, num_heads=2, receptive_field=3,
                            intra_depth=2, strides=strides, implementation="query_windows",
                            position_initializer=keras.initializers.RandomNormal(stddev=0.5))
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, training=True)
            loss = tf.reduce_sum(tf.sin(out))
        grads = tape.gradient(loss, [x] + [w.value for w in layer.trainable_weights])
        results.append([out.numpy(), layer(x, training=False).numpy()]
                       + [g.numpy() for g in grads])
        assert set(seen) == {separate}, seen
        seen.clear()
    for batched, separate in zip(*results):
        np.testing.assert_allclose(separate, batched, rtol=1e-5,
                                   atol=1e-5 * max(1.0, np.abs(batched).max()))


def test_query_windows_block_geometry(monkeypatch):
    """The blocks the docstring promises, seen in the gathers' traced sizes: about
    QUERY_BLOCK_SCOPES scopes of query rows per block, each meeting its rows plus r - 1 context
    rows (not the whole map): memory linear in the map's rows."""
    seen = []
    take = keras.ops.take
    monkeypatch.setattr(position_term.ops, "take", lambda x, indices, axis=None: (
        seen.append(np.shape(indices)) or take(x, indices, axis=axis)))
    q = np.zeros((1, 22 * 9, 2, 4), "float32")
    for group in (1, 3):
        out = formulations.query_windows(q, np.zeros((1, 22 * 9, 3, 2), "float32"),
                                         np.zeros((3, 3, 2, 4), "float32"), 22, 9,
                                         block_columns=group)
        assert tuple(out.shape) == (1, 22 * 9, 2, 3)
        # r = 3: blocks of 2 x 3 = 6 query rows (22 rows: 4 blocks, the last padded), each
        # meeting 6 + 2 context rows; gathered: 4 blocks x 6 rows x G columns x 2 heads x 8
        # context rows of scores, and per block and group of columns 8 rows x (G + 2) columns
        # of V (9 columns: 9 groups of 1, 3 of 3).
        assert (4 * 6 * group * 2 * 8,) in seen
        assert (9 // group * 4 * 8 * (group + 2),) in seen
        # The geometry the benchmarks' memory estimate reads is the one traced.
        assert formulations.query_windows_shape(22, 9, 3, block_columns=group) == dict(
            span=3, blocks=4, block=6, context=8, groups=9 // group, group=group,
            width=group + 2)


def test_query_windows_blocks_only_where_they_shrink_the_context():
    """Blocks of half a scope (r 23: 12 query rows) meet 34 context rows at 56^2 instead of
    the 50 of 2-scope blocks; at 28^2 they would meet the whole map each, so it stays one
    block."""
    def rows(*args, **kwargs):  # (blocks, query rows per block, context rows)
        found = formulations.query_windows_shape(*args, **kwargs)
        return found["blocks"], found["block"], found["context"]

    assert rows(56, 56, 23)[2] == 50
    assert rows(56, 56, 23, block_scopes=0.5) == (5, 12, 34)
    assert rows(28, 28, 23, block_scopes=0.5) == (1, 28, 28)


# ------------------------------------------------------------------------------ the rule
ONEDNN = formulations.Runtime("tensorflow", onednn=True)
NO_ONEDNN = formulations.Runtime("tensorflow", onednn=False)
NO_ONEDNN_AVX2 = formulations.Runtime("tensorflow", onednn=False, cpu="amd-avx2")
MALLOC_AVX2 = formulations.Runtime("tensorflow", pooled_allocator=False, cpu="amd-avx2")
# (kind of CPU, (engine, phase), row) of every rule table; LOCAL_RULE's rows are the Xeon's.
ALL_ROWS = [("intel-avx512", key, rule) for key, rule in formulations.LOCAL_RULE.items()] + [
    (cpu, key, rule) for cpu, rows in formulations.CPU_RULES.items() for key, rule in rows.items()]
# The largest map the suite timed query windows on (its 8 GiB limit, benchmarks/formulations.py
# MEMORY_LIMIT_BYTES), per kind of CPU and phase: the Xeon's table stops at 56^2; the AMD CPUs
# ran forward passes up to 112^2 and training up to 56^2, but for the EPYC-512 without oneDNN,
# whose training cells at 112^2 fitted (r 7 |u| 4: 3.8 vs 4.8 s for the convolution).
WINDOWS_TIMED_UP_TO = {
    ("intel-avx512", "fwd"): 56 * 56, ("intel-avx512", "train"): 56 * 56,
    ("amd-avx2", "fwd"): 112 * 112, ("amd-avx2", "train"): 56 * 56,
    ("amd-avx512", "fwd"): 112 * 112, ("amd-avx512", "train"): 56 * 56,
    ("amd-avx512", ("tf", "train")): 112 * 112,
}
XLA = formulations.Runtime("tensorflow", xla=True, onednn=True)
JAX = formulations.Runtime("jax", xla=True)
TORCH = formulations.Runtime("torch")


def choose(size, training, runtime, position="conv", intra_depth=1, heads=4, key_dim=16,
           value_dim=64, receptive_field=23, strides=1):
    rows, cols = size
    return formulations.choose(position, rows, cols, training, num_heads=heads, key_dim=key_dim,
                               value_dim=value_dim, intra_depth=intra_depth,
                               receptive_field=receptive_field, runtime=runtime, strides=strides)


def test_runtime_engines():
    assert ONEDNN.engine == "tf_onednn" and NO_ONEDNN.engine == "tf"
    assert formulations.Runtime("tensorflow", pooled_allocator=False).engine == "tf_malloc"
    # oneDNN's own allocator pools: the allocator matters only with oneDNN off.
    assert formulations.Runtime("tensorflow", onednn=True, pooled_allocator=False).engine \
        == "tf_onednn"
    assert XLA.engine == "xla" and JAX.engine == "jax"
    assert TORCH.engine == "torch"
    assert formulations.Runtime("tensorflow", onednn=True, device="tpu").engine == "xla"
    assert formulations.Runtime("tensorflow", onednn=True, device="gpu").engine == "tf"


def test_rule_structural_choices():
    """What does not depend on measurements: dynamic sizes convolve, small maps (h m u <= k v)
    contract q . E first unless a local scope covers only part of them (then query windows: the
    r 9 cells of the EPYC's table), "relative"/"global" maps above that use lambdas_first."""
    for runtime in (ONEDNN, NO_ONEDNN, NO_ONEDNN_AVX2, MALLOC_AVX2, XLA, JAX, TORCH):
        assert choose((None, 28), True, runtime) == "conv"
        assert choose((16, 16), False, runtime) == "queries_first"  # h m = 1024 = k v
        assert choose((16, 16), False, runtime, receptive_field=9) == "query_windows"  # 81 < 256
        assert choose((14, 14), True, runtime, receptive_field=9, strides=2) == "query_windows"
        assert choose((9, 9), False, runtime, receptive_field=9) == "queries_first"  # covered
        assert choose((16, 16), False, runtime, position="global") == "queries_first"
        assert choose((16, 16), True, runtime, position="relative") == "queries_first"
        assert choose((20, 20), False, runtime, position="global") == "lambdas_first"
        assert choose((56, 56), True, runtime, position="relative") == "lambdas_first"
        # Maps much larger than the r x r scope: a local formulation (E would be mostly zeros).
        assert choose((24, 24), False, runtime, receptive_field=7) in formulations.LOCAL_ONLY
        assert choose((72, 72), True, runtime) in formulations.LOCAL_ONLY
    # The scope covers the map, q.E is not allowed more memory than the lambdas and query
    # windows do not apply (PyTorch forward): E . V.
    assert choose((20, 20), False, TORCH) == "lambdas_first"
    # A symbolic training flag (e.g. a Keras learning-phase tensor) counts as training.
    symbolic = keras.ops.convert_to_tensor(True)
    assert choose((56, 56), symbolic, ONEDNN) == choose((56, 56), True, ONEDNN)


def test_strided_layers_take_query_windows_where_measured_fastest():
    """A strided 28^2 layer folds its pool into query windows on every engine (measured 1.2-2.5x
    faster than the next formulation there); small strided maps keep the pooled q . E; the
    unstrided layer's pick differs where query windows were not the fastest."""
    for runtime in (ONEDNN, NO_ONEDNN, NO_ONEDNN_AVX2, MALLOC_AVX2, XLA, JAX, TORCH):
        assert choose((28, 28), False, runtime, strides=2) == "query_windows"
        assert choose((14, 14), False, runtime, strides=2) == "queries_first"
    assert choose((28, 28), False, TORCH) == "conv"
    assert choose((28, 28), False, XLA) == "queries_first"
    assert choose((56, 56), False, ONEDNN) == "query_windows"
    assert choose((112, 112), False, ONEDNN) == "conv"
    malloc = formulations.Runtime("tensorflow", pooled_allocator=False)
    assert choose((28, 28), True, malloc) == "row_windows"
    assert choose((28, 28), True, malloc, strides=2) == "query_windows"


def test_the_cpu_without_avx512_has_rows_of_its_own():
    """Where the EPYC's table ranked formulations differently from the Xeon's (rule.py,
    WITHOUT_AVX512_RULE)."""
    # Forward at 112^2 on the CPU without AVX-512: query windows with oneDNN (0.78 vs 1.08 s for
    # the convolution), without it (1.58 vs 2.79 s for row windows, malloc 2.58 vs 3.48 s),
    # under XLA and on JAX (with 2 columns and half-scope blocks: 2.2 vs 3.2 s); not on
    # PyTorch. JAX forward: row windows at 28^2.
    avx2 = {name: dataclasses.replace(runtime, cpu="amd-avx2") for name, runtime in
            dict(onednn=ONEDNN, tf=NO_ONEDNN, xla=XLA, jax=JAX, torch=TORCH).items()}
    assert [choose((112, 112), False, avx2[name]) for name in avx2] == [
        "query_windows", "query_windows", "query_windows", "query_windows", "conv"]
    assert choose((56, 56), False, avx2["jax"]) == "query_windows"
    assert choose((28, 28), False, avx2["jax"]) == "row_windows"
    # timm's unstrided r 9 layer at 14^2 (2.4 scopes), TensorFlow without oneDNN forward: q . E
    # first since it runs broadcast (5.7 vs 7.0 ms), with malloc query windows (7.4 vs 8.4 ms).
    assert choose((14, 14), False, avx2["tf"], receptive_field=9) == "queries_first"
    assert choose((14, 14), False, MALLOC_AVX2, receptive_field=9) == "query_windows"
    assert choose((16, 16), False, avx2["tf"], receptive_field=9) == "query_windows"  # 3.2
    assert choose((56, 56), False, avx2["jax"], receptive_field=7, intra_depth=4) == "conv"
    assert choose((128, 128), False, avx2["jax"]) == "row_windows"
    assert choose((112, 112), False, MALLOC_AVX2) == "query_windows"
    # Training at 112^2, r 23, in half-scope blocks: query windows with TensorFlow, oneDNN on
    # or off, under XLA and on JAX (without oneDNN 4.4-5.6 vs 6.1-6.8 s for row windows, XLA
    # 2.5-3.2 vs 6.5-13 s, JAX 8.7 vs 12.2 s); with malloc and on PyTorch row windows; r 7: as
    # before (oneDNN and without it the 7 x 7 convolution, XLA query windows).
    assert [choose((112, 112), True, avx2[name]) for name in avx2] == [
        "query_windows", "query_windows", "query_windows", "query_windows", "row_windows"]
    assert choose((56, 56), True, avx2["jax"]) == "query_windows"
    assert choose((56, 56), True, JAX) == "row_windows"
    assert choose((56, 56), True, avx2["jax"], receptive_field=7, intra_depth=4) == "conv"
    assert choose((112, 112), True, MALLOC_AVX2) == "row_windows"
    assert [choose((112, 112), True, avx2[name], receptive_field=7, intra_depth=4)
            for name in ("onednn", "tf")] == ["conv", "conv"]
    assert choose((128, 128), True, avx2["tf"]) == "row_windows"
    # Beyond what was measured (112^2), the lean formulations of the other rows.
    assert choose((128, 128), False, avx2["onednn"]) == "conv"
    assert choose((128, 128), False, MALLOC_AVX2) == "row_windows"
    assert choose((128, 128), True, avx2["xla"], receptive_field=7, intra_depth=4) == "conv"
    # XLA training beyond 56^2: query windows for r 7 too (2.29 vs 3.36 s for the convolution
    # at 112^2); PyTorch forward at 28^2: row windows (68 vs 97 ms).
    assert choose((112, 112), True, avx2["xla"], receptive_field=7, intra_depth=4) \
        == "query_windows"
    assert choose((28, 28), False, avx2["torch"]) == "row_windows"
    assert choose((56, 56), False, avx2["torch"]) == "conv"
    # Without oneDNN: query windows for the unstrided 28^2 forward on both CPUs (without AVX-512
    # only with 4 query columns per block); with malloc, query windows (2 columns per block) for
    # r 23 and the 7 x 7 convolution for r 7.
    assert choose((28, 28), False, NO_ONEDNN) == "query_windows"
    assert choose((28, 28), False, NO_ONEDNN_AVX2) == "query_windows"
    assert choose((28, 28), False, MALLOC_AVX2) == "query_windows"
    assert choose((28, 28), False, MALLOC_AVX2, receptive_field=7, intra_depth=4) == "conv"
    # Only CPUs have an AVX-512 row: a GPU runs TensorFlow's rule whatever the host CPU.
    gpu = dict(backend="tensorflow", device="gpu")
    assert (choose((28, 28), False, formulations.Runtime(**gpu, cpu="amd-avx2"))
            == choose((28, 28), False, formulations.Runtime(**gpu)))


def test_strided_queries_first_pools_the_maps_and_equals_pooling_the_output(monkeypatch):
    """TensorFlow: the strided layer's position term goes through queries_first_pooled, and gives
    what the unstrided layer's output pooled afterwards gives (3 x 3 "same" and 2 x 2 pools)."""
    calls = []
    pooled = formulations.queries_first_pooled
    monkeypatch.setattr(formulations, "queries_first_pooled",
                        lambda *a: calls.append(1) or pooled(*a))
    x = np.random.default_rng(5).standard_normal((2, 7, 9, 16)).astype("float32")
    for pool_size, padding in ((3, "same"), (2, "valid")):
        kwargs = dict(output_dim=16, key_dim=4, num_heads=2, receptive_field=5,
                      implementation="queries_first", pool_size=pool_size,
                      position_initializer=keras.initializers.RandomNormal(stddev=0.5))
        strided = LambdaLayer(strides=2, **kwargs)
        strided.build(x.shape)
        plain = LambdaLayer(**kwargs)
        plain.build(x.shape)
        plain.set_weights(strided.get_weights())
        expected = keras.ops.average_pool(plain(x), pool_size, strides=2, padding=padding)
        actual = strided(x)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(actual),
                                   keras.ops.convert_to_numpy(expected), atol=2e-5)
    assert len(calls) == 2


def test_rule_rows_are_ordered_and_closed():
    assert set(formulations.LOCAL_RULE) == {(e, p) for e in formulations.ENGINES
                                            for p in ("fwd", "train")}
    for rows in formulations.CPU_RULES.values():
        assert set(rows) <= set(formulations.LOCAL_RULE)
    for cpu, key, rule in ALL_ROWS:
        assert rule["queries_first"] >= 1, key  # never below the memory-neutral criterion
        assert rule["strided_queries_first"] >= 1, key
        assert rule["dense_scope"] >= 1, key
        # query_windows only on maps the suite timed it on (strided layers: within 56^2)
        largest = WINDOWS_TIMED_UP_TO.get((cpu, key), WINDOWS_TIMED_UP_TO[cpu, key[1]])
        for windows, up_to in ((rule["windows"], largest), (rule["strided_windows"], 56 * 56)):
            assert windows is None or 0 <= windows[0] <= windows[1] <= up_to, (cpu, key)
        rows = rule["local"]
        assert rows[-1][:2] == (None, 0), key  # the last row matches every r and map
        assert {f for _, _, f in rows} <= set(formulations.LOCAL_ONLY), key


def test_query_windows_blocks_only_where_measured():
    """Grouped query columns and half-scope blocks of query rows (formulations.window_blocks)
    only where they were measured faster: on the CPU without AVX-512, unstrided layers with
    r > 11; columns without oneDNN in TensorFlow and under XLA (TF and JAX), half-scope
    blocks forward with TensorFlow, XLA and JAX, in training with TensorFlow (oneDNN on or off,
    pooled allocator), XLA and JAX; 1 column and 2-scope blocks elsewhere."""
    def blocks(runtime, training, **kwargs):
        found = formulations.window_blocks(runtime, training, **kwargs)
        return found["block_columns"], found["block_scopes"]

    assert blocks(NO_ONEDNN_AVX2, False) == (4, 0.5)
    # The EPYC with AVX-512: 2 columns forward since the separate products.
    assert blocks(dataclasses.replace(NO_ONEDNN_AVX2, cpu="amd-avx512"), False) == (2, 0.5)
    assert blocks(NO_ONEDNN_AVX2, True) == (2, 0.5)
    assert blocks(MALLOC_AVX2, None) == (2, 0.5)
    assert blocks(dataclasses.replace(ONEDNN, cpu="amd-avx2"), False) == (1, 0.5)
    assert blocks(dataclasses.replace(XLA, cpu="amd-avx2"), False) == (2, 0.5)
    assert blocks(dataclasses.replace(XLA, cpu="amd-avx2"), True) == (2, 0.5)
    assert blocks(dataclasses.replace(ONEDNN, cpu="amd-avx2"), True) == (1, 0.5)
    assert blocks(MALLOC_AVX2, True) == (2, 2)
    assert blocks(dataclasses.replace(JAX, cpu="amd-avx2"), False) == (2, 0.5)
    assert blocks(dataclasses.replace(JAX, cpu="amd-avx2"), True) == (2, 0.5)
    assert blocks(NO_ONEDNN_AVX2, False, strides=2) == (1, 2)
    assert blocks(NO_ONEDNN_AVX2, False, receptive_field=7) == (1, 2)
    for runtime in (ONEDNN, NO_ONEDNN, XLA, JAX, TORCH):
        for training in (False, True):
            assert blocks(runtime, training) == (1, 2)
    assert blocks(dataclasses.replace(TORCH, cpu="amd-avx2"), True) == (1, 2)
    for _, key, rule in ALL_ROWS:
        assert isinstance(rule["block_columns"], int) and rule["block_columns"] >= 1, key
        assert rule["block_scopes"] > 0, key
        assert isinstance(rule["batch_parts"], int) and rule["batch_parts"] >= 1, key


def test_batch_parts_only_where_measured():
    """The position term in independent parts of the batch (formulations.batch_parts) only
    where it was measured faster: forward, TensorFlow without oneDNN (pooled or malloc) on the
    CPU without AVX-512 and pooled on the AMD CPU with it, query windows of unstrided layers with
    r > 11."""
    assert formulations.batch_parts(dataclasses.replace(MALLOC_AVX2, cpu="amd-avx512"), False,
                                    "query_windows") == 1
    for runtime in (NO_ONEDNN_AVX2, MALLOC_AVX2, dataclasses.replace(NO_ONEDNN, cpu="amd-avx512")):
        assert formulations.batch_parts(runtime, False, "query_windows") == 4
        assert formulations.batch_parts(runtime, True, "query_windows") == 1
        assert formulations.batch_parts(runtime, False, "query_windows", strides=2) == 1
        assert formulations.batch_parts(runtime, False, "query_windows", receptive_field=9) == 1
        for formulation in ("queries_first", "row_windows", "conv", "lambdas_first"):
            assert formulations.batch_parts(runtime, False, formulation) == 1
    amd = [dataclasses.replace(runtime, cpu=cpu) for runtime in (ONEDNN, XLA, JAX, TORCH)
           for cpu in ("amd-avx2", "amd-avx512")]
    for runtime in (ONEDNN, NO_ONEDNN, XLA, JAX, TORCH, *amd):
        for training in (False, True):
            assert formulations.batch_parts(runtime, training, "query_windows") == 1


def test_plan_gathers_what_the_rule_says_for_a_call():
    """`formulations.plan` holds, for one call, the rule's settings of the picked formulation:
    where a strided layer pools (folded into query windows' scores everywhere, on q . E first's
    maps where POOLED_MAPS_ENGINES says so, the output otherwise), query windows' blocks and
    batch parts as `window_blocks` / `batch_parts` give them, and q . E's broadcast embeddings and
    separate products without oneDNN in TensorFlow only."""
    amd_tf = dataclasses.replace(NO_ONEDNN, cpu="amd-avx512")
    for runtime in (ONEDNN, NO_ONEDNN, amd_tf, MALLOC_AVX2, XLA, JAX, TORCH):
        without_onednn = runtime.engine in ("tf", "tf_malloc")
        for training in (False, True):
            for formulation in formulations.FORMULATIONS:
                for strides in (1, 2):
                    plan = formulations.plan(formulation, runtime, training, strides)
                    expected_pool = "output"
                    if strides == 2 and formulation == "query_windows":
                        expected_pool = "scores"
                    elif strides == 2 and formulation == "queries_first":
                        expected_pool = "output" if runtime.engine == "torch" else "maps"
                    assert plan.formulation == formulation
                    assert plan.pool == expected_pool, (runtime, formulation, strides)
                    assert plan.blocks == formulations.window_blocks(runtime, training, strides)
                    assert plan.batch_parts == formulations.batch_parts(runtime, training,
                                                                        formulation, strides)
                    assert plan.broadcast_embeddings == plan.separate_products == without_onednn
    # The one place the CPU changes batch parts, seen through the plan.
    assert formulations.plan("query_windows", amd_tf, False).batch_parts == 4
    assert formulations.plan("query_windows", amd_tf, False).blocks == dict(block_columns=2,
                                                                            block_scopes=0.5)


@pytest.mark.parametrize("formulation", ["query_windows", "queries_first"])
def test_batch_parts_equal_the_whole_batch(formulation):
    """The position term of a static batch cut into parts (balanced, at most one per image)
    gives the whole batch's output and gradients, in its order; a dynamic batch (unknown
    while tracing) stays whole."""
    import tensorflow as tf

    rng = np.random.default_rng(11)
    q = tf.constant(rng.standard_normal((3, 22 * 9, 2, 4)).astype("float32"))
    values = tf.constant(rng.standard_normal((3, 22 * 9, 3, 2)).astype("float32"))
    kernel = tf.constant(rng.standard_normal((5, 5, 2, 4)).astype("float32"))
    embeddings = formulations.position_embeddings(kernel, "conv", 22, 9)  # [n, m, u, k]

    def position(q, values):
        if formulation == "queries_first":
            return formulations.queries_first(q, values, embeddings, broadcast=True)
        return formulations.query_windows(q, values, kernel, 22, 9, block_columns=2,
                                          block_scopes=0.5)

    def with_gradients(parts):
        with tf.GradientTape() as tape:
            tape.watch([q, values])
            out = formulations.in_batch_parts(position, parts, q, values)
            loss = tf.reduce_sum(tf.sin(out))
        return [out.numpy()] + [g.numpy() for g in tape.gradient(loss, [q, values])]

    whole = with_gradients(1)
    for parts in (2, 3, 4):  # 4 > batch: one part per image
        for actual, expected in zip(with_gradients(parts), whole):
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)

    def traced(batch):  # (matmuls in the traced graph, the tf.function) for a batch size
        function = tf.function(
            lambda q, values: formulations.in_batch_parts(position, 4, q, values),
            input_signature=[tf.TensorSpec((batch,) + tuple(q.shape[1:])),
                             tf.TensorSpec((batch,) + tuple(values.shape[1:]))])
        operations = function.get_concrete_function().graph.get_operations()
        return sum(op.type in ("MatMul", "BatchMatMulV2") for op in operations), function

    whole_matmuls, dynamic = traced(None)
    assert whole_matmuls >= 2 and traced(3)[0] == 3 * whole_matmuls  # 3 parts vs 1 whole
    np.testing.assert_allclose(dynamic(q, values).numpy(), whole[0], rtol=1e-5, atol=1e-5)


def test_rule_tables_of_several_machines():
    """The rule is held to CPUs with and without AVX-512 (TensorFlow's oneDNN default differs),
    Intel and AMD."""
    assert {"intel-avx512", "amd-avx2", "amd-avx512"} <= set(MACHINES), sorted(MACHINES)


def test_each_kind_of_cpu_gets_its_measured_rows_or_those_of_its_simd_width():
    """rule.py, CPU_RULES: the AMD CPUs' own rows; an unmeasured kind those of the measured one
    with the same SIMD width (a guess, documented); no CPU rows on a GPU."""
    assert formulations.cpu_rows("intel-avx512") == {}
    assert formulations.cpu_rows("amd-avx2") is formulations.WITHOUT_AVX512_RULE
    assert formulations.cpu_rows("amd-avx512") is formulations.AMD_AVX512_RULE
    assert formulations.cpu_rows("intel-avx2") is formulations.WITHOUT_AVX512_RULE
    assert formulations.cpu_rows("arm-simd") is formulations.WITHOUT_AVX512_RULE
    assert formulations.cpu_rows("cpu-avx512") == {}
    amd = {name: dataclasses.replace(runtime, cpu="amd-avx512") for name, runtime in
           dict(onednn=ONEDNN, xla=XLA).items()}
    # The r 23 forward at 112^2: the AVX-512 convolution with oneDNN on both AVX-512 CPUs
    # (AMD: 462 vs 686 ms for query windows); under XLA query windows on the AMD CPUs (AMD with
    # AVX-512: 645 vs 1787 ms for row windows), row windows on the Xeon (query windows not
    # measured there at 112^2).
    assert choose((112, 112), False, amd["onednn"]) == choose((112, 112), False, ONEDNN) == "conv"
    assert choose((112, 112), False, amd["xla"]) == "query_windows"
    assert choose((112, 112), False, XLA) == "row_windows"
    assert formulations.window_blocks(amd["xla"], False) == dict(block_columns=2,
                                                                  block_scopes=0.5)
    # With TensorFlow's malloc allocator and the separate products, forward: query windows up to
    # 112^2 (r 23 at 112^2: 2.6 vs 3.9 s for row windows; r 7 within 1.11x of the convolution);
    # training: row windows for r 23 at 28^2 (297 vs 380 ms), query windows for r 7 at 14^2 (61
    # vs 77 ms), q . E first for r 9 at 14^2 (23 vs 31 ms). JAX training at 28^2, r 7: the
    # convolution (203-227 vs 254-322 ms), query windows on the Xeon.
    malloc = formulations.Runtime("tensorflow", pooled_allocator=False, cpu="amd-avx512")
    for size in (28, 56, 112):
        assert choose((size, size), False, malloc) == "query_windows"
        assert choose((size, size), False, malloc, receptive_field=7, intra_depth=4) \
            == "query_windows"
    assert choose((28, 28), True, malloc) == "row_windows"
    assert choose((14, 14), True, malloc, receptive_field=7, intra_depth=4) == "query_windows"
    assert choose((14, 14), True, malloc, receptive_field=9) == "queries_first"
    assert choose((14, 14), True, malloc, receptive_field=9, strides=2) == "query_windows"
    amd_jax = dataclasses.replace(JAX, cpu="amd-avx512")
    assert choose((28, 28), True, amd_jax, receptive_field=7, intra_depth=4) == "conv"
    assert choose((28, 28), True, JAX, receptive_field=7, intra_depth=4) == "query_windows"
    # oneDNN: r 7 |u| 4 forward at 56^2 (64 scopes) takes the convolution (query windows 1.19x /
    # 1.20x in two runs), at 28^2 query windows; training at 112^2, r 23, query windows in
    # half-scope blocks (2.1 vs 5.3 s for row windows, the Xeon's pick).
    assert choose((56, 56), False, amd["onednn"], receptive_field=7, intra_depth=4) == "conv"
    assert choose((28, 28), False, amd["onednn"], receptive_field=7, intra_depth=4) \
        == "query_windows"
    assert choose((112, 112), True, amd["onednn"]) == "query_windows"
    assert choose((112, 112), True, ONEDNN) == "row_windows"
    # Without oneDNN too (2.9 vs 4.1 s), in 2 query columns per block; since the separate
    # products for r 7 |u| 4 as well (3.8 vs 4.8 s for the convolution).
    amd_tf = dataclasses.replace(NO_ONEDNN, cpu="amd-avx512")
    assert choose((112, 112), True, amd_tf) == "query_windows"
    assert choose((112, 112), True, amd_tf, receptive_field=7, intra_depth=4) == "query_windows"
    assert formulations.window_blocks(amd_tf, True) == dict(block_columns=2, block_scopes=0.5)
    assert choose((112, 112), True, NO_ONEDNN) == "row_windows"
    # PyTorch training at 112^2, r 23: the convolution (5.8-8.4 vs 7.4-10.0 s for row windows).
    assert choose((112, 112), True, dataclasses.replace(TORCH, cpu="amd-avx512")) == "conv"
    assert choose((112, 112), True, TORCH) == "row_windows"
    assert choose((56, 56), True, dataclasses.replace(TORCH, cpu="amd-avx512")) == "query_windows"
    gpu = dict(backend="tensorflow", xla=True, device="gpu")
    assert (choose((112, 112), False, formulations.Runtime(**gpu, cpu="amd-avx512"))
            == choose((112, 112), False, formulations.Runtime(**gpu)))


def _measured_cells(machine):
    with open(MACHINES[machine], encoding="utf-8") as f:
        data = json.load(f)
    return data, [c for c in data["cells"] if c["engine"] in data["engines"]
                  and c["engine"] != "timm"]


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_rule_is_within_1_2x_of_the_fastest_in_every_measured_cell(machine):
    """The tables the rule came from (benchmarks/results/formulations/<cpu>.json): on every
    machine, for every engine, shape, map size and phase, the rule's pick was measured and is
    <= 1.2x the fastest."""
    data, cells = _measured_cells(machine)
    assert {c["engine"] for c in cells} >= {"tf_onednn", "tf", "tf_malloc", "tf_xla", "jax",
                                            "torch"}
    misses = []
    for cell in cells:
        runtime = formulation_tables.recorded_runtime(data, cell["engine"])
        assert runtime.engine == data["engines"][cell["engine"]]["rule_engine"]
        pick = formulation_tables.rule_pick(data, cell)
        times = {f: r["median_s"] for f, r in cell["results"].items() if r["status"] == "ok"}
        measured = cell["results"].get(pick, {})
        ratio = (measured["median_s"] / min(times.values()) if measured.get("status") == "ok"
                 else float("inf"))
        if ratio > 1.2:
            misses.append(f"{cell['engine']} {cell['shape']} {cell['size']}^2 {cell['phase']}: "
                          f"{pick} {ratio:.2f}x the fastest ({min(times, key=times.get)})")
    assert not misses, "\n".join(misses)


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_benchmark_recorded_the_rules_pick_in_its_real_runtime(machine):
    """The suite records what the "auto" layer traced in each engine's process (real XLA
    context, oneDNN state, backend, CPU): the same as the rule's pick from the recorded runtime.
    A table re-picked on another machine after a rule change (`picks_from: "rule"`) holds the
    rule's picks, not traces: at least one table must be traced by the current rule."""
    data, cells = _measured_cells(machine)
    for cell in cells:
        assert cell["auto"] == formulation_tables.rule_pick(data, cell), cell


def test_at_least_one_table_was_traced_by_the_current_rule():
    """The check above means most where the picks were traced (this machine's runtime detection
    and the rule agree in real processes): the cells of one full table at least."""
    traced = 0
    for machine in MACHINES:
        data, cells = _measured_cells(machine)
        traced += sum(data["engines"][c["engine"]].get("picks_from") != "rule" for c in cells)
    assert traced >= 100, traced


def test_a_suite_run_of_some_sizes_replaces_only_their_cells():
    """`--sizes 112` re-measures those cells only: the engine's cells at the other sizes, its
    full run's record and other engines stay; the partial run is kept beside the full one."""
    def cell(engine, size, shape="r23"):
        return dict(engine=engine, shape=shape, size=size, phase="fwd", tag="old")

    full = list(bench_formulations.FULL["sizes"])
    data = dict(settings=dict(sizes=full), engines={"tf": dict(sizes=full, wall_s=300.0)},
                cells=[cell("tf", 56), cell("tf", 112), cell("tf", 112, "r7u4"),
                       cell("jax", 112), cell("timm", 112)])
    new = dict(cell("tf", 112), tag="new")
    run = dict(sizes=[112], wall_s=60.0, returncode=0)
    bench_formulations.merge_run(data, "tf", [new], ["r23"], dict(rule_engine="tf"), run)
    assert sorted((c["engine"], c["shape"], c["size"], c["tag"]) for c in data["cells"]) == [
        ("jax", "r23", 112, "old"), ("tf", "r23", 56, "old"), ("tf", "r23", 112, "new"),
        ("tf", "r7u4", 112, "old"), ("timm", "r23", 112, "old")]
    assert data["engines"]["tf"]["wall_s"] == 300.0
    assert data["engines"]["tf"]["runs"] == {"r23@112": run}
    # The torch engine's r 23 run re-times timm too; a run of every shape and size replaces
    # the engine's record.
    run = dict(sizes=full, wall_s=500.0, returncode=0)
    bench_formulations.merge_run(data, "torch", [], list(bench_formulations.SHAPES),
                                 dict(rule_engine="torch"), run)
    assert ("timm", "r23", 112, "old") not in [
        (c["engine"], c["shape"], c["size"], c["tag"]) for c in data["cells"]]
    assert data["engines"]["torch"] == dict(rule_engine="torch", **run,
                                            shapes=list(bench_formulations.SHAPES))


def test_the_suite_drops_only_nxm_formulations_from_larger_maps():
    """An n x m formulation more than 3x the fastest is not run at larger maps (it falls further
    behind); a linear one is probed again at every size, even after a hopeless probe: JAX's r 23
    query windows forward were 18x q . E first at 14^2 on the AMD EPYC with AVX-512 (36 vs 2 ms)
    and, in that run, the fastest at 112^2, where q . E first does not run at all."""
    drop = bench_formulations.drop_from_larger_maps
    assert not drop("query_windows", 0.036, 0.002)
    assert not any(drop(f, 100.0, 1.0) for f in ("row_windows", "conv", "query_windows"))
    assert drop("lambdas_first", 0.0031, 0.001) and drop("queries_first", 0.0031, 0.001)
    assert not drop("lambdas_first", 0.0029, 0.001)


# ------------------------------------------------------------------- runtime detection
def test_runtime_sees_xla_only_inside_jit_compile():
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    # The allocator as TensorFlow read it (the CLI's in-process defaults do not change it once
    # TensorFlow is imported; tests/test_runtime.py checks the allocator in fresh processes).
    assert formulations.current_runtime() == formulations.Runtime(
        "tensorflow", xla=False, onednn=bool(_pywrap_util_port.IsMklEnabled()), device="cpu",
        pooled_allocator=runtime_module.pooled_allocator_active(),
        cpu=runtime_module.cpu_kind())
    seen = {}
    for jit_compile in (False, True):
        @tf.function(jit_compile=jit_compile)
        def probe(t):
            seen[jit_compile] = formulations.current_runtime().xla
            return t + 1.0

        probe(tf.constant(1.0))
    assert seen == {False: False, True: True}
    # Outside the trace, for code about to be compiled (autotune, the formulation suite).
    assert formulations.current_runtime(jit_compile=True) == dataclasses.replace(
        formulations.current_runtime(), xla=True)


def test_auto_layer_follows_the_runtime_it_is_traced_in():
    """The same layer, inference on a 28 x 28 map with r = 23: graph mode uses the rule of TF
    with this process' oneDNN state, jit_compile=True the XLA rule."""
    import tensorflow as tf

    layer = LambdaLayer(**PAPER)  # r = 23
    x = tf.zeros((1, 28, 28, 8))
    layer.build(x.shape)
    runtime = formulations.current_runtime()
    for jit_compile, engine_runtime in ((False, runtime), (True, XLA)):
        tf.function(lambda t: layer(t, training=False), jit_compile=jit_compile) \
            .get_concrete_function(x)
        assert layer._last_formulation == choose((28, 28), False, engine_runtime)
    # Not a vacuous check: the XLA rule differs from TF's graph-mode rule (with or without oneDNN).
    assert choose((28, 28), False, XLA) == "queries_first"
    assert choose((28, 28), False, ONEDNN) == choose((28, 28), False, NO_ONEDNN) == "query_windows"
