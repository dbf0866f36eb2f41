"""The lambda layer (Bello, "LambdaNetworks", ICLR 2021, arXiv 2102.08602).

A lambda layer summarises a context into linear functions ("lambdas", |k| x |v| matrices) and
applies them to every query, so content and position interactions cost linear memory:

    Q = BN(X W_Q) (n, h, k)    K = softmax_m(X W_K) (m, k, u)    V = BN(X W_V) (m, v, u)
    lambda^c   = sum_{m,u} K[m,k,u] V[m,v,u]                       (k, v)   shared by all queries
    lambda^p_n = sum_{m,u} E[n,m,k,u] V[m,v,u]                     (k, v)   one per query position
    y_n^h      = (lambda^c + lambda^p_n)^T q_n^h                   (v,)     heads concatenated -> d

Implemented (paper section in brackets):
- multi-query heads |h| with |v| = output_dim / |h| and keys/values shared by the heads [3.2];
- intra-depth |u| >= 1: keys, values and embeddings gain a u axis summed in the lambdas [4.3, B.4];
- position lambdas, `position=`:
  "conv"     the lambda convolution: E[n, m] = w[m - n + r // 2] on an r x r local scope with
             zero padding ("same"); any input size [4.3];
  "relative" relative embeddings over the whole map: E[n, m] = R[m - n + (H-1, W-1)], a learned
             (2H-1) x (2W-1) table; translation-equivariant; static size [3.2];
  "global"   one free embedding per (n, m) pair; static size;
  None       content lambda only [Table 9 ablation];
- batch norm on queries and values, softmax over context positions for the keys, projections
  without bias [C3, section 4.2 and Figure 3];
- strides 2 by average pooling after the layer: 3x3/2 as the paper says, or 2x2/2 as timm does;
- the paper's initialisation (Appendix C): W_Q ~ N(0, (|k| d)^-1/2), W_K, W_V ~ N(0, d^-1/2),
  E ~ N(0, 1); every initializer can be overridden.

The position term sum_k q_n^h[k] lambda^p_n[k, v] has four formulations, all the same function
(benchmarks/README.md has the measurements that set the thresholds):
- "queries_first": q . E first, an h x m x u map per query, then . V. Used whenever that map is
  no larger than the k x v lambda it replaces (h m u <= k v: maps up to 16 x 16 with the paper's
  defaults and |v| = 64, e.g. c4/c5 of LambdaResNets at 224 px): fewer FLOPs and less memory.
- "lambdas_first": E . V first, 'nmuk,bmvu->bnkv' (the paper's global einsum), memory
  Theta(knm + bnkv) with no batch-dependent n x m map; "relative"/"global" above that size.
- "row_windows" (local "conv" mode, static maps): the r x r scope as one einsum over row windows
  of V and banded column matrices of the kernel, memory Theta(bnrv), linear in the positions.
- "conv": a 2-D convolution over V with the value depth folded into the batch, the paper's lambda
  convolution; memory Theta(bnkv); any (dynamic) input size. Its backward pass is slow on CPU
  (TF's 1-input-channel filter gradient), its forward pass the fastest for maps >= 20 x 20.
`implementation` (local "conv" mode): "einsum" uses the first applicable of queries_first, then
lambdas_first up to `WHOLE_E_MAX_POSITIONS` positions and row_windows above (static size needed);
"conv" always convolves; "auto" is "einsum" on static maps except for inference (training falsy)
on maps of at least `CONV_INFERENCE_MIN_POSITIONS`, and "conv" on dynamic sizes.
NOTE: the paper chooses between its einsum and the lambda convolution by map size only; here the
choice also depends on training vs inference, from CPU measurements (under XLA on CPU the
convolution is slow: run such inference without XLA, as Keras' jit_compile="auto" does on CPU).

Deviations, each marked NOTE: below:
- NOTE: the paper gives no BN hyper-parameters; momentum 0.9 and epsilon 1e-5 follow ResNet-RS and
  timm (and are what makes timm's weights load exactly).
- NOTE: the paper's 3x3 stride-2 average pool has no stated padding; "same" padding keeps
  ceil(H / 2), as TF's ResNet-RS pools do.
- NOTE: timm's lambda convolution has a bias per key channel (`position_bias=True` reproduces it);
  the paper's has none, which is the default.
- Under float16 the lambdas and the output contraction are accumulated in float32; the key
  projection and softmax always run in float32 (bfloat16 keeps its dtype for the einsums: same
  exponent range as float32). Masked/causal contexts (Appendix B.2) are not implemented.
"""

import numpy as np
import keras
from keras import ops

POSITION_MODES = ("conv", "relative", "global", None)
IMPLEMENTATIONS = ("auto", "einsum", "conv")
POOL_SIZES = (2, 3)
# Formulation thresholds of the "conv" position lambdas, from benchmarks/README.md (CPU, TF 2.21):
# the whole banded E up to WHOLE_E_MAX_POSITIONS positions, row windows above; "auto" computes
# inference (training falsy) on maps of CONV_INFERENCE_MIN_POSITIONS or more with the convolution.
WHOLE_E_MAX_POSITIONS = 24 * 24
CONV_INFERENCE_MIN_POSITIONS = 20 * 20
# Row windows cut wide maps into tiles of this many scopes (r columns each); see benchmarks/README.md.
WINDOW_TILE_SCOPES = 3


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def _spatial_pair(name, value):
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or any(not isinstance(s, (int, np.integer)) or s <= 0 for s in value):
        raise ValueError(
            f"`{name}` must be a positive int or a pair (height, width). Received: {name}={value!r}"
        )
    return tuple(int(s) for s in value)


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


@keras.saving.register_keras_serializable(package="lambda_keras")
class LambdaLayer(keras.layers.Layer):
    """Lambda layer with content and position lambdas, for channels-last images (B, H, W, C).

    Args:
        output_dim: output channels d; must be divisible by `num_heads`. Defaults to the input's.
        key_dim: query/key depth |k| (paper default 16).
        num_heads: number of queries |h| per position (paper default 4); value depth = d / |h|.
        intra_depth: intra-depth |u| (paper default 1; 4 with a 7x7 scope is the larger variant).
        position: "conv" (local lambda convolution), "relative", "global" or None (content only).
        receptive_field: odd scope size r of the "conv" mode (paper default 23).
        feature_size: (H, W) the "relative"/"global" embeddings are made for; defaults to the
            static input size seen in `build`.
        strides: 1, or 2 to average-pool the output.
        pool_size: 3 (paper: 3x3 stride-2 pool, "same" padding) or 2 (timm: 2x2 stride-2 pool).
        implementation: "auto", "einsum" or "conv" for the "conv" mode (see module docstring).
        position_bias: add a learned bias per key channel to the position lambdas (timm's layer).
        norm_momentum, norm_epsilon: batch-norm settings for queries and values.
        query_initializer, key_initializer, value_initializer, position_initializer: override the
            paper's initialisation.
    """

    def __init__(
        self,
        output_dim=None,
        key_dim=16,
        num_heads=4,
        intra_depth=1,
        position="conv",
        receptive_field=23,
        feature_size=None,
        strides=1,
        pool_size=3,
        implementation="auto",
        position_bias=False,
        norm_momentum=0.9,
        norm_epsilon=1e-5,
        query_initializer=None,
        key_initializer=None,
        value_initializer=None,
        position_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.output_dim = None if output_dim is None else _positive_int("output_dim", output_dim)
        self.key_dim = _positive_int("key_dim", key_dim)
        self.num_heads = _positive_int("num_heads", num_heads)
        self.intra_depth = _positive_int("intra_depth", intra_depth)
        if position not in POSITION_MODES:
            raise ValueError(
                f"`position` must be one of {POSITION_MODES}. Received: position={position!r}"
            )
        self.position = position
        self.receptive_field = _positive_int("receptive_field", receptive_field)
        if self.receptive_field % 2 == 0:
            raise ValueError(
                f"`receptive_field` must be odd. Received: receptive_field={receptive_field!r}"
            )
        self.feature_size = _spatial_pair("feature_size", feature_size)
        if strides not in (1, 2) or isinstance(strides, bool):
            raise ValueError(f"`strides` must be 1 or 2. Received: strides={strides!r}")
        self.strides = int(strides)
        if pool_size not in POOL_SIZES or isinstance(pool_size, bool):
            raise ValueError(
                f"`pool_size` must be 3 (paper) or 2 (timm). Received: pool_size={pool_size!r}"
            )
        self.pool_size = int(pool_size)
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"`implementation` must be one of {IMPLEMENTATIONS}. "
                f"Received: implementation={implementation!r}"
            )
        self.implementation = implementation
        self.position_bias = bool(position_bias)
        self.norm_momentum = float(norm_momentum)
        self.norm_epsilon = float(norm_epsilon)
        self.query_initializer = _optional_initializer(query_initializer)
        self.key_initializer = _optional_initializer(key_initializer)
        self.value_initializer = _optional_initializer(value_initializer)
        self.position_initializer = _optional_initializer(position_initializer)
        if self.output_dim is not None and self.output_dim % self.num_heads:
            raise ValueError(
                f"`output_dim` must be divisible by `num_heads` ({self.num_heads}). "
                f"Received: output_dim={self.output_dim}"
            )

    # ---------------------------------------------------------------- build
    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            raise ValueError(
                "LambdaLayer expects channels-last images of rank 4 (batch, height, width, "
                f"channels). Received: input_shape={input_shape}"
            )
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"The channel axis of the input must be defined. Received: input_shape={input_shape}"
            )
        self._output_dim = self.output_dim or channels
        if self._output_dim % self.num_heads:
            raise ValueError(
                f"`output_dim` must be divisible by `num_heads` ({self.num_heads}). "
                f"Received: output_dim={self._output_dim}"
            )
        self.value_dim = self._output_dim // self.num_heads
        self._embedding_size = self._resolve_feature_size(input_shape)
        k, u, h, v = self.key_dim, self.intra_depth, self.num_heads, self.value_dim

        # Paper init (Appendix C): W_Q ~ N(0, (k d)^-1/2), W_K, W_V ~ N(0, d^-1/2), E ~ N(0, 1).
        def init(override, stddev):
            return override or keras.initializers.RandomNormal(stddev=stddev)

        self.query_kernel = self.add_weight(
            name="query_kernel", shape=(channels, h * k),
            initializer=init(self.query_initializer, (k * channels) ** -0.5))
        self.key_kernel = self.add_weight(
            name="key_kernel", shape=(channels, k * u),
            initializer=init(self.key_initializer, channels ** -0.5))
        self.value_kernel = self.add_weight(
            name="value_kernel", shape=(channels, v * u),
            initializer=init(self.value_initializer, channels ** -0.5))
        norm_kwargs = dict(momentum=self.norm_momentum, epsilon=self.norm_epsilon,
                           dtype=self.dtype_policy)
        self.query_norm = keras.layers.BatchNormalization(name="query_norm", **norm_kwargs)
        self.query_norm.build((None, None, h * k))
        self.value_norm = keras.layers.BatchNormalization(name="value_norm", **norm_kwargs)
        self.value_norm.build((None, None, v * u))

        position_init = init(self.position_initializer, 1.0)
        if self.position == "conv":
            r = self.receptive_field
            # Kernel of the lambda convolution, HWIO: [r, r, u, k].
            self.position_embeddings = self.add_weight(
                name="position_embeddings", shape=(r, r, u, k), initializer=position_init)
        elif self.position == "relative":
            rows, cols = self._embedding_size
            # Relative table indexed by offset (m - n) + (H-1, W-1): [2H-1, 2W-1, u, k].
            self.position_embeddings = self.add_weight(
                name="position_embeddings", shape=(2 * rows - 1, 2 * cols - 1, u, k),
                initializer=position_init)
        elif self.position == "global":
            n = self._embedding_size[0] * self._embedding_size[1]
            # One embedding per (query n, context m) pair: [n, m, u, k].
            self.position_embeddings = self.add_weight(
                name="position_embeddings", shape=(n, n, u, k), initializer=position_init)
        if self.position is not None and self.position_bias:
            self.position_bias_weight = self.add_weight(
                name="position_bias", shape=(k,), initializer="zeros")

    def _resolve_feature_size(self, input_shape):
        """Static (H, W) the relative/global embeddings are sized for; None for other modes."""
        if self.position not in ("relative", "global"):
            return None
        static = tuple(input_shape[1:3])
        if None in static and self.feature_size is None:
            raise ValueError(
                f'`position="{self.position}"` needs a static spatial size: give '
                "`feature_size=(H, W)` or a fully defined input shape. "
                f"Received: input_shape={input_shape}"
            )
        if None not in static and self.feature_size and static != self.feature_size:
            raise ValueError(
                f'`position="{self.position}"` embeddings are made for feature_size='
                f"{self.feature_size}; the input's spatial size differs. "
                f"Received: input_shape={input_shape}"
            )
        return self.feature_size or static

    # ----------------------------------------------------------------- call
    def call(self, inputs, training=None):
        if len(inputs.shape) != 4:
            raise ValueError(
                "LambdaLayer expects channels-last images of rank 4 (batch, height, width, "
                f"channels). Received: input_shape={tuple(inputs.shape)}"
            )
        height, width = inputs.shape[1], inputs.shape[2]
        self._check_call_size(height, width)
        if self._embedding_size is not None:
            # "relative"/"global": the embeddings fix the size, also under a dynamic signature.
            height, width = self._embedding_size
        k, u, h, v = self.key_dim, self.intra_depth, self.num_heads, self.value_dim
        dynamic = ops.shape(inputs)
        batch = dynamic[0]
        rows = height if height is not None else dynamic[1]
        cols = width if width is not None else dynamic[2]
        compute_dtype = self.compute_dtype
        # float16 overflows past 65504: accumulate lambdas in float32 there (see module docstring).
        lambda_dtype = "float32" if compute_dtype == "float16" else compute_dtype

        x = ops.reshape(inputs, (batch, -1, inputs.shape[-1]))  # [b, n, d]
        q = ops.matmul(x, ops.cast(self.query_kernel, compute_dtype))  # [b, n, h*k]
        # Keys are projected in float32 (k*u channels, cheap): rounded low-precision logits would
        # make the softmax and its gradients inaccurate under mixed precision.
        keys = ops.matmul(ops.cast(x, "float32"), ops.cast(self.key_kernel, "float32"))  # [b, m, k*u]
        values = ops.matmul(x, ops.cast(self.value_kernel, compute_dtype))  # [b, m, v*u]
        q = self.query_norm(q, training=training)  # [b, n, h*k], statistics in float32
        values = self.value_norm(values, training=training)  # [b, m, v*u]

        q = ops.reshape(ops.cast(q, lambda_dtype), (batch, -1, h, k))  # [b, n, h, k]
        values = ops.reshape(ops.cast(values, lambda_dtype), (batch, -1, v, u))  # [b, m, v, u]
        keys = ops.reshape(keys, (batch, -1, k, u))  # [b, m, k, u]
        keys = ops.cast(ops.softmax(keys, axis=1), lambda_dtype)  # softmax over m, in float32

        # Content lambda, shared by every query position, applied to every query.
        content = ops.einsum("bmku,bmvu->bkv", keys, values)  # [b, k, v]
        out = ops.einsum("bnhk,bkv->bnhv", q, content)  # [b, n, h, v]
        if self.position is not None:
            out = out + self._position_output(q, values, rows, cols, lambda_dtype, training)

        out = ops.cast(out, compute_dtype)
        out = ops.reshape(out, (batch, rows, cols, h * v))  # [b, H, W, d]
        if self.strides == 2:
            padding = "same" if self.pool_size == 3 else "valid"
            out = ops.average_pool(out, self.pool_size, strides=2, padding=padding)  # [b, H', W', d]
        return out

    def _check_call_size(self, height, width):
        if self._embedding_size is None or None in (height, width):
            return
        if (height, width) != tuple(self._embedding_size):
            raise ValueError(
                f'`position="{self.position}"` embeddings are made for feature_size='
                f"{tuple(self._embedding_size)}. Received: input spatial size {(height, width)}"
            )

    def _formulation(self, rows, cols, training=None):
        """How the position term is computed for a rows x cols map (module docstring):
        "queries_first" or "lambdas_first" (whole E), "row_windows" or "conv"."""
        static = isinstance(rows, int) and isinstance(cols, int)
        if self.position == "conv":
            if self.implementation == "einsum" and not static:
                raise ValueError(
                    '`implementation="einsum"` needs a static spatial size. '
                    f"Received: input spatial size {(rows, cols)}"
                )
            if self.implementation == "conv" or not static:
                return "conv"
        positions = rows * cols  # m = n: the whole map is the context of "relative"/"global"
        # Per query, q.E is an h x m x u map and E.V a k x v lambda: the smaller one is stored.
        if self.num_heads * positions * self.intra_depth <= self.key_dim * self.value_dim:
            return "queries_first"
        if self.position != "conv":
            return "lambdas_first"
        # A symbolic `training` counts as training; None/False (predict, serving) does not.
        inference = isinstance(training, (bool, int, np.bool_, type(None))) and not training
        if self.implementation == "auto" and inference and (
                positions >= CONV_INFERENCE_MIN_POSITIONS):
            return "conv"
        return "lambdas_first" if positions <= WHOLE_E_MAX_POSITIONS else "row_windows"

    def _position_embeddings(self, rows, cols, dtype):
        """E for every (query, context) pair of a static rows x cols map: [n, m, u, k]."""
        table = ops.cast(self.position_embeddings, dtype)
        if self.position == "global":
            return table  # [n, m, u, k]
        t_rows, t_cols = table.shape[0], table.shape[1]  # r x r, or (2H-1) x (2W-1): all inside
        index = relative_offsets(rows, cols, t_rows, t_cols)  # [n, m], numpy constant
        flat = ops.reshape(table, (t_rows * t_cols, self.intra_depth, self.key_dim))  # [t, u, k]
        flat = ops.pad(flat, ((0, 1), (0, 0), (0, 0)))  # [t + 1, u, k], last row: outside scope
        return ops.take(flat, index, axis=0)  # [n, m, u, k]

    def _position_output(self, q, values, rows, cols, dtype, training):
        """Position term of the output, sum_k q[b,n,h,k] lambda^p[b,n,k,v]: [b, n, h, v]."""
        formulation = self._formulation(rows, cols, training)
        if formulation == "queries_first":
            embeddings = self._position_embeddings(rows, cols, dtype)  # [n, m, u, k]
            scores = ops.einsum("bnhk,nmuk->bnhmu", q, embeddings)  # [b, n, h, m, u]
            out = ops.einsum("bnhmu,bmvu->bnhv", scores, values)  # [b, n, h, v]
        else:
            if formulation == "lambdas_first":
                embeddings = self._position_embeddings(rows, cols, dtype)  # [n, m, u, k]
                # Memory Theta(knm + bnkv), no batch-dependent n x m map.
                lambdas = ops.einsum("nmuk,bmvu->bnkv", embeddings, values)  # [b, n, k, v]
            elif formulation == "row_windows":
                lambdas = self._row_window_lambdas(values, rows, cols, dtype)  # [b, n, k, v]
            else:
                lambdas = self._conv_lambdas(values, rows, cols, dtype)  # [b, n, k, v]
            out = ops.einsum("bnhk,bnkv->bnhv", q, lambdas)  # [b, n, h, v]
        if self.position_bias:
            bias = ops.cast(self.position_bias_weight, dtype)  # [k]
            # timm's conv bias is added to every lambda^p entry (per n, k and v): q . bias.
            # expand_dims, not [..., None]: a new-axis strided slice has no TFLite builtin.
            out = out + ops.expand_dims(ops.einsum("bnhk,k->bnh", q, bias), -1)  # [b, n, h, v]
        return out

    def _row_window_lambdas(self, values, rows, cols, dtype):
        """The lambda convolution of a static map as one einsum over windows of V: [b, n, k, v].

        Query columns are cut into balanced tiles of at most WINDOW_TILE_SCOPES * r columns (one
        tile: whole rows, the cheapest in memory; narrower tiles: fewer FLOPs). For query row
        y, row offset d and a tile, the context is the row y + d over the tile's columns widened
        by r // 2 on both sides (zero padded), and contributes B_d V_window with
        B_d[x, z] = w[d, z - x] the banded column matrix of kernel row d, the same for every
        tile. Only row offsets that can reach inside the map are kept. Memory Theta(b n r v),
        linear in the positions; time Theta(b n r k v (tile + r)).
        """
        k, u, v, r = self.key_dim, self.intra_depth, self.value_dim, self.receptive_field
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
        table = ops.cast(self.position_embeddings, dtype)[centre - reach:centre + reach + 1]
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

    def _conv_lambdas(self, values, rows, cols, dtype):
        """The lambda convolution over V, value depth folded into the batch: [b, n, k, v]."""
        k, u, v = self.key_dim, self.intra_depth, self.value_dim
        batch = ops.shape(values)[0]
        grid = ops.reshape(values, (batch, rows, cols, v, u))  # [b, H, W, v, u]
        grid = ops.transpose(grid, (0, 3, 1, 2, 4))  # [b, v, H, W, u]
        grid = ops.reshape(grid, (-1, rows, cols, u))  # [b*v, H, W, u]
        kernel = ops.cast(self.position_embeddings, dtype)  # [r, r, u, k]
        lambdas = ops.conv(grid, kernel, padding="same")  # [b*v, H, W, k]
        lambdas = ops.reshape(lambdas, (batch, v, -1, k))  # [b, v, n, k]
        return ops.transpose(lambdas, (0, 2, 3, 1))  # [b, n, k, v]

    # --------------------------------------------------------------- config
    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            raise ValueError(
                "LambdaLayer expects channels-last images of rank 4 (batch, height, width, "
                f"channels). Received: input_shape={input_shape}"
            )
        batch, rows, cols, channels = input_shape
        if self.strides == 2:
            shrink = (lambda s: (s + 1) // 2) if self.pool_size == 3 else (lambda s: s // 2)
            rows = None if rows is None else shrink(rows)
            cols = None if cols is None else shrink(cols)
        return (batch, rows, cols, self.output_dim or channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            output_dim=self.output_dim,
            key_dim=self.key_dim,
            num_heads=self.num_heads,
            intra_depth=self.intra_depth,
            position=self.position,
            receptive_field=self.receptive_field,
            feature_size=self.feature_size,
            strides=self.strides,
            pool_size=self.pool_size,
            implementation=self.implementation,
            position_bias=self.position_bias,
            norm_momentum=self.norm_momentum,
            norm_epsilon=self.norm_epsilon,
        )
        for name in ("query", "key", "value", "position"):
            initializer = getattr(self, f"{name}_initializer")
            config[f"{name}_initializer"] = (
                None if initializer is None else keras.initializers.serialize(initializer))
        return config


def _optional_initializer(initializer):
    return None if initializer is None else keras.initializers.get(initializer)
