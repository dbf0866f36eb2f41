"""Fixed SequenceLambdaLayer cases, run on any Keras backend (tests/test_sequence.py).

Imports neither TensorFlow nor PyTorch itself (they cannot share a process), so the backend
check can run it as `KERAS_BACKEND=jax python -m tests.sequence_cases OUT.npz`: it writes every
case's output and prints the backend's name.
"""

import sys

import numpy as np
import keras

from lambda_keras import SequenceLambdaLayer

CASES = {  # name -> (layer kwargs, separate context, padding masks)
    "causal_local_padded": (dict(causal=True, intra_depth=2), False, True),
    "relative": (dict(position="relative"), False, False),
    "cross_local_padded": (dict(intra_depth=2), True, True),
    "cross_global": (dict(position="global"), True, False),
}


def output(name):
    """The output (NumPy) of the layer of case `name`, with fixed weights and inputs."""
    kwargs, separate, padded = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 6)).astype("float32")  # [b, n, d]
    context = rng.standard_normal((2, 7, 5)).astype("float32") if separate else None  # [b, m, d_c]
    layer = SequenceLambdaLayer(12, key_dim=4, num_heads=3, receptive_field=5, **kwargs)
    layer(x) if context is None else layer(x, context=context)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.path
                       else (0.3 * rng.standard_normal(w.shape)).astype("float32")
                       for w in layer.weights])
    mask = np.arange(9)[None] < np.array([[5], [9]]) if padded else None  # [b, n]
    context_mask = np.arange(7)[None] < np.array([[7], [3]]) if padded and separate else None
    y = layer(x, context=context, mask=mask, context_mask=context_mask, training=False)
    return keras.ops.convert_to_numpy(y)


if __name__ == "__main__":
    np.savez(sys.argv[1], **{name: output(name) for name in CASES})
    print(keras.backend.backend())
