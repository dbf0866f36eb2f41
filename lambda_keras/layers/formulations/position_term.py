"""The formulations of the position term, sum_k q_n^h[k] lambda^p_n[k, v] (see the package
docstring, lambda_keras/layers/formulations/__init__.py): tensor code in `keras.ops`, with shape
comments; `rule.choose` picks one."""

import math

import keras
import numpy as np
from keras import ops

# Row windows cut wide maps into tiles of this many scopes (r columns each); benchmarks/README.md.
WINDOW_TILE_SCOPES = 3
# Query windows cut tall maps into blocks of about this many scopes of query rows (the default;
# the rule's `block_scopes` may take smaller ones). Each query's scores are spread over its
# block's rows plus r - 1 context rows, ~3x its own r rows at 2 scopes; smaller blocks waste
# less but gather V's windows more often. Every map up to 46 rows (r 23) is one block, and there
# the context is the map's rows; blocks of 1 / 0.75 / 0.6 scopes were within 10% at 28^2
# (benchmarks/README.md, optimisations 12 and 15).
QUERY_BLOCK_SCOPES = 2
# PyTorch keeps the tables of `static_tables` on its device up to this many bytes in all.
DEVICE_TABLES_BYTES = 64 << 20
_DEVICE_TABLES = {}  # (build, args, device) -> (tables, bytes of their arrays); `static_tables`


def static_tables(build, *args, like):
    """What `build(*args)` returns (NumPy index and weight tables of a static shape, in a dict
    with ints), with the arrays in the form the backend of `like` (a tensor of the call) takes.

    NOTE: Keras' PyTorch backend converts a NumPy operand into a tensor on its device at every
    op; on a GPU that is a host-to-device copy that waits for the kernels queued before it, so
    the tables of a call (0-7 by formulation and strides) serialise an otherwise asynchronous
    forward (benchmarks/README.md, the H200 section). There they are converted once per (shape,
    device) and kept, while all kept tables stay within DEVICE_TABLES_BYTES (indices as int64,
    what torch's gathers take; larger ones are converted per call: their copy is small beside
    the work they index). TensorFlow and JAX trace NumPy operands into their graphs as constants:
    they get the arrays (computed again per trace: once per shape).
    """
    if keras.backend.backend() != "torch":
        return build(*args)
    key = (build, args, str(like.device))
    if key in _DEVICE_TABLES:
        return _DEVICE_TABLES[key][0]
    arrays = keras.tree.map_structure(_int64_indices, build(*args))
    size = sum(a.nbytes for a in keras.tree.flatten(arrays) if isinstance(a, np.ndarray))
    tables = keras.tree.map_structure(
        lambda a: ops.convert_to_tensor(a) if isinstance(a, np.ndarray) else a, arrays)
    if size + sum(kept for _, kept in _DEVICE_TABLES.values()) <= DEVICE_TABLES_BYTES:
        _DEVICE_TABLES[key] = tables, size
    return tables


def _int64_indices(value):
    """An integer NumPy table as int64 (what torch's gathers take); other values as they are."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
        return value.astype("int64")
    return value


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
        table: "local": the r x r kernel [r, r, u, k]; "relative": the (2H-1) x (2W-1) table
            [2H-1, 2W-1, u, k]; "global": E itself [n, m, u, k].
        position: "local", "relative" or "global".
    """
    if position == "global":
        return table  # [n, m, u, k]
    t_rows, t_cols, u, k = table.shape
    index = static_tables(relative_offsets, rows, cols, t_rows, t_cols, like=table)  # [n, m]
    flat = ops.reshape(table, (t_rows * t_cols, u, k))  # [t, u, k]
    flat = ops.pad(flat, ((0, 1), (0, 0), (0, 0)))  # [t + 1, u, k], last row: outside scope
    return ops.take(flat, index, axis=0)  # [n, m, u, k]


def queries_first(q, values, embeddings, broadcast=False, separate_products=False):
    """Position term q . E first: q [b, n, h, k], V [b, m, v, u], E [n, m, u, k] -> [b, n, h, v].

    `broadcast`: q . E as one matmul batched over (b, n) with E broadcast over the batch, b n
    items of [h, k] x [k, m u], instead of the einsum's n items of [b h, k] x [k, m u] (the rule's
    BROADCAST_EMBEDDINGS_ENGINES: TensorFlow without oneDNN runs each einsum item above 128^2
    multiply-adds as its own multi-threaded contraction, one after the other, and spreads smaller
    items over its threads); then the maps times V per image, as separate matmuls with
    `separate_products` (`batched_matmul`).
    """
    if not broadcast:
        scores = ops.einsum("bnhk,nmuk->bnhmu", q, embeddings)  # [b, n, h, m, u]
        return ops.einsum("bnhmu,bmvu->bnhv", scores, values)  # [b, n, h, v]
    scores = ops.matmul(q, _transposed_embeddings(embeddings, batch_axis=0))  # [b, n, h, m u]
    return _scores_times_values(scores, values, separate_products)  # [b, n, h, v]


def queries_first_pooled(q, values, embeddings, rows, cols, pool, broadcast=False,
                         separate_products=False):
    """queries_first, then a linear pool over the query positions, applied to the q . E maps.

    The pool (the stride-2 average pool of a strided lambda layer) commutes with the contraction
    over the context, so pooling the h x m x u map of every query before it meets V gives the
    pooled position term with the second contraction at the pooled positions only (n' ~ n / 4).
    q [b, n, h, k], V [b, m, v, u], E [n, m, u, k] with n = rows x cols (static); `pool` maps
    [1, H, W, C] -> [1, H', W', C]; `broadcast`: q . E batched over (n, b), E broadcast over the
    batch, and `separate_products` (see `queries_first`). Returns [b, n', h, v].
    """
    batch, heads = ops.shape(q)[0], q.shape[2]
    m, u = embeddings.shape[1], embeddings.shape[2]
    if broadcast:
        scores = ops.matmul(ops.transpose(q, (1, 0, 2, 3)),
                            _transposed_embeddings(embeddings, batch_axis=1))  # [n, b, h, m u]
    else:
        scores = ops.einsum("bnhk,nmuk->nbhmu", q, embeddings)  # [n, b, h, m, u], n-major
    scores = pool(ops.reshape(scores, (1, rows, cols, -1)))  # [1, H', W', b*h*m*u]
    if not broadcast:
        scores = ops.reshape(scores, (-1, batch, heads, m, u))  # [n', b, h, m, u]
        return ops.einsum("pbhmu,bmvu->bphv", scores, values)  # [b, n', h, v]
    scores = ops.reshape(scores, (-1, batch, heads, m * u))  # [n', b, h, m u]
    return _scores_times_values(ops.transpose(scores, (1, 0, 2, 3)), values,
                                separate_products)  # [b, n', h, v]


def _transposed_embeddings(embeddings, batch_axis):
    """E [n, m, u, k] as the right operand of a matmul broadcast over the batch: [1, n, k, m u]
    (batch_axis 0) or [n, 1, k, m u] (batch_axis 1). The transpose feeds the matmul directly, so
    TensorFlow's graph optimizer folds it into the matmul (adjoint); behind an expand_dims it ran
    as its own op, ~1 ms at 14^2."""
    n, m, u, k = embeddings.shape
    shape = (1, n, m * u, k) if batch_axis == 0 else (n, 1, m * u, k)
    return ops.transpose(ops.reshape(embeddings, shape), (0, 1, 3, 2))


def _scores_times_values(scores, values, separate_products=False):
    """q . E scores [b, N, h, m u] (N query positions) times V [b, m, v, u]: [b, N, h, v], one
    matmul per image (`batched_matmul`)."""
    batch, heads, depth = ops.shape(scores)[0], scores.shape[2], scores.shape[3]  # depth: m u
    v = values.shape[2]
    values = ops.reshape(ops.transpose(values, (0, 1, 3, 2)), (batch, depth, v))  # [b, m u, v]
    scores = ops.reshape(scores, (batch, -1, depth))  # [b, N h, m u]
    out = batched_matmul(scores, values, separate_products)  # [b, N h, v]
    return ops.reshape(out, (batch, -1, heads, v))  # [b, N, h, v]


def batched_matmul(a, b, separate=False):
    """a [B, M, K] times b [B, K, N]: [B, M, N]. `separate`: as B independent 2-D matmuls where
    B is static (the rule's SEPARATE_PRODUCTS_ENGINES: TensorFlow without oneDNN runs them
    1.1-1.5x faster than its batched matmul of small items); a dynamic B (unknown while
    tracing) stays one batched matmul."""
    if not separate or a.shape[0] is None or a.shape[0] == 1:
        return ops.matmul(a, b)  # [B, M, N]
    return ops.stack([ops.matmul(x, y) for x, y in zip(ops.unstack(a), ops.unstack(b))])


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
    t = static_tables(_row_window_tables, rows, cols, r, like=values)
    reach, offsets, tiles, tile = t["reach"], t["offsets"], t["tiles"], t["tile"]
    context = t["context"]
    table = kernel[centre - reach:centre + reach + 1]  # [d, r, u, k]
    table = ops.reshape(table, (offsets, r, u * k))  # [d, r, u*k]
    table = ops.pad(table, ((0, 0), (0, 1), (0, 0)))  # [d, r + 1, u*k], last: outside
    band = ops.take(table, t["band_index"], axis=1)  # [d, x, z, u*k]
    band = ops.reshape(band, (offsets, tile, context, u, k))  # [d, x, z, u, k]
    band = ops.transpose(band, (0, 2, 3, 1, 4))  # [d, z, u, x, k]

    batch = ops.shape(values)[0]
    grid = ops.reshape(values, (batch, rows, cols, v, u))  # [b, H, W, v, u]
    grid = ops.pad(grid, ((0, 0), (reach, reach), (t["left"], t["right"]), (0, 0), (0, 0)))
    # v before the positions: the windows come out in matmul layout (no copy in the einsum).
    grid = ops.reshape(ops.transpose(grid, (0, 3, 1, 2, 4)), (batch, v, -1, u))  # [b, v, H'W', u]
    windows = ops.take(grid, t["window_index"], axis=2)  # [b, v, y, t, d, z, u]
    lambdas = ops.einsum("bvytdzu,dzuxk->bvytxk", windows, band)  # [b, v, y, t, x, k]
    lambdas = ops.reshape(lambdas, (batch, v, rows, tiles * tile, k))[:, :, :, :cols]
    lambdas = ops.reshape(lambdas, (batch, v, rows * cols, k))  # [b, v, n, k]
    return ops.transpose(lambdas, (0, 2, 3, 1))  # [b, n, k, v]


def _row_window_tables(rows, cols, r):
    """The tiles of `row_windows` on a rows x cols map with an r x r scope: ints (reach: row
    offsets -reach..reach, `offsets` of them; tiles x tile query columns; context columns per
    tile, left / right zero columns) and gather indices (band_index [x, z]: kernel column of
    query column x and context column z within a tile, r outside the scope; window_index
    [y, t, d, z]: flat padded position of context (y + d, t * tile + z))."""
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
    shift = np.arange(context)[None, :] - np.arange(tile)[:, None] + centre - left  # [x, z]
    band_index = np.where((shift >= 0) & (shift < r), shift, r).astype("int32")
    padded_cols = cols + left + right
    window_index = ((np.arange(rows)[:, None, None, None] + np.arange(offsets)[:, None])
                    * padded_cols + np.arange(tiles)[:, None, None] * tile + np.arange(context))
    return dict(reach=reach, offsets=offsets, tiles=tiles, tile=tile, context=context,
                left=left, right=right, band_index=band_index,
                window_index=window_index.astype("int32"))


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


def in_batch_parts(function, parts, *tensors, shared=()):
    """function(*tensors, *shared) of tensors [b, ...], computed on up to `parts` balanced parts
    of a static batch (at most one part per image) and concatenated in order: independent ops,
    which TensorFlow's graph executor runs side by side (`execution.batch_parts` says where that
    pays); a batch of unknown size stays whole (where parts pay, the plan loops over its images
    instead: `image_by_image`). `shared` tensors go whole to every part."""
    batch = tensors[0].shape[0]
    parts = 1 if batch is None else min(parts, batch)
    if parts <= 1:
        return function(*tensors, *shared)
    bounds = [batch * part // parts for part in range(parts + 1)]
    return ops.concatenate([function(*(t[start:end] for t in tensors), *shared)
                            for start, end in zip(bounds, bounds[1:])], axis=0)


def image_by_image(function, *tensors, shared=()):
    """function(*tensors, *shared) of tensors [b, ...], mapped over the images of a batch (static
    or dynamic) in a loop (`ops.map`: TensorFlow's while loop, which runs up to 10 images side by
    side; JAX's `lax.map`; a Python loop on PyTorch). Each image is a static batch of one, so the
    function keeps what static shapes give (`batched_matmul`'s separate products) where the
    batch's size is unknown while tracing. A static batch of one image is computed as it is."""
    if tensors[0].shape[0] == 1:
        return function(*tensors, *shared)

    def one_image(images):  # each [...]
        return function(*(ops.expand_dims(t, 0) for t in images), *shared)[0]

    return ops.map(one_image, tuple(tensors))  # [b, ...]


def recomputed_image_by_image(function, *tensors, shared=()):
    """`image_by_image`, each image's intermediates recomputed in the backward pass instead of
    stored (`keras.remat`; every tensor it differentiates is an argument: TensorFlow's
    `recompute_grad` gives captured tensors no gradient). A static batch of one image is computed
    as it is, not recomputed (a whole batch recomputed saved nothing in the layer's step, and cost
    the recomputation: execution.REMAT_MIN_BYTES)."""
    if tensors[0].shape[0] == 1:
        return function(*tensors, *shared)
    return image_by_image(keras.remat(function), *tensors, shared=shared)


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


def query_windows_shape(rows, cols, receptive_field, pool_size=1, strides=1, block_columns=1,
                        block_scopes=QUERY_BLOCK_SCOPES):
    """The blocks `query_windows` cuts a rows x cols map into (see its steps), a dict of ints:
    span (S, a pooled query's window), blocks x block (query rows; the last block padded) and
    context (their context rows), groups x group (query columns, G) and width (C, the columns
    a group's windows span). The scores take padded queries x h (S + 1) C u floats, their spread
    padded queries x h context C u. A map is cut into blocks only where their context is
    smaller than the map (otherwise every block would meet every row)."""
    span = receptive_field + pool_size - 1
    out_rows, out_cols = (len(pool_taps(size, pool_size, strides)[0]) for size in (rows, cols))
    blocks = -(-out_rows // max(math.ceil(block_scopes * span / strides), 1))
    block = -(-out_rows // blocks)  # balanced blocks of query rows
    if strides * (block - 1) + span >= rows:
        blocks, block = 1, out_rows
    group = min(block_columns, out_cols)
    return dict(span=span, blocks=blocks, block=block,
                context=min(strides * (block - 1) + span, rows), groups=-(-out_cols // group),
                group=group, width=strides * (group - 1) + span)


def query_windows_bytes(rows, cols, receptive_field, num_heads, intra_depth, pool_size=1,
                        strides=1, **blocks):
    """Bytes (float32) of the window scores and their spread over a block's context rows that
    `query_windows` forms for one image of a rows x cols map (`blocks`: its block_columns /
    block_scopes): what training stores for the backward pass unless it recomputes them."""
    shape = query_windows_shape(rows, cols, receptive_field, pool_size, strides, **blocks)
    queries = shape["blocks"] * shape["block"] * shape["groups"] * shape["group"]
    per_query = num_heads * intra_depth * shape["width"] * (shape["span"] + 1 + shape["context"])
    return queries * per_query * 4


def query_windows(q, values, kernel, rows, cols, pool_size=1, strides=1, block_columns=1,
                  block_scopes=QUERY_BLOCK_SCOPES, separate_products=False):
    """The position term q . E . V with q . E in window coordinates, pooled if strides = 2.

    q [b, n, h, k], V [b, m, v, u], kernel [r, r, u, k] of a static rows x cols map (n = m);
    `pool_size`/`strides`: the layer's average pool (1/1: none; 3/2 "same" or 2/2 "valid");
    `block_columns` / `block_scopes`: query columns per block and query rows per block in
    scopes (`formulations.window_blocks` picks them); `separate_products`: step 3's matmul as
    one 2-D matmul per block (`batched_matmul`).
    Returns [b, n', h, v] at the pooled positions n'.

    1. Scores: every (pooled) query's q . E over its window, one GEMM. A pooled query is the
       weighted sum of pool_size^2 taps, query 2 y' + t with kernel offset o - t: its window is
       S = r + pool_size - 1 wide. Query columns are grouped G = block_columns at a time; a
       group's windows span C = strides (G - 1) + S columns, and query g of a group scores into
       columns strides g .. strides g + S - 1 of that span: the GEMM is
       [b n' h, G taps k] x [G taps k, (S + 1) C u], q placed in the k slots of its g.
    2. Query rows are cut into blocks of about block_scopes * S / strides rows; a block
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
    taps = pool_size
    t = static_tables(_query_window_tables, rows, cols, r, heads, pool_size, strides,
                      block_columns, block_scopes, like=q)
    span, width, context = t["span"], t["width"], t["context"]
    block, groups, group = t["block"], t["groups"], t["group"]
    padded_rows = t["padded_rows"]  # padding queries: zero weights

    # 1. scores [b W'/G G h blocks B, (S + 1) C u]: row offset S is a zero slot (outside).
    # Tensors stay within 5 dimensions (TFLite's TRANSPOSE and broadcasting MUL limits).
    grid = ops.reshape(q, (batch, rows, cols, heads, k))  # [b, H, W, h, k]
    grid = ops.transpose(grid, (0, 3, 1, 2, 4))  # [b, h, H, W, k]
    grid = ops.take(grid, t["tap_rows"], axis=2)  # [b, h, H'' T, W, k]
    grid = ops.take(grid, t["tap_cols"], axis=3)  # [b, h, H'' T, W'' T, k]
    grid = grid * ops.cast(t["weights"], q.dtype)  # [1, 1, H'' T, W'' T, 1] tap weights
    grid = ops.reshape(grid, (batch, heads * padded_rows * taps, groups, group, taps * k))
    grid = ops.transpose(grid, (0, 2, 3, 1, 4))  # [b, W''/G, G, h H'' Ty, Tx k]
    grid = ops.reshape(grid, (-1, group, heads * padded_rows * taps, 1, taps * k))
    grid = grid * ops.cast(t["slots"], q.dtype)  # [b W''/G, G, h H'' Ty, G slots, Tx k]
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
    maps = ops.take(scores, t["slot"], axis=1)
    maps = ops.reshape(maps, (-1, block * group * heads, context * width * u))

    # 3. column windows of V: [b W''/G blocks, context C u, v]
    grid = ops.reshape(values, (batch, rows, cols, v, u))
    grid = ops.transpose(grid, (0, 1, 2, 4, 3))  # [b, H, W, u, v]
    grid = ops.pad(grid, ((0, 0), (0, 0), (t["left"], t["right"]), (0, 0), (0, 0)))
    value_cols = cols + t["left"] + t["right"]
    grid = ops.reshape(grid, (batch, rows * value_cols, u * v))  # [b, H W'', u v]
    windows = ops.take(grid, t["index"], axis=1)
    windows = ops.reshape(windows, (-1, context * width * u, v))

    out = batched_matmul(maps, windows, separate_products)  # [b W''/G blocks, B G h, v]
    out = ops.reshape(out, (batch, groups, padded_rows, group, heads * v))
    out = ops.transpose(out, (0, 2, 1, 3, 4))  # [b, H'', W''/G, G, h v]
    out = ops.reshape(out, (batch, padded_rows, groups * group, heads * v))
    out_rows, out_cols = t["out_rows"], t["out_cols"]
    out = out[:, :out_rows, :out_cols]  # [b, H', W', h v]
    return ops.reshape(out, (batch, out_rows * out_cols, heads, v))  # [b, n', h, v]


def _query_window_tables(rows, cols, r, heads, pool_size, strides, block_columns, block_scopes):
    """The blocks of `query_windows` (its arguments, with h heads: `query_windows_shape`'s
    ints, out_rows / out_cols, padded_rows and the left / right zero columns of V) and its
    tables: the pool's taps (tap_rows, tap_cols: flat indices; weights [1, 1, H'' T, W'' T, 1]),
    the query slots of a group (slots [1, G, 1, G, 1]), where each query's scores go among its
    block's context rows (slot, flat) and the column windows of V (index, flat)."""
    centre = r // 2
    tap_rows, row_weights, before_rows = pool_taps(rows, pool_size, strides)
    tap_cols, col_weights, before_cols = pool_taps(cols, pool_size, strides)
    out_rows, out_cols = len(tap_rows), len(tap_cols)
    shape = query_windows_shape(rows, cols, r, pool_size, strides, block_columns, block_scopes)
    span, width, context = shape["span"], shape["width"], shape["context"]
    blocks, block, groups, group = shape["blocks"], shape["block"], shape["groups"], shape["group"]
    padded_rows, padded_cols = blocks * block, groups * group  # padding queries: zero weights
    first_row = strides * np.arange(padded_rows) - before_rows  # of each query's window (+ c)
    tap_rows = np.pad(tap_rows, ((0, padded_rows - out_rows), (0, 0)))
    row_weights = np.pad(row_weights, ((0, padded_rows - out_rows), (0, 0)))  # padding: 0
    tap_cols = np.pad(tap_cols, ((0, padded_cols - out_cols), (0, 0)))
    col_weights = np.pad(col_weights, ((0, padded_cols - out_cols), (0, 0)))
    weights = row_weights.reshape(-1, 1) * col_weights.reshape(1, -1)  # [H'' T, W'' T]

    top = np.clip(first_row[::block] - centre, 0, rows - context)  # [blocks]
    context_rows = top[:, None] + np.arange(context)  # [blocks, context]
    offset = (context_rows[:, None, :] - first_row.reshape(blocks, block)[:, :, None]
              + centre)  # [blocks, B, context]
    offset = np.where((offset >= 0) & (offset < span), offset, span)
    query = (np.arange(group * heads)[None, None, :] * padded_rows
             + np.arange(padded_rows).reshape(blocks, block, 1))  # [blocks, B, G h]
    slot = query[..., None] * (span + 1) + offset[:, :, None, :]  # [blocks, B, G h, context]

    left = centre + before_cols  # zero columns of V: the first window starts at padded column 0
    first_col = strides * group * np.arange(groups)  # of each group's windows, padded columns
    right = max(int(first_col[-1]) + width - cols - left, 0)
    window_cols = first_col[:, None] + np.arange(width)  # [W''/G, C]
    index = (context_rows[None, :, :, None] * (cols + left + right)
             + window_cols[:, None, None, :])  # [W''/G, blocks, context, C]
    return dict(shape, out_rows=out_rows, out_cols=out_cols, padded_rows=padded_rows,
                left=left, right=right,
                tap_rows=tap_rows.reshape(-1).astype("int32"),
                tap_cols=tap_cols.reshape(-1).astype("int32"),
                weights=weights[None, None, :, :, None].astype("float32"),
                slots=np.eye(group, dtype="float32")[None, :, None, :, None],
                slot=slot.reshape(-1).astype("int32"), index=index.reshape(-1).astype("int32"))
