"""Tests for lambda_keras.layers.formulations: the five formulations of the position term.

- Every formulation, forced through `LambdaLayer(implementation=...)`, matches the NumPy
  reference of the paper (tests/reference.py) in every position mode it applies to, inference
  and training; row windows equal the convolution on a 28 x 28 map with the paper's r = 23;
  query windows equal the convolution on tall maps cut into several blocks of query rows, with
  and without the strided layer's pools folded in; the engines' forms of q . E first and of the
  products (broadcast embeddings, separate matmuls, parts of the batch) give the same outputs
  and gradients; a strided q . E first pools its maps and equals pooling the output; query
  windows recomputed image by image in training give the stored outputs and gradients, and
  lower the step's peak memory (TensorFlow's allocator, oneDNN off and on).
(The rule that picks a formulation is tested in tests/test_formulation_rule.py.)

`FORMULATION_CASES` is pure data: tests/test_backends.py runs the same cases on JAX and PyTorch.
"""

import inspect

import numpy as np
import keras
import pytest

from benchmarks.common import REPO_ROOT
from lambda_keras.layers import LambdaLayer, formulations
from lambda_keras.layers.formulations import position_term
from reference import (PAPER, force_plan, make_layer, random_input, randomize_statistics,
                       reference_lambda_layer)

# id: LambdaLayer arguments. Every formulation in every position mode it applies to, |u| 1 and 2,
# strides, bias, r smaller and larger (23) than the 6 x 7 map.
FORMULATION_CASES = {
    "queries_first-local-u2-bias": dict(implementation="queries_first", position="local",
                                        receptive_field=5, intra_depth=2, position_bias=True),
    "queries_first-relative-s2": dict(implementation="queries_first", position="relative",
                                      strides=2),
    "queries_first-local-r23-s2p2-bias": dict(implementation="queries_first", position="local",
                                              strides=2, pool_size=2, position_bias=True),
    "queries_first-global-u2": dict(implementation="queries_first", position="global",
                                    intra_depth=2),
    "lambdas_first-local-r23": dict(implementation="lambdas_first", position="local"),
    "lambdas_first-relative-u2-bias": dict(implementation="lambdas_first", position="relative",
                                           intra_depth=2, position_bias=True),
    "lambdas_first-global-s2p2": dict(implementation="lambdas_first", position="global",
                                      strides=2, pool_size=2),
    "query_windows-local-u2-bias": dict(implementation="query_windows", position="local",
                                        receptive_field=5, intra_depth=2, position_bias=True),
    "query_windows-local-r23-s2": dict(implementation="query_windows", position="local",
                                       strides=2),
    "query_windows-local-r3-u2-s2p2-bias": dict(implementation="query_windows", position="local",
                                                receptive_field=3, intra_depth=2, strides=2,
                                                pool_size=2, position_bias=True),
    "row_windows-local-u2-bias": dict(implementation="row_windows", position="local",
                                      receptive_field=5, intra_depth=2, position_bias=True),
    "row_windows-local-r23-s2": dict(implementation="row_windows", position="local", strides=2),
    "row_windows-local-r3": dict(implementation="row_windows", position="local", receptive_field=3),
    "conv-local-u2": dict(implementation="conv", position="local", receptive_field=5,
                          intra_depth=2),
    "conv-local-r23-s2p2-bias": dict(implementation="conv", position="local", strides=2,
                                     pool_size=2, position_bias=True),
    "auto-local": dict(implementation="auto", position="local", receptive_field=5),
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
    against the other's (input and every weight). The forms that ran are recorded (the
    `broadcast` and `separate_products` of every q . E first the layer formed)."""
    import tensorflow as tf

    seen = []
    for name in ("queries_first", "queries_first_pooled"):
        def spy(*args, _original=getattr(formulations, name), **kwargs):
            bound = inspect.signature(_original).bind(*args, **kwargs)
            bound.apply_defaults()
            seen.append((bound.arguments["broadcast"], bound.arguments["separate_products"]))
            return _original(*args, **kwargs)

        monkeypatch.setattr(formulations, name, spy)
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
        assert seen and set(seen) == {(broadcast, broadcast)}, (broadcast, seen)
        seen.clear()
    for einsum, broadcast in zip(gradients[False], gradients[True]):
        np.testing.assert_allclose(broadcast, einsum, rtol=1e-4, atol=1e-5 * np.abs(einsum).max())


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


@pytest.mark.parametrize("formulation", ["query_windows", "queries_first"])
def test_batch_parts_equal_the_whole_batch(formulation):
    """The position term of a static batch cut into parts (balanced, at most one per image)
    gives the whole batch's output and gradients, in its order; so do its images in a loop
    (`image_by_image`), also each recomputed in the backward pass
    (`recomputed_image_by_image`): the only cut of a dynamic batch (unknown while tracing), which
    parts leave whole."""
    import tensorflow as tf

    rng = np.random.default_rng(11)
    q = tf.constant(rng.standard_normal((3, 22 * 9, 2, 4)).astype("float32"))
    values = tf.constant(rng.standard_normal((3, 22 * 9, 3, 2)).astype("float32"))
    kernel = tf.constant(rng.standard_normal((5, 5, 2, 4)).astype("float32"))
    embeddings = formulations.position_embeddings(kernel, "local", 22, 9)  # [n, m, u, k]

    def position(q, values, kernel, embeddings):  # a recomputed function captures no tensor
        if formulation == "queries_first":
            return formulations.queries_first(q, values, embeddings, broadcast=True)
        return formulations.query_windows(q, values, kernel, 22, 9, block_columns=2,
                                          block_scopes=0.5)

    def with_gradients(parts):
        with tf.GradientTape() as tape:
            tape.watch([q, values])
            out = formulations.in_batch_parts(position, parts, q, values,
                                              shared=(kernel, embeddings))
            loss = tf.reduce_sum(tf.sin(out))
        return [out.numpy()] + [g.numpy() for g in tape.gradient(loss, [q, values])]

    whole = with_gradients(1)
    for parts in (2, 3, 4):  # 4 > batch: one part per image
        for actual, expected in zip(with_gradients(parts), whole):
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)

    def in_parts(parts):
        return lambda *tensors, shared: formulations.in_batch_parts(position, parts, *tensors,
                                                                    shared=shared)

    def in_a_loop(name):  # image_by_image or recomputed_image_by_image
        return lambda *tensors, shared: getattr(formulations, name)(position, *tensors,
                                                                    shared=shared)

    def traced(batch, cut):  # (the graph's operation types, its results)
        @tf.function(input_signature=[tf.TensorSpec((batch,) + tuple(q.shape[1:])),
                                      tf.TensorSpec((batch,) + tuple(values.shape[1:]))])
        def function(q, values):
            with tf.GradientTape() as tape:
                tape.watch([q, values])
                out = cut(q, values, shared=(kernel, embeddings))
                loss = tf.reduce_sum(tf.sin(out))
            return [out] + tape.gradient(loss, [q, values])

        operations = function.get_concrete_function().graph.get_operations()
        return [op.type for op in operations], [t.numpy() for t in function(q, values)]

    def matmuls(types):
        return sum(t in ("MatMul", "BatchMatMulV2") for t in types)

    one_part = traced(3, in_parts(1))[0]
    assert matmuls(one_part) >= 2 and matmuls(traced(3, in_parts(3))[0]) == 3 * matmuls(one_part)
    loops = {"While", "StatelessWhile"}
    cases = [(None, in_parts(4), False)] + [
        (batch, in_a_loop(name), True) for batch in (3, None)
        for name in ("image_by_image", "recomputed_image_by_image")]
    for batch, cut, looped in cases:
        types, results = traced(batch, cut)
        assert bool(loops & set(types)) == looped, sorted(set(types))  # in parts, None: whole
        for actual, expected in zip(results, whole):
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_a_serving_signature_loops_over_its_images_without_onednn(monkeypatch):
    """TensorFlow without oneDNN cuts a static batch of query windows (r > 11) into parts in
    forward passes; a serving signature, whose batch's size is unknown while tracing, runs its
    images in a loop instead (`Plan.image_loop`). Every way gives the NumPy reference's output,
    also the signature traced for LiteRT (`traced_without_loops`: the batch whole, no loop)."""
    import contextlib

    import tensorflow as tf
    from test_formulation_rule import NO_ONEDNN

    monkeypatch.setattr(formulations, "current_runtime", lambda *args, **kwargs: NO_ONEDNN)
    layer = make_layer(receptive_field=13, implementation="query_windows")
    x = random_input((3, 14, 14, 6))
    layer.build(x.shape)
    randomize_statistics(layer)
    expected = reference_lambda_layer(layer, x, training=False)
    scale = max(1.0, float(np.max(np.abs(expected))))
    for batch, context, looped in ((None, contextlib.nullcontext, True),
                                   (3, contextlib.nullcontext, False),
                                   (None, formulations.traced_without_loops, False)):
        call = tf.function(lambda x: layer(x, training=False),
                           input_signature=[tf.TensorSpec((batch, 14, 14, 6))])
        with context():
            graph = call.get_concrete_function().graph
        types = {op.type for op in graph.get_operations()}
        assert bool(types & {"While", "StatelessWhile"}) == looped, (batch, context)
        assert np.max(np.abs(call(x).numpy() - expected)) <= 1e-5 * scale, (batch, context)


@pytest.mark.parametrize("strides", [1, 2])
def test_recomputed_query_windows_give_the_stored_gradients(strides, monkeypatch):
    """Training recomputes query windows image by image in the backward pass (`keras.remat`,
    where `formulations.rematerialized` says): the outputs and the gradients of the input and
    of every weight (the kernel's too: TensorFlow's recompute_grad differentiates only the
    recomputed function's arguments, so a captured kernel would get none) equal those of the
    maps stored (in unrolled parts or whole), unstrided and strided; image by image in a loop,
    also a dynamic batch (traced without its size, as `fit` on a dataset without
    `drop_remainder`) and under XLA (`jit_compile=True`)."""
    import tensorflow as tf

    wrapped = []
    remat = keras.remat
    monkeypatch.setattr(keras, "remat", lambda f: wrapped.append(f) or remat(f))
    x = tf.constant(np.random.default_rng(9).standard_normal((3, 22, 9, 8)).astype("float32"))
    results = []
    for image_loop, parts, dynamic, jit in ((None, 3, False, False), (None, 1, False, False),
                                            ("recomputed", 1, False, False),
                                            ("recomputed", 1, True, False),
                                            (None, 3, True, False),
                                            ("recomputed", 1, False, True)):
        force_plan(monkeypatch, block_columns=2, block_scopes=0.5, batch_parts=parts,
                   image_loop=image_loop)
        keras.utils.set_random_seed(4)
        layer = LambdaLayer(output_dim=16, key_dim=4, num_heads=2, receptive_field=3,
                            intra_depth=2, strides=strides, implementation="query_windows",
                            position_bias=True,
                            position_initializer=keras.initializers.RandomNormal(stddev=0.5))
        signature = [tf.TensorSpec((None,) + tuple(x.shape[1:]))] if dynamic else None
        step = tf.function(lambda x: _loss_and_gradients(layer, x), input_signature=signature,
                           jit_compile=jit)
        results.append([t.numpy() for t in step(x)])
        assert bool(wrapped) == bool(image_loop), (image_loop, parts, dynamic, jit)
        wrapped.clear()
    stored = results[0]  # a weight without a gradient (None) would have failed in .numpy()
    for recomputed in results[1:]:
        for actual, expected in zip(recomputed, stored):
            np.testing.assert_allclose(actual, expected, rtol=1e-5,
                                       atol=1e-5 * max(1.0, np.abs(expected).max()))


def test_fit_on_arrays_recomputes_query_windows(monkeypatch):
    """`fit` on arrays whose size is not a multiple of the batch size traces its step without
    the batch's size (Keras relaxes it for the last, smaller batch); the position term of large
    query windows is still recomputed, image by image in a loop, and the model learns."""
    wrapped = []
    remat = keras.remat
    monkeypatch.setattr(keras, "remat", lambda f: wrapped.append(f) or remat(f))
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((28, 28, 8)),
        LambdaLayer(output_dim=16, key_dim=16, num_heads=4, receptive_field=23,
                    implementation="query_windows"),  # 28^2, r 23: >= REMAT_MIN_BYTES per image
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    x = random_input((10, 28, 28, 8))
    y = x.mean(axis=(1, 2, 3))[:, None] * 10
    history = model.fit(x, y, batch_size=4, epochs=3, verbose=0)
    assert wrapped  # the step, traced without the batch size only, recomputes its parts
    assert history.history["loss"][-1] < history.history["loss"][0], history.history


def _loss_and_gradients(layer, x):
    """(training output, d sum(sin(y)) / d input, / d each trainable weight)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, training=True)
        loss = tf.reduce_sum(tf.sin(out))
    return [out] + tape.gradient(loss, [x] + [w.value for w in layer.trainable_weights])


# One training step of a query-windows layer at 28^2 (batch 8, r 23, d 32) in TensorFlow graph
# mode (argv: "graph", or "xla" for jit_compile=True), planned as `plan` gives it but for
# `image_loop`: the whole batch with its maps stored (the layer before recomputation), the
# images recomputed in a loop (the plan of training calls), and the loop of a step traced without
# the batch's size; prints the allocator's peak of each step (MiB).
REMAT_MEMORY_SCRIPT = """
import dataclasses, json, sys
import numpy as np
import tensorflow as tf
from lambda_keras.layers import LambdaLayer, formulations
from lambda_keras.layers.formulations import autotuning, execution

JIT = sys.argv[1] == "xla"
x = tf.constant(np.random.default_rng(0).standard_normal((8, 28, 28, 32)).astype("float32"))
peaks = {}
dynamic = tf.TensorSpec((None,) + tuple(x.shape[1:]))  # the batch's size unknown while tracing
for name, image_loop, spec in (("whole", None, x), ("recomputed", "recomputed", x),
                               ("dynamic", "recomputed", dynamic)):
    formulations.plan = lambda *a, **k: dataclasses.replace(
        execution.plan(*a, **k), batch_parts=1, image_loop=image_loop)
    layer = LambdaLayer(output_dim=32, key_dim=16, num_heads=4, receptive_field=23,
                        implementation="query_windows")
    step = autotuning.tensorflow_steps(layer, JIT)[1].get_concrete_function(spec)
    step(x).numpy()  # traced, built, warm
    tf.config.experimental.reset_memory_stats("CPU:0")
    start = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step(x).numpy()
    peaks[name] = (tf.config.experimental.get_memory_info("CPU:0")["peak"] - start) / 2**20
print(json.dumps(peaks))
"""


@pytest.mark.parametrize("onednn, compiler", [("0", "graph"), ("1", "graph"), ("1", "xla")])
def test_recomputed_query_windows_lower_training_memory(onednn, compiler):
    """Property: query windows in training, image by image each recomputed in the backward
    pass (the plan of training calls), lower the step's peak memory: stored, the window scores
    and their spread of the whole batch wait for the backward pass; recomputed, an image's exist
    only while that image is differentiated, and one image at a time also shrinks the forward
    pass' temporaries; so in a step traced without the batch's size. TensorFlow's allocator
    statistics, oneDNN off and on, and under XLA (`jit_compile=True`, which had merged the
    earlier unrolled parts' recomputation away: the same peak). The loop's peak varies from run
    to run with when the allocator frees (oneDNN on, 2026-12-06: 34-87 MiB against 136-147 MiB
    stored, 0.24-0.61x; with one inter-op thread just as much; 8 unrolled parts stored 86-101
    MiB, so no ratio to them is asserted), so the bound is 0.75x the whole batch stored."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPU_ALLOCATOR_USE_BFC="true",
               TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    result = subprocess.run([sys.executable, "-c", REMAT_MEMORY_SCRIPT, compiler], env=env,
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    peaks = json.loads(result.stdout.strip().splitlines()[-1])
    assert peaks["recomputed"] < 0.75 * peaks["whole"], peaks
    assert peaks["dynamic"] < 0.75 * peaks["whole"], peaks
