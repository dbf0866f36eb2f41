"""Building blocks of LambdaResNets: stems, the bottleneck block (3x3 conv or lambda layer),
squeeze-excitation and stochastic depth, all as functional Keras code with hierarchical names.

- Stems: "classic" (7x7/2 conv + 3x3/2 max pool, He et al. 2016: the plain ResNet-50 of the paper's
  Table 3), "resnet_d" (ResNet-RS: 3x3 convs 32-32-64, the first of stride 2, then a stride-2 3x3
  conv in place of the max pool) and "tiered" (timm: 3x3 convs 24-32-64 + 3x3/2 max pool).
- Bottleneck: 1x1 -> (3x3 conv | lambda layer -> BN -> act) -> 1x1 -> BN (gamma zero-initialised) ->
  squeeze-excitation -> stochastic depth -> + shortcut -> act. A strided lambda block downsamples
  with an average pool after the lambda layer (paper: 3x3/2 "after the lambda layers ... in place of
  the strided convolution"; timm: 2x2/2).
- Shortcut: "avg" (ResNet-D: 2x2/2 average pool, then 1x1 conv + BN) or "conv"
  (strided 1x1 conv + BN).
- Residual additions never broadcast (`ResidualAdd`): the two branches must have the same shape,
  checked when the model is built and on every call whose shapes are known.

Padding: stride-2 convolutions and the max pool use explicit symmetric padding (ZeroPadding2D /
edge padding) + "valid", as PyTorch does; TF's "same" pads asymmetrically and would shift ported
weights by a pixel. Every stride-2 step maps a side of n pixels to ceil(n / 2), so a model's c2..c5
maps are ceil(size / 4 ... 32) at every input size.
NOTE: the strided lambda block pools in "ceil mode": an average pool with "same" padding, which
averages the valid pixels of a partial window at the bottom/right edge (PyTorch's
AvgPool2d(ceil_mode=True, count_include_pad=False)). The lambda layer pools itself where its own
pool is that function (3x3/2; 2x2/2 on an even static map), else it runs at stride 1 and an
AveragePooling2D follows. On an even map this is exactly timm's 2x2/2 pool (timm parity at 256
holds); on an odd map timm's "valid" 2x2 pool floors the size while its strided 1x1 shortcut ceils
it, and timm itself fails (e.g. lambda_resnet26t at 100, 200 or 240 px) or, with a 1-pixel result,
broadcasts. Our choice keeps both branches at ceil(n / 2) and uses every pixel. The paper's 3x3/2
pool has no stated padding; "same" is what TF's ResNet-RS pools use.
NOTE: squeeze-excitation follows ResNet-RS: after the last BN, reducing the block's output width by
se_ratio (0.25 -> the bottleneck width), ReLU, sigmoid. Whether lambda blocks have it is the
builder's `se_in_lambda_blocks` (architectures.py).
NOTE: convolutions are initialised with Keras' "he_normal" (truncated normal, stddev
sqrt(2 / fan_in)); torchvision and timm ResNets use Kaiming normal with fan_out. This only changes
the initial values, never loaded weights.
NOTE: stochastic depth scales with depth per stage, rate * (stage + 2) / 5 as in ResNet-RS.
"""

import keras
from keras import ops

from lambda_keras.layers import LambdaLayer

BN_MOMENTUM = 0.9  # NOTE: ResNet-RS / timm; the paper does not give BN settings.
BN_EPSILON = 1e-5
CONV_INITIALIZER = "he_normal"


@keras.saving.register_keras_serializable(package="lambda_keras")
class StochasticDepth(keras.layers.Layer):
    """Drops the residual branch per example with probability `rate` in training (Huang 2016)."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"`rate` must be in [0, 1). Received: rate={rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        batch = ops.shape(inputs)[0]
        keep = 1.0 - self.rate
        mask = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator) < keep  # [b,1,1,1]
        return inputs * ops.cast(mask, inputs.dtype) / keep  # [b, H, W, C]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="lambda_keras")
class MaxPoolSymmetric(keras.layers.Layer):
    """3x3/2 max pool padded by one pixel on every side, as PyTorch's MaxPool2d(3, 2, 1).

    PyTorch pads with -inf; padding with a copy of the edge ("symmetric") gives the same maxima,
    since every window that touches the padding also holds that edge pixel, and keeps int8
    calibration finite (a -inf pad makes TFLite's int8 scales explode).
    """

    def call(self, inputs):
        # The edge rows, then columns, repeated by concatenation: a copy each, where TensorFlow's
        # symmetric pad kernel took 10 ms of a LambdaResNet-50's 0.5 s (batch 8, oneDNN off).
        rows = ops.concatenate([inputs[:, :1], inputs, inputs[:, -1:]], axis=1)  # [b, H+2, W, C]
        padded = ops.concatenate([rows[:, :, :1], rows, rows[:, :, -1:]], axis=2)  # [b,H+2,W+2,C]
        return ops.max_pool(padded, 3, strides=2, padding="valid")  # [b, ceil(H/2), ceil(W/2), C]

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else (h + 1) // 2, None if w is None else (w + 1) // 2, c)


@keras.saving.register_keras_serializable(package="lambda_keras")
class ResidualAdd(keras.layers.Add):
    """`Add` of a residual block's two branches that refuses to broadcast.

    Keras' `Add` broadcasts a size-1 axis: a 1x1 main branch would silently be added to every
    pixel of a 2x2 shortcut. This layer raises a ValueError naming both shapes instead, when the
    model is built and on every call whose shapes are known.

    Call arguments:
        inputs: [main branch, shortcut], tensors of the same shape [b, H, W, C].

    Returns:
        Their sum, [b, H, W, C].
    """

    def _check(self, shapes):
        shapes = [tuple(shape) for shape in shapes]
        main = shapes[0]
        for other in shapes[1:]:
            if len(other) != len(main) or any(
                    a is not None and b is not None and a != b
                    for a, b in zip(main[1:], other[1:])):
                raise ValueError(
                    f"Residual addition {self.name!r} would broadcast: the main branch has shape "
                    f"{main} and the shortcut {other} (batch axis first). Both branches of a "
                    "block must downsample to the same size.")

    def build(self, input_shape):
        self._check(input_shape)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        return super().compute_output_shape(input_shape)

    def call(self, inputs):
        self._check([x.shape for x in inputs])
        return super().call(inputs)


def batch_norm(x, name, zero_gamma=False):
    return keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name,
        gamma_initializer="zeros" if zero_gamma else "ones")(x)


def conv_bn(x, filters, kernel_size, name, strides=1, activation=None, zero_gamma=False):
    """Conv (no bias) -> BN -> optional activation; stride 2 pads symmetrically like PyTorch."""
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False,
                            kernel_initializer=CONV_INITIALIZER, name=name)(x)
    x = batch_norm(x, f"{name}_bn", zero_gamma=zero_gamma)
    if activation:
        x = keras.layers.Activation(activation, name=f"{name}_act")(x)
    return x


STEMS = {
    # name: (conv widths as fractions of stem_width, kernel size of the first (stride-2)
    #        conv, ending: "maxpool" 3x3/2 or a stride-2 3x3 "conv")
    "classic": ((1.0,), 7, "maxpool"),
    "resnet_d": ((0.5, 0.5, 1.0), 3, "conv"),
    "tiered": ((3 / 8, 0.5, 1.0), 3, "maxpool"),
}


def stem(x, kind, width, activation):
    """Stride-4 stem: [b, H, W, 3] -> [b, H/4, W/4, width]."""
    fractions, kernel_size, ending = STEMS[kind]
    for i, fraction in enumerate(fractions):
        x = conv_bn(x, int(width * fraction), kernel_size, f"stem_conv{i + 1}",
                    strides=2 if i == 0 else 1, activation=activation)
    if ending == "maxpool":
        return MaxPoolSymmetric(name="stem_pool")(x)
    # ResNet-RS replaces the max pool by a stride-2 3x3 conv.
    return conv_bn(x, width, 3, f"stem_conv{len(fractions) + 1}", strides=2, activation=activation)


def squeeze_excite(x, ratio, name):
    """Channel attention (Hu et al. 2018): [b, H, W, C] -> same, C reduced to C * ratio inside."""
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)  # [b,1,1,C]
    s = keras.layers.Conv2D(max(1, int(channels * ratio)), 1, activation="relu",
                            kernel_initializer=CONV_INITIALIZER, name=f"{name}_reduce")(s)
    s = keras.layers.Conv2D(channels, 1, activation="sigmoid",
                            kernel_initializer=CONV_INITIALIZER, name=f"{name}_expand")(s)
    return keras.layers.Multiply(name=f"{name}_excite")([x, s])  # [b, H, W, C]


def shortcut(x, filters, strides, kind, name):
    if strides == 1 and x.shape[-1] == filters:
        return x
    if kind == "avg" and strides > 1:
        x = keras.layers.AveragePooling2D(2, strides, padding="same", name=f"{name}_pool")(x)
        strides = 1
    x = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                            kernel_initializer=CONV_INITIALIZER, name=f"{name}_conv")(x)
    return batch_norm(x, f"{name}_bn")


def bottleneck(x, width, strides, name, *, use_lambda, lambda_kwargs, activation, shortcut_kind,
               se_ratio, drop_path_rate):
    """Bottleneck block: [b, H, W, C] -> [b, H/strides, W/strides, 4 * width]."""
    filters = 4 * width
    residual = shortcut(x, filters, strides, shortcut_kind, f"{name}_shortcut")
    y = conv_bn(x, width, 1, f"{name}_conv1", activation=activation)
    if use_lambda:
        pool_size = lambda_kwargs["pool_size"]
        # Ceil mode (module NOTE). The layer pools itself where its pool is that same function:
        # 3x3/2 ("same", TF's valid-pixel means on every backend) and 2x2/2 on an even static map
        # ("valid"); pooling inside, it forms the position term at the pooled positions only.
        inside = strides > 1 and (pool_size == 3 or all(
            size is not None and size % 2 == 0 for size in y.shape[1:3]))
        y = LambdaLayer(strides=strides if inside else 1, name=f"{name}_lambda",
                        **lambda_kwargs)(y)  # [b, H', W', width]
        if strides > 1 and not inside:  # [b, ceil(H/2), ceil(W/2), width]
            y = keras.layers.AveragePooling2D(pool_size, strides, padding="same",
                                              name=f"{name}_lambda_pool")(y)
        y = batch_norm(y, f"{name}_lambda_bn")
        y = keras.layers.Activation(activation, name=f"{name}_lambda_act")(y)
    else:
        y = conv_bn(y, width, 3, f"{name}_conv2", strides=strides, activation=activation)
    y = conv_bn(y, filters, 1, f"{name}_conv3", zero_gamma=True)
    if se_ratio:
        y = squeeze_excite(y, se_ratio, f"{name}_se")
    if drop_path_rate:
        y = StochasticDepth(drop_path_rate, name=f"{name}_drop_path")(y)
    y = ResidualAdd(name=f"{name}_add")([y, residual])  # [b, H', W', 4 * width]
    return keras.layers.Activation(activation, name=f"{name}_out")(y)
