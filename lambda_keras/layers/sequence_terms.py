"""The tensor code of `SequenceLambdaLayer`'s terms (lambda_keras/layers/sequence.py, whose
docstring gives the equations and masks): the keys' softmax over a padded context, the causal
content term (a blockwise online softmax carried by an associative scan), the local position term
over the self context and the dense n x m embeddings of the other position modes."""

import numpy as np
from keras import ops


def masked_softmax(keys, cmask):
    """Softmax over m (axis 1) of keys [b, m, k, u] in float32, padded positions excluded.

    cmask: None or float32 [b, m]. A fully padded context gives all-zero weights.
    """
    keys = ops.cast(keys, "float32")  # [b, m, k, u]
    if cmask is None:
        return ops.softmax(keys, axis=1)  # [b, m, k, u]
    cmask = cmask[:, :, None, None]  # [b, m, 1, 1]
    shifted = keys - ops.max(ops.where(cmask > 0, keys, -1e30), axis=1, keepdims=True)
    weights = ops.exp(ops.minimum(shifted, 0.0)) * cmask  # [b, m, k, u]
    total = ops.sum(weights, axis=1, keepdims=True)  # [b, 1, k, u]
    return weights / ops.maximum(total, 1e-30)  # [b, m, k, u]


# Positions per block of the causal content term (`causal_content_output`). NOTE: our choice
# (the paper gives no causal algorithm), measured on the EPYC-512 (batch 16, k 16, v 32, u 1,
# n = 1024, oneDNN on): blocks of 8 / 16 / 32 / 64 took 63 / 68 / 82 / 108 ms forward and
# 0.21 / 0.20 / 0.22 / 0.29 s forward+backward (a prefix sum over all n with one max: 0.10 /
# 0.22 s, not stable); without oneDNN 16 gave 63 ms / 0.18 s, 32 83 ms / 0.22 s.
CAUSAL_BLOCK = 16


def causal_content_output(q, keys, values, cmask, dtype):
    """Causal content term: y[b,n,h,v] = sum_k q[b,n,h,k] lambda^c_n[b,k,v], with
    lambda^c_n = sum_u sum_{m<=n} exp(K[m]) V[m] / sum_{m<=n} exp(K[m]) (a softmax over m <= n).

    q [b, n, h, k], keys [b, m, k, u] (float32), values [b, m, v, u] (padded rows zero),
    cmask None or float32 [b, m]; n == m. Memory Theta(b n k v u): no n x m map.
    Every prefix is normalised by its own running max (the online softmax of Milakov &
    Gimelshein 2018, FlashAttention's), so no later logit, however large, can underflow an
    earlier prefix to zero. The positions form blocks of C = CAUSAL_BLOCK: inside a block, each
    position's sums are a C x C masked product; the blocks' own sums (rescaled to their max) are
    carried across blocks by an associative scan of n / C elements (`_inclusive_scan`). The
    maxima are shifts, which the softmax does not depend on: no gradient flows through them.
    """
    keys = ops.cast(keys, "float32")  # [b, n, k, u]
    _, length, k, u = keys.shape
    v = values.shape[2]
    size = CAUSAL_BLOCK if length is None else max(1, min(CAUSAL_BLOCK, length))
    total_length = ops.shape(keys)[1]
    valid = ops.ones_like(keys[:, :, :1, :1]) if cmask is None else cmask[:, :, None, None]
    pad = [[0, 0], [0, (-total_length) % size], [0, 0], [0, 0]]
    keys, values, valid = (ops.pad(x, pad) for x in (keys, values, valid))  # [b, L C, ...]
    keys, values, valid = (ops.reshape(x, (ops.shape(x)[0], -1, size) + tuple(x.shape[2:]))
                           for x in (keys, values, valid))  # [b, L, C, ...]
    valid = valid > 0  # [b, L, C, 1, 1]
    shifts = ops.stop_gradient(ops.where(valid, keys, -1e30))  # [b, L, C, k, u]

    # Within a block: position i's max over m <= i (m in the block), [b, L, C(i), k, u].
    causal = np.tril(np.ones((size, size), bool))[None, None, :, :, None, None]  # [.., i, m, ..]
    local_peak = ops.max(ops.where(causal, shifts[:, :, None], -1e30), axis=3)
    # Across blocks: each block's sums rescaled to its max, scanned; block j takes j - 1's.
    block_peak = local_peak[:, :, -1]  # [b, L, k, u]
    # (Masked exponents are -1e30, not masked results: no inf in a branch `where` discards.)
    own = ops.exp(ops.where(valid, keys - block_peak[:, :, None], -1e30))  # [b, L, C, k, u]
    block_sum = ops.sum(own, axis=2)  # [b, L, k, u]
    block_num = ops.einsum("bjmku,bjmvu->bjkvu", ops.cast(own, dtype), values)  # [b, L, k, v, u]

    def combine(earlier, later):
        (peak_a, sum_a, num_a), (peak_b, sum_b, num_b) = earlier, later
        peak = ops.maximum(peak_a, peak_b)  # [b, *, k, u]
        scale_a, scale_b = ops.exp(peak_a - peak), ops.exp(peak_b - peak)  # each <= 1
        return (peak, sum_a * scale_a + sum_b * scale_b,
                num_a * ops.cast(scale_a, dtype)[:, :, :, None, :]
                + num_b * ops.cast(scale_b, dtype)[:, :, :, None, :])

    identity = (-1e30, 0.0, 0.0)  # combine(identity, x) == x
    scanned = _inclusive_scan(combine, (block_peak, block_sum, block_num), identity)
    carried_peak, carried_sum, carried_num = (  # blocks before block j: [b, L, ...]
        ops.concatenate([ops.full_like(x[:, :1], fill), x[:, :-1]], axis=1)
        for x, fill in zip(scanned, identity))

    # Position i of block j: its running max, its block's terms up to i, the blocks before.
    peak = ops.maximum(local_peak, carried_peak[:, :, None])  # [b, L, C, k, u]
    seen = ops.logical_and(causal, valid[:, :, None])  # [b, L, C(i), C(m), 1, 1]: m <= i, kept
    weights = ops.exp(ops.where(seen, keys[:, :, None] - peak[:, :, :, None], -1e30))
    # weights: [b, L, C(i), C(m), k, u], each <= 1
    carry = ops.exp(carried_peak[:, :, None] - peak)  # [b, L, C, k, u], <= 1
    total = ops.sum(weights, axis=3) + carry * carried_sum[:, :, None]  # [b, L, C, k, u]
    prefix = (ops.einsum("bjimku,bjmvu->bjikvu", ops.cast(weights, dtype), values)
              + ops.cast(carry, dtype)[:, :, :, :, None, :] * carried_num[:, :, None])
    scale = ops.cast(1.0 / ops.maximum(total, 1e-30), dtype)  # [b, L, C, k, u]
    content = ops.einsum("bjikvu,bjiku->bjikv", prefix, scale)  # [b, L, C, k, v]
    content = ops.reshape(content, (ops.shape(content)[0], -1, k, v))[:, :total_length]
    return ops.einsum("bnhk,bnkv->bnhv", q, content)  # [b, n, h, v]


def _inclusive_scan(combine, elems, identity):
    """Inclusive scan over axis 1 with an associative `combine`: out[:, n] combines elems[:, :n+1].

    A static length takes the work-efficient odd/even recursion (Ladner & Fischer 1980, what
    `ops.associative_scan` does; that op's TensorFlow form fails under XLA and takes no unknown
    length): work and memory linear in n. A length known only when the graph runs (TensorFlow,
    `Input((None, d))`) takes a doubling scan (Hillis & Steele 1986: ceil(log2 n) steps, step j
    combining each element with the one 2**j before it, `identity` before the start) in an
    `ops.while_loop`.
    """
    if elems[0].shape[1] is not None:
        return _odd_even_scan(combine, elems)
    length = ops.shape(elems[0])[1]

    def shifted(x, fill, offset):  # x[:, i - offset], `fill` where i < offset
        shape = [dim if dim is not None else ops.shape(x)[i] for i, dim in enumerate(x.shape)]
        padded = ops.concatenate([ops.full(shape, fill, x.dtype), x], axis=1)  # [b, 2n, ...]
        return ops.slice(padded, [0, length - offset] + [0] * (len(shape) - 2), shape)

    def step(offset, *state):
        before = tuple(shifted(x, fill, offset) for x, fill in zip(state, identity))
        return (offset * 2, *combine(before, state))

    _, *scanned = ops.while_loop(lambda offset, *state: offset < length, step, (1, *elems))
    return tuple(scanned)


def _odd_even_scan(combine, elems):
    """`_inclusive_scan` of a static length n: the pairs (0, 1), (2, 3), ... are combined and
    scanned (the results at odd positions), then each even position combines the result
    before it with its own element. Pairs come from reshapes, not strided slices (whose
    gradients XLA's TensorFlow bridge mis-shapes)."""
    n = elems[0].shape[1]
    if n < 2:
        return elems
    half = n // 2
    split = [ops.reshape(x[:, :2 * half], (-1, half, 2) + tuple(x.shape[2:])) for x in elems]
    first = tuple(x[:, :, 0] for x in split)  # positions 0, 2, ..., 2 half - 2
    second = tuple(x[:, :, 1] for x in split)  # positions 1, 3, ..., 2 half - 1
    odd = _odd_even_scan(combine, combine(first, second))  # results at 1, 3, ...: half
    later = tuple(ops.concatenate([f[:, 1:], x[:, 2 * half:]], axis=1)  # positions 2, 4, ...
                  for f, x in zip(first, elems))
    rest = combine(tuple(x[:, :(n - 1) // 2] for x in odd), later)
    even = tuple(ops.concatenate([f[:, :1], r], axis=1) for f, r in zip(first, rest))  # 0, 2, ...
    return tuple(_interleave(e, o) for e, o in zip(even, odd))


def _interleave(even, odd):
    """[e0, o0, e1, o1, ...] along axis 1; `even` has as many or one more."""
    count = odd.shape[1]
    pairs = ops.stack([even[:, :count], odd], axis=2)  # [b, count, 2, ...]
    pairs = ops.reshape(pairs, (-1, 2 * count) + tuple(odd.shape[2:]))  # [b, 2 count, ...]
    return pairs if even.shape[1] == count else ops.concatenate([pairs, even[:, count:]], axis=1)


def local_position_output(q, values, table, causal):
    """Local position term over the self context (m == n), linear memory in n.

    y[b,n,h,v] = sum_{j,u,k} q[b,n,h,k] w[j,u,k] V[b, n + j - r//2, v, u] (zero outside [0, n)),
    offsets j - r//2 > 0 dropped when causal. q [b, n, h, k], values [b, n, v, u], table [r, u, k].
    """
    r = table.shape[0]
    half = r // 2
    taps = half + 1 if causal else r  # causal: offsets -half..0 only
    length = ops.shape(values)[1]
    padded = ops.pad(values, ((0, 0), (half, half), (0, 0), (0, 0)))  # [b, n + r - 1, v, u]
    windows = ops.stack(
        [ops.slice(padded, (0, j, 0, 0), (ops.shape(values)[0], length, values.shape[2],
                                          values.shape[3])) for j in range(taps)],
        axis=2)  # [b, n, j, v, u]: V[n + j - half]
    qe = ops.einsum("bnhk,juk->bnhju", q, table[:taps])  # [b, n, h, j, u]
    return ops.einsum("bnhju,bnjvu->bnhv", qe, windows)  # [b, n, h, v]


def dense_embeddings(table, position, n, m, receptive_field, causal):
    """E[n, m, u, k] for query length n and context length m (offsets m - n), zero outside the
    "local" window and, when causal, for m > n."""
    offsets = (ops.arange(m, dtype="int32")[None, :]
               - ops.arange(n, dtype="int32")[:, None])  # [n, m]: m - n
    if position == "global":
        embeddings = table  # [n, m, u, k]
        allowed = None
    elif position == "relative":
        embeddings = ops.take(table, offsets + (n - 1), axis=0)  # [n, m, u, k]
        allowed = None
    else:  # "local"
        half = receptive_field // 2
        index = ops.clip(offsets + half, 0, receptive_field - 1)  # [n, m]
        embeddings = ops.take(table, index, axis=0)  # [n, m, u, k]
        allowed = ops.abs(offsets) <= half  # [n, m]
    if causal:
        past = offsets <= 0  # [n, m]
        allowed = past if allowed is None else ops.logical_and(allowed, past)
    if allowed is not None:
        embeddings = embeddings * ops.cast(allowed, embeddings.dtype)[:, :, None, None]
    return embeddings  # [n, m, u, k]
