"""Shared pytest setup: quiet TensorFlow logs, no stored autotune picks, seeds, the weights tests'
timm checkpoint, the training and CLI tests' recording fakes of the TPU API (`fake_tpu`), the CLI
tests' tiny .keras model (`tiny_model_path`)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# "auto" follows the rule in every test (and subprocess): no picks a developer stored with
# lambda_keras.autotune are read; tests/test_autotuning.py points the layers at its own files.
_AUTOTUNE_DIR = tempfile.mkdtemp(prefix="lk-autotune-")
atexit.register(shutil.rmtree, _AUTOTUNE_DIR, ignore_errors=True)
os.environ["LAMBDA_KERAS_AUTOTUNE_CACHE"] = os.path.join(_AUTOTUNE_DIR, "autotune.json")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_policy():
    import keras

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_dtype_policy("float32")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


# The TPU API of tests/test_training.py, tests/test_training_distributed.py and
# tests/test_cli_errors.py (no TPU here).
class _Recorder:
    def __init__(self):
        self.calls = []


@pytest.fixture
def fake_tpu(monkeypatch):
    """The TPU API replaced by recording fakes; `TPUStrategy` is a class of that name."""
    import tensorflow as tf

    calls = _Recorder().calls

    class TPUStrategy:
        def __init__(self, resolver):
            calls.append(("TPUStrategy", resolver))
            self.num_replicas_in_sync = 8

    class TPUClusterResolver:
        def __init__(self, tpu=None):
            calls.append(("TPUClusterResolver", tpu))
            if tpu is None:  # what "auto" meets on a machine without a TPU
                raise ValueError("Please provide a TPU Name to connect to.")

    monkeypatch.setattr(tf.distribute, "TPUStrategy", TPUStrategy)
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", TPUClusterResolver)
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster",
                        lambda r: calls.append(("connect", r)))
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system",
                        lambda r: calls.append(("initialize", r)))
    monkeypatch.delenv("TF_CONFIG", raising=False)
    return calls


# The small timm checkpoint of the weights tests (tests/timm_checkpoints.py). Each module that
# uses these defines `timm_reference` (which timm checkpoints its subprocess makes).
@pytest.fixture(scope="module")
def timm_state(timm_reference):
    """A timm lambda_resnet26t state dict with 10 classes and random BN tensors (NumPy)."""
    from timm_checkpoints import randomised_state

    return randomised_state(timm_reference[0])


@pytest.fixture(scope="module")
def checkpoint(timm_state, tmp_path_factory):
    """`timm_state` saved as a safetensors file; returns its path."""
    from timm_checkpoints import save_state

    return save_state(timm_state, tmp_path_factory.mktemp("ckpt") / "model.safetensors")


@pytest.fixture(scope="module")
def loaded(checkpoint):
    """Weights of the small model loaded from `checkpoint` (the reference for other tests)."""
    from helpers import weights_by_path
    from timm_checkpoints import small_26t

    return weights_by_path(small_26t(weights=checkpoint))


# The tiny .keras model of the CLI tests (tests/test_cli.py, tests/test_cli_errors.py; saved by
# tests/cli_helpers.py), one per module.
@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    """Over the 1000 ImageNet classes, so that predict decodes ImageNet labels."""
    from cli_helpers import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("cli") / "tiny.keras", 1000)
