"""lambda_keras.utils: the shared helpers tested here are those no caller's test pins down.

`dtype_policy` sets Keras' global policy for a block (layers built in it compute in it) and
restores the previous one after, also when the block raises (callers: `train`, the CLI's
`autotune`, the mixed-precision tests)."""

import keras
import pytest

from lambda_keras import utils


def test_dtype_policy_applies_inside_and_is_restored_even_after_an_error():
    before = keras.config.dtype_policy().name
    with utils.dtype_policy("mixed_bfloat16"):
        layer = keras.layers.Dense(2)
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert (layer.compute_dtype, layer.variable_dtype) == ("bfloat16", "float32")
    assert keras.config.dtype_policy().name == before
    with pytest.raises(RuntimeError, match="inside"):
        with utils.dtype_policy("mixed_float16"):
            raise RuntimeError("inside")
    assert keras.config.dtype_policy().name == before
