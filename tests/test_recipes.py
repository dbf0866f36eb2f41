"""Tests for lambda_keras.training's recipes: the paper's hyper-parameters and schedule, and the
optimizer they make.

Independent expectations: the closed-form warm-up + cosine schedule; the ResNet-RS update
(tf.compat.v1 Nesterov momentum with coupled L2) written in NumPy; the ResNet-RS configs' values.
"""

import re

import numpy as np
import pytest
import keras
import tensorflow as tf

from helpers import tiny_lambda_net
from lambda_keras import training


def test_paper_recipe_values_and_schedule():
    recipe = training.get_recipe("paper-imagenet")
    # ResNet-RS configs: lr 0.1 x 4096 / 256 = 1.6; 5 warm-up epochs then cosine, 350 epochs.
    assert training.peak_learning_rate(recipe) == pytest.approx(1.6)
    assert (recipe.epochs, recipe.batch_size, recipe.weight_decay) == (350, 4096, 4e-5)
    assert (recipe.label_smoothing, recipe.ema_momentum) == (0.1, 0.9999)
    assert (recipe.augment, recipe.randaugment_layers, recipe.randaugment_magnitude) == (
        "randaugment", 2, 15)
    assert recipe.precision == "auto"
    steps, warmup = 1000, 50
    schedule = training.learning_rate_schedule(recipe, steps, warmup)
    for step in (0, 10, 25, 50, 300, 700, 1000):
        if step < warmup:
            expected = 1.6 * step / warmup
        else:
            expected = 1.6 * 0.5 * (1 + np.cos(np.pi * (step - warmup) / (steps - warmup)))
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-5), step
    optimizer = training.make_optimizer(recipe, steps, warmup)
    assert isinstance(optimizer, training.MomentumL2)
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.nesterov and optimizer.momentum == 0.9 and optimizer.l2 == 4e-5
    assert optimizer.weight_decay is None  # no decoupled decay on top
    assert optimizer.use_ema and optimizer.ema_momentum == 0.9999
    # L2 on every non-BN weight (the reference skips only batch-norm variables), biases included.
    model = tiny_lambda_net((32, 32, 3), 10)
    optimizer.build(model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if optimizer.l2_applies(v)}
    assert {"conv1/kernel", "predictions/kernel", "predictions/bias"} <= decayed
    assert not {p for p in decayed if p.endswith(("/gamma", "/beta"))}
    assert "lambda/query_kernel" in decayed  # the lambda layer's own BN scale/offset excluded
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, training.MomentumL2) and restored.l2 == 4e-5


def test_momentum_l2_refuses_a_str_l2_exclude():
    # A str would be split into its letters ("g", "a", "m", ...) and exclude nothing meant.
    with pytest.raises(TypeError, match=r"`l2_exclude` must be a list or tuple of variable names"
                                        r".*Received: l2_exclude='gamma'"):
        training.MomentumL2(0.1, l2=4e-5, l2_exclude="gamma")
    with pytest.raises(TypeError, match="Received: l2_exclude=None"):
        training.MomentumL2(0.1, l2=4e-5, l2_exclude=None)
    assert training.MomentumL2(0.1, l2_exclude=["gamma"]).l2_exclude == ("gamma",)


def _reference_momentum_l2(weights, grads_per_step, lrs, *, l2, momentum, decayed):
    """NumPy: tf.compat.v1 MomentumOptimizer(use_nesterov=True) on loss + l2 * sum(w^2) / 2 over
    the `decayed` weights (ResNet-RS: every non-BN variable). Returns the weights after each
    step."""
    weights = {k: v.astype("float64") for k, v in weights.items()}
    accum = {k: np.zeros_like(v) for k, v in weights.items()}
    history = []
    for grads, lr in zip(grads_per_step, lrs):
        for k in weights:
            g = grads[k] + (l2 * weights[k] if k in decayed else 0.0)
            accum[k] = momentum * accum[k] + g
            weights[k] = weights[k] - lr * (g + momentum * accum[k])
        history.append({k: v.copy() for k, v in weights.items()})
    return history


def _small_model():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, name="dense")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.ReLU()(x))
    return keras.Model(inputs, outputs)


def _run_steps(model, optimizer, steps, x, y, zero_grads=False):
    """Applies `steps` optimizer steps; returns (gradients used, weights after each step)."""
    variables = model.trainable_variables
    grads_used, weights_after = [], []
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))  # cross-entropy only: no L2 in the loss
        grads = tape.gradient(loss, variables)
        if zero_grads:
            grads = [tf.zeros_like(g) for g in grads]
        grads_used.append({v.path: g.numpy().astype("float64") for v, g in zip(variables, grads)})
        optimizer.apply(grads, variables)
        weights_after.append({v.path: v.numpy() for v in variables})
    return grads_used, weights_after


def test_sgd_recipe_update_equals_numpy_nesterov_with_coupled_l2():
    """The paper recipe's optimizer, step by step, against the ResNet-RS update in NumPy, under
    a changing learning rate (warm-up then cosine), BN scale/offset without decay."""
    keras.utils.set_random_seed(0)
    model = _small_model()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6)).astype("float32"), rng.integers(0, 3, 16)
    l2 = 0.05  # large, so that a missing or decoupled decay shows far above round-off
    recipe = training.get_recipe("paper-imagenet", weight_decay=l2, ema_momentum=None,
                                 batch_size=256)  # peak LR 0.1
    steps, warmup = 8, 3
    optimizer = training.make_optimizer(recipe, steps, warmup)
    schedule = training.learning_rate_schedule(recipe, steps, warmup)
    start = {v.path: v.numpy() for v in model.trainable_variables}
    grads, after = _run_steps(model, optimizer, steps, x, y)
    decayed = {"dense/kernel", "dense/bias", "head/kernel", "head/bias"}
    assert set(start) == decayed | {"bn/gamma", "bn/beta"}
    reference = _reference_momentum_l2(start, grads, [float(schedule(t)) for t in range(steps)],
                                       l2=l2, momentum=0.9, decayed=decayed)
    for step, (ours, ref) in enumerate(zip(after, reference)):
        for key in ours:
            np.testing.assert_allclose(ours[key], ref[key], rtol=1e-5, atol=1e-6,
                                       err_msg=f"step {step} {key}")
    # The same run with decoupled decay (Keras' weight_decay) differs by far more than that.
    keras.utils.set_random_seed(0)
    other = _small_model()
    decoupled = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=l2)
    decoupled.exclude_from_weight_decay(var_names=["gamma", "beta"])
    _, after_decoupled = _run_steps(other, decoupled, steps, x, y)
    gap = max(np.abs(after_decoupled[-1][k] - reference[-1][k]).max() for k in decayed)
    assert gap > 1e-3


def test_keras_sgd_nesterov_equals_tf1_form_only_at_constant_learning_rate():
    """NOTE in optimizer.py: Keras' velocity form keeps each step's LR inside the velocity."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 6)).astype("float32"), rng.integers(0, 3, 16)
    gaps = {}
    for name, lr in (("constant", 0.1),
                     ("warm-up", keras.optimizers.schedules.CosineDecay(
                         0.0, 10, warmup_target=0.5, warmup_steps=6))):
        results = []
        for make in (lambda: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
                     lambda: training.MomentumL2(lr, momentum=0.9, nesterov=True, l2=0.0)):
            keras.utils.set_random_seed(0)
            model = _small_model()
            results.append(_run_steps(model, make(), 6, x, y)[1][-1])
        gaps[name] = max(np.abs(results[0][k] - results[1][k]).max() for k in results[0])
    print("Keras SGD vs TF1 momentum, max weight difference after 6 steps:", gaps)
    assert gaps["constant"] < 1e-5
    assert gaps["warm-up"] > 100 * max(gaps["constant"], 1e-7)


def test_coupled_decay_shrinks_weights_ten_times_more_than_decoupled():
    """With no data gradient, a weight shrinks by lr * wd / (1 - momentum) per step at steady
    state through Nesterov momentum 0.9, against lr * wd for decoupled decay: 10x."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(4, 6)).astype("float32"), rng.integers(0, 3, 4)
    lr, wd, steps = 0.1, 4e-5, 200
    shrink = {}
    for name, optimizer in (
            ("coupled", training.MomentumL2(lr, momentum=0.9, nesterov=True, l2=wd)),
            ("decoupled", keras.optimizers.SGD(lr, momentum=0.9, nesterov=True,
                                               weight_decay=wd))):
        keras.utils.set_random_seed(0)
        model = _small_model()
        _, after = _run_steps(model, optimizer, steps, x, y, zero_grads=True)
        w0, w1 = after[-2]["head/kernel"], after[-1]["head/kernel"]
        shrink[name] = float(np.median((w0 - w1) / w0))  # relative shrink of the last step
    print("per-step relative shrink:", shrink, "ratio", shrink["coupled"] / shrink["decoupled"])
    assert shrink["decoupled"] == pytest.approx(lr * wd, rel=0.02)
    assert shrink["coupled"] == pytest.approx(lr * wd / (1 - 0.9), rel=0.02)


# tensorflow/tpu models/official/resnet/resnet_rs/configs/*.yaml, transcribed: (depth, image_size)
# -> (randaug_magnitude, dropout_rate, drop_connect_rate); every config also has
# randaug_num_layers 2, base_learning_rate 0.1, train_batch_size 4096, train_steps 109475,
# num_train_images 1281167, weight_decay 4.0e-05, momentum 0.9, label_smoothing 0.1,
# moving_average_decay 0.9999.
RESNET_RS_CONFIGS = {
    "resnetrs50_i160": (10, 0.25, None), "resnetrs101_i160": (10, 0.25, None),
    "resnetrs101_i192": (15, 0.25, None), "resnetrs152_i192": (15, 0.25, None),
    "resnetrs152_i224": (15, 0.25, None), "resnetrs152_i256": (15, 0.25, None),
    "resnetrs200_i256": (15, 0.25, 0.1), "resnetrs270_i256": (15, 0.25, 0.1),
    "resnetrs350_i256": (15, 0.25, 0.1), "resnetrs350_i320": (15, 0.4, 0.1),
    "resnetrs420_i320": (15, 0.4, 0.1),
}


def test_paper_rows_follow_the_resnet_rs_configs_and_are_listed():
    rows = {n: r for n, r in training.RECIPES.items() if n.startswith("paper-") and r.depth
            and n != "paper-ablation-90"}
    assert len(rows) == len(RESNET_RS_CONFIGS)
    for config, (magnitude, dropout, drop_connect) in RESNET_RS_CONFIGS.items():
        depth, size = (int(p) for p in config[len("resnetrs"):].split("_i"))
        recipe = training.paper_recipe(depth, size)
        assert (recipe.depth, recipe.image_size) == (depth, size)
        assert recipe.randaugment_magnitude == magnitude and recipe.randaugment_layers == 2
        assert (recipe.drop_rate, recipe.drop_path_rate) == (dropout, drop_connect or 0.0)
        assert recipe.epochs == round(109475 * 4096 / 1281167)  # 350.0 epochs
        assert training.peak_learning_rate(recipe) == pytest.approx(0.1 * 4096 / 256)
        assert (recipe.weight_decay, recipe.momentum, recipe.optimizer) == (4e-5, 0.9, "sgd")
        assert (recipe.label_smoothing, recipe.ema_momentum) == (0.1, 0.9999)
    ablation = training.get_recipe("paper-ablation-90")  # PAPER.md section 4 (recalled)
    assert (ablation.epochs, ablation.weight_decay, ablation.augment) == (90, 1e-4, "imagenet")
    table = training.describe_recipes()
    for name in training.RECIPES:
        assert re.search(rf"^{re.escape(name)}\s", table, re.M), name
    assert re.search(r"^paper-350-320\s+350\s+4096\s+sgd\s+1.6\s+L2 4e-05\s+2 x 15\s+0.4\s+0.1"
                     r"\s+320\s+0.9999$", table, re.M)
    with pytest.raises(ValueError, match=r"No ResNet-RS row.*Received: depth=350, image_size=288"):
        training.paper_recipe(350, 288)


def test_recipe_overrides_and_errors():
    recipe = training.get_recipe("finetune", epochs=3, freeze_batch_norm=True, learning_rate=0.01)
    assert (recipe.epochs, recipe.freeze_batch_norm) == (3, True)
    assert training.peak_learning_rate(recipe) == 0.01  # given: not scaled
    assert isinstance(training.make_optimizer(recipe, 10), keras.optimizers.AdamW)
    with pytest.raises(ValueError, match=r"Unknown recipe; valid: \['finetune', 'paper-101-160', "
                                         r".*'scratch'\]. Received: recipe='x'"):
        training.get_recipe("x")
    with pytest.raises(ValueError, match=r"Unknown recipe field\(s\) \['epoch'\]; valid "
                                         r"fields: \['epochs', .*Received: epoch=3"):
        training.get_recipe("finetune", epoch=3)
    with pytest.raises(ValueError, match=r"`epochs` must be an int >= 1. Received: epochs=0"):
        training.get_recipe("finetune", epochs=0)
    with pytest.raises(ValueError, match=r"`optimizer` must be one of \('sgd', 'adamw'\). "
                                         r"Received: optimizer='lamb'"):
        training.get_recipe("finetune", optimizer="lamb")
    with pytest.raises(ValueError, match=r"`freeze_backbone_epochs` must be smaller than "
                                         r"`epochs` \(2\). Received: freeze_backbone_epochs=2"):
        training.get_recipe("finetune", epochs=2, freeze_backbone_epochs=2)
    with pytest.raises(ValueError, match=r"`precision` must be one of"):
        training.get_recipe("scratch", precision="fp8")
    # The command line's --set FIELD=VALUE form.
    assert training.parse_recipe_overrides(
        ["epochs=3", "ema_momentum=None", "freeze_batch_norm=true", "augment=randaugment",
         "learning_rate=1e-3"]) == {"epochs": 3, "ema_momentum": None, "freeze_batch_norm": True,
                                    "augment": "randaugment", "learning_rate": 1e-3}
    with pytest.raises(ValueError, match=r"must look like field=value. Received: 'epochs'"):
        training.parse_recipe_overrides(["epochs"])
