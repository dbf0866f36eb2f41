"""NumPy reference of the lambda layer (PAPER.md sections 1.1-1.5), and the small layer and
inputs the reference tests share (tests/test_layers.py, test_formulations.py, test_backends.py).

`force_plan(monkeypatch, **settings)` makes every layer call use the rule's plan with some settings
replaced (query windows' blocks, the separate products...), whatever this machine's rule says.

`reference_lambda_layer(layer, x, training)` computes the layer's output in float64 from its
weights, independent of the layer's helpers: the position embeddings E[n, m] are built by explicit
loops over query and context positions, batch norm, softmax and pooling are written out. It uses
only NumPy and `keras.ops.convert_to_numpy`, so it runs under every Keras backend.
"""

import dataclasses

import numpy as np
import keras

from lambda_keras.layers import LambdaLayer, formulations
from lambda_keras.layers.formulations import execution

BATCH, ROWS, COLS, CHANNELS = 2, 6, 7, 6  # odd width: exercises the pools' padding
# The paper's sizes: |v| = 64, so k v = 1024 = h m on a 16 x 16 map.
PAPER = dict(key_dim=16, num_heads=4, output_dim=256)
# Small layer: d = 8 != 6 input channels, |k| = 4, |h| = 2, |v| = 4.
SMALL = dict(output_dim=8, key_dim=4, num_heads=2)


def make_layer(**kwargs):
    # E ~ N(0, 0.2^2) instead of the paper's N(0, 1) keeps outputs small (max |y| 4-35 here).
    # Float32 round-off grows with the output, so assert_close(atol=1e-5) allows
    # 1e-5 * max(1, max |y|); the measured absolute errors are below 1e-5 (printed with -s).
    kwargs = {**SMALL, "position_initializer": keras.initializers.RandomNormal(stddev=0.2),
              **kwargs}
    return LambdaLayer(**kwargs)


def force_plan(monkeypatch, **settings):
    """Every LambdaLayer call (while `monkeypatch` lasts) plans its position term with `settings`
    (fields of `formulations.Plan`) in place of what the rule gives this machine."""
    monkeypatch.setattr(formulations, "plan", lambda *args, **kwargs: dataclasses.replace(
        execution.plan(*args, **kwargs), **settings))


def random_input(shape=(BATCH, ROWS, COLS, CHANNELS), scale=1.0, seed=0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype("float32")


def randomize_statistics(layer, seed=1, norms=("query_norm", "value_norm")):
    """Non-trivial BN gamma/beta/moving statistics and position bias, so that they are tested."""
    rng = np.random.default_rng(seed)
    for name in norms:
        norm = getattr(layer, name)
        size = norm.gamma.shape
        norm.gamma.assign(rng.uniform(0.5, 1.5, size))
        norm.beta.assign(rng.normal(0.0, 0.5, size))
        norm.moving_mean.assign(rng.normal(0.0, 0.5, size))
        norm.moving_variance.assign(rng.uniform(0.5, 2.0, size))
    if layer.position is not None and layer.position_bias:
        layer.position_bias_weight.assign(rng.normal(0.0, 0.5, layer.position_bias_weight.shape))


# ------------------------------------------------------------------ NumPy reference (paper)
def as_float64(tensor):
    return np.asarray(keras.ops.convert_to_numpy(tensor), "float64")


def reference_embeddings(position, table, rows, cols):
    """E[n, m, u, k] of the paper, by explicit loops over query n and context m positions.

    "local": r x r scope, E[n, m] = w[(m - n) + (r // 2, r // 2)] and zero outside the scope
    (the lambda convolution with "same" zero padding; convolutions are cross-correlations).
    "relative": E[n, m] = R[(m - n) + (H - 1, W - 1)] over a (2H - 1) x (2W - 1) table.
    "global": the table is E itself.
    """
    table = as_float64(table)
    if position == "global":
        return table
    centre = (table.shape[0] // 2, table.shape[1] // 2) if position == "local" else (rows - 1,
                                                                                     cols - 1)
    n = rows * cols
    embeddings = np.zeros((n, n) + table.shape[2:])
    for qi in range(rows):
        for qj in range(cols):
            for ci in range(rows):
                for cj in range(cols):
                    di, dj = ci - qi + centre[0], cj - qj + centre[1]
                    if 0 <= di < table.shape[0] and 0 <= dj < table.shape[1]:
                        embeddings[qi * cols + qj, ci * cols + cj] = table[di, dj]
    return embeddings


def reference_batch_norm(x, norm, training):
    """x: [b, n, c]. Inference: moving statistics; training: biased batch moments."""
    if training:
        mean, var = x.mean(axis=(0, 1)), x.var(axis=(0, 1))
    else:
        mean, var = as_float64(norm.moving_mean), as_float64(norm.moving_variance)
    gamma, beta = as_float64(norm.gamma), as_float64(norm.beta)
    return (x - mean) / np.sqrt(var + norm.epsilon) * gamma + beta


def reference_average_pool(y, pool_size):
    """Stride-2 average pool, [b, H, W, d]. 3x3: "same" padding as TF pads (ceil(H/2) outputs,
    the smaller half of the padding first), averaging the valid pixels only; 2x2: "valid"."""
    def windows(size):
        if pool_size == 3:
            out = -(-size // 2)
            start = -(max((out - 1) * 2 + pool_size - size, 0) // 2)
        else:
            out, start = size // 2, 0
        return [range(max(start + 2 * i, 0), min(start + 2 * i + pool_size, size))
                for i in range(out)]

    rows, cols = windows(y.shape[1]), windows(y.shape[2])
    pooled = np.zeros((y.shape[0], len(rows), len(cols), y.shape[3]))
    for i, rs in enumerate(rows):
        for j, cs in enumerate(cols):
            pooled[:, i, j] = y[:, list(rs)][:, :, list(cs)].mean(axis=(1, 2))
    return pooled


def reference_lambda_layer(layer, x, training=False):
    """y_n = (lambda^c + lambda^p_n)^T q_n per head (PAPER.md 1.1-1.5), float64, from the
    layer's weights. Weight column layouts: W_Q (h, k), W_K (k, u), W_V (v, u); the heads'
    outputs are concatenated (h, v)."""
    x = np.asarray(x, "float64")
    b, rows, cols, c = x.shape
    n = rows * cols
    k, h, u, v = layer.key_dim, layer.num_heads, layer.intra_depth, layer.value_dim
    w_q, w_k, w_v = (as_float64(w) for w in
                     (layer.query_kernel, layer.key_kernel, layer.value_kernel))
    inputs = x.reshape(b, n, c)  # X: [b, n, d]
    queries = reference_batch_norm(inputs @ w_q, layer.query_norm, training).reshape(b, n, h, k)
    keys = (inputs @ w_k).reshape(b, n, k, u)
    keys = np.exp(keys - keys.max(axis=1, keepdims=True))
    keys = keys / keys.sum(axis=1, keepdims=True)  # softmax over the context positions m
    values = reference_batch_norm(inputs @ w_v, layer.value_norm, training).reshape(b, n, v, u)

    lambdas = np.einsum("bmku,bmvu->bkv", keys, values)[:, None]  # content lambda [b, 1, k, v]
    if layer.position is not None:
        embeddings = reference_embeddings(layer.position, layer.position_embeddings, rows, cols)
        position_lambdas = np.einsum("nmuk,bmvu->bnkv", embeddings, values)  # [b, n, k, v]
        if layer.position_bias:
            position_lambdas += as_float64(layer.position_bias_weight)[:, None]
        lambdas = lambdas + position_lambdas
    lambdas = np.broadcast_to(lambdas, (b, n, k, v))
    out = np.einsum("bnhk,bnkv->bnhv", queries, lambdas).reshape(b, rows, cols, h * v)
    return reference_average_pool(out, layer.pool_size) if layer.strides == 2 else out
