"""lambda_keras: LambdaNetworks (Bello, ICLR 2021) for Keras 3 and TensorFlow.

Public API: the `LambdaLayer`, the LambdaResNet builders (paper family 50..420 and timm-compatible
variants with ImageNet weights), model names (`get_model`, `resolve_model`), preprocessing
helpers, and the `export`, `data`, `training` modules.

`import lambda_keras` is light: it imports neither Keras nor TensorFlow. Each public name loads
its submodule on first use (PEP 562 module `__getattr__`), so a program (or the `lambda-keras`
command) can configure TensorFlow (logging, oneDNN) after importing the package. The import does
one thing to the process: it asks TensorFlow for its pooling CPU allocator unless the user chose
(`TF_CPU_ALLOCATOR_USE_BFC`, read when TensorFlow's runtime starts; see lambda_keras/runtime.py:
without oneDNN the lambda layer runs 2x faster with it).
"""

import importlib

from lambda_keras import runtime as _runtime

__version__ = "0.1.0"

# public name -> submodule that defines it
_ATTRIBUTES = {
    "LambdaLayer": "layers",
    "SequenceLambdaLayer": "layers",
    "autotune": "layers",
    "LambdaResNet50": "models",
    "LambdaResNet101": "models",
    "LambdaResNet152": "models",
    "LambdaResNet200": "models",
    "LambdaResNet270": "models",
    "LambdaResNet350": "models",
    "LambdaResNet420": "models",
    "LambdaResNet26T": "models",
    "LambdaResNet50TS": "models",
    "LambdaResNet26RPT256": "models",
    "build_lambda_resnet": "models",
    "get_model": "models",
    "load_model": "models",
    "resolve_model": "models",
    "convert_timm": "weights",
    "decode_predictions": "weights",
    "preprocess_input": "weights",
    "resolve_preprocessing": "presets",
}
_SUBMODULES = ("architectures", "benchmark", "blocks", "cli", "data", "demo", "export", "layers",
               "models", "presets", "runtime", "training", "utils", "weights")

__all__ = [*_ATTRIBUTES, "data", "export", "training", "__version__"]


_runtime.prefer_pooled_allocator()


def __getattr__(name):
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(f"{__name__}.{_ATTRIBUTES[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_ATTRIBUTES) | set(_SUBMODULES))
