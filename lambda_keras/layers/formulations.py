"""The position-term formulations of the lambda layer, and the rule that picks one.

The position term of a lambda layer, sum_k q_n^h[k] lambda^p_n[k, v] with
lambda^p_n = sum_{m,u} E[n, m, k, u] V[m, v, u], is one function with five formulations
(same outputs up to float round-off; tests/test_formulations.py checks each against the NumPy
reference of the paper):

- "queries_first": q . E first, an h x m x u map per query, then . V. Fewest FLOPs and least
  memory while that map is no larger than the k x v lambda it replaces (h m u <= k v). In a
  strided layer the average pool that follows is applied to those maps before . V
  (`queries_first_pooled`: the second contraction at a quarter of the positions).
- "query_windows" (local "conv" mode): q . E first too, but in window coordinates: one GEMM
  gives every query's scores over its r x r window, which are spread over the context rows of
  its block of query rows and meet column windows of V in one batched matmul. A strided layer's
  pool is folded into that GEMM (the pooled query's window is (r + 2)^2; 9 taps x |k| deep), so
  nothing runs at the unpooled positions after it. Memory Theta(b n h r (r + block rows) u).
- "lambdas_first": E . V first, 'nmuk,bmvu->bnkv' (the paper's global einsum), memory
  Theta(k n m + b n k v) with no batch-dependent n x m map; static sizes.
- "row_windows" (local "conv" mode): the r x r scope as one einsum over row windows of V and
  banded column matrices of the kernel; memory Theta(b n r v), linear in the positions; static
  sizes.
- "conv" (local "conv" mode): a 2-D convolution over V with the value depth folded into the
  batch, the paper's lambda convolution; memory Theta(b n k v); any (dynamic) input size.

Which one is fastest depends on the map size, on forward vs training, and on what runs it: the
same r x r convolution with one input channel is fast with TensorFlow's oneDNN kernels, 7-8x
slower without them (TensorFlow enables oneDNN by default only on CPUs with AVX-512), and slow
under XLA (TF `jit_compile=True`, JAX); without oneDNN, TensorFlow's malloc allocator makes large
temporaries dear; the CPU matters too (the same engine ranks formulations differently with and
without AVX-512). `choose` is the rule: a pure function of the shapes and of the `Runtime`
(backend, XLA or not, oneDNN state, CPU allocator, device, AVX-512) the layer traces under. Its
thresholds come from `benchmarks/formulations.py`, run on two CPUs (an Intel Xeon with AVX-512 and
an AMD EPYC with AVX2 only; benchmarks/results/formulations/<cpu>.json, tables in
benchmarks/README.md), and tests/test_formulations.py checks that, in every measured cell of
both, the rule's pick is within 1.2x of the fastest formulation.
NOTE: GPUs and TPUs were not measured; there the rule uses the XLA (TF on TPU), JAX or the
no-oneDNN TensorFlow rows, a guess documented as such. CPUs other than the two measured ones
(ARM, older x86) get the rows of the CPU they resemble by AVX-512, also a guess.
"""

import dataclasses
import functools

import numpy as np
from keras import ops

FORMULATIONS = ("queries_first", "query_windows", "lambdas_first", "row_windows", "conv")
IMPLEMENTATIONS = ("auto",) + FORMULATIONS
# Values of `implementation` from earlier releases, mapped when a layer (or an old config) is
# created. "einsum" meant "never the convolution" (for XLA); "auto" now knows about XLA itself.
LEGACY_IMPLEMENTATIONS = {"einsum": "auto"}
# Formulations that need the "conv" (local) position mode, and those that need a static size.
LOCAL_ONLY = ("query_windows", "row_windows", "conv")
STATIC_ONLY = ("queries_first", "query_windows", "lambdas_first", "row_windows")

# Row windows cut wide maps into tiles of this many scopes (r columns each); benchmarks/README.md.
WINDOW_TILE_SCOPES = 3
# Query windows cut tall maps into blocks of about this many scopes of query rows. Each query's
# scores are spread over its block's rows plus r - 1 context rows, ~3x its own r rows at 2
# scopes; smaller blocks waste less but gather V's windows more often. Not tuned: every map up to
# 46 rows (r 23) is one block, and there the context is the map's rows.
QUERY_BLOCK_SCOPES = 2

# ------------------------------------------------------------------------------- the rule
# Engines: how the position term is executed. "tf_onednn" / "tf": TensorFlow graph or eager
# without XLA, oneDNN on / off (with a pooling CPU allocator); "tf_malloc": oneDNN off with
# TensorFlow's default malloc allocator (TF_CPU_ALLOCATOR_USE_BFC unset); "xla": TF
# jit_compile=True; "jax": the JAX backend (XLA too, but measured to differ from TF's XLA);
# "torch": the PyTorch backend (eager).
ENGINES = ("tf_onednn", "tf", "tf_malloc", "xla", "jax", "torch")

# Engines where a strided layer's queries_first pools its q . E maps before they meet V
# (queries_first_pooled). Measured in TF graph mode against pooling the output (the whole
# strided layer at 28^2, batch 8, d 256, r 23, interleaved): 1.27x / 1.06x faster forward with
# oneDNN on / off, 1.33x / 1.16x forward + backward; on JAX (jit, forward) 1.3x at 14^2 with
# d 512 and 1.5x at 28^2; under XLA and on JAX the pooled q . E is the fastest formulation of the
# strided 28^2 forward ("r23s2" cells). Not PyTorch: pooling the maps
# made the layer 2.1x / 2.4x slower at 14^2 / 28^2 (Keras' channels-last pool and the padded
# "same" pool copy them), so it pools the output.
POOLED_MAPS_ENGINES = ("tf_onednn", "tf", "tf_malloc", "xla", "jax")

# The local "conv" mode, per (engine, phase). Measured at r = 7 (|u| = 4) and r = 23 (|u| = 1),
# batch 8, d 256, |k| 16, |h| 4, maps 14^2-112^2 (strided r = 23: 14^2-28^2), TensorFlow with its
# pooled (BFC) CPU allocator except for "tf_malloc", on an Intel Xeon with AVX-512 and an AMD EPYC
# with AVX2 (benchmarks/results/formulations/, summarised in benchmarks/README.md "Formulations
# per backend"); times quoted below are the Xeon's unless marked. In this order:
# - "queries_first": where the scope covers a good part of the map (n <= dense_scope r^2) and
#   q.E's h x m x u map per query is at most `queries_first` times the k x v lambda it replaces
#   (1: no more memory than the lambdas, what every engine does; 4: up to 32^2 maps at the
#   paper's sizes, where it was measured fastest, e.g. 28^2 under XLA); in a strided layer
#   (strides 2) `strided_queries_first` (default: the same);
# - "query_windows": maps of `windows` = (smallest n, largest n) positions (`strided_windows` in
#   a strided layer; default: the same); None: never; with `window_scopes`, only maps of at most
#   that many r x r scopes (n <= window_scopes r^2: a small r gets small maps only). Measured up
#   to 56^2: its window scores and their spread take ~4 GB at 112^2 (batch 8), where the suite
#   does not run it. An unstrided layer's query windows group `block_columns` query columns per
#   batched-matmul item (`block_columns`; strided layers: 1);
# - "lambdas_first": maps the scope covers (n <= whole_e_scope r^2) (E is dense: few FLOPs
#   wasted);
# - "local" otherwise: the first row (largest r, smallest n, formulation) with r <= largest r
#   (None: any) and n >= smallest n. The boundary r <= 11 lies between the two measured fields
#   (the convolution's work grows as r^2, row windows' as r).
def _rule(queries_first, dense_scope, whole_e_scope, *local, strided_queries_first=None,
          windows=None, strided_windows=None, window_scopes=None, block_columns=1):
    return dict(queries_first=queries_first, dense_scope=dense_scope,
                whole_e_scope=whole_e_scope, local=local,
                strided_queries_first=strided_queries_first or queries_first,
                windows=windows, strided_windows=strided_windows or windows,
                window_scopes=window_scopes, block_columns=block_columns)


ROW_WINDOWS, CONV = (None, 0, "row_windows"), (None, 0, "conv")
SMALL_R_CONV = (11, 0, "conv")  # r <= 11: the convolution
SMALL_R_CONV_FROM_20 = (11, 400, "conv")  # r <= 11 on maps of 20^2 or more
SMALL_R_CONV_FROM_50 = (11, 2500, "conv")  # r <= 11 on maps of 50^2 or more
UP_TO_28, UP_TO_56 = (0, 28 * 28), (0, 56 * 56)  # query_windows ranges (positions)
LOCAL_RULE = {
    # (engine, phase):   _rule(queries_first, dense_scope, whole_e_scope, *local rows,
    #                          strided_queries_first, windows, strided_windows, window_scopes)
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
    ("tf_malloc", "train"): _rule(1, 2, 1, SMALL_R_CONV_FROM_50, ROW_WINDOWS,
                                  strided_windows=UP_TO_28),
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
    ("jax", "fwd"): _rule(1, 4, 1, SMALL_R_CONV_FROM_20, ROW_WINDOWS, windows=(0, 14 * 14),
                          strided_windows=UP_TO_28),
    ("jax", "train"): _rule(1, 4, 4, SMALL_R_CONV, ROW_WINDOWS, windows=UP_TO_28),
    # PyTorch (eager; its oneDNN convolution): the convolution forward and the 7 x 7 convolution
    # in training from 28^2 on; query windows in strided layers (28^2: 62 vs 77 ms for the
    # convolution forward, 152 vs 267 ms for q . E in training) and in training on maps of up to
    # 6 scopes (r 7 |u| 4 at 14^2: 40 vs 48 ms for the convolution; r 23 at 28^2 / 56^2: 1.02x /
    # 1.15x row windows with AVX-512, the fastest without, where E . V took 1.28x and row windows
    # 1.20x).
    ("torch", "fwd"): _rule(1, 2, 1, CONV, strided_windows=UP_TO_28),
    ("torch", "train"): _rule(1, 2, 2, SMALL_R_CONV, ROW_WINDOWS, windows=UP_TO_56,
                              strided_windows=UP_TO_28, window_scopes=6),
}
# Rows that differ on a CPU without AVX-512 (measured on an AMD EPYC with AVX2,
# results/formulations/amd-avx2.json; LOCAL_RULE's rows hold on both CPUs elsewhere).
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
#   (2 columns per block) for the unstrided r 23 layer up to 56^2 (28^2: 151 vs 183 ms for row
#   windows; 56^2: 860 vs 920), row windows beyond.
WITHOUT_AVX512_RULE = {
    ("tf", "fwd"): _rule(1, 2, 1, SMALL_R_CONV_FROM_20, ROW_WINDOWS, windows=UP_TO_56,
                         block_columns=4),
    ("tf", "train"): _rule(1, 2, 1, SMALL_R_CONV_FROM_50, ROW_WINDOWS, windows=UP_TO_56,
                           block_columns=2),
    ("tf_malloc", "fwd"): _rule(1, 2, 1, SMALL_R_CONV_FROM_20, ROW_WINDOWS, windows=UP_TO_56,
                                strided_windows=UP_TO_28, window_scopes=6, block_columns=2),
    ("tf_malloc", "train"): _rule(1, 2, 1, SMALL_R_CONV_FROM_50, ROW_WINDOWS,
                                  strided_windows=UP_TO_28, block_columns=2),
}


def phase_of(training):
    """The rule's phase of a call's `training`: "fwd" for None/False (predict, serving), "train"
    otherwise (a symbolic value counts as training)."""
    inference = isinstance(training, (bool, int, np.bool_, type(None))) and not training
    return "fwd" if inference else "train"


def block_columns(runtime, training, strides=1, receptive_field=23):
    """The query columns `query_windows` groups per block in `runtime`: the rule's
    `block_columns` for unstrided layers with r > 11, else 1 (see WITHOUT_AVX512_RULE)."""
    if strides != 1 or receptive_field <= 11:
        return 1
    return rule_for(runtime, phase_of(training))["block_columns"]


def rule_for(runtime, phase):
    """The rule row of `runtime` for phase "fwd" or "train" (LOCAL_RULE, or the CPU's own)."""
    key = (runtime.engine, phase)
    if runtime.device == "cpu" and not runtime.avx512 and key in WITHOUT_AVX512_RULE:
        return WITHOUT_AVX512_RULE[key]
    return LOCAL_RULE[key]


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What executes the layer: Keras backend, XLA or not, TF's oneDNN state and CPU allocator,
    device kind."""

    backend: str = "tensorflow"  # keras.backend.backend()
    xla: bool = False  # compiled by XLA: TF jit_compile=True, or the JAX backend
    onednn: bool = False  # TensorFlow's oneDNN kernels (IsMklEnabled); False elsewhere
    device: str = "cpu"  # "cpu", "gpu" or "tpu"
    pooled_allocator: bool = True  # TF's CPU allocator pools (runtime.pooled_allocator_active)
    avx512: bool = True  # the CPU has AVX-512 (avx512f): which measured CPU's rows apply

    @property
    def engine(self):
        """The row of LOCAL_RULE that applies (see ENGINES)."""
        if self.backend == "jax":
            return "jax"
        if self.xla or self.device == "tpu":
            return "xla"
        if self.backend == "torch":
            return "torch"
        if self.backend == "tensorflow" and self.device == "cpu":
            if self.onednn:
                return "tf_onednn"
            return "tf" if self.pooled_allocator else "tf_malloc"
        return "tf"


def choose(position, rows, cols, training, *, num_heads, key_dim, value_dim, intra_depth,
           receptive_field, runtime, strides=1):
    """The formulation "auto" uses for a rows x cols map (ints, or None when unknown).

    Args:
        position: the layer's position mode, "conv", "relative" or "global".
        rows, cols: the static map size, or None (dynamic: only "conv" applies).
        training: the call's `training`; a symbolic or truthy value counts as training.
        num_heads, key_dim, value_dim, intra_depth: |h|, |k|, |v|, |u|.
        receptive_field: r of the "conv" mode (ignored by the other modes).
        runtime: a `Runtime`.
        strides: the layer's strides (2: an average pool follows, which "queries_first" applies
            to its q . E maps and "query_windows" folds into its window scores).

    Returns:
        One of FORMULATIONS.
    """
    if not (isinstance(rows, int) and isinstance(cols, int)):
        return "conv"  # dynamic size: only the convolution applies ("relative"/"global" fix it)
    positions = rows * cols  # m = n: the whole map is the context of "relative"/"global"
    # Per query, q.E is an h x m x u map and E.V a k x v lambda: the smaller one is stored.
    if num_heads * positions * intra_depth <= key_dim * value_dim:
        return "queries_first"
    if position != "conv":
        return "lambdas_first"
    rule = rule_for(runtime, phase_of(training))
    scope = receptive_field * receptive_field
    allowance = rule["strided_queries_first" if strides == 2 else "queries_first"]
    if positions <= rule["dense_scope"] * scope and (
            num_heads * positions * intra_depth <= allowance * key_dim * value_dim):
        return "queries_first"
    windows = rule["strided_windows" if strides == 2 else "windows"]
    if windows and windows[0] <= positions <= windows[1] and (
            rule["window_scopes"] is None or positions <= rule["window_scopes"] * scope):
        return "query_windows"
    if positions <= rule["whole_e_scope"] * scope:
        return "lambdas_first"  # the scope covers (most of) the map: E is dense
    for largest, smallest_map, formulation in rule["local"]:
        if (largest is None or receptive_field <= largest) and positions >= smallest_map:
            return formulation
    raise AssertionError("LOCAL_RULE rows end with a None row")  # pragma: no cover


def current_runtime():
    """The `Runtime` of the code being traced or run now (TF: inside a jit_compile function?)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return Runtime("tensorflow", xla=_tf_in_xla_context(), onednn=_tf_onednn(),
                       device=_tf_device(), pooled_allocator=_tf_pooled_allocator(),
                       avx512=_avx512())
    if backend == "jax":
        return Runtime("jax", xla=True, device=_jax_device(), avx512=_avx512())
    if backend == "torch":
        return Runtime("torch", device=_torch_device(), avx512=_avx512())
    return Runtime(backend, avx512=_avx512())


def _tf_in_xla_context():
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    if tf.executing_eagerly():
        return False
    # tf.function(jit_compile=True) traces its body inside an XLA control-flow context.
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


@functools.lru_cache(maxsize=None)
def _tf_onednn():
    from lambda_keras import runtime  # what TensorFlow reports (IsMklEnabled), not the env

    return runtime.onednn_active()


@functools.lru_cache(maxsize=None)
def _tf_pooled_allocator():
    from lambda_keras import runtime

    return runtime.pooled_allocator_active()


@functools.lru_cache(maxsize=None)
def _avx512():
    from lambda_keras import runtime

    return runtime.has_avx512()


@functools.lru_cache(maxsize=None)
def _tf_device():
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU"):
        return "tpu"
    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


@functools.lru_cache(maxsize=None)
def _jax_device():
    import jax

    return jax.default_backend()  # "cpu", "gpu", "tpu"


@functools.lru_cache(maxsize=None)
def _torch_device():
    from keras.src.backend.torch.core import get_device

    return "gpu" if str(get_device()).startswith("cuda") else "cpu"


# ------------------------------------------------------------------------ the formulations
def relative_offsets(height, width, table_height, table_width):
    """Flat index of the relative offset (m - n) of every (query n, context m) pair, row-major.

    The table of shape (table_height, table_width) is centred: offset 0 sits at
    (table_height // 2, table_width // 2). Pairs outside the table get index table_height *
    table_width, one past the end (the zero row the caller appends). Returns int32 [n, m].
    """
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)  # [n]
    d_row = rows[None, :] - rows[:, None] + table_height // 2  # [n, m]
    d_col = cols[None, :] - cols[:, None] + table_width // 2  # [n, m]
    inside = (d_row >= 0) & (d_row < table_height) & (d_col >= 0) & (d_col < table_width)
    index = np.where(inside, d_row * table_width + d_col, table_height * table_width)
    return index.astype("int32")


def position_embeddings(table, position, rows, cols):
    """E for every (query, context) pair of a static rows x cols map: [n, m, u, k].

    Args:
        table: "conv": the r x r kernel [r, r, u, k]; "relative": the (2H-1) x (2W-1) table
            [2H-1, 2W-1, u, k]; "global": E itself [n, m, u, k].
        position: "conv", "relative" or "global".
    """
    if position == "global":
        return table  # [n, m, u, k]
    t_rows, t_cols, u, k = table.shape
    index = relative_offsets(rows, cols, t_rows, t_cols)  # [n, m], numpy constant
    flat = ops.reshape(table, (t_rows * t_cols, u, k))  # [t, u, k]
    flat = ops.pad(flat, ((0, 1), (0, 0), (0, 0)))  # [t + 1, u, k], last row: outside scope
    return ops.take(flat, index, axis=0)  # [n, m, u, k]


def queries_first(q, values, embeddings):
    """Position term q . E first: q [b, n, h, k], V [b, m, v, u], E [n, m, u, k] -> [b, n, h, v]."""
    scores = ops.einsum("bnhk,nmuk->bnhmu", q, embeddings)  # [b, n, h, m, u]
    return ops.einsum("bnhmu,bmvu->bnhv", scores, values)  # [b, n, h, v]


def queries_first_pooled(q, values, embeddings, rows, cols, pool):
    """queries_first, then a linear pool over the query positions, applied to the q . E maps.

    The pool (the stride-2 average pool of a strided lambda layer) commutes with the contraction
    over the context, so pooling the h x m x u map of every query before it meets V gives the
    pooled position term with the second contraction at the pooled positions only (n' ~ n / 4).
    q [b, n, h, k], V [b, m, v, u], E [n, m, u, k] with n = rows x cols (static); `pool` maps
    [1, H, W, C] -> [1, H', W', C]. Returns [b, n', h, v].
    """
    batch, heads = ops.shape(q)[0], q.shape[2]
    m, u = embeddings.shape[1], embeddings.shape[2]
    scores = ops.einsum("bnhk,nmuk->nbhmu", q, embeddings)  # [n, b, h, m, u], n-major
    scores = pool(ops.reshape(scores, (1, rows, cols, -1)))  # [1, H', W', b*h*m*u]
    scores = ops.reshape(scores, (-1, batch, heads, m, u))  # [n', b, h, m, u]
    return ops.einsum("pbhmu,bmvu->bphv", scores, values)  # [b, n', h, v]


def lambdas_first(values, embeddings):
    """Position lambdas E . V: V [b, m, v, u], E [n, m, u, k] -> [b, n, k, v].

    Memory Theta(k n m + b n k v), no batch-dependent n x m map."""
    return ops.einsum("nmuk,bmvu->bnkv", embeddings, values)  # [b, n, k, v]


def row_windows(values, kernel, rows, cols):
    """The lambda convolution of a static map as one einsum over windows of V: [b, n, k, v].

    V [b, m, v, u] (m = rows x cols), kernel [r, r, u, k]. Query columns are cut into balanced
    tiles of at most WINDOW_TILE_SCOPES * r columns (one tile: whole rows, the cheapest in
    memory; narrower tiles: fewer FLOPs). For query row y, row offset d and a tile, the context
    is the row y + d over the tile's columns widened by r // 2 on both sides (zero padded), and
    contributes B_d V_window with B_d[x, z] = w[d, z - x] the banded column matrix of kernel row
    d, the same for every tile. Only row offsets that can reach inside the map are kept. Memory
    Theta(b n r v), linear in the positions; time Theta(b n r k v (tile + r)).
    """
    r, _, u, k = kernel.shape
    v = values.shape[2]
    centre = r // 2
    reach = min(centre, rows - 1)  # row offsets -reach..reach can land inside the map
    offsets = 2 * reach + 1
    tiles = -(-cols // int(WINDOW_TILE_SCOPES * r))  # tiles of at most that many columns
    if tiles == 1:  # the context is the whole row, no column padding
        tile, context, left = cols, cols, 0
    else:
        tile = -(-cols // tiles)  # balanced tiles: the last one is at most tiles - 1 short
        context, left = tile + 2 * centre, centre
    right = (tiles - 1) * tile + context - cols - left
    # Kernel index of (query column x, context column z) within a tile; r: outside the scope.
    shift = np.arange(context)[None, :] - np.arange(tile)[:, None] + centre - left  # [x, z]
    band_index = np.where((shift >= 0) & (shift < r), shift, r).astype("int32")
    table = kernel[centre - reach:centre + reach + 1]  # [d, r, u, k]
    table = ops.reshape(table, (offsets, r, u * k))  # [d, r, u*k]
    table = ops.pad(table, ((0, 0), (0, 1), (0, 0)))  # [d, r + 1, u*k], last: outside
    band = ops.take(table, band_index, axis=1)  # [d, x, z, u*k]
    band = ops.reshape(band, (offsets, tile, context, u, k))  # [d, x, z, u, k]
    band = ops.transpose(band, (0, 2, 3, 1, 4))  # [d, z, u, x, k]

    batch = ops.shape(values)[0]
    grid = ops.reshape(values, (batch, rows, cols, v, u))  # [b, H, W, v, u]
    grid = ops.pad(grid, ((0, 0), (reach, reach), (left, right), (0, 0), (0, 0)))
    padded_cols = cols + left + right
    # v before the positions: the windows come out in matmul layout (no copy in the einsum).
    grid = ops.reshape(ops.transpose(grid, (0, 3, 1, 2, 4)), (batch, v, -1, u))  # [b, v, H'W', u]
    # Flat index of context (y + d, t * tile + z) for query row y, tile t, offset d: [y, t, d, z].
    window_index = ((np.arange(rows)[:, None, None, None] + np.arange(offsets)[:, None])
                    * padded_cols + np.arange(tiles)[:, None, None] * tile + np.arange(context))
    windows = ops.take(grid, window_index.astype("int32"), axis=2)  # [b, v, y, t, d, z, u]
    lambdas = ops.einsum("bvytdzu,dzuxk->bvytxk", windows, band)  # [b, v, y, t, x, k]
    lambdas = ops.reshape(lambdas, (batch, v, rows, tiles * tile, k))[:, :, :, :cols]
    lambdas = ops.reshape(lambdas, (batch, v, rows * cols, k))  # [b, v, n, k]
    return ops.transpose(lambdas, (0, 2, 3, 1))  # [b, n, k, v]


def conv(values, kernel, rows, cols):
    """The lambda convolution over V, value depth folded into the batch: [b, n, k, v].

    V [b, m, v, u], kernel [r, r, u, k] (HWIO, cross-correlation, "same" zero padding); rows and
    cols may be dynamic (tensors)."""
    r, _, u, k = kernel.shape
    v = values.shape[2]
    batch = ops.shape(values)[0]
    grid = ops.reshape(values, (batch, rows, cols, v, u))  # [b, H, W, v, u]
    grid = ops.transpose(grid, (0, 3, 1, 2, 4))  # [b, v, H, W, u]
    grid = ops.reshape(grid, (-1, rows, cols, u))  # [b*v, H, W, u]
    lambdas = ops.conv(grid, kernel, padding="same")  # [b*v, H, W, k]
    lambdas = ops.reshape(lambdas, (batch, v, -1, k))  # [b, v, n, k]
    return ops.transpose(lambdas, (0, 2, 3, 1))  # [b, n, k, v]


def pool_taps(size, pool_size, strides):
    """The input positions and weights of a 1-D average pool, as TensorFlow pools.

    pool_size 1 (strides 1): no pool; 3: "same" padding, averaging the positions inside the map
    only (TF, JAX); 2: "valid". Returns (positions [out, pool_size] int, clipped into the map;
    weights [out, pool_size], 0 for a position outside the map; before: the padding above).
    """
    if pool_size == 3:
        out = -(-size // strides)
        before = max((out - 1) * strides + pool_size - size, 0) // 2
    else:
        out = (size - pool_size) // strides + 1
        before = 0
    positions = strides * np.arange(out)[:, None] + np.arange(pool_size)[None, :] - before
    inside = (positions >= 0) & (positions < size)
    weights = inside / inside.sum(axis=1, keepdims=True)
    return np.clip(positions, 0, size - 1), weights, before


def query_windows_shape(rows, cols, receptive_field, pool_size=1, strides=1, block_columns=1):
    """The blocks `query_windows` cuts a rows x cols map into (see its steps), a dict of ints:
    span (S, a pooled query's window), blocks x block (query rows; the last block padded) and
    context (their context rows), groups x group (query columns, G) and width (C, the columns
    a group's windows span). The scores take padded queries x h (S + 1) C u floats, their spread
    padded queries x h context C u."""
    span = receptive_field + pool_size - 1
    out_rows, out_cols = (len(pool_taps(size, pool_size, strides)[0]) for size in (rows, cols))
    blocks = -(-out_rows // max(-(-QUERY_BLOCK_SCOPES * span // strides), 1))
    block = -(-out_rows // blocks)  # balanced blocks of query rows
    group = min(block_columns, out_cols)
    return dict(span=span, blocks=blocks, block=block,
                context=min(strides * (block - 1) + span, rows), groups=-(-out_cols // group),
                group=group, width=strides * (group - 1) + span)


def query_windows(q, values, kernel, rows, cols, pool_size=1, strides=1, block_columns=1):
    """The position term q . E . V with q . E in window coordinates, pooled if strides = 2.

    q [b, n, h, k], V [b, m, v, u], kernel [r, r, u, k] of a static rows x cols map (n = m);
    `pool_size`/`strides`: the layer's average pool (1/1: none; 3/2 "same" or 2/2 "valid");
    `block_columns`: query columns per block (`formulations.block_columns` picks it).
    Returns [b, n', h, v] at the pooled positions n'.

    1. Scores: every (pooled) query's q . E over its window, one GEMM. A pooled query is the
       weighted sum of pool_size^2 taps, query 2 y' + t with kernel offset o - t: its window is
       S = r + pool_size - 1 wide. Query columns are grouped G = block_columns at a time; a
       group's windows span C = strides (G - 1) + S columns, and query g of a group scores into
       columns strides g .. strides g + S - 1 of that span: the GEMM is
       [b n' h, G taps k] x [G taps k, (S + 1) C u], q placed in the k slots of its g.
    2. Query rows are cut into blocks of about QUERY_BLOCK_SCOPES * S / strides rows; a block
       meets the context rows its windows reach (at most rows). The scores are spread over those
       rows (a gather; rows outside a window take a zero slot): [b W'/G blocks, B G h, rows C u].
    3. The matching column windows of V (C columns per group of query columns, zero padded) are
       gathered once per block: [b W'/G blocks, rows C u, v]; one batched matmul gives the output.
    FLOPs ~ b n' h C u (G S taps k + context rows v); memory Theta(b n' h C u (S + context rows)).
    Larger groups make fewer, larger matmuls (TensorFlow's Eigen kernels run small batched
    matmuls at a fraction of their speed) for C / S times the FLOPs.
    """
    r, _, u, k = kernel.shape
    heads, v = q.shape[2], values.shape[2]
    batch = ops.shape(q)[0]
    centre, taps = r // 2, pool_size
    tap_rows, row_weights, before_rows = pool_taps(rows, taps, strides)
    tap_cols, col_weights, before_cols = pool_taps(cols, taps, strides)
    out_rows, out_cols = len(tap_rows), len(tap_cols)
    shape = query_windows_shape(rows, cols, r, pool_size, strides, block_columns)
    span, width, context = shape["span"], shape["width"], shape["context"]
    blocks, block, groups, group = shape["blocks"], shape["block"], shape["groups"], shape["group"]
    padded_rows, padded_cols = blocks * block, groups * group  # padding queries: zero weights
    first_row = strides * np.arange(padded_rows) - before_rows  # of each query's window (+ c)
    tap_rows = np.pad(tap_rows, ((0, padded_rows - out_rows), (0, 0)))
    row_weights = np.pad(row_weights, ((0, padded_rows - out_rows), (0, 0)))  # padding: 0
    tap_cols = np.pad(tap_cols, ((0, padded_cols - out_cols), (0, 0)))
    col_weights = np.pad(col_weights, ((0, padded_cols - out_cols), (0, 0)))

    # 1. scores [b W'/G G h blocks B, (S + 1) C u]: row offset S is a zero slot (outside).
    # Tensors stay within 5 dimensions (TFLite's TRANSPOSE and broadcasting MUL limits).
    grid = ops.reshape(q, (batch, rows, cols, heads, k))  # [b, H, W, h, k]
    grid = ops.transpose(grid, (0, 3, 1, 2, 4))  # [b, h, H, W, k]
    grid = ops.take(grid, tap_rows.reshape(-1).astype("int32"), axis=2)  # [b, h, H'' T, W, k]
    grid = ops.take(grid, tap_cols.reshape(-1).astype("int32"), axis=3)  # [b, h, H'' T, W'' T, k]
    weights = row_weights.reshape(-1, 1) * col_weights.reshape(1, -1)  # [H'' T, W'' T]
    grid = grid * ops.cast(weights[None, None, :, :, None], q.dtype)
    grid = ops.reshape(grid, (batch, heads * padded_rows * taps, groups, group, taps * k))
    grid = ops.transpose(grid, (0, 2, 3, 1, 4))  # [b, W''/G, G, h H'' Ty, Tx k]
    grid = ops.reshape(grid, (-1, group, heads * padded_rows * taps, 1, taps * k))
    slots = np.eye(group, dtype="float32")[None, :, None, :, None]  # query g -> its k slots
    grid = grid * ops.cast(slots, q.dtype)  # [b W''/G, G, h H'' Ty, G slots, Tx k]
    grid = ops.reshape(grid, (-1, taps * group * taps * k))  # [b W''/G G h H'', Ty G Tx k]
    shifted = [ops.pad(kernel, ((ty, taps - 1 - ty),
                                (tx + strides * g, width - span + taps - 1 - tx - strides * g),
                                (0, 0), (0, 0)))
               for ty in range(taps) for g in range(group) for tx in range(taps)]  # [S, C, u, k]
    table = ops.pad(ops.stack(shifted), ((0, 0), (0, 1), (0, 0), (0, 0), (0, 0)))
    table = ops.transpose(table, (0, 4, 1, 2, 3))  # [Ty G Tx, k, S + 1, C, u]
    table = ops.reshape(table, (taps * group * taps * k, (span + 1) * width * u))
    scores = ops.matmul(grid, table)  # [b W''/G G h H'', (S + 1) C u]
    scores = ops.reshape(scores, (batch * groups, -1, width * u))  # [b W''/G, G h H''(S+1), C u]

    # 2. spread over the context rows of each block: [b W''/G blocks, B G h, context C u]
    top = np.clip(first_row[::block] - centre, 0, rows - context)  # [blocks]
    context_rows = top[:, None] + np.arange(context)  # [blocks, context]
    offset = (context_rows[:, None, :] - first_row.reshape(blocks, block)[:, :, None]
              + centre)  # [blocks, B, context]
    offset = np.where((offset >= 0) & (offset < span), offset, span)
    query = (np.arange(group * heads)[None, None, :] * padded_rows
             + np.arange(padded_rows).reshape(blocks, block, 1))  # [blocks, B, G h]
    slot = query[..., None] * (span + 1) + offset[:, :, None, :]  # [blocks, B, G h, context]
    maps = ops.take(scores, slot.reshape(-1).astype("int32"), axis=1)
    maps = ops.reshape(maps, (-1, block * group * heads, context * width * u))

    # 3. column windows of V: [b W''/G blocks, context C u, v]
    left = centre + before_cols  # zero columns: the first window starts at padded column 0
    first_col = strides * group * np.arange(groups)  # of each group's windows, padded columns
    right = max(int(first_col[-1]) + width - cols - left, 0)
    grid = ops.reshape(values, (batch, rows, cols, v, u))
    grid = ops.transpose(grid, (0, 1, 2, 4, 3))  # [b, H, W, u, v]
    grid = ops.pad(grid, ((0, 0), (0, 0), (left, right), (0, 0), (0, 0)))
    value_cols = cols + left + right
    grid = ops.reshape(grid, (batch, rows * value_cols, u * v))  # [b, H W'', u v]
    window_cols = first_col[:, None] + np.arange(width)  # [W''/G, C]
    index = (context_rows[None, :, :, None] * value_cols
             + window_cols[:, None, None, :])  # [W''/G, blocks, context, C]
    windows = ops.take(grid, index.reshape(-1).astype("int32"), axis=1)
    windows = ops.reshape(windows, (-1, context * width * u, v))

    out = ops.matmul(maps, windows)  # [b W''/G blocks, B G h, v]
    out = ops.reshape(out, (batch, groups, padded_rows, group, heads * v))
    out = ops.transpose(out, (0, 2, 1, 3, 4))  # [b, H'', W''/G, G, h v]
    out = ops.reshape(out, (batch, padded_rows, padded_cols, heads * v))
    out = out[:, :out_rows, :out_cols]  # [b, H', W', h v]
    return ops.reshape(out, (batch, out_rows * out_cols, heads, v))  # [b, n', h, v]
