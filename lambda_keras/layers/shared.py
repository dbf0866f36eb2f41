"""What both lambda layers share (`LambdaLayer`, images; `SequenceLambdaLayer`, sequences).

- `init_shared_config`: validates and stores the paper's d, |k|, |h|, |u|, r, the norm settings
  and the initializers (`check_heads_divide`, the size bounds MAX_DIM / MAX_RECEPTIVE_FIELD);
- `build_projections`, `project`: W_Q, W_K, W_V without bias and the query/value norms (batch
  norm, the paper's; layer norm for causal sequences), giving q, key logits and values;
- `content_output`: the content lambda, shared by every query, applied to every query;
- `with_size_check`: the sizes the "relative"/"global" embeddings are made for, checked when a
  TensorFlow graph runs where they are unknown while tracing.
"""

import keras
from keras import ops

from lambda_keras import utils


# A bound on what one layer's arguments may ask for: every size below is far above any lambda
# network (paper defaults |k| = 16, |h| = 4, r = 23 [C3, PAPER.md 1.7]; |u| = 1 or 4 [C, Table 3],
# up to 8 in the ablations [C3, PAPER.md 2.3]; d = 64-512 in the LambdaResNets here, the
# bottleneck widths), far below what would try to allocate terabytes (key_dim=2**40 would ask for
# 2**40 * channels floats).
MAX_DIM = 2**16  # output_dim, key_dim, num_heads, intra_depth
MAX_RECEPTIVE_FIELD = 2**10 + 1  # r: the scope of a 1024 x 1024 map
# The projections `init_shared_config` takes initializers for, in the order it takes them.
INITIALIZED = ("query", "key", "value", "position")


def _check_weight_size(output_dim, key_dim, num_heads, intra_depth, receptive_field):
    """ValueError for sizes beyond MAX_DIM / MAX_RECEPTIVE_FIELD (typos, hostile configs)."""
    for name, value, bound in (("output_dim", output_dim, MAX_DIM), ("key_dim", key_dim, MAX_DIM),
                               ("num_heads", num_heads, MAX_DIM),
                               ("intra_depth", intra_depth, MAX_DIM),
                               ("receptive_field", receptive_field, MAX_RECEPTIVE_FIELD)):
        if value is not None and value > bound:
            raise ValueError(
                f"`{name}` must be at most {bound} (a sane bound: lambda networks use far smaller "
                "sizes, and the layer's weights grow with it). "
                f"Received: {name}={value!r}")
    if key_dim * num_heads > MAX_DIM:  # the query projection's width |h| |k|
        raise ValueError(f"`key_dim` * `num_heads` must be at most {MAX_DIM}. "
                         f"Received: key_dim={key_dim}, num_heads={num_heads}")


def build_projections(layer, depth, context_depth):
    """Create the projections and batch norms of a lambda layer on `layer`.

    W_Q [depth, h*k], W_K [context_depth, k*u], W_V [context_depth, v*u] (no bias), in this
    order, with the paper's initialisation as recalled (its appendix; PAPER.md 1.6, UNCONFIRMED
    in detail): W_Q ~ N(0, (k d)^-1/2), W_K, W_V ~ N(0, d^-1/2) unless
    `layer.<query|key|value>_initializer` overrides it; batch norms `query_norm` (h*k channels)
    and `value_norm` (v*u channels), layer norms where `layer.normalization` is "layer".
    `layer` provides key_dim, num_heads, intra_depth, value_dim, the initializers,
    norm_momentum, norm_epsilon and its dtype policy.
    """
    k, u, h, v = layer.key_dim, layer.intra_depth, layer.num_heads, layer.value_dim

    def init(override, stddev):
        return override or keras.initializers.RandomNormal(stddev=stddev)

    layer.query_kernel = layer.add_weight(
        name="query_kernel", shape=(depth, h * k),
        initializer=init(layer.query_initializer, (k * depth) ** -0.5))
    layer.key_kernel = layer.add_weight(
        name="key_kernel", shape=(context_depth, k * u),
        initializer=init(layer.key_initializer, context_depth ** -0.5))
    layer.value_kernel = layer.add_weight(
        name="value_kernel", shape=(context_depth, v * u),
        initializer=init(layer.value_initializer, context_depth ** -0.5))
    for name, channels in (("query_norm", h * k), ("value_norm", v * u)):
        if getattr(layer, "normalization", "batch") == "layer":  # SequenceLambdaLayer's option
            norm = keras.layers.LayerNormalization(epsilon=layer.norm_epsilon, name=name,
                                                   dtype=layer.dtype_policy)
        else:
            norm = keras.layers.BatchNormalization(momentum=layer.norm_momentum,
                                                   epsilon=layer.norm_epsilon, name=name,
                                                   dtype=layer.dtype_policy)
        norm.build((None, None, channels))
        setattr(layer, name, norm)


def project(layer, x, context, dtype, training=None, mask=None, context_mask=None):
    """Queries, key logits and values of `layer` (made by `build_projections`).

    x [b, n, d], context [b, m, d_c]; mask / context_mask: None or [b, n] / [b, m] positions
    that count in the batch-norm statistics. Returns q [b, n, h, k] and values [b, m, v, u] in
    `dtype`, key logits [b, m, k, u] in float32 (before the softmax over m).
    """
    k, u, h, v = layer.key_dim, layer.intra_depth, layer.num_heads, layer.value_dim
    compute_dtype = layer.compute_dtype
    batch = ops.shape(x)[0]
    q = ops.matmul(x, ops.cast(layer.query_kernel, compute_dtype))  # [b, n, h*k]
    # Keys are projected in float32 (k*u channels, cheap): rounded low-precision logits would
    # make the softmax and its gradients inaccurate under mixed precision.
    keys = ops.matmul(ops.cast(context, "float32"),
                      ops.cast(layer.key_kernel, "float32"))  # [b, m, k*u]
    values = ops.matmul(context, ops.cast(layer.value_kernel, compute_dtype))  # [b, m, v*u]
    q = _normalise(layer.query_norm, q, training, mask)  # [b, n, h*k], statistics in float32
    values = _normalise(layer.value_norm, values, training, context_mask)  # [b, m, v*u]
    q = ops.reshape(ops.cast(q, dtype), (batch, -1, h, k))  # [b, n, h, k]
    values = ops.reshape(ops.cast(values, dtype), (batch, -1, v, u))  # [b, m, v, u]
    keys = ops.reshape(keys, (batch, -1, k, u))  # [b, m, k, u]
    return q, keys, values


def _normalise(norm, x, training, mask):
    """Batch norm with its statistics over the unmasked positions, or layer norm (per position:
    no statistics across positions, nothing to mask)."""
    if isinstance(norm, keras.layers.BatchNormalization):
        return norm(x, training=training, mask=mask)
    return norm(x)


def content_output(q, keys, values):
    """Content term: the lambda shared by every query, applied to every query.

    q [b, n, h, k], normalised keys [b, m, k, u], values [b, m, v, u]. Returns [b, n, h, v].
    """
    content = ops.einsum("bmku,bmvu->bkv", keys, values)  # [b, k, v]
    return ops.einsum("bnhk,bkv->bnhv", q, content)  # [b, n, h, v]


def init_shared_config(layer, *, output_dim, key_dim, num_heads, intra_depth, receptive_field,
                       norm_momentum, norm_epsilon, initializers):
    """Validates and stores on `layer` the hyper-parameters every lambda layer shares.

    The paper's d (`output_dim`, None: the input depth), |k|, |h|, |u| and r, the batch-norm
    settings and the (query, key, value, position) initializers; each bad value raises naming its
    argument. Used by `LambdaLayer` and `SequenceLambdaLayer`.
    """
    layer.output_dim = utils.check_int("output_dim", output_dim, optional=True)
    layer.key_dim = utils.check_int("key_dim", key_dim)
    layer.num_heads = utils.check_int("num_heads", num_heads)
    layer.intra_depth = utils.check_int("intra_depth", intra_depth)
    layer.receptive_field = utils.check_int("receptive_field", receptive_field)
    if layer.receptive_field % 2 == 0:
        raise ValueError(
            f"`receptive_field` must be odd. Received: receptive_field={receptive_field!r}")
    layer.norm_momentum = utils.check_number("norm_momentum", norm_momentum, low=0.0, high=1.0,
                                             high_open=True)
    layer.norm_epsilon = utils.check_number("norm_epsilon", norm_epsilon, low=0.0, low_open=True)
    _check_weight_size(layer.output_dim, layer.key_dim, layer.num_heads, layer.intra_depth,
                       layer.receptive_field)
    (layer.query_initializer, layer.key_initializer, layer.value_initializer,
     layer.position_initializer) = (_optional_initializer(f"{name}_initializer", initializer)
                                    for name, initializer in zip(INITIALIZED, initializers))
    if layer.output_dim is not None:
        check_heads_divide(layer.output_dim, layer.num_heads)


def check_heads_divide(output_dim, num_heads, input_depth=None):
    """The |h| heads split d into value depths |v| = d / |h|; names the values when not.

    d is `output_dim`, or where that is None (in `build`) the `input_depth`: then the message
    says that the input depth was used, not an output_dim the user never gave.
    """
    if output_dim is None:
        if input_depth % num_heads:
            raise ValueError(
                "`num_heads` must divide the input depth when `output_dim` is None (the output "
                f"keeps the input's depth). Received: output_dim=None (input depth "
                f"{input_depth}), num_heads={num_heads}")
    elif output_dim % num_heads:
        raise ValueError(f"`output_dim` must be divisible by `num_heads`. "
                         f"Received: output_dim={output_dim}, num_heads={num_heads}")


def _optional_initializer(name, initializer):
    """`keras.initializers.get(initializer)`, None kept; Keras' error (which names no argument)
    becomes the cause of one that names `name` and the value."""
    if initializer is None:
        return None
    try:
        return keras.initializers.get(initializer)
    except (ValueError, TypeError) as error:  # TypeError: a config dict with bad arguments
        raise ValueError(
            f"`{name}` must be None or a Keras initializer (a name such as \"he_normal\", a "
            f"config dict, an Initializer or a callable). Received: {name}={initializer!r}"
        ) from error


def with_size_check(tensor, axes, expected, message):
    """`tensor`, checked to have the sizes `expected` (ints) along `axes` when it runs, where they
    are unknown while tracing: a TensorFlow graph of a dynamic signature (a model on
    `Input((None, None, d))` served or traced by `tf.function`). Without the check the embeddings'
    sizes would silently reshape another input's positions (a 2 x 8 map read as 4 x 4) or fail in
    an einsum far from the cause. JAX traces and PyTorch runs with known sizes, which the layers
    check in Python. The graph raises InvalidArgumentError with `message` (which ends by naming
    what it received) and the sizes received.
    """
    if keras.backend.backend() != "tensorflow" or None not in [tensor.shape[a] for a in axes]:
        return tensor
    import tensorflow as tf

    shape = tf.shape(tensor)
    received = tf.stack([shape[a] for a in axes])
    check = tf.debugging.Assert(
        tf.reduce_all(tf.equal(received, tf.constant(expected, received.dtype))),
        [message.replace('"', "").replace("'", ""), received])  # (TensorFlow escapes quotes)
    with tf.control_dependencies([check]):
        return tf.identity(tensor)
