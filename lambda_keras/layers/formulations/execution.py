"""How one call of a lambda layer computes the formulation the rule (rule.py) or `autotune` picked:
its `Plan`, i.e. where a strided layer pools, query windows' blocks and batch parts or a loop
over the images, whether training recomputes them in the backward pass, and the forms of the
products that an engine (`Runtime.engine`, rule.ENGINES) runs fastest. The engine tables below
say where each applies, with the measurements they came from."""

import contextlib
import contextvars
import dataclasses

from lambda_keras.layers.formulations.position_term import (QUERY_BLOCK_SCOPES,
                                                            query_windows_bytes)
from lambda_keras.layers.formulations.rule import phase_of, rule_for

# Engines where a strided layer's queries_first pools its q . E maps before they meet V
# (queries_first_pooled). Measured in TF graph mode against pooling the output (the whole
# strided layer at 28^2, batch 8, d 256, r 23, interleaved): 1.27x / 1.06x faster forward with
# oneDNN on / off, 1.33x / 1.16x forward + backward; on JAX (jit, forward) 1.3x at 14^2 with
# d 512 and 1.5x at 28^2; under XLA and on JAX the pooled q . E is the fastest formulation of the
# strided 28^2 forward ("r23s2" cells). Not PyTorch: pooling the maps
# made the layer 2.1x / 2.4x slower at 14^2 / 28^2 (Keras' channels-last pool and the padded
# "same" pool copy them), so it pools the output.
POOLED_MAPS_ENGINES = ("tf_onednn", "tf", "tf_malloc", "xla", "jax")

# Engines where queries_first batches q . E over (b, n) with E broadcast over the batch instead
# of the einsum (`position_term.queries_first`, `broadcast`). Measured on the AMD EPYC, 14^2,
# batch 8, d 256, the layer alone (implementation="queries_first", one process per engine, old and
# new interleaved, medians of 9 rounds of 5 calls; new / old, fwd and fwd+bwd): TensorFlow without
# oneDNN r 23 0.77 / 0.99, strided r 23 0.91 / 0.89, r 9 0.78 / 0.95; with oneDNN 0.89 / 1.11,
# 1.14 / 1.33, 1.03 / 1.02; XLA 0.90 / 1.30, 1.01 / 1.20, 1.00 / 1.27; JAX 1.04 / 0.92,
# 0.98 / 0.97, 0.91 / 0.88; PyTorch 1.43 / 1.77, 1.31 / 1.41, 1.53 / 2.03. With E's transpose
# folded into the matmul (TensorFlow): without oneDNN 0.82 / 0.88, 0.82 / 0.79, 0.79 / 0.91; with
# oneDNN 1.08 / 1.05, 1.20 / 1.27; XLA 1.01 / 1.39, 1.03 / 1.14 (benchmarks/README.md,
# optimisation 20). So TensorFlow without oneDNN only, on any CPU: the reason is TensorFlow's
# batch-matmul sharding, not the CPU (NOTE: the Xeon with oneDNN forced off was not measured).
BROADCAST_EMBEDDINGS_ENGINES = ("tf", "tf_malloc")

# Engines where the many independent products of query windows (step 3: one per image, column group
# and block of query rows) and of q . E first's maps times V (one per image) run as separate 2-D
# matmuls of a static batch (`position_term.batched_matmul`) instead of one batched matmul.
# TensorFlow without oneDNN runs such small items at a fraction of a 2-D matmul's speed: 56 products
# [448, 728] x [728, 64] (query windows at 28^2) took 29.7 ms batched (39 GMAC/s), 19.1 ms as 2-D
# matmuls (61 GMAC/s; one 2-D matmul of the same FLOPs: 17.9 ms). Whole layer, batch 8, d 256, AMD
# EPYC with AVX-512, one process with both traced, interleaved, median of the paired ratios separate
# / batched (5-15 rounds, 2026-12-03): without oneDNN, pooled allocator, query windows r 23 forward
# 0.84 / 0.88 / 0.83 at 28^2 / 56^2 / 112^2, training 0.81 / 0.93 at 28^2 / 56^2; r 7 |u| 4 forward
# 0.82 / 0.78 / 0.78 at 28^2 / 56^2 / 112^2; strided r 23 at 28^2 0.75; r 9 at 14^2 0.84; q . E
# first r 23 at 14^2 0.88, strided (pooled maps) 0.94; malloc allocator 0.67 / 0.68 at 28^2 / 56^2.
# Not with oneDNN (1.06 / 1.08 at 28^2 / 56^2: its batched matmul runs the products at 83 GMAC/s);
# nor on the other engines (the Xeon, 2026-12-06, r 23, the same layer, interleaved medians of 5,
# separate / batched, forward and training): XLA query windows 1.93 / 1.33 at 28^2, 2.36 / 1.43 at
# 56^2, q . E first 1.01-1.03; JAX 1.17 / 1.68 and 1.43 / 4.09, q . E first 0.91-1.02; PyTorch
# 0.98-1.07, q . E first 0.93-1.27 (their batched matmuls are not TensorFlow's). The cost: a larger
# graph, traced once (r 23 at 112^2, 2240 products: 3.5 s for the first call against 2.4 s). Like
# the broadcast embeddings, a property of TensorFlow's kernels, not of the CPU (NOTE: measured on
# the AMD EPYC with AVX-512 only).
SEPARATE_PRODUCTS_ENGINES = ("tf", "tf_malloc")

# Training calls recompute query windows' window scores and their spread in the backward pass
# (`keras.remat`) instead of storing them, image by image in a loop
# (`position_term.recomputed_image_by_image`, `ops.map`: TensorFlow's while loop, JAX's
# `lax.map`, a Python loop on PyTorch): the backward pass of one image then holds that image's
# maps, not the batch's, whatever the batch (also one whose size is unknown while tracing:
# TensorFlow's graphs of `fit` on a dataset without `drop_remainder`). A whole batch recomputed
# saves nothing in one layer's step and costs the recomputation (TF without oneDNN 1.15x at 28^2,
# 1.41x at 56^2). Whole layer, forward + backward, batch 8, d 256, |k| 16, |h| 4, r 23, the
# Xeon, one process per cell with both traced, interleaved (medians of 5-7 rounds, 2026-12-05, a
# quiet host), time and TensorFlow allocator peak, stored / recomputed in 8 parts:
# oneDNN 28^2 133 / 108 ms, 292 / 83 MiB; 56^2 763 / 787 ms, 1819 / 315 MiB; 112^2 3126 / 3494 ms,
# 6789 / 2140 MiB; without oneDNN (pooled allocator) 28^2 172 / 153 ms, 245 / 85 MiB; 56^2 982 /
# 1013 ms, 1238 / 470 MiB; strided r 23 with oneDNN 28^2 65 / 71 ms, 103 / 52 MiB; 56^2 347 / 353
# ms, 772 / 185 MiB; time ratios JAX 1.01 and PyTorch 0.90 at 56^2 (the parts alone: 0.86-1.03).
# Under TensorFlow's XLA the unrolled parts had saved nothing (XLA merged the recomputation with
# the forward pass: 56^2 1.07x the time, the same peak); the loop does (2026-12-06, stored /
# loop, time and allocator peak): 28^2 135 / 125 ms, 256 / 51 MiB; 56^2 708 / 755 ms, 1240 / 227
# MiB (oneDNN off 662 / 699 ms, the same peaks); 112^2 2883 / 3319 ms, 4955 / 907 MiB; batch 32
# at 28^2 557 / 581 ms, 1024 / 173 MiB; strided r 23 at 56^2 1.01x, 627 / 111 MiB; r 7 |u| 4 at
# 28^2 / 56^2 0.89x / 0.99x, 274 / 73 and 1093 / 290 MiB. Only where one image's maps
# take at least REMAT_MIN_BYTES (`position_term.query_windows_bytes`; r 23: from 28^2 unstrided,
# 14.3 MiB, from 56^2 strided, 23 MiB; r 7 |u| 4 from 28^2, 9.4 MiB): smaller maps save little
# and pay the parts' overhead (time recomputed / stored, oneDNN on / off: r 7 |u| 4 at 14^2, 1.8
# MiB, 1.42 / 1.28x; r 9 at 14^2 1.63 / 1.27x, at 28^2 (3.4 MiB) 1.08 / 1.09x; strided r 9 at
# 14^2 1.59 / 1.38x; strided r 7 |u| 4 at 28^2 (3.3 MiB) 1.21 / 1.10x; strided r 23 at 28^2
# (4.0 MiB) 1.09x; above it: r 7 |u| 4 at 28^2 0.92x without oneDNN).
# The images in a loop against the 8 unrolled parts of the first version (same layer, the Xeon,
# interleaved medians of 3-9 rounds): TensorFlow, 2026-12-05, time and allocator peak, batch 8
# oneDNN 28^2 0.98x (79 / 73 MiB), 56^2 0.99x (665 / 625), without 0.99x (70 / 66), 0.98x (482 /
# 496); batch 32 oneDNN 0.73x (167 / 338 MiB), 0.86x (1160 / 1979), without 0.82x (171 / 347),
# 0.91x (831 / 1900); a dynamic batch against its maps stored (its only alternative): batch 8
# oneDNN 0.80x (89 / 274 MiB), 1.03x (335 / 1813), without 0.81x (60 / 297), 0.91x (341 / 1263),
# batch 32 at 28^2 0.77x (157 / 1118), 0.81x (141 / 939). JAX (jit), 2026-12-06, time and the
# compiled step's temporary buffers (XLA's memory analysis), batch 8 28^2 0.78x (51 / 287 MiB;
# stored 244: XLA scheduled the unrolled parts side by side, so they saved nothing), 56^2 0.95x
# (302 / 1729; stored 1471), batch 32 0.73x (150 / 1149), 0.76x (601 / 6915); r 7 |u| 4 at
# 28^2 / 56^2 0.84x / 1.05x, strided r 23 at 56^2 0.89x. PyTorch (eager), 2026-12-06, time and
# the step's growth of peak RSS, batch 8 0.99x (74 / 93 MiB), 0.97x (379 / 420), batch 32 at
# 28^2 0.97x (350 / 398). Forward passes loop over the images only where the batch's size is
# unknown while tracing and a static batch would be cut into parts (below).
# So every engine on a CPU recomputes. NOTE: not measured on GPUs and TPUs; there XLA (JAX, TF
# jit_compile=True) keeps the maps, as it effectively did with the unrolled parts it scheduled
# side by side (a loop of single images may leave an accelerator idle), while eager PyTorch and
# TensorFlow graphs recompute, their loop running the images one after the other as the
# unrolled parts did.
REMAT_MIN_BYTES = 8 * 2**20

# A forward pass whose batch's size is unknown while tracing (a SavedModel's serving signature)
# cannot be cut into the unrolled `batch_parts` of a static batch; where the rule cuts one
# (TensorFlow without oneDNN), it runs image by image in a loop instead
# (`position_term.image_by_image`; each image a static batch of one, with the separate products
# that need one). The whole layer, r 23, d 256, batch 8, query windows, static parts / dynamic
# batch whole / dynamic batch in the loop, traced in one process, interleaved medians of 5-7
# rounds, `TF_ENABLE_ONEDNN_OPTS=0`, the Xeon, 2026-12-06, two runs: 45.5 / 61.5 / 46.7 and
# 46.1 / 62.0 / 45.9 ms at 28^2, 232 / 371 / 245 and 214 / 351 / 217 at 56^2, 966 / 1512 / 1031
# at 112^2 (one run): the loop 0.62-0.76x the whole batch, 0.99-1.07x the static parts. Not with
# oneDNN (no parts there; the loop against the whole dynamic batch 0.91x at 28^2, 1.10x at
# 56^2). Not while tracing for LiteRT (`traced_without_loops`): its int8 converter keeps a WHILE
# operator in float ("the file would not be an integer model").
_LOOPS = contextvars.ContextVar("lambda_keras_loops", default=True)
# What a `Plan.image_loop` does with each image's maps: "forward", a forward pass (above);
# "recomputed", training that recomputes them in the backward pass (REMAT_MIN_BYTES).
IMAGE_LOOPS = ("forward", "recomputed")


@contextlib.contextmanager
def traced_without_loops():
    """Within it, lambda layers trace no loop over the images: a batch of unknown size is
    computed whole, and training stores its maps (the LiteRT export traces its graph so)."""
    token = _LOOPS.set(False)
    try:
        yield
    finally:
        _LOOPS.reset(token)


def window_blocks(runtime, training, strides=1, receptive_field=23):
    """The blocks of `query_windows` in `runtime`: {"block_columns": query columns per block,
    "block_scopes": query rows per block in scopes}, the rule's for unstrided layers with
    r > 11, else 1 column and QUERY_BLOCK_SCOPES (see WITHOUT_AVX512_RULE)."""
    if strides != 1 or receptive_field <= 11:
        return dict(block_columns=1, block_scopes=QUERY_BLOCK_SCOPES)
    rule = rule_for(runtime, phase_of(training))
    return dict(block_columns=rule["block_columns"], block_scopes=rule["block_scopes"])


def rematerialized(runtime, training, formulation, image_map_bytes=None):
    """Whether a call recomputes its position term in the backward pass, image by image:
    "query_windows" in training whose maps take at least REMAT_MIN_BYTES per image
    (`image_map_bytes`, `position_term.query_windows_bytes`; None, unknown: no), on a CPU or
    without XLA (see REMAT_MIN_BYTES)."""
    return (formulation == "query_windows" and phase_of(training) == "train"
            and (runtime.device == "cpu" or not runtime.xla)
            and image_map_bytes is not None and image_map_bytes >= REMAT_MIN_BYTES)


def batch_parts(runtime, training, formulation, strides=1, receptive_field=23):
    """Into how many independent parts the position term of a static batch is cut
    (`position_term.in_batch_parts`): the rule's `batch_parts` for "query_windows" in unstrided
    layers with r > 11, else 1 (see WITHOUT_AVX512_RULE). A call whose images run in a loop
    (`Plan.image_loop`) runs that instead."""
    if strides != 1 or receptive_field <= 11 or formulation != "query_windows":
        return 1
    return rule_for(runtime, phase_of(training))["batch_parts"]


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one call computes its position term: the formulation and the rule's settings for it.

    formulation: one of FORMULATIONS.
    pool: where a strided layer's average pool applies: "scores" (folded into query windows'
        window scores), "maps" (`queries_first_pooled`: on the q . E maps before they meet V;
        POOLED_MAPS_ENGINES) or "output" (after the position term); None in unstrided layers.
    block_columns, block_scopes: query windows' blocks (`window_blocks`).
    batch_parts: independent parts of a static batch, run side by side (`batch_parts`); 1 where
        the images run in a loop (`image_loop`).
    image_loop: None (the batch whole or in its parts), or query windows computed image by image
        in a loop (one of IMAGE_LOOPS): "forward", a forward pass of a batch of unknown size
        that a static batch's `batch_parts` would cut (`position_term.image_by_image`); or
        "recomputed", each image's maps recomputed in the backward pass, not stored
        (`rematerialized`: large query windows in training;
        `position_term.recomputed_image_by_image`). `traced_without_loops` turns both off.
    broadcast_embeddings: q . E first with E broadcast over the batch
        (BROADCAST_EMBEDDINGS_ENGINES).
    separate_products: the products of q . E first and query windows as separate 2-D matmuls
        (SEPARATE_PRODUCTS_ENGINES).
    """

    formulation: str
    pool: str | None = None
    block_columns: int = 1
    block_scopes: float = QUERY_BLOCK_SCOPES
    batch_parts: int = 1
    image_loop: str | None = None
    broadcast_embeddings: bool = False
    separate_products: bool = False

    def __post_init__(self):
        if self.image_loop not in (None, *IMAGE_LOOPS):
            raise ValueError(f"`image_loop` must be None or one of {IMAGE_LOOPS}. Received: "
                             f"image_loop={self.image_loop!r}")
        if self.image_loop and self.batch_parts != 1:
            raise ValueError("A plan whose images run in a loop has no batch parts. Received: "
                             f"image_loop={self.image_loop!r}, batch_parts={self.batch_parts}")

    @property
    def blocks(self):
        """query_windows' keyword arguments of its blocks."""
        return dict(block_columns=self.block_columns, block_scopes=self.block_scopes)


def plan(formulation, runtime, training, strides=1, receptive_field=23, *, rows=None, cols=None,
         batch=None, num_heads=4, intra_depth=1, pool_size=3):
    """The `Plan` of a layer's call that computes `formulation` in `runtime` (a `Runtime`), for
    the call's `training` and the layer's strides and r (what the rule says beyond the pick);
    `rows`, `cols` (ints of a static map, else None), `num_heads`, `intra_depth`, `pool_size`
    size query windows' maps, which decide their recomputation in training; `batch` (an int, or
    None while the batch's size is unknown) decides between unrolled parts and a loop."""
    engine = runtime.engine
    blocks = window_blocks(runtime, training, strides, receptive_field)
    image_map_bytes = None
    if formulation == "query_windows" and isinstance(rows, int) and isinstance(cols, int):
        image_map_bytes = query_windows_bytes(rows, cols, receptive_field, num_heads,
                                              intra_depth, pool_size if strides == 2 else 1,
                                              strides, **blocks)
    pool = None
    if strides == 2:
        pool = "output"
        if formulation == "query_windows":
            pool = "scores"
        elif formulation == "queries_first" and engine in POOLED_MAPS_ENGINES:
            pool = "maps"
    parts = batch_parts(runtime, training, formulation, strides, receptive_field)
    image_loop = None
    if _LOOPS.get():
        if rematerialized(runtime, training, formulation, image_map_bytes):
            image_loop = "recomputed"
        elif parts > 1 and batch is None:
            image_loop = "forward"
    return Plan(formulation, pool=pool, **blocks, batch_parts=1 if image_loop else parts,
                image_loop=image_loop,
                broadcast_embeddings=engine in BROADCAST_EMBEDDINGS_ENGINES,
                separate_products=engine in SEPARATE_PRODUCTS_ENGINES)
