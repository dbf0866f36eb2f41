"""Tests for the plan of a lambda layer's call (lambda_keras.layers.formulations.execution): where
a strided layer pools, query windows' blocks and batch parts, their recomputation in training and
the engines' forms of the products, each only where the rule's tables measured it faster.
(Their outputs and gradients are tested in tests/test_formulations.py.)
"""

import dataclasses

import pytest

from lambda_keras.layers import formulations
from test_formulation_rule import (ALL_ROWS, JAX, MALLOC_AVX2, NO_ONEDNN, NO_ONEDNN_AVX2, ONEDNN,
                                   TORCH, XLA)


def test_query_windows_blocks_only_where_measured():
    """Grouped query columns and half-scope blocks of query rows (formulations.window_blocks)
    only where they were measured faster, in unstrided layers with r > 11: on the CPU without
    AVX-512, columns without oneDNN in TensorFlow and under XLA (TF and JAX), half-scope
    blocks forward with TensorFlow, XLA and JAX, in training with TensorFlow (oneDNN on or off,
    pooled allocator), XLA and JAX; on the CPUs with AVX-512 (the AMD rows, which the Xeon's
    second table took), 2 columns and half-scope blocks without oneDNN and under TF's XLA,
    half-scope blocks in oneDNN training; 1 column and 2-scope blocks elsewhere."""
    def blocks(runtime, training, **kwargs):
        found = formulations.window_blocks(runtime, training, **kwargs)
        return found["block_columns"], found["block_scopes"]

    # Both EPYCs: 2 columns forward since the separate products (4 before, without AVX-512).
    assert blocks(NO_ONEDNN_AVX2, False) == (2, 0.5)
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
    for cpu in ("intel-avx512", "amd-avx512"):
        avx512 = {name: dataclasses.replace(runtime, cpu=cpu) for name, runtime in dict(
            onednn=ONEDNN, tf=NO_ONEDNN, xla=XLA, jax=JAX, torch=TORCH).items()}
        assert blocks(avx512["onednn"], False) == (1, 2)
        assert blocks(avx512["onednn"], True) == (1, 0.5)
        for training in (False, True):
            assert blocks(avx512["tf"], training) == blocks(avx512["xla"], training) == (2, 0.5)
            assert blocks(avx512["jax"], training) == blocks(avx512["torch"], training) == (1, 2)
    assert blocks(dataclasses.replace(TORCH, cpu="amd-avx2"), True) == (1, 2)
    for _, key, rule in ALL_ROWS:
        assert isinstance(rule["block_columns"], int) and rule["block_columns"] >= 1, key
        assert rule["block_scopes"] > 0, key
        assert isinstance(rule["batch_parts"], int) and rule["batch_parts"] >= 1, key


def test_batch_parts_only_where_measured():
    """The position term in independent parts of the batch (formulations.batch_parts) only
    where it was measured faster: forward, TensorFlow without oneDNN (pooled or malloc) on the
    CPU without AVX-512 and pooled on the CPUs with it, query windows of unstrided layers with
    r > 11; never in training. Training recomputes large query windows image by image in a loop
    instead (`rematerialized`: every engine on a CPU, any layer; on GPUs and TPUs, not measured,
    not under XLA), and its plan then has no unrolled parts."""
    for cpu in ("intel-avx512", "amd-avx512"):
        assert formulations.batch_parts(dataclasses.replace(MALLOC_AVX2, cpu=cpu), False,
                                        "query_windows") == 1
    for runtime in (NO_ONEDNN_AVX2, MALLOC_AVX2, NO_ONEDNN,
                    dataclasses.replace(NO_ONEDNN, cpu="amd-avx512")):
        assert formulations.batch_parts(runtime, False, "query_windows") == 4
        assert formulations.batch_parts(runtime, False, "query_windows", strides=2) == 1
        assert formulations.batch_parts(runtime, False, "query_windows", receptive_field=9) == 1
        for formulation in ("queries_first", "row_windows", "conv", "lambdas_first"):
            assert formulations.batch_parts(runtime, False, formulation) == 1
    amd = [dataclasses.replace(runtime, cpu=cpu) for runtime in (ONEDNN, XLA, JAX, TORCH)
           for cpu in ("amd-avx2", "amd-avx512")]
    for runtime in (ONEDNN, XLA, JAX, TORCH, *amd):
        assert formulations.batch_parts(runtime, False, "query_windows") == 1
    large, small = formulations.REMAT_MIN_BYTES, formulations.REMAT_MIN_BYTES - 1
    accelerators = [formulations.Runtime(backend, xla=xla, device=device)
                    for backend, xla in (("tensorflow", False), ("tensorflow", True),
                                         ("jax", True), ("torch", False))
                    for device in ("gpu", "tpu")]
    for runtime in (ONEDNN, NO_ONEDNN, NO_ONEDNN_AVX2, MALLOC_AVX2, XLA, JAX, TORCH, *amd,
                    *accelerators):
        recomputed = runtime.device == "cpu" or not runtime.xla
        for layer in (dict(), dict(strides=2), dict(receptive_field=7)):
            assert formulations.batch_parts(runtime, True, "query_windows", **layer) == 1
        assert formulations.rematerialized(runtime, True, "query_windows", large) == recomputed
        for maps in (small, None):
            assert not formulations.rematerialized(runtime, True, "query_windows", maps)
        assert not formulations.rematerialized(runtime, False, "query_windows", large)
        for formulation in ("queries_first", "row_windows", "conv", "lambdas_first"):
            assert not formulations.rematerialized(runtime, True, formulation, large)
            assert formulations.batch_parts(runtime, True, formulation) == 1


def test_recomputation_where_one_images_maps_are_large():
    """Training recomputes query windows (`plan(...).image_loop` "recomputed") where one
    image's maps take at least REMAT_MIN_BYTES: the measured cells it helped or cost at most 1.15x
    (unstrided r 23 from 28^2, strided from 56^2, r 7 |u| 4 from 28^2), not those where the
    parts' overhead cost 1.08-1.63x (14^2 maps, r 9 at 28^2, strided r 23 / r 7 |u| 4 at 28^2);
    on every engine of a CPU (XLA's too, since the images run in a loop), never under XLA on an
    accelerator (not measured), never in inference, never for a map of unknown size."""
    def recomputed(runtime, size, training=True, **layer):
        return formulations.plan("query_windows", runtime, training, layer.pop("strides", 1),
                                 layer.pop("receptive_field", 23), rows=size, cols=size,
                                 **layer).image_loop == "recomputed"

    for runtime in (ONEDNN, NO_ONEDNN, MALLOC_AVX2, XLA, JAX, TORCH):
        assert recomputed(runtime, 28) and recomputed(runtime, 56) and recomputed(runtime, 112)
        assert recomputed(runtime, 56, strides=2) and not recomputed(runtime, 28, strides=2)
        assert recomputed(runtime, 28, receptive_field=7, intra_depth=4)
        assert not recomputed(runtime, 14, receptive_field=7, intra_depth=4)
        assert not recomputed(runtime, 28, receptive_field=7, intra_depth=4, strides=2)
        assert not recomputed(runtime, 28, receptive_field=9)
        assert not recomputed(runtime, 14, receptive_field=9, strides=2, pool_size=2)
        assert not recomputed(runtime, 112, training=False)
        assert not recomputed(runtime, None)
        large = formulations.plan("query_windows", runtime, True, rows=56, cols=56)
        assert large.batch_parts == 1  # the images in a loop, not in unrolled parts
        assert formulations.plan("query_windows", runtime, False, rows=56,
                                 cols=56).image_loop != "recomputed"  # inference
    for device in ("gpu", "tpu"):
        assert not recomputed(dataclasses.replace(XLA, device=device), 112)
        assert not recomputed(dataclasses.replace(JAX, device=device), 112)
        assert recomputed(dataclasses.replace(TORCH, device=device), 112)
    # The threshold reads the bytes `query_windows` forms (its geometry: query_windows_shape).
    shape = formulations.query_windows_shape(28, 28, 23, block_scopes=0.5)
    assert formulations.query_windows_bytes(28, 28, 23, 4, 1, block_scopes=0.5) == 4 * (
        shape["blocks"] * shape["block"] * shape["groups"] * shape["group"] * 4
        * shape["width"] * (shape["span"] + 1 + shape["context"]))


def test_plan_gathers_what_the_rule_says_for_a_call():
    """`formulations.plan` holds, for one call, the rule's settings of the picked formulation:
    where a strided layer pools (folded into query windows' scores everywhere, on q . E first's
    maps where POOLED_MAPS_ENGINES says so, the output otherwise), query windows' blocks and
    batch parts as `window_blocks` / `batch_parts` give them, their recomputation in training as
    `rematerialized` says, and q . E's broadcast embeddings and separate products without oneDNN
    in TensorFlow only."""
    amd_tf = dataclasses.replace(NO_ONEDNN, cpu="amd-avx512")
    for runtime in (ONEDNN, NO_ONEDNN, amd_tf, MALLOC_AVX2, XLA, JAX, TORCH):
        without_onednn = runtime.engine in ("tf", "tf_malloc")
        for training in (False, True):
            for formulation in formulations.FORMULATIONS:
                for strides in (1, 2):
                    plan = formulations.plan(formulation, runtime, training, strides, batch=8)
                    expected_pool = "output" if strides == 2 else None
                    if strides == 2 and formulation == "query_windows":
                        expected_pool = "scores"
                    elif strides == 2 and formulation == "queries_first":
                        expected_pool = "output" if runtime.engine == "torch" else "maps"
                    assert plan.formulation == formulation
                    assert plan.pool == expected_pool, (runtime, formulation, strides)
                    assert plan.blocks == formulations.window_blocks(runtime, training, strides)
                    assert plan.batch_parts == formulations.batch_parts(runtime, training,
                                                                        formulation, strides)
                    recomputed = formulations.rematerialized(runtime, training, formulation)
                    assert plan.image_loop == ("recomputed" if recomputed else None)  # static
                    assert plan.broadcast_embeddings == plan.separate_products == without_onednn
    # The one place the CPU changes batch parts, seen through the plan.
    assert formulations.plan("query_windows", amd_tf, False, batch=8).batch_parts == 4
    assert formulations.plan("query_windows", amd_tf, False).blocks == dict(block_columns=2,
                                                                            block_scopes=0.5)


def test_a_batch_of_unknown_size_loops_where_a_static_one_is_cut():
    """A forward pass whose batch's size is unknown while tracing (`batch` None: a serving
    signature) runs its images in a loop (`Plan.image_loop`) exactly where a static batch is cut
    into unrolled parts (TensorFlow without oneDNN, query windows of unstrided layers with
    r > 11), and stays whole elsewhere; training's loop is its recomputation's. Traced for
    LiteRT (`traced_without_loops`) nothing loops: the dynamic batch stays whole and training
    stores its maps."""
    amd_tf = dataclasses.replace(NO_ONEDNN, cpu="amd-avx512")
    for runtime in (NO_ONEDNN, amd_tf, NO_ONEDNN_AVX2, MALLOC_AVX2):
        static = formulations.plan("query_windows", runtime, False, batch=8)
        dynamic = formulations.plan("query_windows", runtime, False, batch=None)
        assert (static.batch_parts, static.image_loop) == (4, None), runtime
        assert (dynamic.batch_parts, dynamic.image_loop) == (1, "forward"), runtime
        for layer in (dict(strides=2), dict(receptive_field=9)):
            assert not formulations.plan("query_windows", runtime, False, batch=None,
                                         **layer).image_loop
        with formulations.traced_without_loops():
            whole = formulations.plan("query_windows", runtime, False, batch=None)
            assert not whole.image_loop  # in_batch_parts leaves a batch of unknown size whole
            assert formulations.plan("query_windows", runtime, False, batch=8).batch_parts == 4
        assert formulations.plan("query_windows", runtime, False).image_loop  # restored
    for runtime in (ONEDNN, XLA, JAX, TORCH, NO_ONEDNN, MALLOC_AVX2):
        for formulation in formulations.FORMULATIONS:
            training = formulations.plan(formulation, runtime, True, rows=56, cols=56)
            recomputed = formulation == "query_windows"
            assert training.image_loop == ("recomputed" if recomputed else None), runtime
            assert training.batch_parts == 1
            with formulations.traced_without_loops():
                assert not formulations.plan(formulation, runtime, True, rows=56,
                                             cols=56).image_loop
            if runtime.engine not in ("tf", "tf_malloc"):
                assert not formulations.plan(formulation, runtime, False).image_loop


def test_a_plan_names_one_way_through_the_batch():
    """A plan's images run whole, in batch parts or in one of IMAGE_LOOPS, never two of them:
    a plan that says otherwise (a test's forced plan, say) is refused, naming its fields."""
    assert formulations.IMAGE_LOOPS == ("forward", "recomputed")
    for image_loop in formulations.IMAGE_LOOPS:
        assert formulations.Plan("query_windows", image_loop=image_loop).batch_parts == 1
        with pytest.raises(ValueError, match=f"image_loop='{image_loop}', batch_parts=4"):
            formulations.Plan("query_windows", batch_parts=4, image_loop=image_loop)
    with pytest.raises(ValueError, match=r"`image_loop` must be None or one of .*"
                                         r"Received: image_loop=True"):
        formulations.Plan("query_windows", image_loop=True)  # the former boolean


def test_the_formulation_suites_memory_guard_counts_what_the_plan_holds():
    """benchmarks/formulations.py skips a cell whose maps would pass its limit as the call's plan
    holds them: a training step that recomputes query windows image by image counts one part's
    maps (r 23 at 112^2 in 2-scope blocks on PyTorch: ~11 GiB stored, one eighth recomputed),
    one that does not (XLA on a GPU) the whole batch's; inference the whole batch's."""
    from benchmarks import formulations as suite

    shape, batch = suite.SHAPES["r23"], 8
    image = formulations.query_windows_bytes(112, 112, 23, 4, 1)  # 1 column, 2-scope blocks
    assert formulations.window_blocks(TORCH, True) == dict(block_columns=1, block_scopes=2)
    assert 3 * batch * image > suite.MEMORY_LIMIT_BYTES  # stored: skipped before recomputation
    recomputed = suite.estimate_bytes("query_windows", 112, batch, shape, "train", TORCH)
    assert recomputed == 3 * image  # one image per part at batch 8
    assert suite.estimate_bytes("query_windows", 112, batch, shape, "fwd", TORCH) == batch * image
    xla_gpu = dataclasses.replace(XLA, device="gpu")
    xla_blocks = formulations.window_blocks(xla_gpu, True)
    assert suite.estimate_bytes("query_windows", 112, batch, shape, "train", xla_gpu) == (
        3 * batch * formulations.query_windows_bytes(112, 112, 23, 4, 1, **xla_blocks))
    # The n x m formulations hold the whole batch's maps in every plan.
    assert suite.estimate_bytes("queries_first", 56, batch, shape, "train", TORCH) == (
        3 * batch * 4 * (56 * 56) ** 2 * 4)
