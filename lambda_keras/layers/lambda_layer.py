"""The lambda layer (Bello, "LambdaNetworks", ICLR 2021, arXiv 2102.08602).

A lambda layer summarises a context into linear functions ("lambdas", |k| x |v| matrices) and
applies them to every query, so content and position interactions cost linear memory:

    Q = BN(X W_Q) (n, h, k)    K = softmax_m(X W_K) (m, k, u)    V = BN(X W_V) (m, v, u)
    lambda^c   = sum_{m,u} K[m,k,u] V[m,v,u]                       (k, v)   shared by all queries
    lambda^p_n = sum_{m,u} E[n,m,k,u] V[m,v,u]                     (k, v)   one per query position
    y_n^h      = (lambda^c + lambda^p_n)^T q_n^h                   (v,)     heads concatenated -> d

Implemented (in brackets: the section of the team's digest of the paper, PAPER.md, and its tag):
- multi-query heads |h| with |v| = output_dim / |h| and keys/values shared by the heads [1.2, C/C3];
- intra-depth |u| >= 1: keys, values and embeddings gain a u axis summed in the lambdas [1.3, C3];
- position lambdas, `position=`:
  "local"    the lambda convolution: E[n, m] = w[m - n + r // 2] on an r x r local scope with
             zero padding ("same"); any input size [1.5, C3] ("conv", its former name, is still
             accepted: it warns, and saved configs that hold it load as "local");
  "relative" relative embeddings over the whole map: E[n, m] = R[m - n + (H-1, W-1)], a learned
             (2H-1) x (2W-1) table; translation-equivariant; static size [1.1, C3];
  "global"   one free embedding per (n, m) pair; static size;
  None       content lambda only (an ablation of the paper's [2.3, UNCONFIRMED]);
- batch norm on queries and values, softmax over context positions for the keys, projections
  without bias [1.6, C3: timm and lucidrains do so; the paper's own statement UNCONFIRMED];
- strides 2 by average pooling after the layer: 3x3/2 as the paper says, or 2x2/2 as timm does
  (the same function, formed at the pooled positions: the pool is linear in the queries, so the
  content term takes the pooled queries, and where q . E is formed first the pool is applied to
  its maps, or folded into the window scores, before they meet V);
- the paper's initialisation as recalled from its appendix (UNCONFIRMED in detail, PAPER.md
  1.6): W_Q ~ N(0, (|k| d)^-1/2), W_K, W_V ~ N(0, d^-1/2), E ~ N(0, 1); every initializer can be
  overridden.

The position term sum_k q_n^h[k] lambda^p_n[k, v] has five formulations, all the same function
(`lambda_keras.layers.formulations`): "queries_first" (q . E first; small maps),
"query_windows" (q . E over each query's r x r window, one GEMM, then column windows of V;
strided layers pool inside it), "lambdas_first" (E . V first, the paper's global einsum),
"row_windows" (the local scope as one einsum over row windows of V; static maps, memory linear
in the positions) and "conv" (the paper's lambda convolution; any input size).
`implementation="auto"` (the default) picks, per call, the one measured fastest for the map size,
forward vs training, and what runs the layer: the Keras backend, XLA or not (TF
`jit_compile=True`; JAX always), TensorFlow's oneDNN state and CPU allocator
(`formulations.choose`, with the table it came from). A formulation name forces that one.
NOTE: the paper chooses between its einsum and the lambda convolution by the map size and |u|
(recalled, UNCONFIRMED, PAPER.md 6: the convolution only where n > 85^2 or |u| > 1); the
convolution of a 1-channel map with an r x r kernel is fast only with TF's oneDNN kernels (7x
slower without them, 10x slower under XLA on CPU), so the choice also depends on the runtime.

Deviations, each marked NOTE: below:
- NOTE: the paper gives no BN hyper-parameters; momentum 0.9 and epsilon 1e-5 follow ResNet-RS and
  timm (and are what makes timm's weights load exactly).
- NOTE: the paper's 3x3 stride-2 average pool has no stated padding; "same" padding keeps
  ceil(H / 2), as TF's ResNet-RS pools do.
- NOTE: timm's lambda convolution has a bias per key channel (`position_bias=True` reproduces it);
  the paper's has none, which is the default.
- Under float16 the lambdas and the output contraction are accumulated in float32; the key
  projection and softmax always run in float32 (bfloat16 keeps its dtype for the einsums: same
  exponent range as float32). Masked/causal contexts (Appendix B.2)
  and sequences: `SequenceLambdaLayer` (sequence.py); what both layers share (hyper-parameter
  checks, projections and norms, the content term) lives in shared.py.
"""

import warnings

import numpy as np
import keras
from keras import ops

from lambda_keras import utils
from lambda_keras.layers import formulations
from lambda_keras.layers.shared import (
    build_projections,
    check_heads_divide,
    content_output,
    init_shared_config,
    project,
    with_size_check,
)
from lambda_keras.layers.formulations import (  # noqa: F401 (re-exported, public since 0.1)
    IMPLEMENTATIONS,
    relative_offsets,
)

POSITION_MODES = ("local", "relative", "global", None)
# Former names of position modes: accepted with a DeprecationWarning, read silently from configs.
LEGACY_POSITION_MODES = {"conv": "local"}
POOL_SIZES = (2, 3)


@keras.saving.register_keras_serializable(package="lambda_keras")
class LambdaLayer(keras.layers.Layer):
    """Lambda layer with content and position lambdas, for channels-last images (B, H, W, C).

    Args:
        output_dim: output channels d; must be divisible by `num_heads`. Defaults to the input's.
        key_dim: query/key depth |k| (paper default 16 [C3], PAPER.md 1.7).
        num_heads: number of queries |h| per position (paper default 4 [C3]); value depth =
            d / |h|.
        intra_depth: intra-depth |u| (paper default 1 [C3]; the larger variant has 4 [C, Table 3]
            with a 7x7 scope [C3]).
        position: "local" (the r x r lambda convolution), "relative", "global" or None (content
            only). "conv" is the former name of "local" (deprecated: it warns).
        receptive_field: odd scope size r of the "local" mode (paper default 23 [C3]).
        feature_size: (H, W) the "relative"/"global" embeddings are made for; defaults to the
            static input size seen in `build`.
        strides: 1, or 2 to average-pool the output.
        pool_size: 3 (paper: 3x3 stride-2 pool, "same" padding) or 2 (timm: 2x2 stride-2 pool).
        implementation: how the position term is computed: "auto" (default: the formulation
            measured fastest where the layer runs, see module docstring) or one of
            "queries_first", "lambdas_first" (any position mode, static map size),
            "query_windows", "row_windows" (position "local", static size) and "conv" (position
            "local", any size). All give the same outputs; with position=None (no position term)
            only "auto". The value "einsum" of earlier releases is read as "auto".
        position_bias: add a learned bias per key channel to the position lambdas (timm's
            layer); needs a position term (refused with position=None).
        norm_momentum, norm_epsilon: batch-norm settings for queries and values.
        query_initializer, key_initializer, value_initializer, position_initializer: override the
            paper's initialisation.
        **kwargs: base layer keyword arguments (`name`, `dtype`, `trainable`, ...).

    Call arguments:
        inputs: images [batch, height, width, channels] (channels-last).
        training: True for batch statistics in the query/value batch norms (and the training
            row of the formulation rule); False/None for inference.

    Returns:
        [batch, height, width, output_dim], or [batch, ceil(height / 2), ceil(width / 2),
        output_dim] with `strides=2` (`pool_size=2`: floor).

    Raises:
        ValueError: a bad argument value, named with the value received (an initializer Keras
            cannot interpret: its error is the cause); in `build`, an input not of rank 4, of 0
            or unknown channels, or not of the size the "relative"/"global" embeddings are for.
        TypeError: a size or flag of the wrong type (a float, a string, a bool).

    Example:

    >>> layer = LambdaLayer(output_dim=64, key_dim=16, num_heads=4, receptive_field=7)
    >>> tuple(layer(np.zeros((2, 14, 14, 32), "float32")).shape)
    (2, 14, 14, 64)
    """

    def __init__(
        self,
        output_dim=None,
        key_dim=16,
        num_heads=4,
        intra_depth=1,
        position="local",
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
        init_shared_config(self, output_dim=output_dim, key_dim=key_dim, num_heads=num_heads,
                           intra_depth=intra_depth, receptive_field=receptive_field,
                           norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
                           initializers=(query_initializer, key_initializer, value_initializer,
                                         position_initializer))
        self.position = position = resolve_position(position)
        self.feature_size = utils.check_size_pair("feature_size", feature_size, optional=True)
        if self.feature_size is not None and position not in ("relative", "global"):
            raise ValueError('`feature_size` sizes the "relative" and "global" embeddings; '
                             f"position={position!r} has none. Received: "
                             f"feature_size={feature_size!r}")
        self.strides = utils.check_int("strides", strides, high=2)
        self.pool_size = utils.check_int("pool_size", pool_size, low=min(POOL_SIZES),
                                         high=max(POOL_SIZES))  # 3: paper, 2: timm
        self.implementation = _implementation(implementation, position)
        self.position_bias = utils.check_bool("position_bias", position_bias)
        if self.position_bias and position is None:
            raise ValueError("`position_bias` is a bias of the position lambdas; position=None "
                             "has none. Received: position_bias=True with position=None")

    # ---------------------------------------------------------------- build
    def build(self, input_shape):
        input_shape = _image_shape(input_shape)
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                "The channel axis of the input must be defined. "
                f"Received: input_shape={input_shape}"
            )
        if channels == 0:  # no input to project (the initialisation would divide by 0)
            raise ValueError(
                "The channel axis of the input must be at least 1. "
                f"Received: input_shape={input_shape}"
            )
        self._check_pool_input(input_shape)
        # Later calls with another channel count fail in Keras' check, naming the axis.
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})
        check_heads_divide(self.output_dim, self.num_heads, input_depth=channels)
        self._output_dim = self.output_dim or channels
        self.value_dim = self._output_dim // self.num_heads
        self._embedding_size = self._resolve_feature_size(input_shape)
        # The map size "auto" chooses for, when static (formulations.autotune measures it).
        self._built_map_size = self._embedding_size or tuple(input_shape[1:3])
        k, u = self.key_dim, self.intra_depth

        build_projections(self, channels, channels)
        position_init = self.position_initializer or keras.initializers.RandomNormal(stddev=1.0)
        if self.position == "local":
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
        if self.position_bias:  # (refused without a position term)
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
            # "relative"/"global": the embeddings fix the size, also under a dynamic signature
            # (checked when the graph runs).
            inputs = with_size_check(inputs, (1, 2), self._embedding_size,
                                     f"{self._size_message()} Received: input spatial size")
            height, width = self._embedding_size
        h, v = self.num_heads, self.value_dim
        dynamic = ops.shape(inputs)
        batch = dynamic[0]
        rows = height if height is not None else dynamic[1]
        cols = width if width is not None else dynamic[2]
        compute_dtype = self.compute_dtype
        # float16 overflows past 65504: accumulate lambdas in float32 there (see module docstring).
        lambda_dtype = "float32" if compute_dtype == "float16" else compute_dtype

        x = ops.reshape(inputs, (batch, -1, inputs.shape[-1]))  # [b, n, d]
        # q [b, n, h, k], keys [b, m, k, u], values [b, m, v, u]
        q, keys, values = project(self, x, x, lambda_dtype, training)
        # Softmax over m, in float32. Over a single position (a 1 x 1 map) Keras warns that a
        # size-1 softmax "is likely not what you intended"; there it is exp(k - max k) / sum =
        # exp(k - k): softmax's value (1) and gradient (0), and the key kernel stays connected
        # (ones_like would make Keras' optimizer warn that it has no gradient).
        keys = ops.softmax(keys, axis=1) if keys.shape[1] != 1 else ops.exp(keys - keys)
        keys = ops.cast(keys, lambda_dtype)  # [b, m, k, u]
        out_rows, out_cols = rows, cols
        queries = q  # the queries at the output positions
        if self.strides == 2:
            # The pool is linear in the queries: every term but a full-map position term is
            # formed at the pooled positions (the pooled queries give the pooled content term).
            queries, (out_rows, out_cols) = self._pool_positions(q, rows, cols)  # [b, n', h, k]
        out = content_output(queries, keys, values)  # [b, n', h, v]
        if self.position is not None:
            runtime = formulations.current_runtime()
            plan = self._plan(self._formulation(rows, cols, training, runtime), rows, cols,
                              training, runtime, batch=q.shape[0])
            self._last_formulation = plan.formulation  # what this call traced (benchmarks read it)
            if self.position_bias:
                out = out + self._position_bias_output(queries, lambda_dtype)  # [b, n', h, v]
            position = self._position_output(q, values, rows, cols, lambda_dtype, plan)
            if plan.pool == "output":
                position, _ = self._pool_positions(position, rows, cols)  # [b, n', h, v]
            out = out + position

        out = ops.cast(out, compute_dtype)
        return ops.reshape(out, (batch, out_rows, out_cols, h * v))  # [b, H', W', d]

    def _pool_positions(self, x, rows, cols):
        """The pool over the positions of x [b, n, h, c]: ([b, n', h, c], (H', W'))."""
        heads, depth = x.shape[2], x.shape[3]
        pooled = self._pool(ops.reshape(x, (ops.shape(x)[0], rows, cols, heads * depth)),
                            rows, cols)  # [b, H', W', h c]
        shape = ops.shape(pooled)
        return ops.reshape(pooled, (shape[0], -1, heads, depth)), (shape[1], shape[2])

    def _pool(self, x, rows, cols):
        """The stride-2 average pool of the layer: [b, H, W, c] -> [b, H', W', c]."""
        if self.pool_size == 3 and keras.backend.backend() == "torch":
            return _same_average_pool(x, rows, cols)
        padding = "same" if self.pool_size == 3 else "valid"
        return ops.average_pool(x, self.pool_size, strides=2, padding=padding)

    def _check_call_size(self, height, width):
        if self._embedding_size is None or None in (height, width):
            return
        if (height, width) != tuple(self._embedding_size):
            raise ValueError(f"{self._size_message()} Received: input spatial size "
                             f"{(height, width)}")

    def _size_message(self):
        return (f'`position="{self.position}"` embeddings are made for feature_size='
                f"{tuple(self._embedding_size)}.")

    def _formulation(self, rows, cols, training=None, runtime=None):
        """The formulation of the position term for a rows x cols map (ints, or tensors/None
        when dynamic): `implementation`, or for "auto" the pick `formulations.autotune`
        stored for this runtime and shape, else `formulations.choose`."""
        static = isinstance(rows, int) and isinstance(cols, int)
        if self.implementation != "auto":
            if not static and self.implementation in formulations.STATIC_ONLY:
                known = tuple(s if isinstance(s, int) else None for s in (rows, cols))
                raise ValueError(
                    f'`implementation="{self.implementation}"` needs a spatial size known while '
                    'tracing (use "conv" or "auto" for inputs of any size, e.g. a SavedModel '
                    f"signature of any image size). Received: input spatial size {known}"
                )
            return self.implementation
        runtime = runtime or formulations.current_runtime()
        tuned = static and formulations.tuned_formulation(self, rows, cols, training, runtime)
        return tuned or formulations.choose(
            self.position, rows if static else None, cols if static else None, training,
            num_heads=self.num_heads, key_dim=self.key_dim, value_dim=self.value_dim,
            intra_depth=self.intra_depth, receptive_field=self.receptive_field,
            runtime=runtime, strides=self.strides)

    def _plan(self, formulation, rows, cols, training, runtime, batch=None):
        """`formulations.plan` of a call computing `formulation` on a rows x cols map (ints, or
        tensors/None when dynamic) of a batch of `batch` images (None: unknown), in `runtime`:
        this layer's settings. `autotune`'s memory guard asks it too, so that it estimates what
        the call will run."""
        return formulations.plan(formulation, runtime, training, self.strides,
                                 self.receptive_field, rows=rows, cols=cols, batch=batch,
                                 num_heads=self.num_heads, intra_depth=self.intra_depth,
                                 pool_size=self.pool_size)

    def _embeddings(self, rows, cols, dtype):
        """E for every (query, context) pair of a static map: [n, m, u, k]."""
        table = ops.cast(self.position_embeddings, dtype)  # [r, r, u, k], [2H-1, 2W-1, u, k] or E
        return formulations.position_embeddings(table, self.position, rows, cols)

    def _position_output(self, q, values, rows, cols, dtype, plan):
        """Position term of the output, sum_k q[b,n,h,k] lambda^p[b,n,k,v], computed as `plan`
        (a `formulations.Plan`) says: [b, n', h, v] where the plan pools the q . E scores or
        maps (`plan.pool`), else [b, n, h, v]."""
        formulation = plan.formulation
        if formulation == "queries_first":
            embeddings = self._embeddings(rows, cols, dtype)  # [n, m, u, k]
            if plan.pool == "maps":  # the pool saves 3/4 of q.E . V (queries_first_pooled)
                return formulations.queries_first_pooled(
                    q, values, embeddings, rows, cols, lambda maps: self._pool(maps, rows, cols),
                    plan.broadcast_embeddings, plan.separate_products)  # [b, n', h, v]
            return formulations.queries_first(q, values, embeddings, plan.broadcast_embeddings,
                                              plan.separate_products)  # [b, n, h, v]
        if formulation == "lambdas_first":
            lambdas = formulations.lambdas_first(values, self._embeddings(rows, cols, dtype))
        else:
            table = ops.cast(self.position_embeddings, dtype)  # [r, r, u, k]
            if formulation == "query_windows":
                # The pool folded into the window scores: formed only at the pooled positions.
                pool = (self.pool_size, self.strides) if plan.pool == "scores" else (1, 1)

                def windows(q, values, table):
                    return formulations.query_windows(
                        q, values, table, rows, cols, *pool, **plan.blocks,
                        separate_products=plan.separate_products)  # [b, n', h, v]

                if plan.image_loop == "recomputed":  # each image's maps in the backward pass
                    return formulations.recomputed_image_by_image(windows, q, values,
                                                                  shared=(table,))
                if plan.image_loop == "forward":  # a forward pass of a batch of unknown size
                    return formulations.image_by_image(windows, q, values, shared=(table,))
                return formulations.in_batch_parts(windows, plan.batch_parts, q, values,
                                                   shared=(table,))
            if formulation == "row_windows":
                lambdas = formulations.row_windows(values, table, rows, cols)  # [b, n, k, v]
            else:
                lambdas = formulations.conv(values, table, rows, cols)  # [b, n, k, v]
        return ops.einsum("bnhk,bnkv->bnhv", q, lambdas)  # [b, n, h, v]

    def _position_bias_output(self, q, dtype):
        """timm's conv bias is added to every lambda^p entry (per n, k and v): q . bias,
        broadcast over v: [b, n, h, 1]."""
        bias = ops.cast(self.position_bias_weight, dtype)  # [k]
        # expand_dims, not [..., None]: a new-axis strided slice has no TFLite builtin.
        return ops.expand_dims(ops.einsum("bnhk,k->bnh", q, bias), -1)  # [b, n, h, 1]

    # --------------------------------------------------------------- config
    def _check_pool_input(self, input_shape):
        """The 2x2/2 pool (`pool_size=2`, no padding) leaves no position of a map 1 pixel high
        or wide; refused as Keras' AveragePooling2D refuses it (the 3x3/2 pool pads)."""
        if self.strides == 2 and self.pool_size == 2 and any(
                size is not None and size < 2 for size in input_shape[1:3]):
            raise ValueError(
                "`strides=2` with `pool_size=2` (no padding) needs maps of at least 2 x 2 "
                "positions: its output would have none. "
                f"Received: input_shape={tuple(input_shape)}")

    def compute_output_shape(self, input_shape):
        input_shape = _image_shape(input_shape)
        self._check_pool_input(input_shape)
        batch, rows, cols, channels = input_shape
        if self.strides == 2:
            shrink = (lambda s: (s + 1) // 2) if self.pool_size == 3 else (lambda s: s // 2)
            rows = None if rows is None else shrink(rows)
            cols = None if cols is None else shrink(cols)
        return (batch, rows, cols, self.output_dim or channels)

    @classmethod
    def from_config(cls, config):
        # Files saved while "local" was named "conv" (LEGACY_POSITION_MODES): read as "local",
        # without the constructor's warning.
        if isinstance(config.get("position"), str) and config["position"] in LEGACY_POSITION_MODES:
            config = {**config, "position": LEGACY_POSITION_MODES[config["position"]]}
        # Files saved before `feature_size` was refused beside "local" (where it was ignored).
        if config.get("position") not in ("relative", "global"):
            config = {**config, "feature_size": None}
        # Files saved before `position_bias` and a formulation were refused beside
        # position=None (where neither was used).
        if "position" in config and config["position"] is None:
            config = {**config, "position_bias": False, "implementation": "auto"}
        return super().from_config(config)

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


def _same_average_pool(x, rows, cols, pool_size=3):
    """Stride-2 average pool with TF's "same" padding, averaging the pixels inside the map only.

    NOTE: Keras' PyTorch backend (3.15) fills the padding of "same" 3x3/2 pools on even maps so
    that the border windows average other pixels than TensorFlow's and JAX's (measured: the last
    window of a map whose rows hold 0..7 gives 6.67, TF 6.5). Here: a "valid" pool over the map
    padded as TF pads it (the smaller half first), rescaled by the number of pixels inside each
    window.
    x: [b, H, W, d] with static H, W (always static on PyTorch).
    Returns [b, ceil(H/2), ceil(W/2), d].
    """
    t = formulations.static_tables(_same_pool_tables, rows, cols, pool_size, like=x)
    x = ops.pad(x, ((0, 0), t["row_pads"], t["col_pads"], (0, 0)))  # [b, H + pad, W + pad, d]
    pooled = ops.average_pool(x, pool_size, strides=2, padding="valid")  # [b, H', W', d]
    return pooled * ops.cast(t["scale"], pooled.dtype)


def _same_pool_tables(rows, cols, pool_size):
    """TF's "same" padding of a stride-2 pool_size^2 pool on a rows x cols map (row_pads,
    col_pads: (before, after)) and the rescaling of each "valid" window average to the mean of
    its pixels inside the map (scale [1, H', W', 1])."""
    pads, inside = [], []
    for size in (rows, cols):
        # TF's "same" windows along this axis (formulations.pool_taps: weight 0 outside the map)
        _, weights, before = formulations.pool_taps(size, pool_size, 2)
        after = max((len(weights) - 1) * 2 + pool_size - size - before, 0)
        pads.append((before, after))
        inside.append((weights > 0).sum(axis=1))  # pixels inside each window along this axis
    scale = (pool_size * pool_size) / np.outer(inside[0], inside[1])  # [H', W']
    return dict(row_pads=pads[0], col_pads=pads[1],
                scale=scale[None, :, :, None].astype("float32"))


def resolve_position(position):
    """Validated `position`; a former name (LEGACY_POSITION_MODES) warns, naming the caller
    outside this package, and maps to its mode."""
    new = LEGACY_POSITION_MODES.get(position) if isinstance(position, str) else None
    if new is None:
        return utils.check_choice("position", position, POSITION_MODES)
    warnings.warn(f'position="{position}" is the former name of position="{new}"; pass '
                  f'position="{new}" (the same layer, weights and outputs). Saved configs '
                  f'that hold "{position}" load as "{new}".', DeprecationWarning,
                  stacklevel=utils.caller_stacklevel())
    return new


def _implementation(implementation, position):
    """Validated `implementation`; the legacy "einsum" maps to "auto" (module docstring)."""
    if isinstance(implementation, str):  # (a list is unhashable: no look-up)
        implementation = formulations.LEGACY_IMPLEMENTATIONS.get(implementation, implementation)
    if not isinstance(implementation, str) or implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"`implementation` must be one of {IMPLEMENTATIONS}. "
            f"Received: implementation={implementation!r}"
        )
    if implementation in formulations.LOCAL_ONLY and position in ("relative", "global"):
        raise ValueError(
            f'`implementation="{implementation}"` computes the local lambda convolution and '
            f'needs `position="local"`. Received: position={position!r}'
        )
    if implementation != "auto" and position is None:
        raise ValueError(
            f'`implementation="{implementation}"` computes the position term; position=None '
            'has none (leave implementation="auto"). Received: position=None'
        )
    return implementation


def _image_shape(input_shape):
    """`input_shape` as a tuple; raises unless it is a rank-4 (batch, height, width, channels)."""
    input_shape = tuple(input_shape)
    if len(input_shape) != 4:
        raise ValueError(
            "LambdaLayer expects channels-last images of rank 4 (batch, height, width, "
            f"channels). Received: input_shape={input_shape}"
        )
    return input_shape
