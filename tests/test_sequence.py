"""SequenceLambdaLayer: sequences, separate contexts, causal and padding masks.

Every mode is checked against `_reference`, an explicit loop over query positions n and context
positions m written from the paper's equations (section 3, Appendix B.2) in NumPy float64,
independent of the layer's einsums, cumulative sums and window slicing.
"""

import os
import re
import subprocess
import sys

import numpy as np
import keras
import pytest
import tensorflow as tf

from benchmarks.common import REPO_ROOT
from lambda_keras import SequenceLambdaLayer
from tests import sequence_cases
from tests.helpers import (
    assert_all_weights_get_gradients,
    assert_close,
    assert_config_round_trip,
    assert_keras_save_reload,
    assert_mixed_precision_dtypes,
    assert_xla_matches_eager,
)

EPS = 1e-5


def _randomise_norms(layer, rng):
    """Non-trivial norm weights (and batch-norm statistics), so the reference checks where the
    norms are applied."""
    for norm in (layer.query_norm, layer.value_norm):
        size = norm.gamma.shape[0]
        statistics = ([rng.normal(0, 0.1, size), rng.uniform(0.5, 1.5, size)]
                      if layer.normalization == "batch" else [])
        norm.set_weights([rng.uniform(0.5, 1.5, size), rng.normal(0, 0.1, size), *statistics])


def _norm(x, norm, normalization):
    """x [positions, channels]: batch norm in inference mode (moving statistics) or layer norm
    (each position over its own channels)."""
    gamma, beta, *statistics = (np.asarray(w, "float64") for w in norm.get_weights())
    if normalization == "batch":
        mean, var = statistics
    else:
        mean, var = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def _reference(layer, x, context=None, mask=None, context_mask=None):
    """y[b, n, h*v] by explicit loops over n and m (float64, BN in inference mode)."""
    norm = layer.normalization
    x = np.asarray(x, "float64")
    c = x if context is None else np.asarray(context, "float64")
    if context is None and context_mask is None:
        context_mask = mask
    batch, n_len, _ = x.shape
    m_len = c.shape[1]
    k, u, h, v = layer.key_dim, layer.intra_depth, layer.num_heads, layer.value_dim
    wq, wk, wv = (np.asarray(w, "float64") for w in
                  (layer.query_kernel.numpy(), layer.key_kernel.numpy(),
                   layer.value_kernel.numpy()))
    table = (None if layer.position is None
             else np.asarray(layer.position_embeddings.numpy(), "float64"))
    half = layer.receptive_field // 2
    out = np.zeros((batch, n_len, h * v))
    for b in range(batch):
        q = _norm(x[b] @ wq, layer.query_norm, norm).reshape(n_len, h, k)
        keys = (c[b] @ wk).reshape(m_len, k, u)
        values = _norm(c[b] @ wv, layer.value_norm, norm).reshape(m_len, v, u)
        for n in range(n_len):
            if mask is not None and not mask[b, n]:
                continue  # padded query: zeros
            seen = [m for m in range(m_len)
                    if (context_mask is None or context_mask[b, m])
                    and (not layer.causal or m <= n)]
            lam = np.zeros((k, v))
            if seen:
                logits = np.stack([keys[m] for m in seen])  # [m', k, u]
                weights = np.exp(logits - logits.max(axis=0))
                weights /= weights.sum(axis=0)  # softmax over the seen m
                for i, m in enumerate(seen):
                    lam += weights[i] @ values[m].T  # content: sum_u K[m,k,u] V[m,v,u]
            for m in seen:
                offset = m - n
                if layer.position == "local":
                    if abs(offset) > half:
                        continue
                    emb = table[offset + half]  # [u, k]
                elif layer.position == "relative":
                    emb = table[offset + n_len - 1]
                elif layer.position == "global":
                    emb = table[n, m]
                else:
                    continue
                lam += emb.T @ values[m].T  # position: sum_u E[n,m,k,u] V[m,v,u]
            for head in range(h):
                out[b, n, head * v:(head + 1) * v] = lam.T @ q[n, head]
    return out


def _layer(x, context=None, seed=0, **kwargs):
    kwargs = {"output_dim": 12, "key_dim": 4, "num_heads": 3, "receptive_field": 5, **kwargs}
    layer = SequenceLambdaLayer(**kwargs)
    layer(x) if context is None else layer(x, context=context)
    _randomise_norms(layer, np.random.default_rng(seed))
    return layer


def _data(batch=2, n=9, d=6, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, n, d)).astype("float32")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("position", ["local", "relative", "global", None])
@pytest.mark.parametrize("intra_depth", [1, 2])
def test_self_context_matches_loop_reference(position, causal, intra_depth):
    x = _data()
    layer = _layer(x, position=position, causal=causal, intra_depth=intra_depth)
    assert_close(layer(x, training=False), _reference(layer, x), 2e-5)


@pytest.mark.parametrize("position", ["local", "relative", "global", None])
def test_separate_context_matches_loop_reference(position):
    x, context = _data(n=6), _data(n=11, d=5, seed=1)  # m != n, different depths
    layer = _layer(x, context, position=position, intra_depth=2)
    out = layer(x, context=context, training=False)
    assert tuple(out.shape) == layer.compute_output_shape(x.shape, context.shape) == (2, 6, 12)
    assert_close(out, _reference(layer, x, context), 2e-5)


def test_causal_separate_context_of_the_same_length_matches_reference():
    x, context = _data(n=7), _data(n=7, d=5, seed=1)
    layer = _layer(x, context, position="local", causal=True)
    assert_close(layer(x, context=context, training=False),
                 _reference(layer, x, context), 2e-5)


def _padding(batch, length, lengths):
    return np.arange(length)[None, :] < np.asarray(lengths)[:, None]  # [b, n] True = valid


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("position", ["local", "relative", None])
def test_padded_self_context_matches_reference(position, causal):
    x = _data()
    mask = _padding(2, 9, [5, 9])
    layer = _layer(x, position=position, causal=causal)
    out = keras.ops.convert_to_numpy(layer(x, mask=mask, training=False))
    assert_close(out, _reference(layer, x, mask=mask), 2e-5)
    assert not out[0, 5:].any()  # padded queries output zeros


@pytest.mark.parametrize("position", ["local", "global"])
def test_padded_separate_context_matches_reference(position):
    x, context = _data(n=6), _data(n=8, d=5, seed=1)
    mask, context_mask = _padding(2, 6, [6, 4]), _padding(2, 8, [3, 8])
    layer = _layer(x, context, position=position)
    out = layer(x, context=context, mask=mask, context_mask=context_mask, training=False)
    assert_close(out, _reference(layer, x, context, mask, context_mask), 2e-5)


def _future_changes_past(layer, x, training, scale=3.0):
    """Largest change of the outputs at positions <= t when the inputs after t change (several
    t; new inputs of standard deviation `scale`), relative to the outputs' scale; asserts that
    the future itself does change."""
    before = keras.ops.convert_to_numpy(layer(x, training=training))
    worst = 0.0
    for t in (0, 4, 10):
        changed = x.copy()
        changed[:, t + 1:] = scale * np.random.default_rng(t).standard_normal(
            changed[:, t + 1:].shape)
        after = keras.ops.convert_to_numpy(layer(changed, training=training))
        assert np.abs(after[:, t + 1:] - before[:, t + 1:]).max() > 1e-3  # the future matters
        worst = max(worst, np.abs(after[:, :t + 1] - before[:, :t + 1]).max())
    return worst / np.abs(before).max()


@pytest.mark.parametrize("scale", [3.0, 1000.0])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("position", ["local", "relative", "global", None])
def test_causal_output_ignores_the_future(position, training, scale):
    """Also while training: the default layer norm has no statistics across positions. Also a
    future of large inputs: its key logits (keys are not normalised) lie hundreds above the
    past's, which once underflowed the past's softmax (one max over all positions)."""
    x = _data(n=12)
    layer = _layer(x, position=position, causal=True)
    assert layer.normalization == "layer"
    assert _future_changes_past(layer, x, training, scale) < 1e-6


@pytest.mark.parametrize("position", ["local", None])
def test_causal_keys_hundreds_apart_match_the_reference(position):
    """Each prefix's softmax is its own (the float64 loop reference normalises each prefix by
    its own max), with key logits far beyond float32's exp range apart."""
    x = _data(n=9)
    x[:, 5:] *= 1000.0
    layer = _layer(x, position=position, causal=True)
    logits = x @ keras.ops.convert_to_numpy(layer.key_kernel)  # [b, n, k u]
    assert np.ptp(logits, axis=1).max() > 200  # the premise: exp(-200) underflows float32
    out = keras.ops.convert_to_numpy(layer(x, training=False))
    assert_close(out, _reference(layer, x), 2e-5)
    assert_close(out[:, :5], keras.ops.convert_to_numpy(layer(x[:, :5], training=False)), 2e-5)


def test_causal_batch_norm_is_warned_as_not_causal_in_training():
    """What the warning says, measured: batch statistics carry the future into the past while
    training (not in inference); old files without the `normalization` key load so."""
    x = _data(n=12)
    with pytest.warns(UserWarning, match="causal=True with normalization='batch'"):
        layer = _layer(x, causal=True, normalization="batch")
    assert _future_changes_past(layer, x, training=False) < 1e-6
    assert _future_changes_past(layer, x, training=True) > 1e-2
    config = layer.get_config()
    assert config["normalization"] == "batch"
    del config["normalization"]  # a file saved before the option existed
    with pytest.warns(UserWarning, match="normalization='batch'"):
        old = SequenceLambdaLayer.from_config(config)
    old(x)
    old.set_weights(layer.get_weights())  # the batch norms' four weights each, as saved
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(old(x)),
                                  keras.ops.convert_to_numpy(layer(x)))
    assert SequenceLambdaLayer(causal=False).normalization == "batch"  # the paper's


def test_padded_positions_change_nothing_in_training():
    """Padded content is excluded from the softmax, the sums and the batch-norm statistics:
    the causal layer (layer norm), and the non-causal one (batch norm, whose training statistics
    are checked against the loop reference given the moments of the valid positions only)."""
    x = _data()
    mask = _padding(2, 9, [5, 9])
    noisy = x.copy()
    noisy[0, 5:] = 100.0
    for causal in (True, False):
        layer = _layer(x, causal=causal)
        for training in (False, True):
            a = keras.ops.convert_to_numpy(layer(x, mask=mask, training=training))
            b = keras.ops.convert_to_numpy(layer(noisy, mask=mask, training=training))
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert layer.normalization == "batch"
    out = keras.ops.convert_to_numpy(layer(noisy, mask=mask, training=True))
    valid = np.asarray(x[mask], "float64")  # [valid positions, d]: no padded content
    for norm, kernel in ((layer.query_norm, layer.query_kernel),
                         (layer.value_norm, layer.value_kernel)):
        projected = valid @ np.asarray(kernel.numpy(), "float64")
        gamma, beta, _, _ = norm.get_weights()  # the reference reads the statistics from here
        norm.set_weights([gamma, beta, projected.mean(axis=0), projected.var(axis=0)])
    assert_close(out, _reference(layer, x, mask=mask), 2e-5)


def test_keras_masking_propagates_from_embedding(tmp_path):
    tokens = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(20, 8, mask_zero=True)(tokens)
    hidden = SequenceLambdaLayer(8, key_dim=4, num_heads=2, receptive_field=3,
                                 causal=True)(embedded)
    model = keras.Model(tokens, keras.layers.GlobalAveragePooling1D()(hidden))
    ids = np.array([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5]], "int32")
    out = model(ids, training=False)
    # The padded tail of row 0 changes nothing: same as the unpadded row of length 3.
    assert_close(out[:1], model(ids[:1, :3], training=False), 1e-5)
    assert_keras_save_reload(model, ids, tmp_path, atol=1e-6)


def test_gradients_reach_every_weight():
    x = _data()
    layer = _layer(x, causal=True, intra_depth=2)
    assert_all_weights_get_gradients(layer, x)


def test_xla_matches_eager_causal():
    x = _data()
    layer = _layer(x, causal=True)
    assert_xla_matches_eager(lambda t: layer(t, training=True), x, atol=1e-4,
                             variables=layer.trainable_variables)


def test_xla_matches_eager_with_a_separate_context():
    x, context = _data(n=6), _data(n=8, d=5, seed=1)
    layer = _layer(x, context, position="relative")
    assert_xla_matches_eager(lambda t: layer(t, context=context, training=True), x, atol=1e-4,
                             variables=layer.trainable_variables)


def test_config_round_trip_and_save_reload(tmp_path):
    x = _data()
    layer = _layer(x, position="relative", causal=True, intra_depth=2,
                   query_initializer=keras.initializers.RandomNormal(stddev=0.3))
    assert_config_round_trip(layer, x, training=False)
    queries, context = keras.Input((6, 6)), keras.Input((8, 5))
    out = SequenceLambdaLayer(12, key_dim=4, num_heads=3, position="global")(
        queries, context=context)
    model = keras.Model([queries, context], out)
    path = str(tmp_path / "cross.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    inputs = [_data(n=6), _data(n=8, d=5, seed=1)]
    np.testing.assert_array_equal(reloaded(inputs), model(inputs))


def test_dynamic_length_with_local_position():
    layer = SequenceLambdaLayer(8, key_dim=4, num_heads=2, receptive_field=3, causal=True)
    fn = tf.function(lambda t: layer(t, training=False),
                     input_signature=[tf.TensorSpec((None, None, 6), "float32")])
    for n in (7, 37):  # one block of the causal content term, and three (the last short)
        x = _data(n=n)
        np.testing.assert_allclose(fn(x), layer(x, training=False), rtol=1e-5, atol=1e-6)
    assert tuple(fn(_data(n=4)).shape) == (2, 4, 8)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("position", ["relative", "global"])
def test_given_lengths_run_on_inputs_of_unknown_length(position, causal):
    """With `sequence_length`, "relative"/"global" layers build and trace on an unknown length
    (`Input((None, d))`, a tf.function signature) and give the static-length layer's outputs
    with the same weights; a known wrong length is still refused. Was: every trace of an
    unknown length raised "made for (sequence_length, context_length)"."""
    x = _data()
    static = _layer(x, position=position, causal=causal)
    config = {**static.get_config(), "name": "given", "sequence_length": 9}
    inputs = keras.Input((None, 6))
    layer = SequenceLambdaLayer.from_config(config)
    model = keras.Model(inputs, layer(inputs))
    assert model.output_shape == (None, None, 12)
    layer.set_weights(static.get_weights())
    expected = keras.ops.convert_to_numpy(static(x, training=False))
    assert_close(model(x, training=False), expected, 1e-6)
    traced = tf.function(lambda t: layer(t, training=False),
                         input_signature=[tf.TensorSpec((None, None, 6), "float32")])
    assert_close(traced(x), expected, 1e-6)
    for call in (layer, model):
        with pytest.raises(ValueError, match=re.escape(
                f'`position="{position}"` embeddings are made for (sequence_length, '
                "context_length)=(9, 9). Received: (8, 8)")):
            call(_data(n=8))
    for n in (8, 10):  # unknown while tracing: refused when the graph runs (was an einsum error)
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(
                f"`position={position}` embeddings are made for (sequence_length, "
                f"context_length)=(9, 9). Received: input length] [{n}]")):
            traced(_data(n=n))


@pytest.mark.parametrize("position", ["relative", "global"])
def test_a_separate_context_of_unknown_length_is_checked_when_the_graph_runs(position):
    """The embeddings fix the context's length too: under a dynamic signature a context of
    another length is refused when the graph runs, naming context_length."""
    layer = SequenceLambdaLayer(12, key_dim=4, num_heads=2, position=position,
                                sequence_length=9, context_length=5)
    signature = [tf.TensorSpec((None, None, 6), "float32")] * 2
    traced = tf.function(lambda x, c: layer(x, context=c), input_signature=signature)
    x, context = _data(), _data(n=5, seed=1)
    assert_close(traced(x, context), layer(x, context=context), 1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(
            f"`position={position}` embeddings are made for (sequence_length, "
            "context_length)=(9, 5). Received: context length] [7]")):
        traced(x, _data(n=7))


@pytest.mark.parametrize("position", ["local", None])
@pytest.mark.parametrize("name", ["sequence_length", "context_length"])
def test_lengths_beside_a_mode_without_static_embeddings_are_refused(name, position):
    """They size the "relative"/"global" embeddings only (they were silently ignored here);
    configs saved before the refusal still load, without them."""
    with pytest.raises(ValueError, match=re.escape(
            f'`{name}` sizes the "relative" and "global" embeddings; position={position!r} '
            f"has none. Received: {name}=9")):
        SequenceLambdaLayer(position=position, **{name: 9})
    old = {**SequenceLambdaLayer(position=position).get_config(), name: 9}
    assert getattr(SequenceLambdaLayer.from_config(old), name) is None


def test_heads_not_dividing_the_input_depth_name_the_default_output_dim():
    """Without `output_dim` the input depth is d: the message says so (it reported an
    output_dim the user never gave)."""
    with pytest.raises(ValueError, match=re.escape(
            "`num_heads` must divide the input depth when `output_dim` is None (the output "
            "keeps the input's depth). Received: output_dim=None (input depth 6), "
            "num_heads=4")):
        SequenceLambdaLayer(key_dim=4, num_heads=4)(_data())


@pytest.mark.parametrize("kwargs, message", [
    (dict(output_dim=10, num_heads=4), "output_dim"),
    (dict(position="conv"), "position"),
    (dict(receptive_field=4), "receptive_field"),
    (dict(key_dim=0), "key_dim"),
    (dict(sequence_length=-3), "sequence_length"),
    (dict(norm_momentum=1.0), "norm_momentum"),
    (dict(norm_epsilon=0.0), "norm_epsilon"),
    (dict(key_dim=2**17), "key_dim"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SequenceLambdaLayer(**kwargs)


@pytest.mark.parametrize("scale", [3.0, 300.0])
def test_causal_content_term_and_its_gradients_match_a_quadratic_form(scale):
    """The scan (linear memory) against the n x m form: a softmax over m <= n per query row, by
    TensorFlow's own softmax; outputs and the gradients in q, K and V, with and without padding,
    key logits 3 or 300 apart."""
    from lambda_keras.layers import sequence_terms

    rng = np.random.default_rng(0)
    # 3 blocks, the last short
    b, n, k, v, u, h = 2, 2 * sequence_terms.CAUSAL_BLOCK + 5, 4, 3, 2, 2
    q, keys, values, weights = (tf.constant(rng.standard_normal(shape), tf.float32) for shape in
                                ((b, n, h, k), (b, n, k, u), (b, n, v, u), (b, n, h, v)))
    keys = keys * scale
    lengths = np.array([[sequence_terms.CAUSAL_BLOCK + 3], [n]])  # padding inside the second block

    def quadratic(q, keys, values, cmask):
        allowed = np.tril(np.ones((n, n), bool))[None, :, :, None, None]  # [1, n, m, 1, 1]
        if cmask is not None:
            allowed = allowed & (cmask.numpy() > 0)[:, None, :, None, None]
        logits = tf.where(allowed, keys[:, None], -np.inf)  # [b, n, m, k, u]
        softmax = tf.nn.softmax(logits, axis=2)
        return tf.einsum("bnhk,bnmku,bmvu->bnhv", q, softmax, values)

    for cmask in (None, tf.constant((np.arange(n)[None] < lengths).astype("float32"))):
        results = []
        for form in (lambda *a: sequence_terms.causal_content_output(*a, "float32"), quadratic):
            with tf.GradientTape() as tape:
                tape.watch([q, keys, values])
                out = form(q, keys, values * (1 if cmask is None else cmask[:, :, None, None]),
                           cmask)
                loss = tf.reduce_sum(out * weights)
            results.append([out, *tape.gradient(loss, [q, keys, values])])
        for name, scan, expected in zip(("output", "d/dq", "d/dK", "d/dV"), *results):
            assert_close(scan.numpy(), expected.numpy(), 1e-5, name)


def test_built_layer_names_another_depth_and_a_mask_of_another_length():
    layer = SequenceLambdaLayer(8, key_dim=4, num_heads=2, receptive_field=3)
    layer(_data(n=7))
    with pytest.raises(ValueError, match=re.escape(
            "expected axis -1 of input shape to have value 6, but received input with shape "
            "(2, 7, 5)")):
        layer(_data(n=7, d=5))
    with pytest.raises(ValueError, match=re.escape(
            "`mask` must be [batch, length] of its sequence, (2, 7). Received: mask shape "
            "(2, 4)")):
        layer(_data(n=7), mask=_padding(2, 4, [4, 2]))


def test_bad_causal_type():
    with pytest.raises(TypeError, match="causal"):
        SequenceLambdaLayer(causal="yes")


def test_bad_inputs():
    with pytest.raises(ValueError, match="rank 3.*Received: inputs_shape"):
        SequenceLambdaLayer(8, num_heads=2)(np.zeros((1, 4, 4, 8), "float32"))
    with pytest.raises(ValueError, match="causal=True.*context length 5"):
        SequenceLambdaLayer(8, num_heads=2, causal=True)(
            _data(n=4), context=_data(n=5))
    with pytest.raises(ValueError, match="static lengths.*sequence_length"):
        SequenceLambdaLayer(8, num_heads=2, position="relative").build((None, None, 6))
    layer = _layer(_data(), position="global")
    with pytest.raises(ValueError, match=r"made for .*\(9, 9\)"):
        layer(_data(n=8))
    cross = _layer(_data(n=6), _data(n=8, d=5), position="local")
    with pytest.raises(ValueError, match="`context` depth must be 5"):
        cross(_data(n=6), context=_data(n=8, d=7))
    with pytest.raises(ValueError, match="separate `context`"):
        cross(_data(n=6))


@pytest.mark.parametrize("kind, keep", [("int32", 2), ("float32", 0.5)])
def test_numeric_masks_count_as_booleans(kind, keep):
    """As Keras' attention masks: nonzero keeps, whatever its value (a mask of 2s gave 4x the
    outputs of the boolean one, through the masked sums and the batch-norm weights; 0.5s
    scaled them too)."""
    x, context = _data(n=6), _data(n=8, d=5, seed=1)
    mask, context_mask = _padding(2, 6, [6, 4]), _padding(2, 8, [3, 8])
    self_layer, cross = _layer(x), _layer(x, context)
    for training in (False, True):
        expected = keras.ops.convert_to_numpy(self_layer(x, mask=mask, training=training))
        out = self_layer(x, mask=(mask * keep).astype(kind), training=training)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, atol=1e-6)
        expected = keras.ops.convert_to_numpy(
            cross(x, context=context, mask=mask, context_mask=context_mask, training=training))
        out = cross(x, context=context, mask=(mask * keep).astype(kind),
                    context_mask=(context_mask * keep).astype(kind), training=training)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, atol=1e-6)


def test_list_masks_are_converted_and_strings_refused():
    """Nested lists are converted (as Keras layers convert array-likes); they raised
    AttributeError. A string is no mask: TypeError naming the argument and the value."""
    x, context = _data(n=6), _data(n=8, d=5, seed=1)
    mask, context_mask = _padding(2, 6, [6, 4]), _padding(2, 8, [3, 8])
    layer = _layer(x)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(x, mask=mask.tolist(), training=False)),
        keras.ops.convert_to_numpy(layer(x, mask=mask, training=False)))
    cross = _layer(x, context)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(cross(x, context=context, context_mask=context_mask.tolist(),
                                         training=False)),
        keras.ops.convert_to_numpy(cross(x, context=context, context_mask=context_mask,
                                         training=False)))
    with pytest.raises(TypeError, match=re.escape(
            "`mask` must be a boolean (or numeric: nonzero keeps) [batch, length] tensor or "
            "array. Received: mask='all'")):
        layer(x, mask="all")
    with pytest.raises(TypeError, match=re.escape("Received: context_mask='all'")):
        cross(x, context=context, context_mask="all")
    with pytest.raises(TypeError, match=re.escape(
            "Received: mask of dtype string, shape (2, 6)")):
        layer(x, mask=np.full((2, 6), "yes"))
    with pytest.raises(TypeError, match=re.escape("Received: mask=[[True, True], [True]]")):
        layer(x, mask=[[True, True], [True]])  # ragged


@pytest.mark.parametrize("context_batch", [3, 1])
def test_context_of_another_batch_size_is_refused(context_batch):
    """Was TensorFlow's reshape error; a context batch of 1 is not broadcast (nor is it by
    Keras' MultiHeadAttention)."""
    with pytest.raises(ValueError, match=re.escape(
            "`context` must have the batch size of `inputs`. Received: inputs batch size 2, "
            f"context batch size {context_batch}")):
        SequenceLambdaLayer(8, num_heads=2, receptive_field=3)(
            _data(n=6), context=_data(batch=context_batch, n=7, d=5))


@pytest.mark.parametrize("depth, context_depth", [(0, None), (6, 0)])
def test_inputs_or_context_of_depth_zero_are_refused(depth, context_depth):
    """Was a ZeroDivisionError in the initialisation (shared.build_projections)."""
    x = np.zeros((2, 5, depth), "float32")
    context = None if context_depth is None else np.zeros((2, 7, context_depth), "float32")
    layer = SequenceLambdaLayer(8, num_heads=2, receptive_field=3)
    shapes = (f"inputs_shape=(2, 5, {depth}), context_shape=(2, "
              + (f"5, {depth})" if context is None else f"7, {context_depth})"))
    with pytest.raises(ValueError, match=re.escape(
            "The last (depth) axis of `inputs` and `context` must be at least 1. Received: "
            + shapes)):
        layer(x) if context is None else layer(x, context=context)


@pytest.mark.parametrize("name", ["query", "key", "value", "position"])
def test_bad_initializer_names_its_argument(name):
    """Keras' "Could not interpret initializer identifier" named no argument: it is the cause."""
    with pytest.raises(ValueError, match=re.escape(
            f"`{name}_initializer` must be None or a Keras initializer")) as info:
        SequenceLambdaLayer(**{f"{name}_initializer": 5})
    assert f"Received: {name}_initializer=5" in str(info.value)
    assert "Could not interpret initializer identifier: 5" in str(info.value.__cause__)


# ------------------------------------------------------------------- JAX and PyTorch backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backends_match_tensorflow(backend, tmp_path):
    """Fixed weights give TensorFlow's outputs (checked above against the loop reference).

    The backend runs `tests/sequence_cases.py` in a subprocess (a Keras backend is per process;
    that module imports neither TensorFlow nor PyTorch itself)."""
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": REPO_ROOT,
           "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / f"{backend}.npz"
    process = subprocess.run([sys.executable, "-m", "tests.sequence_cases", str(out)], env=env,
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.split()[-1] == backend  # the subprocess ran on that backend
    results = np.load(out)
    assert sorted(results.files) == sorted(sequence_cases.CASES)
    for name in sequence_cases.CASES:
        assert_close(results[name], sequence_cases.output(name), 2e-5,
                     f"{backend} vs TensorFlow, {name}")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_follows_float32(policy):
    x = _data()
    reference = _layer(x, causal=True, intra_depth=2)
    layer = SequenceLambdaLayer(**{**reference.get_config(), "dtype": policy})
    layer(x)
    layer.set_weights(reference.get_weights())
    assert_mixed_precision_dtypes(layer, policy)
    out = layer(x, mask=_padding(2, 9, [5, 9]), training=False)
    assert out.dtype == policy.split("_")[1]
    expected = reference(x, mask=_padding(2, 9, [5, 9]), training=False)
    assert_close(keras.ops.cast(out, "float32"), expected, 5e-2 if "bfloat" in policy else 1e-2)
