"""The rule that picks a formulation of the position term from the shapes and the `Runtime` a
layer runs in (lambda_keras/runtime.py: backend, XLA, TensorFlow's oneDNN state and CPU allocator,
device, kind of CPU): the measured rule tables and `choose` (see the package docstring,
lambda_keras/layers/formulations/__init__.py). How a call then computes the pick: execution.py.
"""

import numpy as np

from lambda_keras.layers.formulations.position_term import QUERY_BLOCK_SCOPES

# ------------------------------------------------------------------------------- the rule
# Engines: how the position term is executed. "tf_onednn" / "tf": TensorFlow graph or eager
# without XLA, oneDNN on / off (with a pooling CPU allocator); "tf_malloc": oneDNN off with
# TensorFlow's default malloc allocator (TF_CPU_ALLOCATOR_USE_BFC unset); "xla": TF
# jit_compile=True; "jax": the JAX backend (XLA too, but measured to differ from TF's XLA);
# "torch": the PyTorch backend (eager).
ENGINES = ("tf_onednn", "tf", "tf_malloc", "xla", "jax", "torch")

# The "local" position mode, per (engine, phase). Measured at r = 7 (|u| = 4) and r = 23 (|u| = 1),
# batch 8, d 256, |k| 16, |h| 4, maps 14^2-112^2 (strided r = 23: 14^2-28^2), TensorFlow with its
# pooled (BFC) CPU allocator except for "tf_malloc", on an Intel Xeon with AVX-512 and an AMD EPYC
# with AVX2 (benchmarks/results/formulations/, summarised in benchmarks/README.md "Formulations
# per backend"); times quoted below are the Xeon's first table's (2026-12-02) unless marked.
# These rows are the base that each measured CPU's rows modify (CPU_RULES: the Xeon's own since
# its second table, INTEL_AVX512_RULE) and the rows of what no table measured (TensorFlow on a
# GPU: a guess). In this order:
# - "queries_first": where the scope covers a good part of the map (n <= dense_scope r^2) and
#   q.E's h x m x u map per query is at most `queries_first` times the k x v lambda it replaces
#   (1: no more memory than the lambdas, what every engine does; 4: up to 32^2 maps at the
#   paper's sizes, where it was measured fastest, e.g. 28^2 under XLA); in a strided layer
#   (strides 2) `strided_queries_first` (default: the same);
# - "query_windows": maps of `windows` = (smallest n, largest n) positions (STRIDED_WINDOWS in
#   a strided layer, on every engine); None: never; in unstrided layers, with `window_scopes`
#   only maps of at most that many r x r scopes (n <= window_scopes r^2: a small r gets small
#   maps only) and with `min_window_scopes` of at least that many (fewer: E is dense enough for
#   the n x m formulations or row windows to win). Memory per
#   position does not grow with the map, but at 112^2 (batch 8) the window scores and their
#   spread take 3-4 GiB forward and ~7-10 GiB in training (half-scope blocks; the suite does
#   not run 2-scope blocks there, ~11 GiB; the Xeon's first table stopped at 56^2). An unstrided
#   layer's query windows with r > 11 group `block_columns` query columns per batched-matmul
#   item and cut tall maps into blocks of `block_scopes` scopes of query rows (`window_blocks`;
#   other layers: 1 column, 2 scopes);
# - "lambdas_first": maps the scope covers (n <= whole_e_scope r^2) (E is dense: few FLOPs
#   wasted);
# - "local" otherwise: the first row (largest r, smallest n, formulation) with r <= largest r
#   (None: any) and n >= smallest n. The boundary r <= 11 lies between the two measured fields
#   (the convolution's work grows as r^2, row windows' as r).
# Before all of these, maps whose q.E is no larger than the lambdas (h m u <= k v) take
# "queries_first" (the fewest FLOPs), unless a local scope covers only part of them, where q . E
# over every position is mostly zeros: a strided layer's maps beyond one scope (n > r^2) and an
# unstrided layer's beyond `small_map_scopes` (n > small_map_scopes r^2) take "query_windows"
# (q . E over the scope only). Measured on the AMD EPYC for timm's r 9 layer ("r9", "r9s2"
# cells, 14^2 = 2.4 scopes; autotune of LambdaResNet26T at 256 px found it at 16^2 = 3.2 scopes,
# batch 8: query windows 1.2-2.2x faster than q . E first in 12 of 24 cells of six engines,
# within 1.05x in the others): the strided layer's query windows were the fastest at 14^2 on
# every engine (1.1-1.9x q . E); unstrided at 14^2 with TensorFlow 1.3-1.4x q . E forward (XLA:
# 1.15x slower, within 1.2x), JAX in training 1.26x slower and PyTorch forward 1.32x slower
# (their `small_map_scopes`: 4 and 3). Since q . E runs broadcast without oneDNN (optimisation
# 20), TensorFlow's forward there too (pooled allocator; `small_map_scopes` 3 on the CPU without
# AVX-512): r 9 at 14^2 5.7 ms for q . E first against 7.0 for query windows (with malloc 8.4
# against 7.4). CPUs with AVX-512 not measured at r 9.
# Rows measured on a GPU (GPU_RULE) also turn off what every CPU row does: `small_maps` False
# sends maps whose q . E is no larger than the lambdas down the same path as the others, and
# `small_map_windows` False sends such maps beyond their scopes to the `local` rows instead of
# query windows; `strided_windows` (default STRIDED_WINDOWS, None: never) is the range of maps
# on which a strided layer takes query windows.
def _rule(queries_first, dense_scope, whole_e_scope, *local, strided_queries_first=None,
          windows=None, window_scopes=None, min_window_scopes=0, block_columns=1,
          block_scopes=QUERY_BLOCK_SCOPES, batch_parts=1, small_map_scopes=1, small_maps=True,
          small_map_windows=True, strided_windows="default"):
    return dict(queries_first=queries_first, dense_scope=dense_scope,
                whole_e_scope=whole_e_scope, local=local,
                strided_queries_first=(queries_first if strided_queries_first is None
                                       else strided_queries_first),
                windows=windows, window_scopes=window_scopes,
                min_window_scopes=min_window_scopes, block_columns=block_columns,
                block_scopes=block_scopes, batch_parts=batch_parts,
                small_map_scopes=small_map_scopes, small_maps=small_maps,
                small_map_windows=small_map_windows,
                strided_windows=STRIDED_WINDOWS if strided_windows == "default"
                else strided_windows)


ROW_WINDOWS, CONV = (None, 0, "row_windows"), (None, 0, "conv")
SMALL_R_CONV = (11, 0, "conv")  # r <= 11: the convolution
SMALL_R_CONV_FROM_20 = (11, 400, "conv")  # r <= 11 on maps of 20^2 or more
SMALL_R_CONV_FROM_50 = (11, 2500, "conv")  # r <= 11 on maps of 50^2 or more
CONV_FROM_50 = (None, 2500, "conv")  # any r on maps of 50^2 or more
QUERY_WINDOWS = (None, 0, "query_windows")  # any r (beyond the `windows` range)
QUERY_WINDOWS_FROM_50 = (None, 2500, "query_windows")  # any r on maps of 50^2 or more
# Beyond the largest map measured (112^2) the lean formulations again, as on the other rows.
SMALL_R_CONV_BEYOND_112 = (11, 112 * 112 + 1, "conv")
ROW_WINDOWS_BEYOND_112 = (None, 112 * 112 + 1, "row_windows")
UP_TO_14, UP_TO_28, UP_TO_56 = (0, 14 * 14), (0, 28 * 28), (0, 56 * 56)  # query_windows ranges
UP_TO_112 = (0, 112 * 112)
# Strided layers (the pool folded into the window scores) take query windows on maps of up to
# 56^2 on every engine. Measured on the AMD EPYC with AVX-512 (r 23, batch 8, d 256, 2026-12-04,
# results/formulations/amd-avx512.json "r23s2" at 56^2), query windows against the next fastest,
# forward / training: oneDNN 86 / 314 ms vs 156 (convolution) / 1183 (row windows); TF without
# oneDNN 116 / 426 vs 462 / 1270 (row windows); with malloc 241 / 847 vs 605 / 1558 (row
# windows); XLA 111 / 367 vs 328 (q . E first) / 1462 (row windows); JAX 289 / 693 vs 545 /
# 1623 (row windows); PyTorch 295 / 641 vs 317 (convolution) / 1545 (row windows). The rows
# stopped at 28^2 for malloc, JAX and PyTorch, where the suite's strided shape stopped: they
# took row windows or the convolution there, 1.8-3.7x slower. Whatever the map in scopes (the
# rows' `window_scopes` are for unstrided layers): timm's r 9 strided layer at 28^2 (9.7 scopes,
# 2026-12-04) took query windows as the fastest on every engine, 1.6-6.2x the next formulation,
# where JAX's and PyTorch's training rows took the convolution, 4.5x / 3.3x slower. The Xeon's
# second table (2026-12-05) agrees on every engine: strided r 23 at 56^2 query windows 74-259 ms
# forward against 118-396 for the next, 320-698 ms in training against 925-1415; strided r 9 at
# 28^2 1.7-4.3x the next. NOTE: the EPYC without AVX-512 timed strided layers up to 28^2 (r 23)
# only; its 56^2 and r 9 follow the AVX-512 CPUs' margins.
STRIDED_WINDOWS = UP_TO_56
SMALL_BLOCKS = 0.5  # query windows' blocks of query rows, in scopes (see WITHOUT_AVX512_RULE)
LOCAL_RULE = {
    # (engine, phase):   _rule(queries_first, dense_scope, whole_e_scope, *local rows,
    #                          strided_queries_first, windows, window_scopes)
    # oneDNN's r x r convolution: the fastest forward beyond 56^2; query windows up to 56^2
    # (28^2 r 23: 42 vs 48 ms; strided 21 vs 34 for the pooled q . E; 56^2: 227 vs 204 ms for the
    # convolution with AVX-512, 331 vs 561 ms without) and in training up to 56^2 (56^2 r 23: 0.9
    # vs 1.8 s for row windows; the convolution's filter gradient is slow for r = 23, fast for
    # r = 7, 1.04-1.16x query windows).
    ("tf_onednn", "fwd"): _rule(1, 2, 1, CONV, windows=UP_TO_56),
    ("tf_onednn", "train"): _rule(1, 2, 1, SMALL_R_CONV, ROW_WINDOWS, windows=UP_TO_56),
    # Without oneDNN, TF's own kernel of the 1-channel 23 x 23 convolution is 18x slower than
    # q . E at 14^2; query windows up to 56^2 (28^2 / 56^2 r 23 forward: 77 / 423 ms against
    # q . E's 102 and row windows' 586; strided 28^2: 40 vs 97 ms; in training within 1.16x of
    # row windows at r 23, the fastest at r 7); beyond, row windows and the 7 x 7 convolution.
    ("tf", "fwd"): _rule(1, 2, 1, SMALL_R_CONV_FROM_20, ROW_WINDOWS, windows=UP_TO_56),
    ("tf", "train"): _rule(1, 2, 1, SMALL_R_CONV_FROM_50, ROW_WINDOWS, windows=UP_TO_56),
    # The same with TensorFlow's malloc allocator: every large temporary is mapped and zeroed per
    # call, which costs the formulations with large temporaries most: query windows forward up to
    # 28^2 only (56^2 r 23: 1.15x row windows), in training only strided (28^2 r 23 unstrided:
    # 1.46x row windows; strided 164 vs 402 ms).
    ("tf_malloc", "fwd"): _rule(1, 2, 1, SMALL_R_CONV_FROM_20, ROW_WINDOWS, windows=UP_TO_28),
    ("tf_malloc", "train"): _rule(1, 2, 1, SMALL_R_CONV_FROM_50, ROW_WINDOWS),
    # XLA compiles the 1-channel 23 x 23 convolution poorly (25-37x slower than q . E at 14^2):
    # q . E up to 32^2 unstrided (28^2 r 23: 58 vs 72 ms for query windows), query windows in
    # strided layers and up to 56^2 (56^2 r 23: 0.33 vs 0.61 s forward for row windows, 1.3 vs
    # 2.0 s training); beyond, row windows and the 7 x 7 convolution.
    # q . E within 3 r^2: r 7 |u| 4 at 14^2 takes query windows (16 vs 24 ms for q . E on the AMD
    # CPU; q . E took 1.15x query windows on the Xeon too).
    ("xla", "fwd"): _rule(4, 3, 1, SMALL_R_CONV_FROM_20, ROW_WINDOWS, strided_queries_first=1,
                          windows=UP_TO_56),
    ("xla", "train"): _rule(4, 3, 1, SMALL_R_CONV_FROM_20, ROW_WINDOWS, strided_queries_first=1,
                            windows=UP_TO_56),
    # JAX: query windows are slow forward on unstrided maps (28^2 r 23: 1.27x E . V) except with
    # |u| = 4 at 14^2 (1.18x q . E, where row windows took 1.54x), the fastest in strided layers
    # (28^2: 71 vs 132 ms for the pooled q . E) and in training up to 28^2; at 56^2 row windows
    # and the 7 x 7 convolution (r 7 |u| 4: query windows 1.00x with AVX-512, >1.2x without).
    ("jax", "fwd"): _rule(1, 4, 1, SMALL_R_CONV_FROM_20, ROW_WINDOWS, windows=UP_TO_14),
    ("jax", "train"): _rule(1, 4, 4, SMALL_R_CONV, ROW_WINDOWS, windows=UP_TO_28,
                            small_map_scopes=4),
    # PyTorch (eager; its oneDNN convolution): the convolution forward and the 7 x 7 convolution
    # in training from 28^2 on; query windows in strided layers (28^2: 62 vs 77 ms for the
    # convolution forward, 152 vs 267 ms for q . E in training) and in training on maps of up to
    # 6 scopes (r 7 |u| 4 at 14^2: 40 vs 48 ms for the convolution; r 23 at 28^2 / 56^2: 1.02x /
    # 1.15x row windows with AVX-512, the fastest without, where E . V took 1.28x and row windows
    # 1.20x).
    ("torch", "fwd"): _rule(1, 2, 1, CONV, small_map_scopes=3),
    ("torch", "train"): _rule(1, 2, 2, SMALL_R_CONV, ROW_WINDOWS, windows=UP_TO_56,
                              window_scopes=6),
}
# Rows that differ on a CPU without AVX-512 (measured on an AMD EPYC with AVX2,
# results/formulations/amd-avx2.json; LOCAL_RULE's rows hold on the EPYC elsewhere).
# - Without oneDNN, TensorFlow's (Eigen's) batched matmul runs query windows' many small
#   products ([B h, rows S] x [rows S, v] per query column) at ~25 GFLOP/s where one large GEMM
#   of the same FLOPs runs at ~75: grouping query columns (C = S + G - 1 window columns, C / S
#   times the FLOPs) pays there. Unstrided 28^2 / 56^2 r 23 with the pooled allocator, ms for
#   G = 1 / 2 / 4 (one process, interleaved): forward 124 / 87 / 87 and 674 / 533 / 469,
#   training 28^2 456 / 350 / 360 (row windows 411); with malloc, forward 210 / 152 / 162 and
#   1581 / 1059 / 1085. Not with oneDNN (73 / 76 / 81 at 28^2; its batched matmul runs the small
#   products at ~87 GFLOP/s), nor in strided layers (51 / 70 / 120: 9 taps make the grouped GEMM
#   G times deeper), nor for r <= 11 (r 7 |u| 4 at 56^2, G 4 / 1: 532 / 450 ms; C / S = 10 / 7).
#   With G = 4 the unstrided 28^2 r 23 forward takes query windows as on the Xeon (suite: 125 ms,
#   q . E 127, row windows 148; with G = 1 query windows took 177 and q . E was picked).
# - The same with malloc: the 7 x 7 convolution from 28^2 on (137 ms vs 172 for query windows
#   at 28^2; query windows on maps of up to 6 scopes: r 7 |u| 4 at 14^2 only), query windows
#   (2 columns per block) for the unstrided r 23 layer up to 112^2 (28^2: 151 vs 183 ms for row
#   windows; 56^2: 860 vs 920; 112^2, two runs of 2026-12-03: 2.64 / 2.58 s vs 3.54 / 3.48 s),
#   row windows beyond. Malloc's cells are the least stable: between those two runs (same code,
#   same hour) the fastest forward flipped at 14^2 (q . E 12.8 / 6.6 ms, E . V 9.6 / 9.1) and
#   28^2 (query windows 110 / 92 ms, row windows 88 / 100); the table holds the second run.
# - Query windows forward up to 112^2 with oneDNN, without it (pooled allocator) and under XLA
#   (XLA: in training too for r <= 11, from 56^2 to 112^2): their time and memory per position
#   do not grow with the map. Suite of 2026-12-03, 112^2, batch 8, d 256: r 23 forward, oneDNN
#   0.78 s vs 1.08 s for the convolution, without 1.58 vs 2.79 s for row windows, XLA 1.53 vs
#   2.80 s; r 7 |u| 4 forward 0.53 / 0.96 / 0.68 s vs 0.55 / 1.12 / 0.98 s for the convolution,
#   XLA training 2.29 vs 3.36 s; with half-scope blocks (and 2 columns under XLA, below) the
#   r 23 forward takes 0.63 / 1.09 / 0.65 s. Peak (r 23 forward, one process, TF's allocator)
#   3.9-4.2 GiB, 3.1 / 3.9 GiB without / with oneDNN in half-scope blocks, against 1.0
#   (convolution) and 1.4-1.6 GiB (row windows). JAX only with 2 columns per block (below;
#   in 1 column 3.55 vs 3.32 s for row windows); not PyTorch (3.29 vs 1.66 s for the
#   convolution). The Xeon's first table stopped query windows at 56^2 (its second: see
#   INTEL_AVX512_RULE).
# - PyTorch forward: row windows below 50^2 for r > 11 (28^2 r 23: 68 vs 97 ms for the
#   convolution; the earlier run 166 vs 198), the convolution from 56^2 (415 vs 570 ms).
# - Query windows forward (r > 11, unstrided) in blocks of half a scope of query rows (12 rows
#   at r 23) instead of 2: a block meets its rows plus r - 1 context rows, 34 instead of 50 / 68
#   at 56^2 / 112^2, so the spread scores and the final matmul shrink by a third to a half
#   while V's windows are gathered 2.5-4x as often. Whole layer, batch 8, d 256, r 23, one
#   process per cell, 2026-12-03, 2 / 0.5 scopes: oneDNN 56^2 181 / 166 ms, 112^2 788 / 666 ms;
#   without (pooled) 112^2 1247 / 1110 ms (56^2 285 / 270); XLA 334 / 262 ms and 1514 / 1024 ms;
#   malloc 545 / 555 ms and 2592 / 2336 ms. Maps the context already covers (28^2) stay one
#   block (`query_windows_shape`) (benchmarks/README.md, optimisations 14 and 15).
# - Training: query windows in half-scope blocks up to 112^2 (r > 11) with oneDNN, without it
#   (pooled allocator), under XLA and on JAX, where row windows ran from 56^2 on: whole layer,
#   forward + backward, batch 8, d 256, r 23, one process per cell, 2026-12-03 (a noisy host), ms
#   for row windows / query windows: 112^2 without oneDNN 6113, 6836 / 4432, 5584; oneDNN 5977, 5631
#   / 5048, 3043; XLA 13153, 6482 / 3247, 2477. Process peak 3.4-5.0 GiB / 9.4-10.5 GiB: 2-3x the
#   memory (README: how to force the lean formulations). Half-scope against 2-scope blocks at 56^2:
#   XLA 667, 667 / 938, 923 ms; alternated, medians, without oneDNN 1162 / 1128 ms (4 each), oneDNN
#   878 / 889 ms (3 each), within the noise; 112^2 without oneDNN 3915 / 4554 ms (1 scope 4562). The
#   suite (benchmarks/README.md, optimisation 17): 112^2 training 4590 / 3212 / 2890 ms against 7947
#   / 7976 / 9414 ms for row windows (off / oneDNN / XLA). JAX too, 2 columns per block: 56^2 2000,
#   1689 ms against 2328, 2061 for row windows (2 scopes, 1 column: 2176, 1953), 112^2 8683 against
#   12205 ms (7.7 vs 3.4 GiB). Not with malloc (112^2: 8638 vs 8665 ms for row windows, 6.0 vs 3.2
#   GiB), nor on PyTorch (2-scope blocks; not measured at 112^2).
# - Under XLA (TF jit_compile, JAX), query windows group 2 query columns per block: XLA's CPU
#   code runs the unstrided r 23 layer ~1.5x faster with C = 24 window columns (G 2) than with
#   23, 25 or 26 (G 1, 3, 4); G 1 with C padded to 24 was as fast, so it is the width, not the
#   grouping. Whole layer, one process per cell, 2026-12-03: TF XLA forward (half-scope blocks)
#   G 1 / 2 / 4 at 56^2 260 / 167 / 249 ms, 112^2 1043 / 653 / 986 ms; training (2-scope
#   blocks) G 1 / 2 at 28^2 158 / 125 ms, 56^2 895 / 767 ms. JAX forward, G 2 and half-scope
#   blocks: 56^2 544 ms, 112^2 2226 ms against 630 / 3240 ms for row windows (G 1: 708 / 2949,
#   G 4: 612 / 2384), so JAX takes query windows forward from 50^2 to 112^2 for r > 11 (28^2:
#   93 vs 97 ms, row windows kept; r <= 11 keeps the convolution). Not with oneDNN (56^2 G 1 /
#   2 / C padded to 24: 169 / 168 / 168 ms).
# - TensorFlow without oneDNN, forward: query windows of a static batch cut into `batch_parts`
#   = 4 independent parts (batch 8: 2 images each; `batch_parts`), which the graph executor
#   runs side by side; unstrided layers with r > 11. Whole layer, batch 8, d 256, r 23, one
#   process, whole and cut traced side by side, interleaved (medians of 5-15 rounds,
#   2026-12-03), parts of 2 images: pooled 56^2 0.67-0.89x (4 runs), 112^2 0.67 / 0.77x, 28^2
#   0.84x, malloc 56^2 0.82x; parts of 4 images: 56^2 0.87 / 0.92x, 28^2 0.85x; of 1: 56^2
#   0.74 / 0.91x, 112^2 0.83x. Not in training (56^2: 0.92x median, 1.02x min), nor with oneDNN
#   (0.99x) or XLA (0.98x), nor for q . E first at 14^2 (0.85x once, then 1.04x, 0.97x, 0.97x)
#   (benchmarks/README.md, optimisation 22).
# - TensorFlow without oneDNN, forward: query windows group 2 query columns per block (4 before
#   the separate products, optimisation 26; as on the EPYC with AVX-512, optimisation 27). Whole
#   layer, r 23, batch 8, d 256, one process, every variant traced, 9 interleaved rounds (5 at
#   112^2), medians of the paired ratios to 4 columns (2026-12-07): 2 columns 0.89 / 0.90 / 0.93
#   at 28^2 / 56^2 / 112^2 (39.9 vs 43.7 ms at 28^2, 212 vs 234 ms at 56^2, 919 vs 984 ms at
#   112^2); 1 column 0.86 at 28^2 but 1.13 at 56^2. With 2 columns: batch in 2 / 8 parts 0.99 /
#   0.96 at 28^2, 1.00 / 0.97 at 56^2 against 4 parts; 1-scope blocks 1.01 / 1.02 (within the
#   noise, kept).
# - TensorFlow's malloc allocator in training: query windows up to 56^2 for any r, measured once
#   they recomputed each image's maps in the backward pass (optimisations 30-31; the table's
#   earlier cells: 419 vs 401 ms for row windows at 28^2). The suite's malloc cells re-run on
#   2026-12-07, forward + backward, ms: r 23 query windows 180 / 1649 at 28^2 / 56^2 against
#   303 / 1808 for row windows (the row's pick, 1.68x / 1.10x), at 112^2 10267 against 10098;
#   r 7 |u| 4 37 / 226 / 1056 at 14^2 / 28^2 / 56^2 against 57 / 317 / 1452 for the row's row
#   windows and convolution (1.55x / 1.40x / 1.38x), at 112^2 7025 against 5482 for the
#   convolution (kept).
WITHOUT_AVX512_RULE = {  # LOCAL_RULE's rows that differ on this CPU (see above)
    ("tf_onednn", "fwd"): dict(LOCAL_RULE[("tf_onednn", "fwd")], windows=UP_TO_112,
                               block_scopes=SMALL_BLOCKS),
    ("tf", "fwd"): dict(LOCAL_RULE[("tf", "fwd")], block_columns=2, windows=UP_TO_112,
                        block_scopes=SMALL_BLOCKS, batch_parts=4, small_map_scopes=3),
    ("xla", "fwd"): dict(LOCAL_RULE[("xla", "fwd")], windows=UP_TO_112, block_columns=2,
                         block_scopes=SMALL_BLOCKS),
    ("xla", "train"): dict(LOCAL_RULE[("xla", "train")], local=(
        SMALL_R_CONV_BEYOND_112, ROW_WINDOWS_BEYOND_112, QUERY_WINDOWS), block_columns=2,
        block_scopes=SMALL_BLOCKS),
    ("tf_onednn", "train"): dict(LOCAL_RULE[("tf_onednn", "train")], local=(
        SMALL_R_CONV, ROW_WINDOWS_BEYOND_112, QUERY_WINDOWS), block_scopes=SMALL_BLOCKS),
    ("jax", "fwd"): dict(LOCAL_RULE[("jax", "fwd")], local=(
        SMALL_R_CONV_FROM_20, ROW_WINDOWS_BEYOND_112, QUERY_WINDOWS_FROM_50, ROW_WINDOWS),
        block_columns=2, block_scopes=SMALL_BLOCKS),
    ("jax", "train"): dict(LOCAL_RULE[("jax", "train")], local=(
        SMALL_R_CONV, ROW_WINDOWS_BEYOND_112, QUERY_WINDOWS), block_columns=2,
        block_scopes=SMALL_BLOCKS),
    ("torch", "fwd"): dict(LOCAL_RULE[("torch", "fwd")], local=(SMALL_R_CONV, CONV_FROM_50,
                                                                ROW_WINDOWS)),
    ("tf", "train"): dict(LOCAL_RULE[("tf", "train")], local=(
        SMALL_R_CONV_FROM_50, ROW_WINDOWS_BEYOND_112, QUERY_WINDOWS), block_columns=2,
        block_scopes=SMALL_BLOCKS),
    ("tf_malloc", "fwd"): _rule(1, 2, 1, SMALL_R_CONV_FROM_20, ROW_WINDOWS_BEYOND_112,
                                QUERY_WINDOWS, windows=UP_TO_56, window_scopes=6,
                                block_columns=2, block_scopes=SMALL_BLOCKS, batch_parts=4),
    ("tf_malloc", "train"): dict(LOCAL_RULE[("tf_malloc", "train")], block_columns=2,
                                 windows=UP_TO_56),
}


# Rows that differ on an AMD CPU with AVX-512 (measured on a 2-core AMD EPYC with AVX-512,
# results/formulations/amd-avx512.json, 2026-12-03; TensorFlow's oneDNN is on by default there, as
# on the Xeon). Whole layer, batch 8, d 256, the suite's medians:
# - oneDNN forward and PyTorch forward: the Xeon's rows (LOCAL_RULE): the AVX-512 convolution
#   wins at 112^2 (r 23 forward 432-462 ms vs 421-686 for query windows, 1363 for row windows;
#   the EPYC without AVX-512 took query windows), and for r 7 |u| 4 from 56^2 (64 scopes) on:
#   query windows only on maps of up to 16 scopes (56^2: 1.19x / 1.20x the convolution in two
#   runs, 28^2: 1.11x).
# - XLA: the rows of the EPYC without AVX-512 (query windows up to 112^2, 2 query columns per
#   block, half-scope blocks): r 23 forward at 112^2 458 ms vs 1501 for row windows, r 7 |u| 4
#   358 vs 582 ms for the convolution, training 1418 vs 2233 ms (the Xeon's rows: 1.3-2.8x).
# - TensorFlow without oneDNN, forward: the same (half-scope blocks, query windows up to 112^2 in 4
#   batch parts; then 4 query columns per block): r 23 at 28^2 / 56^2 / 112^2 37 / 151 / 670 ms
#   against 51 / 265 / 1585 ms for row windows (the Xeon's row: query windows 65 / 248 ms and row
#   windows at 112^2, 1.17x query windows). Since the separate products, 2 query columns per block
#   instead of 4 (fewer FLOPs in the scores GEMM; the products they save were the cheap ones now;
#   measured on this CPU first, then on the EPYC without AVX-512, above): r 23 query windows, both
#   traced in one process, interleaved, medians of the paired ratios 2 / 4 columns (7 and 5 rounds,
#   two runs, 2026-12-03): 0.88 / 0.93 at 28^2, 0.87 / 0.83 at 56^2, 0.88 at 112^2 (179-195 vs
#   205-225 ms at 56^2, 826 vs 919 ms at 112^2); 1 column: 0.82 at 28^2 but 1.09 at 56^2; 2 columns
#   in 2-scope blocks 0.82 / 0.94; 2 columns with the whole batch 0.84 / 0.87 (`batch_parts` 1: no
#   better than the 4 parts, kept).
# - TensorFlow training, oneDNN on and off: the same (query windows in half-scope blocks at 112^2
#   for r 23, 2 query columns without oneDNN: 2129 / 2909 ms vs 5275 / 4068 for row windows, the
#   Xeon's pick; with oneDNN r 7 |u| 4 keeps the convolution, 1334 vs 1355 ms). Without oneDNN,
#   since the separate products (SEPARATE_PRODUCTS_ENGINES), query windows up to 112^2 for any r:
#   r 7 |u| 4 at 112^2 3771 ms vs 4823 for the convolution (before: 2782 vs 3137, 1.13x).
# - JAX forward: the Xeon's row, not the AMD one (query windows from 50^2: 56^2 r 23 1.22x row
#   windows, 112^2 0.95x).
# - TensorFlow's malloc allocator (the least stable cells), since the separate products: forward,
#   query windows up to 112^2 (r 23 at 28^2 / 56^2 / 112^2 100 / 661 / 2599 ms vs 119 / 692 /
#   3853 for row windows; r 7 |u| 4 within 1.11x of the convolution: 108 / 495 / 1898 vs 103 /
#   447 / 1872 ms; before them, two runs gave query windows 1.2-2.0x at 28^2 and the row took
#   them up to 14^2 only); training, query windows on maps up to 14^2 (r 7 |u| 4: 61 vs 77 ms for
#   row windows; before, 43 vs 39) and q . E first on small maps of up to 3 scopes (r 9 at 14^2:
#   23 vs 31 ms for query windows; before, 16 vs 18).
# - PyTorch training: the convolution beyond query windows' 6 scopes (r 23 at 112^2: 5775 /
#   8413 ms vs 7376 / 9991 for row windows, two runs; the Xeon's row windows 1.19x / 1.28x).
# - JAX training: query windows on maps of up to 12 scopes (r 7 |u| 4 at 28^2, 16 scopes: the
#   convolution, 203-227 vs 254-322 ms in two runs; the Xeon's query windows 1.25-1.42x; timm's
#   r 9 at 28^2, 9.7 scopes, 2026-12-04: query windows 116 vs 212 ms for the convolution).
#   PyTorch training the same (r 9 at 28^2: 81 vs 121 ms for the convolution; r 7 |u| 4 at 28^2
#   the convolution, query windows 1.92x).
# - JAX forward and malloc training, query windows on maps of 2-12 scopes up to 28^2 (timm's r 9
#   at 28^2, 2026-12-04: JAX 40 vs 87 ms for the convolution and 44 for row windows, malloc 82 vs
#   115 for row windows; below 2 scopes, r 23 at 28^2, row windows or E . V stay: query windows
#   1.38x / 1.15x there; r 7 |u| 4 at 28^2, 16 scopes: the convolution / row windows, query
#   windows 1.80x / 1.13x).
# Its cells at 14^2 flip between runs (XLA's and JAX's strided r 23 training: q . E first 1.42x /
# 1.44x query windows in one run, 0.66x / 1.05x in the next): the table holds the last run.
AMD_AVX512_RULE = {
    **{key: WITHOUT_AVX512_RULE[key] for key in (("xla", "fwd"), ("xla", "train"),
                                                 ("tf_onednn", "train"), ("tf", "fwd"))},
    ("tf", "train"): dict(WITHOUT_AVX512_RULE[("tf", "train")], windows=UP_TO_112),
    ("tf_onednn", "fwd"): dict(LOCAL_RULE[("tf_onednn", "fwd")], window_scopes=16),
    ("tf_malloc", "fwd"): dict(LOCAL_RULE[("tf_malloc", "fwd")], windows=UP_TO_112),
    ("tf_malloc", "train"): dict(LOCAL_RULE[("tf_malloc", "train")], windows=UP_TO_28,
                                 min_window_scopes=2, window_scopes=12, small_map_scopes=3),
    ("jax", "fwd"): dict(LOCAL_RULE[("jax", "fwd")], windows=UP_TO_28, min_window_scopes=2,
                         window_scopes=12),
    ("jax", "train"): dict(LOCAL_RULE[("jax", "train")], window_scopes=12),
    ("torch", "train"): dict(LOCAL_RULE[("torch", "train")], local=(SMALL_R_CONV, CONV_FROM_50,
                                                                    ROW_WINDOWS), window_scopes=12),
}
# Rows of the Intel Xeon with AVX-512 (and AMX; 2 cores, TensorFlow's oneDNN on by default),
# measured again with this code (results/formulations/intel-avx512.json, 2026-12-05; LOCAL_RULE
# came from its first table, 2026-12-02, before query windows' half-scope blocks, 2 query columns,
# batch parts and separate products). The suite with LOCAL_RULE's rows there: 9 of 216 cells
# beyond 1.2x (two more at 1.20x), all where the AMD EPYC with AVX-512 already had rows of its
# own, so the Xeon takes AMD_AVX512_RULE but for four rows. Whole layer, batch 8, d 256, the
# suite's medians:
# - the AMD rows: query windows up to 112^2 without oneDNN (r 23 forward at 112^2: 1010 ms vs
#   1771 for row windows, LOCAL_RULE's pick), under XLA (r 23 forward 991 vs 1688 ms; r 7 |u| 4
#   at 112^2 535 / 2180 ms forward / training vs 783 / 3116 for the convolution), with TensorFlow's
#   malloc allocator in training and on JAX forward on maps of 2-12 scopes (timm's r 9 at 28^2: 83
#   vs 110 ms for row windows; JAX 35 vs 64 ms for the convolution); in training at 112^2 in
#   half-scope blocks (r 23: 3.2 / 4.0 / 2.8 s with oneDNN / without / XLA vs 6.4 / 5.6 / 6.0 s
#   for row windows; 2-scope blocks, ~11 GiB, were not run).
# - oneDNN forward: query windows up to 28^2 and 12 scopes, the convolution beyond (r 23 at 56^2:
#   122 / 128 ms vs 150 / 161 for query windows in two runs; r 7 |u| 4 at 28^2, 16 scopes: 26 vs
#   30 ms; at 56^2 105 vs 121). The AMD CPU took query windows up to 16 scopes.
# - oneDNN training: query windows on maps of up to 12 scopes (r 7 |u| 4 at 28^2 / 56^2: the
#   convolution, 106 / 450 ms vs 132 / 541; r 9 at 28^2, 9.7 scopes: query windows 48 vs 78 ms).
# - the malloc allocator's forward: query windows up to 112^2 on maps of up to 24 scopes (r 23 at
#   112^2, 23.7 scopes: 1864 vs 2237 ms for row windows), the convolution beyond (r 7 |u| 4 at
#   56^2 / 112^2: 261 / 1170 ms vs 316 / 1375 for query windows).
# - PyTorch training: LOCAL_RULE's row windows beyond query windows (r 23 at 112^2: 6.1 s vs 7.6
#   for the AMD row's convolution), query windows on maps of up to 12 scopes (r 9 at 28^2: 66 vs
#   116 ms for the convolution).
INTEL_AVX512_RULE = {
    **AMD_AVX512_RULE,
    ("tf_onednn", "fwd"): dict(LOCAL_RULE[("tf_onednn", "fwd")], windows=UP_TO_28,
                               window_scopes=12),
    ("tf_onednn", "train"): dict(AMD_AVX512_RULE[("tf_onednn", "train")], window_scopes=12),
    ("tf_malloc", "fwd"): dict(AMD_AVX512_RULE[("tf_malloc", "fwd")], window_scopes=24),
    ("torch", "train"): dict(LOCAL_RULE[("torch", "train")], window_scopes=12),
}
# The measured kinds of CPU (`lambda_keras.runtime.cpu_kind()`) with rows of their own.
CPU_RULES = {"amd-avx2": WITHOUT_AVX512_RULE, "amd-avx512": AMD_AVX512_RULE,
             "intel-avx512": INTEL_AVX512_RULE}

# Rows on a GPU (measured on one NVIDIA H200 with JAX 0.11 and PyTorch 2.11 (CUDA 13), Keras
# 3.15, results/formulations/nvidia-h200.json, 2026-12-04; TensorFlow was not installable
# there, so its GPU rows are LOCAL_RULE's, a guess). Batch 8, d 256, the suite's medians of 5-9
# round-robin calls after a probe. PyTorch's cells were measured again once the layer kept its
# index tables on the device (`position_term.static_tables`; before, each call copied them from
# NumPy, and the 14^2-28^2 inference timings of the formulations with tables were up to 3.7x
# longer):
# - PyTorch (eager) forward: the convolution (cuDNN) on every map, strided or not, small or
#   large: 1.8-7.3 ms, the fastest in 17 of 18 cells and within 1.03x in the other (r 23 at
#   14^2: 1.9 ms vs 2.1 for q . E first, which the CPU rows pick; strided r 23 at 28^2: 4.5 vs
#   8.2 for query windows, 4.7 for E . V first).
# - PyTorch training: the convolution for r <= 11 up to 56^2 and query windows from 80^2 (r 7
#   |u| 4 at 112^2: 21.8 vs 28.0 ms; the first run, with the tables copied per call: 25.6 vs
#   28.2; at 56^2 8.6 vs 8.7); the convolution's filter gradient is slow for r 23 (3.3x row
#   windows at 112^2); for r 23, q . E first on maps it covers (14^2: 5.9 ms, 1.09x E . V first)
#   and row windows beyond (28^2-112^2 7.5-37.8 ms; at 28^2 1.17x E . V first, whose n x m
#   embeddings take 8x the memory); no query windows for small maps beyond their scope (timm's
#   strided r 9 at 14^2: 1.43x the convolution).
# - JAX forward: query windows up to 28^2 and from 80^2 on (r 23 at 112^2: 3.1 vs 4.5 ms for row
#   windows), row windows between (r 23 at 56^2: 1.0 vs 1.3 ms for query windows; r 7 |u| 4 1.02x
#   the convolution); strided layers and small maps as on the CPUs (r 23 at 14^2 q . E first, 1.01x
#   query windows).
# - JAX training: query windows for r <= 11 on every map (r 7 |u| 4 at 112^2: 6.2 vs 8.6 ms for
#   the convolution), row windows for r 23 from 28^2 (28^2 / 56^2: 0.9 / 2.3 ms vs 1.2 / 3.4 for
#   query windows), q . E first on maps it covers, query windows in strided layers.
# JAX ran XLA's default float32 precision there, TF32 products (README, "On a GPU").
QUERY_WINDOWS_FROM_80 = (None, 80 * 80, "query_windows")
SMALL_R_QUERY_WINDOWS = (11, 0, "query_windows")
SMALL_R_QUERY_WINDOWS_FROM_80 = (11, 80 * 80, "query_windows")
GPU_RULE = {
    ("torch", "fwd"): _rule(0, 0, 0, CONV, small_maps=False, strided_windows=None),
    ("torch", "train"): _rule(1, 2, 1, SMALL_R_QUERY_WINDOWS_FROM_80, SMALL_R_CONV, ROW_WINDOWS,
                              small_map_windows=False, strided_windows=None),
    ("jax", "fwd"): _rule(1, 2, 1, QUERY_WINDOWS_FROM_80, ROW_WINDOWS, windows=UP_TO_28),
    ("jax", "train"): _rule(1, 2, 1, SMALL_R_QUERY_WINDOWS, ROW_WINDOWS),
}


def phase_of(training):
    """The rule's phase of a call's `training`: "fwd" for None/False (predict, serving), "train"
    otherwise (a symbolic value counts as training)."""
    inference = isinstance(training, (bool, int, np.bool_, type(None))) and not training
    return "fwd" if inference else "train"


def rule_for(runtime, phase):
    """The rule row of `runtime` for phase "fwd" or "train" (LOCAL_RULE, or the CPU's own, or
    the GPU's)."""
    key = (runtime.engine, phase)
    rows = {"cpu": cpu_rows(runtime.cpu), "gpu": GPU_RULE}.get(runtime.device, {})
    return rows.get(key, LOCAL_RULE[key])


def cpu_rows(cpu):
    """The rows of CPU kind `cpu` (`runtime.cpu_kind()`) that differ from LOCAL_RULE: its own
    where it was measured (CPU_RULES), else those of a measured kind with the same SIMD width
    (AVX-512: the Xeon's, INTEL_AVX512_RULE; without: the AMD EPYC's, WITHOUT_AVX512_RULE)."""
    if cpu in CPU_RULES:
        return CPU_RULES[cpu]
    return INTEL_AVX512_RULE if cpu.endswith("-avx512") else WITHOUT_AVX512_RULE


def choose(position, rows, cols, training, *, num_heads, key_dim, value_dim, intra_depth,
           receptive_field, runtime, strides=1):
    """The formulation "auto" uses for a rows x cols map (ints, or None when unknown).

    Args:
        position: the layer's position mode, "local", "relative" or "global".
        rows, cols: the static map size, or None (dynamic: only the formulation "conv" applies).
        training: the call's `training`; a symbolic or truthy value counts as training.
        num_heads, key_dim, value_dim, intra_depth: |h|, |k|, |v|, |u|.
        receptive_field: r of the "local" mode (ignored by the other modes).
        runtime: a `Runtime`.
        strides: the layer's strides (2: an average pool follows, which "queries_first" applies
            to its q . E maps and "query_windows" folds into its window scores).

    Returns:
        One of FORMULATIONS.
    """
    if position not in ("local", "relative", "global"):
        raise ValueError('`position` must be "local", "relative" or "global" ("conv" is the '
                         f'former name of "local"). Received: position={position!r}')
    if not (isinstance(rows, int) and isinstance(cols, int)):
        return "conv"  # dynamic size: only the convolution applies ("relative"/"global" fix it)
    positions = rows * cols  # m = n: the whole map is the context of "relative"/"global"
    # Per query, q.E is an h x m x u map and E.V a k x v lambda: the smaller one is stored (the
    # fewest FLOPs), unless a local scope covers only part of the map (see _rule).
    maps = num_heads * positions * intra_depth  # floats of one query's q.E maps
    small_maps = maps <= key_dim * value_dim
    if position != "local":
        return "queries_first" if small_maps else "lambdas_first"
    rule = rule_for(runtime, phase_of(training))
    scope = receptive_field * receptive_field
    if small_maps and rule["small_maps"]:
        scopes = 1 if strides == 2 else rule["small_map_scopes"]
        if positions <= scopes * scope:
            return "queries_first"
        if rule["small_map_windows"]:
            return "query_windows"
    allowance = rule["strided_queries_first" if strides == 2 else "queries_first"]
    if positions <= rule["dense_scope"] * scope and maps <= allowance * key_dim * value_dim:
        return "queries_first"
    windows = rule["strided_windows"] if strides == 2 else rule["windows"]
    most_scopes = rule["window_scopes"] or float("inf")
    if windows and windows[0] <= positions <= windows[1] and (
            strides == 2 or rule["min_window_scopes"] <= positions / scope <= most_scopes):
        return "query_windows"
    if positions <= rule["whole_e_scope"] * scope:
        return "lambdas_first"  # the scope covers (most of) the map: E is dense
    for largest, smallest_map, formulation in rule["local"]:
        if (largest is None or receptive_field <= largest) and positions >= smallest_map:
            return formulation
    raise AssertionError("LOCAL_RULE rows end with a None row")  # pragma: no cover
