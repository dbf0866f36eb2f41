"""lambda_keras: LambdaNetworks (Bello, ICLR 2021) for Keras 3 and TensorFlow."""

__version__ = "0.1.0"

from lambda_keras.layers import LambdaLayer  # noqa: E402

__all__ = ["LambdaLayer", "__version__"]
