"""Training at any scale: recipes as data, distribution strategies, resumable `fit`.

One concern per module:

| module | what it holds |
|---|---|
| `recipes.py` | `Recipe` rows (`RECIPES`: the ResNet-RS rows per (depth, size), the paper's as recalled; its 90-epoch ablation recipe, recalled; finetune, scratch), `get_recipe`, `describe_recipes`, `parse_recipe_overrides` |
| `optimizer.py` | learning-rate schedule; `MomentumL2`, the ResNet-RS update (coupled L2 through Nesterov momentum); `make_optimizer` |
| `strategy.py` | `resolve_strategy` (TPU, multi-worker, mirrored, default), precision and XLA for it |
| `keras_patches.py` | Keras 3 `fit` workarounds under tf.distribute, per model instance |
| `model_setup.py` | build or check the model, trainable parts, compile (loss, top-k metrics) |
| `callbacks.py` | atomic checkpoints (EMA weights), history JSON + plot, TensorBoard images, stop on NaN |
| `backup.py` | `ResumableBackup`: resume at the saved step, validated backups |
| `loop.py` | `train`: the steps of a run; `training_data`; `TrainResult` |
| `evaluation.py` | `evaluate`, `evaluate_dataset` |

`train(model, data_spec, recipe, output_dir=...)` builds the data (data.make_dataset), the model,
optimizer, loss and metrics inside `strategy.scope()`, and runs `Model.fit` with Keras progress
bars, TensorBoard (scalars, learning rate, an image summary of a training batch), best and last
`.keras` checkpoints written atomically, a `history.json` and a PNG of the curves, and a backup
every `backup_every` steps so that a killed run, restarted with the same call, resumes at the same
epoch and step and ends with the same weights.

Recipe notes (how each number is known: recipes.py):
- NOTE: the learning rate is `base_learning_rate * batch_size / 256` for every recipe (0.1 -> 1.6
  at 4096, as the ResNet-RS code computes it); AdamW uses the same linear rule.
- Weight decay: SGD recipes add the L2 gradient `wd * w` of every non-BN weight before Nesterov
  momentum, as the ResNet-RS code's `wd * sum(l2_loss(w))` loss term does (optimizer.py).
  AdamW recipes use AdamW's decoupled decay, BN scale/offset and biases excluded.
- NOTE: with EMA, validation and the best/last checkpoints use the EMA weights; the backup keeps
  the raw weights and the average (it is the optimizer's state), and `fit` ends with the EMA
  weights in the model (Keras' `finalize_variable_values`).
- RandAugment is tensorflow/tpu's (data/augment.py): its 16 ops, magnitude scale and
  two-sided geometric ops.
- Dropout and stochastic depth are the architecture's (architectures.py) unless a recipe or an
  override sets `drop_rate` / `drop_path_rate`.
- BN moving statistics are per replica in Keras 3 (plain BN); `sync_batch_norm=True` computes
  batch statistics over all replicas, which makes every replica and worker hold the same
  statistics and makes N replicas equal to one device with the whole batch.

Every name importable from the former `training.py` module is importable from this package.
"""

from lambda_keras.utils import TEMP_MARK
from lambda_keras.utils import atomic_write as atomic_save
from lambda_keras.utils import temp_path
from lambda_keras.training.recipes import (
    OPTIMIZERS, PRECISIONS, RECIPES, RESNET_RS_ROWS, SCHEDULES, Recipe, describe_recipes,
    get_recipe, paper_recipe, parse_recipe_overrides)
from lambda_keras.training.optimizer import (
    L2_EXCLUDE, REFERENCE_BATCH, WEIGHT_DECAY_EXCLUDE, MomentumL2, learning_rate_schedule,
    make_optimizer, peak_learning_rate)
from lambda_keras.training.strategy import (
    is_tpu_strategy, resolve_jit_compile, resolve_precision, resolve_strategy)
from lambda_keras.training.model_setup import CLASSIFIER, TOP_K, build_model
from lambda_keras.training.callbacks import (
    IMAGE_SUMMARY_MAX, AtomicModelCheckpoint, BatchImages, NonFiniteError, StopOnNonFinite,
    TrainingLog, plot_history)
from lambda_keras.training.backup import ResumableBackup
from lambda_keras.training.loop import TrainResult, train, training_data
from lambda_keras.training.evaluation import evaluate, evaluate_dataset

__all__ = [
    "AtomicModelCheckpoint", "BatchImages", "CLASSIFIER", "IMAGE_SUMMARY_MAX", "L2_EXCLUDE",
    "MomentumL2", "NonFiniteError", "OPTIMIZERS", "PRECISIONS", "RECIPES", "REFERENCE_BATCH",
    "RESNET_RS_ROWS", "Recipe", "ResumableBackup", "SCHEDULES", "StopOnNonFinite", "TEMP_MARK",
    "TOP_K", "TrainResult", "TrainingLog", "WEIGHT_DECAY_EXCLUDE", "atomic_save", "build_model",
    "describe_recipes", "evaluate", "evaluate_dataset", "get_recipe", "is_tpu_strategy",
    "learning_rate_schedule", "make_optimizer", "paper_recipe", "parse_recipe_overrides",
    "peak_learning_rate", "plot_history", "resolve_jit_compile", "resolve_precision",
    "resolve_strategy", "temp_path", "train", "training_data",
]
