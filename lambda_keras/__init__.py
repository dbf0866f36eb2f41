"""lambda_keras: LambdaNetworks (Bello, ICLR 2021) for Keras 3 and TensorFlow.

Public API: the `LambdaLayer`, the LambdaResNet builders (paper family 50..420 and timm-compatible
variants with ImageNet weights), preprocessing helpers, and the `export`, `data`, `training`
modules.
"""

__version__ = "0.1.0"

from lambda_keras import data, export, training  # noqa: E402
from lambda_keras.layers import LambdaLayer  # noqa: E402
from lambda_keras.models import (  # noqa: E402
    LambdaResNet26RPT256,
    LambdaResNet26T,
    LambdaResNet50,
    LambdaResNet50TS,
    LambdaResNet101,
    LambdaResNet152,
    LambdaResNet200,
    LambdaResNet270,
    LambdaResNet350,
    LambdaResNet420,
    build_lambda_resnet,
)
from lambda_keras.weights import (  # noqa: E402
    convert_timm,
    decode_predictions,
    preprocess_input,
    resolve_preprocessing,
)

__all__ = [
    "LambdaLayer",
    "LambdaResNet50",
    "LambdaResNet101",
    "LambdaResNet152",
    "LambdaResNet200",
    "LambdaResNet270",
    "LambdaResNet350",
    "LambdaResNet420",
    "LambdaResNet26T",
    "LambdaResNet50TS",
    "LambdaResNet26RPT256",
    "build_lambda_resnet",
    "convert_timm",
    "decode_predictions",
    "preprocess_input",
    "resolve_preprocessing",
    "__version__",
]
