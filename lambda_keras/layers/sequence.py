"""Lambda layers for sequences and separate contexts, with causal and padding masks.

The paper (Bello, ICLR 2021, section 3) defines the lambda layer for any input X (n x d) and
context C (m x d); `LambdaLayer` is the image case (C = X, a 2-D map). `SequenceLambdaLayer` is the
1-D case, with the same equations and conventions (multi-query heads, intra-depth |u|, batch norm
on queries and values, softmax over m for the keys, projections without bias, the paper's
initialisation; see `lambda_keras.layers.lambda_layer`):

    Q = BN(X W_Q) (n, h, k)    K = softmax_m(C W_K) (m, k, u)    V = BN(C W_V) (m, v, u)
    lambda^c   = sum_{m,u} K[m,k,u] V[m,v,u]                       (k, v)
    lambda^p_n = sum_{m,u} E[n,m,k,u] V[m,v,u]                     (k, v)
    y_n^h      = (lambda^c + lambda^p_n)^T q_n^h                   (v,)   heads concatenated -> d

Inputs: X [batch, n, d]; the context C [batch, m, d_c] is X itself (default) or a separate tensor
(`context=`), so m may differ from n (queries from one stream, keys/values from another).

Position lambdas (`position=`), relative offset m - n of context position m to query n:
  "local"    a learned embedding per offset in a window of r = `receptive_field` (odd) positions,
             offsets in [-(r//2), r//2], zero outside (the 1-D lambda convolution); any length;
  "relative" one embedding per offset over static lengths: offsets in [-(n-1), m-1], a learned
             (n + m - 1) table (`sequence_length`, `context_length`);
  "global"   one free embedding per (n, m) pair, static lengths;
  None       content lambda only.

Masks:
- `causal=True`: query n sees only context positions m <= n (the context is X itself, or a
  separate context of the same length). NOTE: the paper's Appendix B.2 (recalled, UNCONFIRMED in
  detail) says a causal mask rules out the one shared content lambda: each query needs a prefix
  sum of K^T V over m <= n (like causal linear attention, Theta(b n k v) memory), and the position
  part masks E[n, m] to zero where m > n. Implemented so: the content lambda is a prefix sum
  over m of the outer products K[m] V[m]^T (memory Theta(b n k v u), linear in n, no n x m map),
  and the keys' softmax over m is causal too: the running normalisation
  exp(k_m) / sum_{m' <= n} exp(k_m'), computed in float32. NOTE: the paper does not say how its
  causal softmax is stabilised; each prefix is normalised by its own running max (the online
  softmax, in blocks of CAUSAL_BLOCK positions carried by an associative scan;
  sequence_terms.py), not by the max over all m: keys are not normalised (only q and V are), and
  a later logit ~87 above an earlier prefix's would otherwise underflow that prefix's lambda to
  zero, so the future would change the past.
  Position lambdas: "local" keeps only the offsets <= 0 (linear memory); "relative"/"global" zero
  E[n, m] for m > n.
- Padding (`mask` [batch, n] for the queries, `context_mask` [batch, m] for a separate context;
  Keras masking, e.g. `Embedding(mask_zero=True)`, fills `mask`): padded context positions are
  excluded from the key softmax, from the batch-norm statistics and from every sum; padded queries
  output zeros. With no separate context, `mask` masks both.

Normalisation of queries and values (`normalization=`): batch norm, as the paper's layer, except
with `causal=True`, whose default is layer norm. NOTE: the paper is silent on causal sequences'
normalisation. Batch-norm statistics in training are moments over every position of the batch,
so an output at n would depend on the inputs after n while training (measured before this
default: past outputs moved by several times their scale when the future changed); layer norm
normalises each position over its own channels, as causal transformers and causal linear
attention do. A causal layer may still ask for "batch" (old files load so), and is warned that
its training is not causal.

Memory: "local" and no position term are linear in n (causal or not, self context); "relative",
"global" and "local" with a separate context build the n x m embedding map (Theta(n m k u)).
"""

import warnings

import keras
from keras import ops

from lambda_keras import utils
from lambda_keras.layers import sequence_terms
from lambda_keras.layers.shared import (
    build_projections,
    check_heads_divide,
    content_output,
    init_shared_config,
    project,
    with_size_check,
)

SEQUENCE_POSITION_MODES = ("local", "relative", "global", None)
NORMALIZATIONS = ("batch", "layer")


@keras.saving.register_keras_serializable(package="lambda_keras")
class SequenceLambdaLayer(keras.layers.Layer):
    """Lambda layer for sequences (batch, n, d), optionally with a separate context and masks.

    Args:
        output_dim: output depth d; must be divisible by `num_heads`. Defaults to the input's.
        key_dim: query/key depth |k| (paper default 16 [C3], PAPER.md 1.7).
        num_heads: number of queries |h| per position (paper default 4 [C3]); value depth =
            d / |h|.
        intra_depth: intra-depth |u| (paper default 1 [C3]).
        position: "local" (window of `receptive_field` offsets), "relative" (offsets over static
            lengths), "global" (one embedding per (n, m) pair, static lengths) or None.
        receptive_field: odd window r of `position="local"`: offsets m - n in [-(r//2), r//2].
        causal: if True, query n sees only context positions m <= n.
        sequence_length: static query length n the "relative"/"global" embeddings are made for
            (refused beside the other modes); defaults to the input's static length seen in
            `build`. Given, the layer also runs on inputs of unknown length (`Input((None, d))`).
        context_length: static context length m for "relative"/"global"; defaults to the
            context's static length (the query length without a separate context).
        normalization: "batch" or "layer" norm of queries and values; None (default): "layer"
            when `causal` (batch statistics mix all positions: training would see the future),
            else "batch" (the paper's).
        norm_momentum, norm_epsilon: normalisation settings (momentum: batch norm only).
        query_initializer, key_initializer, value_initializer, position_initializer: override the
            paper's initialisation as recalled (UNCONFIRMED in detail, PAPER.md 1.6): W_Q ~
            N(0, (k d)^-1/2), W_K, W_V ~ N(0, d^-1/2), E ~ N(0, 1).
        **kwargs: base layer keyword arguments (`name`, `dtype`, `trainable`, ...).

    Call arguments:
        inputs: queries' input X [batch, n, d].
        context: optional separate context C [batch, m, d_c], of the batch size of `inputs`
            (a batch of 1 is not broadcast); defaults to `inputs`.
        mask: optional boolean [batch, n] (tensor, array or lists; numbers count as booleans,
            nonzero: kept): False marks padded query positions (their outputs are zeros); also
            the context mask when there is no separate context.
        context_mask: optional boolean [batch, m] for a separate context (as `mask`).
        training: True for batch statistics in the query/value batch norms ("batch").

    Returns:
        [batch, n, output_dim].

    Raises:
        ValueError: a bad argument value, named with the value received (an initializer Keras
            cannot interpret: its error is the cause); in `build`/`call`, inputs or a context
            not of rank 3 or of depth 0, a context of another batch size, a mask of another
            shape.
        TypeError: a size or flag of the wrong type; a mask neither boolean nor numeric (a
            string).

    Example:

    >>> layer = SequenceLambdaLayer(output_dim=32, key_dim=8, num_heads=4, causal=True,
    ...                             receptive_field=5)
    >>> tuple(layer(np.zeros((2, 10, 16), "float32")).shape)
    (2, 10, 32)
    """

    def __init__(
        self,
        output_dim=None,
        key_dim=16,
        num_heads=4,
        intra_depth=1,
        position="local",
        receptive_field=23,
        causal=False,
        sequence_length=None,
        context_length=None,
        normalization=None,
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
        self.position = utils.check_choice("position", position, SEQUENCE_POSITION_MODES)
        self.causal = utils.check_bool("causal", causal)
        if normalization is None:
            normalization = "layer" if self.causal else "batch"
        self.normalization = utils.check_choice("normalization", normalization, NORMALIZATIONS)
        if self.causal and self.normalization == "batch":
            warnings.warn(
                f"SequenceLambdaLayer {self.name!r}: causal=True with normalization='batch': "
                "batch-norm statistics in training mix every position, so while training an "
                "output at n depends on the inputs after n (inference uses the moving statistics "
                "and is causal). normalization='layer' (the default when causal) keeps training "
                "causal.", stacklevel=2)
        self.sequence_length = utils.check_int("sequence_length", sequence_length, optional=True)
        self.context_length = utils.check_int("context_length", context_length, optional=True)
        for name, value in (("sequence_length", sequence_length),
                            ("context_length", context_length)):
            if value is not None and self.position not in ("relative", "global"):
                raise ValueError(f'`{name}` sizes the "relative" and "global" embeddings; '
                                 f"position={position!r} has none. Received: {name}={value!r}")
        self.supports_masking = True

    # ---------------------------------------------------------------- build
    def build(self, inputs_shape, context_shape=None):
        inputs_shape = _rank3("inputs", inputs_shape)
        separate = context_shape is not None
        context_shape = _rank3("context", context_shape) if separate else inputs_shape
        depth, context_depth = inputs_shape[-1], context_shape[-1]
        if depth is None or context_depth is None:
            raise ValueError(
                "The last (depth) axis of `inputs` and `context` must be defined. "
                f"Received: inputs_shape={inputs_shape}, context_shape={context_shape}"
            )
        if 0 in (depth, context_depth):  # nothing to project (the initialisation divides by it)
            raise ValueError(
                "The last (depth) axis of `inputs` and `context` must be at least 1. "
                f"Received: inputs_shape={inputs_shape}, context_shape={context_shape}"
            )
        self._check_lengths(inputs_shape[1], context_shape[1])
        # Later calls with another depth fail in Keras' check, naming the axis.
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={-1: depth})
        check_heads_divide(self.output_dim, self.num_heads, input_depth=depth)
        self._output_dim = self.output_dim or depth
        self.value_dim = self._output_dim // self.num_heads
        self._separate_context = separate
        self._context_depth = context_depth
        self._lengths = self._resolve_lengths(inputs_shape, context_shape)
        k, u = self.key_dim, self.intra_depth
        # W_Q, W_K, W_V and the query/value norms, as LambdaLayer makes them.
        build_projections(self, depth, context_depth)
        position_init = self.position_initializer or keras.initializers.RandomNormal(stddev=1.0)
        if self.position == "local":
            # One embedding per offset m - n + r // 2: [r, u, k].
            shape = (self.receptive_field, u, k)
        elif self.position == "relative":
            n, m = self._lengths
            # One embedding per offset m - n + (n - 1), offsets in [-(n-1), m-1]: [n + m - 1, u, k].
            shape = (n + m - 1, u, k)
        elif self.position == "global":
            shape = (*self._lengths, u, k)  # one per (query n, context m) pair: [n, m, u, k]
        if self.position is not None:
            self.position_embeddings = self.add_weight(
                name="position_embeddings", shape=shape, initializer=position_init)

    def _check_lengths(self, n, m):
        if self.causal and None not in (n, m) and n != m:
            raise ValueError(
                "`causal=True` with a separate context needs a context as long as the inputs "
                f"(query n sees context m <= n). Received: input length {n}, context length {m}"
            )

    def _resolve_lengths(self, inputs_shape, context_shape):
        """Static (n, m) the "relative"/"global" embeddings are made for; None otherwise."""
        if self.position not in ("relative", "global"):
            return None
        lengths = []
        for name, given, static in (("sequence_length", self.sequence_length, inputs_shape[1]),
                                    ("context_length", self.context_length, context_shape[1])):
            if given is None and name == "context_length" and not self._separate_context:
                given = lengths[0]
            if static is None and given is None:
                raise ValueError(
                    f'`position="{self.position}"` needs static lengths: give `{name}` or a '
                    f"fully defined shape. Received: inputs_shape={tuple(inputs_shape)}, "
                    f"context_shape={tuple(context_shape)}"
                )
            if static is not None and given is not None and static != given:
                raise ValueError(
                    f'`position="{self.position}"` embeddings are made for {name}={given}. '
                    f"Received: length {static}"
                )
            lengths.append(given or static)
        return tuple(lengths)

    # ----------------------------------------------------------------- call
    def call(self, inputs, context=None, mask=None, context_mask=None, training=None):
        separate = context is not None
        if separate != self._separate_context:
            raise ValueError(
                "The layer was built " + ("with" if self._separate_context else "without")
                + " a separate `context`; call it the same way. "
                f"Received: context={'a tensor' if separate else None}"
            )
        inputs = _check_rank3("inputs", inputs)
        context = _check_rank3("context", context) if separate else inputs
        if context.shape[-1] != self._context_depth:
            raise ValueError(
                f"`context` depth must be {self._context_depth} (as built). "
                f"Received: context shape {tuple(context.shape)}"
            )
        if separate and None not in (inputs.shape[0], context.shape[0]) and (
                inputs.shape[0] != context.shape[0]):
            # NOTE: a context batch of 1 is not broadcast either (nor in Keras' attention).
            raise ValueError(
                "`context` must have the batch size of `inputs`. Received: inputs batch size "
                f"{inputs.shape[0]}, context batch size {context.shape[0]}"
            )
        n_static, m_static = inputs.shape[1], context.shape[1]
        self._check_lengths(n_static, m_static)
        if self._lengths is not None:
            message = (f'`position="{self.position}"` embeddings are made for (sequence_length, '
                       f"context_length)={self._lengths}.")
            if any(length is not None and length != made
                   for length, made in zip((n_static, m_static), self._lengths)):
                raise ValueError(f"{message} Received: {(n_static, m_static)}")
            # An unknown length (a trace of `Input((None, d))`): checked when the graph runs.
            inputs = with_size_check(inputs, (1,), self._lengths[:1],
                                     f"{message} Received: input length")
            if separate:
                context = with_size_check(context, (1,), self._lengths[1:],
                                          f"{message} Received: context length")
            else:
                context = inputs
        mask, context_mask = _as_mask("mask", mask), _as_mask("context_mask", context_mask)
        if not separate:
            context_mask = mask if context_mask is None else context_mask
        for name, given, sequence in (("mask", mask, inputs),
                                      ("context_mask", context_mask, context)):
            expected = tuple(sequence.shape[:2])  # [batch, length]
            if given is not None and None not in (*given.shape, *expected) and (
                    tuple(given.shape) != expected):
                raise ValueError(f"`{name}` must be [batch, length] of its sequence, {expected}. "
                                 f"Received: {name} shape {tuple(given.shape)}")
        h, v = self.num_heads, self.value_dim
        compute_dtype = self.compute_dtype
        # float16 overflows past 65504: accumulate lambdas in float32 there (as LambdaLayer).
        lambda_dtype = "float32" if compute_dtype == "float16" else compute_dtype
        batch = ops.shape(inputs)[0]

        # Keys in float32 (the softmax and its prefix sums need the range); batch-norm
        # statistics leave the padded positions out.
        q, keys, values = project(self, inputs, context, lambda_dtype, training, mask,
                                  context_mask)  # [b, n, h, k], [b, m, k, u], [b, m, v, u]
        if context_mask is not None:
            cmask = ops.cast(context_mask, "float32")  # [b, m]
            # Padded context positions: zero values, so every sum over m leaves them out.
            values = values * ops.cast(cmask, lambda_dtype)[:, :, None, None]  # [b, m, v, u]
        else:
            cmask = None

        if self.causal:
            out = sequence_terms.causal_content_output(  # [b, n, h, v]
                q, keys, values, cmask, lambda_dtype)
        else:
            weights = sequence_terms.masked_softmax(keys, cmask)  # [b, m, k, u], float32
            out = content_output(q, ops.cast(weights, lambda_dtype), values)  # [b, n, h, v]
        if self.position is not None:
            out = out + self._position_output(q, values, separate, lambda_dtype)  # [b, n, h, v]

        out = ops.reshape(ops.cast(out, compute_dtype), (batch, -1, h * v))  # [b, n, d]
        if mask is not None:
            out = out * ops.cast(mask, compute_dtype)[:, :, None]  # padded queries -> 0
        return out

    def _position_output(self, q, values, separate, dtype):
        """Position term sum_k q[b,n,h,k] lambda^p[b,n,k,v]: [b, n, h, v]."""
        table = ops.cast(self.position_embeddings, dtype)  # [r|n+m-1, u, k] or [n, m, u, k]
        if self.position == "local" and not separate:
            return sequence_terms.local_position_output(q, values, table, self.causal)
        # "relative"/"global": the embeddings fix the lengths, also under a dynamic signature.
        n, m = self._lengths or (ops.shape(q)[1], ops.shape(values)[1])
        embeddings = sequence_terms.dense_embeddings(  # [n, m, u, k]
            table, self.position, n, m, self.receptive_field, self.causal)
        lambdas = ops.einsum("nmuk,bmvu->bnkv", embeddings, values)  # [b, n, k, v]
        return ops.einsum("bnhk,bnkv->bnhv", q, lambdas)  # [b, n, h, v]

    # --------------------------------------------------------------- config
    @classmethod
    def from_config(cls, config):
        # Files saved before `normalization` existed: their layers were built with batch norms.
        config = {"normalization": "batch", **config}
        # Files saved before the lengths were refused beside "local"/None (where they were
        # ignored).
        if config.get("position") not in ("relative", "global"):
            config = {**config, "sequence_length": None, "context_length": None}
        return super().from_config(config)

    def compute_output_shape(self, inputs_shape, context_shape=None):
        inputs_shape = _rank3("inputs", inputs_shape)
        if context_shape is not None:
            _rank3("context", context_shape)
        return (inputs_shape[0], inputs_shape[1], self.output_dim or inputs_shape[-1])

    def compute_mask(self, inputs, mask=None):
        return mask  # padded query positions stay padded

    def get_config(self):
        config = super().get_config()
        config.update(
            output_dim=self.output_dim,
            key_dim=self.key_dim,
            num_heads=self.num_heads,
            intra_depth=self.intra_depth,
            position=self.position,
            receptive_field=self.receptive_field,
            causal=self.causal,
            sequence_length=self.sequence_length,
            context_length=self.context_length,
            normalization=self.normalization,
            norm_momentum=self.norm_momentum,
            norm_epsilon=self.norm_epsilon,
        )
        for name in ("query", "key", "value", "position"):
            initializer = getattr(self, f"{name}_initializer")
            config[f"{name}_initializer"] = (
                None if initializer is None else keras.initializers.serialize(initializer))
        return config


# ------------------------------------------------------------------- helpers
def _rank3(name, shape):
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(
            f"SequenceLambdaLayer expects `{name}` of rank 3 (batch, length, depth). "
            f"Received: {name}_shape={shape}"
        )
    return shape


def _check_rank3(name, tensor):
    _rank3(name, tensor.shape)
    return tensor


def _as_mask(name, mask):
    """`mask` (None, a tensor, a NumPy array or nested lists) as a boolean tensor.

    NOTE: as Keras' attention layers (`MultiHeadAttention`'s "defensive casting"), any nonzero
    entry means "keep": a mask of 2s or 0.5s is the all-True mask, never a weight (it scaled the
    outputs). Masks of other dtypes (strings) are refused.
    """
    if mask is None:
        return None
    kind = f"`{name}` must be a boolean (or numeric: nonzero keeps) [batch, length] tensor or array"
    if isinstance(mask, (str, bytes)):
        raise TypeError(f"{kind}. Received: {name}={mask!r}")
    try:
        mask = ops.convert_to_tensor(mask)
    except (TypeError, ValueError) as error:  # ragged lists, objects
        raise TypeError(f"{kind}. Received: {name}={mask!r}") from error
    dtype = keras.backend.standardize_dtype(mask.dtype)
    if dtype != "bool" and not dtype.startswith(("int", "uint", "float", "bfloat")):
        raise TypeError(f"{kind}. Received: {name} of dtype {dtype}, shape {tuple(mask.shape)}")
    return ops.cast(mask, "bool")
