"""Learning-rate schedule and optimizers of a recipe.

- `peak_learning_rate(recipe)`: `base_learning_rate * batch_size / 256` (or `learning_rate`).
- `learning_rate_schedule`: linear warm-up from 0, then cosine decay to 0 (or constant).
- `make_optimizer`: SGD recipes get `MomentumL2`, the ResNet-RS update; AdamW recipes Keras' AdamW.

`MomentumL2` computes what the ResNet-RS code computes (tensorflow/tpu
models/official/resnet/resnet_main.py, read): the loss gets `weight_decay * sum(tf.nn.l2_loss(w))`
over every trainable variable that is not a batch-norm variable (l2_loss(w) = sum(w^2) / 2, so the
gradient gains `weight_decay * w`), and `tf.compat.v1.train.MomentumOptimizer(momentum,
use_nesterov=True)` applies it:

    accum = momentum * accum + g
    w    -= lr * (g + momentum * accum)        # Nesterov; plain momentum: w -= lr * accum

The decay passes through the momentum: at momentum 0.9 the steady-state shrink per step is
lr * wd * w / (1 - 0.9), ten times Keras' decoupled `weight_decay` (w -= lr * wd * w).

NOTE: Keras' SGD keeps a velocity with the learning rate inside it (v = m v - lr g;
w += m v - lr g). That equals the update above while the learning rate is constant and differs
when it changes (warm-up, cosine): past gradients keep the learning rate of their step instead of
the current one (tests/test_recipes.py measures both). `MomentumL2` keeps TF1's form, so its
steps equal the reference's under any schedule.
NOTE: the L2 term is added to the gradients inside the optimizer, after they are summed over
replicas and unscaled (mixed precision), rather than to the loss; the gradient is the same and the
logged loss stays the cross-entropy (the reference's `loss` summary includes the L2 term).
"""

import keras
from keras import ops

REFERENCE_BATCH = 256  # learning rates are given for this global batch and scaled linearly
# Variables without weight decay: batch-norm scale/offset (Keras names them gamma and beta), and for
# AdamW also biases.
L2_EXCLUDE = ("gamma", "beta")
WEIGHT_DECAY_EXCLUDE = ("gamma", "beta", "bias")


def peak_learning_rate(recipe):
    """The recipe's peak learning rate at its global batch size.

    Args:
        recipe: a `Recipe`.

    Returns:
        `recipe.learning_rate` when set, else `base_learning_rate * batch_size / 256`
        (`REFERENCE_BATCH`), a float.

    Example:

    >>> peak_learning_rate(get_recipe("paper-imagenet"))  # 0.1 per 256, batch 4096
    1.6
    """
    if recipe.learning_rate is not None:
        return recipe.learning_rate
    return recipe.base_learning_rate * recipe.batch_size / REFERENCE_BATCH


def learning_rate_schedule(recipe, total_steps, warmup_steps):
    """Linear warm-up from 0 over `warmup_steps`, then cosine decay to 0 (or constant).

    The peak is `peak_learning_rate(recipe)`; `recipe.schedule` chooses the decay.

    Args:
        recipe: a `Recipe`.
        total_steps: optimizer steps of the whole run, warm-up included.
        warmup_steps: steps of the linear warm-up (0: none).

    Returns:
        The peak learning rate (a float) for a "constant" schedule without warm-up, else a
        `keras.optimizers.schedules.CosineDecay` (with alpha 1, constant after the warm-up).

    Example:

    >>> schedule = learning_rate_schedule(get_recipe("finetune"), total_steps=100,
    ...                                   warmup_steps=10)  # peak 5e-4 * 64 / 256
    >>> [round(float(schedule(step)), 6) for step in (0, 5, 10, 100)]
    [0.0, 6.3e-05, 0.000125, 0.0]
    """
    peak = peak_learning_rate(recipe)
    if recipe.schedule == "constant" and not warmup_steps:
        return peak
    decay_steps = max(total_steps - warmup_steps, 1)
    alpha = 1.0 if recipe.schedule == "constant" else 0.0  # alpha = 1: no decay
    if not warmup_steps:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps, alpha=alpha, warmup_target=peak, warmup_steps=warmup_steps)


def _excluded(variable, names):
    """Whether the variable's last name component is one of `names` (e.g. "conv1_bn/gamma")."""
    path = getattr(variable, "path", None) or variable.name
    return path.split(":")[0].rsplit("/", 1)[-1] in names


@keras.saving.register_keras_serializable(package="lambda_keras")
class MomentumL2(keras.optimizers.SGD):
    """Momentum SGD as `tf.compat.v1.train.MomentumOptimizer` computes it, with coupled L2 decay.

    Per variable w with gradient g (summed over replicas) and learning rate lr:

        g     = g + l2 * w                      # unless w is excluded (BN gamma/beta)
        accum = momentum * accum + g
        w    -= lr * (g + momentum * accum)     # nesterov=True
        w    -= lr * accum                      # nesterov=False

    which is the update of the ResNet-RS code: `l2 * sum(w^2) / 2` added to the loss and TF1's
    Nesterov momentum (module docstring).

    Args:
        learning_rate: a float or a `LearningRateSchedule`.
        momentum: float in [0, 1].
        nesterov: Nesterov momentum.
        l2: the L2 coefficient (`weight_decay` of ResNet-RS; 4e-5 there).
        l2_exclude: a list or tuple of variable names (the last path component) without decay;
            a single name is a one-element tuple (`("gamma",)`), not a str.
        name: the optimizer's name.
        **kwargs: Keras optimizer arguments (`use_ema`, `ema_momentum`, ...).

    Raises:
        TypeError: `l2_exclude` is not a list or tuple of str, or `momentum` or `l2` is not a
            number (None).
        ValueError: `momentum` is outside [0, 1] (Keras' SGD), `momentum` or `l2` is a string
            that is not a number, or Keras' own checks of `learning_rate` and `**kwargs` fail.

    Example:

    >>> opt = MomentumL2(learning_rate=0.1, momentum=0.9, l2=4e-5)
    >>> opt.l2, opt.nesterov, opt.l2_exclude
    (4e-05, True, ('gamma', 'beta'))
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, nesterov=True, l2=0.0,
                 l2_exclude=L2_EXCLUDE, name="momentum_l2", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=float(momentum), nesterov=nesterov,
                         name=name, **kwargs)
        self.l2 = float(l2)
        if isinstance(l2_exclude, str) or not isinstance(l2_exclude, (list, tuple)) or not all(
                isinstance(name, str) for name in l2_exclude):
            raise TypeError("`l2_exclude` must be a list or tuple of variable names such as "
                            f"('gamma', 'beta'). Received: l2_exclude={l2_exclude!r}")
        self.l2_exclude = tuple(l2_exclude)

    def l2_applies(self, variable):
        """Whether `variable` gets the L2 term."""
        return self.l2 > 0 and not _excluded(variable, self.l2_exclude)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._l2_mask = [self.l2_applies(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self._l2_mask[index]:
            gradient = ops.add(gradient, ops.multiply(ops.cast(self.l2, variable.dtype),
                                                      variable))  # g + l2 * w
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(learning_rate, gradient))
            return
        momentum = ops.cast(self.momentum, variable.dtype)
        accum = self.momentums[index]
        self.assign(accum, ops.add(ops.multiply(accum, momentum), gradient))  # m a + g
        if self.nesterov:
            step = ops.add(gradient, ops.multiply(momentum, accum))  # g + m a
        else:
            step = accum
        self.assign_sub(variable, ops.multiply(learning_rate, step))

    def get_config(self):
        return {**super().get_config(), "l2": self.l2, "l2_exclude": list(self.l2_exclude)}


def make_optimizer(recipe, total_steps, warmup_steps=0, use_ema=True):
    """The recipe's optimizer with its schedule.

    "sgd": `MomentumL2` (coupled L2 `recipe.weight_decay` on non-BN weights, through Nesterov
    momentum, as ResNet-RS). "adamw": Keras' AdamW with decoupled decay, BN gamma/beta and biases
    excluded.

    Args:
        recipe: a `Recipe` (its optimizer, momentum, Nesterov flag, weight decay, schedule and
            EMA momentum).
        total_steps: optimizer steps of the whole run (`learning_rate_schedule`).
        warmup_steps: steps of the linear warm-up (0: none).
        use_ema: keep an exponential moving average of the weights when the recipe has an
            `ema_momentum` (False: never).

    Returns:
        A `MomentumL2` ("sgd") or a `keras.optimizers.AdamW` ("adamw"), not yet built.

    Example:

    >>> optimizer = make_optimizer(get_recipe("paper-imagenet"), total_steps=1000,
    ...                            warmup_steps=50)
    >>> type(optimizer).__name__, optimizer.l2, optimizer.use_ema
    ('MomentumL2', 4e-05, True)
    """
    common = dict(
        learning_rate=learning_rate_schedule(recipe, total_steps, warmup_steps),
        use_ema=use_ema and recipe.ema_momentum is not None,
        ema_momentum=recipe.ema_momentum or 0.99,
    )
    if recipe.optimizer == "sgd":
        return MomentumL2(momentum=recipe.momentum, nesterov=recipe.nesterov,
                          l2=recipe.weight_decay, **common)
    optimizer = keras.optimizers.AdamW(beta_1=recipe.momentum,
                                       weight_decay=recipe.weight_decay, **common)
    if recipe.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(WEIGHT_DECAY_EXCLUDE))
    return optimizer
