"""Training at any scale: distribution strategies, recipes as data, and the `fit` glue.

- `resolve_strategy(tpu=None, devices=None, cluster_resolver=None)`: `TPUStrategy` for `tpu=`
  (a TPU name or grpc:// address, "local" on a TPU VM, "auto" to probe `TPUClusterResolver`);
  `MultiWorkerMirroredStrategy` when `TF_CONFIG` names more than one worker; `MirroredStrategy`
  over several GPUs (or the given `devices`); else TF's default strategy.
- `RECIPES` (frozen `Recipe` rows): "paper-imagenet" (PAPER.md section 4, the ResNet-RS recipe),
  "finetune" (transfer learning) and "scratch" (small data from scratch, the offline demo);
  `get_recipe(name, **overrides)` overrides any field (`parse_recipe_overrides` reads
  "field=value" strings for the command line).
- `train(model, data_spec, recipe, output_dir=...)`: builds the data (data.make_dataset), the model,
  optimizer, loss and metrics inside `strategy.scope()`, and runs `Model.fit` with Keras progress
  bars, TensorBoard (scalars, learning rate, an image summary of a training batch), best and last
  `.keras` checkpoints written atomically, a `history.json` and a PNG of the curves, and a backup
  every `backup_every` steps so that a killed run, restarted with the same call, resumes at the
  same epoch and step and ends with the same weights.
- `evaluate(model, data_spec)`: loss, top-1 and top-5 accuracy.

Recipe notes (PAPER.md section 4 is UNCONFIRMED; so is what follows from it):
- NOTE: the learning rate is `base_learning_rate * batch_size / 256` for every recipe (0.1 -> 1.6
  at 4096 in the paper); AdamW uses the same linear rule.
- NOTE: weight decay is Keras' decoupled decay (`w -= lr * wd * w`), not the L2 loss term of the
  TF ResNet-RS code; BN scale/offset and biases are excluded.
- NOTE: with EMA, validation and the best/last checkpoints use the EMA weights; the backup keeps
  the raw weights and the average (it is the optimizer's state), and `fit` ends with the EMA
  weights in the model (Keras' `finalize_variable_values`).
- NOTE: RandAugment is Keras' (data.make_randaugment), not the TPU implementation.
- Dropout and stochastic depth are the architecture's (architectures.py) unless a recipe or an
  override sets `drop_rate` / `drop_path_rate`.

Fixes and workarounds, each marked NOTE: below:
- Keras' `BackupAndRestore` restores the epoch but not the step (a resumed run replays the whole
  epoch from mid-epoch weights), and writes its files in place. `ResumableBackup` records the
  step, skips the steps already done, and writes weights and metadata atomically.
- Keras 3 `fit` under `MultiWorkerMirroredStrategy` fails twice (keras-team/keras#20585,
  tensorflow/tensorflow#72388); `_symbolic_build_from_spec` and `_fix_multi_worker` patch the
  model instance, nothing global.
- Every new iterator of a tf.data dataset with `shuffle(reshuffle_each_iteration=True)` draws a
  new order, so an extra iterator (Keras' symbolic build under a strategy, a peek at a batch)
  would make the data order depend on the strategy and on resuming. Each `fit` gets a dataset
  object nothing else iterated first, which makes the stream a function of the seed and the
  global step. NOTE: RandAugment/MixUp/CutMix keep Keras seed-generator state across the
  pipeline, so with those a resumed run sees the same images but other augmentations.
- BN moving statistics are per replica in Keras 3 (plain BN); `sync_batch_norm=True` computes
  batch statistics over all replicas, which makes every replica and worker hold the same
  statistics and makes N replicas equal to one device with the whole batch.
"""

import ast
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import types

import numpy as np
import keras
import tensorflow as tf

from lambda_keras import data as data_lib
from lambda_keras import weights as weights_lib

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
CLASSIFIER = "predictions"  # the classifier layer of models.py
WEIGHT_DECAY_EXCLUDE = ("gamma", "beta", "bias")  # variable names without weight decay
TOP_K = 5
REFERENCE_BATCH = 256  # learning rates are given for this global batch and scaled linearly
TEMP_MARK = ".tmp-"  # half-written files carry this in their name until os.replace
IMAGE_SUMMARY_MAX = 16  # images of the first training batch shown in TensorBoard


# ---------------------------------------------------------------------------------- recipes
@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training recipe. Every field can be overridden: `get_recipe(name, field=value)`."""

    name: str
    description: str
    epochs: int
    batch_size: int  # global batch, over all replicas and workers
    optimizer: str  # "sgd" (momentum, Nesterov) or "adamw"
    base_learning_rate: float  # peak LR for a global batch of 256; scaled linearly
    learning_rate: float = None  # peak LR as given, not scaled (overrides the above)
    momentum: float = 0.9  # SGD momentum / AdamW beta_1
    nesterov: bool = True
    weight_decay: float = 0.0  # decoupled; BN gamma/beta and biases excluded
    schedule: str = "cosine"  # "cosine" (to zero at the end) or "constant", after the warm-up
    warmup_epochs: float = 0.0  # linear warm-up from zero
    label_smoothing: float = 0.1
    ema_momentum: float = None  # exponential moving average of the weights; None: off
    augment: str = "imagenet"  # data.AUGMENTS: "imagenet", "randaugment" or None
    randaugment_layers: int = 2
    randaugment_magnitude: int = 10  # on RandAugment's 0..30 scale
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    drop_rate: float = None  # classifier dropout; None: the architecture's
    drop_path_rate: float = None  # stochastic depth; None: the architecture's
    image_size: int = None  # None: the weights' or the architecture's size
    precision: str = "auto"  # PRECISIONS; "auto": mixed_bfloat16 on TPU, float32 elsewhere
    freeze_batch_norm: bool = False  # BN in inference mode with frozen statistics
    freeze_backbone_epochs: int = 0  # first train only the classifier for this many epochs
    sync_batch_norm: bool = False  # batch statistics over all replicas
    steps_per_execution: int = 1  # steps per compiled call (e.g. 32 on TPU)
    backup_every: int = 200  # steps between backups (also at every epoch end)

    def __post_init__(self):
        for name, check in _FIELD_CHECKS.items():
            value = getattr(self, name)
            if not check(value):
                raise ValueError(f"Recipe field `{name}` must be {_FIELD_RULES[name]}. "
                                 f"Received: {name}={value!r}")
        if self.freeze_backbone_epochs >= self.epochs:
            raise ValueError("`freeze_backbone_epochs` must be smaller than `epochs` "
                             f"({self.epochs}). Received: freeze_backbone_epochs="
                             f"{self.freeze_backbone_epochs}")
        if self.backup_every % self.steps_per_execution:
            raise ValueError("`backup_every` must be a multiple of `steps_per_execution` "
                             f"({self.steps_per_execution}). Received: backup_every="
                             f"{self.backup_every}")

    @property
    def summary(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _is_int(value, low):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value, low, high, closed_high=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return ok and low <= value and (value <= high if closed_high else value < high)


# field -> (check, rule in words)
_FIELD_SPECS = {
    "epochs": (lambda v: _is_int(v, 1), "an int >= 1"),
    "batch_size": (lambda v: _is_int(v, 1), "an int >= 1"),
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {OPTIMIZERS}"),
    "base_learning_rate": (lambda v: _is_number(v, 0, math.inf) and v > 0, "a number > 0"),
    "learning_rate": (lambda v: v is None or (_is_number(v, 0, math.inf) and v > 0),
                      "None or a number > 0"),
    "momentum": (lambda v: _is_number(v, 0, 1), "a number in [0, 1)"),
    "weight_decay": (lambda v: _is_number(v, 0, 1), "a number in [0, 1)"),
    "schedule": (lambda v: v in SCHEDULES, f"one of {SCHEDULES}"),
    "warmup_epochs": (lambda v: _is_number(v, 0, math.inf), "a number >= 0"),
    "label_smoothing": (lambda v: _is_number(v, 0, 1), "a number in [0, 1)"),
    "ema_momentum": (lambda v: v is None or (_is_number(v, 0, 1) and v > 0),
                     "None or a number in (0, 1)"),
    "augment": (lambda v: v in data_lib.AUGMENTS, f"one of {data_lib.AUGMENTS}"),
    "drop_rate": (lambda v: v is None or _is_number(v, 0, 1), "None or a number in [0, 1)"),
    "drop_path_rate": (lambda v: v is None or _is_number(v, 0, 1), "None or a number in [0, 1)"),
    "image_size": (lambda v: v is None or _is_int(v, 32), "None or an int >= 32"),
    "precision": (lambda v: v in PRECISIONS, f"one of {PRECISIONS}"),
    "freeze_backbone_epochs": (lambda v: _is_int(v, 0), "an int >= 0"),
    "steps_per_execution": (lambda v: _is_int(v, 1), "an int >= 1"),
    "backup_every": (lambda v: _is_int(v, 1), "an int >= 1"),
}
_FIELD_CHECKS = {name: spec[0] for name, spec in _FIELD_SPECS.items()}
_FIELD_RULES = {name: spec[1] for name, spec in _FIELD_SPECS.items()}

RECIPES = {r.name: r for r in (
    Recipe(
        name="paper-imagenet",
        description="PAPER.md section 4 (ResNet-RS recipe, UNCONFIRMED): 350 epochs at batch "
                    "4096, SGD Nesterov 0.9, LR 1.6 with 5 warm-up epochs then cosine, weight "
                    "decay 4e-5, label smoothing 0.1, EMA 0.9999, RandAugment 2 x 10",
        epochs=350, batch_size=4096, optimizer="sgd", base_learning_rate=0.1, weight_decay=4e-5,
        warmup_epochs=5, ema_momentum=0.9999, augment="randaugment", randaugment_layers=2,
        randaugment_magnitude=10, backup_every=1000),
    Recipe(
        name="finetune",
        description="transfer learning from pretrained weights: AdamW, LR 5e-4 per 256, one "
                    "warm-up epoch then cosine, 10 epochs, label smoothing 0.1; options "
                    "freeze_batch_norm and freeze_backbone_epochs",
        epochs=10, batch_size=64, optimizer="adamw", base_learning_rate=5e-4,
        weight_decay=0.05, warmup_epochs=1),
    Recipe(
        name="scratch",
        description="small data from scratch (the offline digits demo): AdamW, LR 4e-3 per 256, "
                    "one warm-up epoch then cosine, 15 epochs, no crop augmentation",
        epochs=15, batch_size=64, optimizer="adamw", base_learning_rate=4e-3,
        weight_decay=0.05, warmup_epochs=1, augment=None),
)}


def get_recipe(name="finetune", **overrides):
    """The recipe `name` of RECIPES (or a `Recipe`) with `overrides` applied to its fields."""
    if isinstance(name, Recipe):
        recipe = name
    elif name in RECIPES:
        recipe = RECIPES[name]
    else:
        raise ValueError(f"Unknown recipe; valid: {sorted(RECIPES)}. Received: recipe={name!r}")
    fields = [f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "description")]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"Unknown recipe field(s) {unknown}; valid fields: {fields}. "
                         f"Received: {', '.join(f'{k}={overrides[k]!r}' for k in unknown)}")
    return dataclasses.replace(recipe, **overrides)


def parse_recipe_overrides(pairs):
    """Command-line "field=value" strings -> {field: value}. Values are Python literals (3, 0.1,
    True, None, 'x'); "none", "true", "false" in any case, and other bare words, also work."""
    overrides = {}
    for pair in pairs:
        field, sep, text = pair.partition("=")
        if not sep or not field.strip():
            raise ValueError(f"A recipe override must look like field=value. Received: {pair!r}")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = {"none": None, "true": True, "false": False}.get(text.strip().lower(), text)
        overrides[field.strip()] = value
    return overrides


def peak_learning_rate(recipe):
    """The recipe's peak learning rate at its global batch size."""
    if recipe.learning_rate is not None:
        return recipe.learning_rate
    return recipe.base_learning_rate * recipe.batch_size / REFERENCE_BATCH


def learning_rate_schedule(recipe, total_steps, warmup_steps):
    """Linear warm-up from 0 over `warmup_steps`, then cosine decay to 0 (or constant)."""
    peak = peak_learning_rate(recipe)
    if recipe.schedule == "constant" and not warmup_steps:
        return peak
    decay_steps = max(total_steps - warmup_steps, 1)
    alpha = 1.0 if recipe.schedule == "constant" else 0.0  # alpha = 1: no decay
    if not warmup_steps:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps, alpha=alpha, warmup_target=peak, warmup_steps=warmup_steps)


def make_optimizer(recipe, total_steps, warmup_steps=0, use_ema=True):
    """The recipe's optimizer with its schedule; BN gamma/beta and biases skip weight decay."""
    common = dict(
        learning_rate=learning_rate_schedule(recipe, total_steps, warmup_steps),
        weight_decay=recipe.weight_decay or None,
        use_ema=use_ema and recipe.ema_momentum is not None,
        ema_momentum=recipe.ema_momentum or 0.99,
    )
    if recipe.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(momentum=recipe.momentum, nesterov=recipe.nesterov,
                                         **common)
    else:
        optimizer = keras.optimizers.AdamW(beta_1=recipe.momentum, **common)
    if recipe.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(WEIGHT_DECAY_EXCLUDE))
    return optimizer


# ------------------------------------------------------------------------------ strategies
def _tf_config_cluster():
    """The TF_CONFIG dict when it describes more than one worker, else None."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}). "
                         f"Received: TF_CONFIG={raw!r}") from None
    cluster = config.get("cluster", {}) if isinstance(config, dict) else {}
    tasks = len(cluster.get("worker", ())) + len(cluster.get("chief", ()))
    return config if tasks > 1 else None


def _tpu_resolver(tpu):
    if tpu == "local":
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
    # "auto": TPU_NAME / the GCE metadata server; otherwise a TPU name or grpc:// address.
    return tf.distribute.cluster_resolver.TPUClusterResolver(tpu=None if tpu == "auto" else tpu)


def _tpu_strategy(resolver, connect):
    if connect:
        tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def resolve_strategy(tpu=None, *, devices=None, cluster_resolver=None):
    """The `tf.distribute.Strategy` for this machine or cluster.

    Args:
        tpu: None (no TPU), "local" (the TPUs of a TPU VM), "auto" (use a TPU when
            `TPUClusterResolver` finds one, else go on) or a TPU name / "grpc://host:port".
        devices: explicit devices for a `MirroredStrategy` (e.g. ["/cpu:0", "/cpu:1"]).
        cluster_resolver: a ready TPU cluster resolver (used instead of building one).

    Order: TPU (`tpu` or `cluster_resolver`) -> `MultiWorkerMirroredStrategy` when TF_CONFIG has
    several workers -> `MirroredStrategy` over `devices` or over several GPUs -> the default
    strategy.
    """
    if tpu is not None and not isinstance(tpu, str):
        raise TypeError(f"`tpu` must be None, 'local', 'auto' or a TPU name/address string. "
                        f"Received: tpu={tpu!r}")
    if tpu is not None and not tpu:
        raise ValueError("`tpu` must not be empty. Received: tpu=''")
    if cluster_resolver is not None:
        return _tpu_strategy(cluster_resolver, connect=tpu != "local")
    if tpu is not None:
        try:
            resolver = _tpu_resolver(tpu)
        except (ValueError, RuntimeError) as error:
            if tpu != "auto":
                raise ValueError(f"No TPU found ({error}). Received: tpu={tpu!r}") from error
        else:
            return _tpu_strategy(resolver, connect=tpu != "local")
    if _tf_config_cluster() is not None:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices is not None:
        return tf.distribute.MirroredStrategy(list(devices))
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_tpu_strategy(strategy):
    return any(cls.__name__.startswith("TPUStrategy") for cls in type(strategy).__mro__)


def _strategy_name(strategy):
    if is_tpu_strategy(strategy):
        return "TPUStrategy"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"  # its class is CollectiveAllReduceStrategy
    return type(strategy).__name__.lstrip("_")  # "DefaultDistributionStrategy"


def _is_multi_worker(strategy):
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def _worker_index(strategy):
    """0 on the chief (the "chief" task, or worker 0 without one), else a positive index."""
    if not _is_multi_worker(strategy):
        return 0
    resolver = strategy.cluster_resolver
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return 0
    return resolver.task_id + (1 if has_chief else 0)


def resolve_precision(precision, strategy):
    """Keras dtype policy name: "auto" -> mixed_bfloat16 on TPU, float32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"`mixed_precision` must be one of {PRECISIONS}. "
                         f"Received: mixed_precision={precision!r}")
    if precision == "auto":
        return "mixed_bfloat16" if is_tpu_strategy(strategy) else "float32"
    return precision


def resolve_jit_compile(jit_compile, strategy):
    """`jit_compile` for `Model.compile`: True/False as given; "auto" as below.

    "auto" -> XLA on a single GPU only:
    - TPU: False here, because TPUStrategy compiles every step with XLA anyway;
    - CPU: False. Measured on the 2-core development machine (TF 2.21), LambdaResNet26T at 32 px,
      batch 32: 541 ms per training step and 26 s to the first step without XLA, 888 ms and
      63 s with it (the lambda convolution compiles poorly on CPU, PERF_NOTES.md);
    - several GPUs / workers: False, as Keras' own "auto" (XLA and tf.distribute collectives).
    """
    if jit_compile not in (True, False, "auto"):
        raise ValueError("`jit_compile` must be True, False or 'auto'. "
                         f"Received: jit_compile={jit_compile!r}")
    if jit_compile != "auto":
        return jit_compile
    if is_tpu_strategy(strategy) or strategy is not tf.distribute.get_strategy():
        return False
    return bool(tf.config.list_logical_devices("GPU"))


def _symbolic_build_from_spec(model, strategy, element_spec):
    """NOTE: under any tf.distribute strategy, Keras' `_maybe_symbolic_build` learns the data's
    shapes by pulling a batch from a new iterator of the training data. That decodes a batch,
    advances the shuffle (every new iterator of a dataset reshuffles it, so the data order would
    depend on the strategy and on whether the run is resumed), and fails across workers
    (`strategy.reduce` of a distributed batch, keras-team/keras#20585). Specs of the
    per-replica batch give `_symbolic_build` the same shapes without touching the data."""
    if getattr(model, "_distribute_strategy", None) is None:
        return  # default strategy: Keras builds while tracing, no extra iterator
    replicas = strategy.num_replicas_in_sync

    def per_replica(spec):
        batch = spec.shape[0]
        return tf.TensorSpec([max(batch // replicas, 1) if batch else 1] + spec.shape[1:],
                             spec.dtype)

    specs = tf.nest.map_structure(per_replica, element_spec)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        with strategy.scope():
            self._symbolic_build(data_batch=specs)

    model._maybe_symbolic_build = types.MethodType(maybe_symbolic_build, model)


def _fix_multi_worker(model, strategy):
    """NOTE: Keras 3 step logs under MultiWorkerMirroredStrategy are reduced with
    `strategy.reduce("MEAN", value, axis=0)`, which fails for scalars ("Invalid reduction
    dimension 0 for input with 0 dimensions", tensorflow/tensorflow#72388, keras-team/keras
    #20585); the steps return shape-[1] logs instead, whose axis-0 mean over all replicas is the
    scalar Keras expects. (The other multi-worker failure is `_symbolic_build_from_spec`'s.)"""
    if not _is_multi_worker(strategy):
        return

    def vector_logs(step):
        def wrapped(batch):
            return {k: tf.reshape(v, [1]) for k, v in step(batch).items()}
        return wrapped

    model.train_step = vector_logs(type(model).train_step.__get__(model))
    model.test_step = vector_logs(type(model).test_step.__get__(model))


# ------------------------------------------------------------------------------- callbacks
def temp_path(path):
    """A sibling of `path` for writing before `os.replace` (same suffix: Keras checks it)."""
    directory, name = os.path.split(path)
    stem, dot, rest = name.partition(".")
    return os.path.join(directory, f"{stem}{TEMP_MARK}{os.getpid()}{dot}{rest}")


def atomic_save(path, write):
    """`write(temporary_path)`, then rename onto `path`, so `path` is never half-written.

    Returns whether `write` wrote anything (a checkpoint callback may decide not to save)."""
    temporary = temp_path(path)
    try:
        write(temporary)
        if not os.path.exists(temporary):
            return False
        os.replace(temporary, path)
        return True
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write_json(path, obj):
    def write(target):
        with open(target, "w") as f:
            json.dump(obj, f, indent=1)
    atomic_save(path, write)


def _remove_temporaries(directory):
    """Leftovers of writes interrupted by a kill (never read: their names say so)."""
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if TEMP_MARK in name:
                os.remove(os.path.join(directory, name))


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that writes to a temporary name and renames it into place; with an
    EMA optimizer it saves the EMA weights (swapped in by `ema_swapper`, then swapped back)."""

    def __init__(self, filepath, ema_swapper=None, **kwargs):
        super().__init__(filepath, **kwargs)
        self.ema_swapper = ema_swapper
        self._target = None

    def _get_file_path(self, epoch, batch, logs):
        return self._target or super()._get_file_path(epoch, batch, logs)

    def _save_model(self, epoch, batch, logs):
        def write(temporary):
            self._target = temporary  # ModelCheckpoint decides and saves; to this name
            try:
                super(AtomicModelCheckpoint, self)._save_model(epoch, batch, logs)
            finally:
                self._target = None

        if self.ema_swapper is not None:
            self.ema_swapper.on_test_begin()  # EMA weights into the model
        try:
            atomic_save(super()._get_file_path(epoch, batch, logs), write)
        finally:
            if self.ema_swapper is not None:
                self.ema_swapper.on_test_end()


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that resumes at the saved step, with atomic files.

    NOTE: Keras' callback records the batch but restores only the epoch, so a run killed
    mid-epoch replays that epoch from mid-epoch weights; it also writes its files in place.
    This one saves every `save_freq` global steps (and at every epoch end) a weights file
    (model + optimizer state, hence the schedule position and the EMA) under a new name, then
    `state.json` pointing at it, both renamed into place. `restore(model)` loads them;
    `train` feeds the data stream from the saved global step, and the first `step` steps of
    the resumed epoch are skipped by this callback (see `on_train_begin`).
    """

    STATE = "state.json"

    def __init__(self, backup_dir, save_freq=200):
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=False)
        self.phase = 0
        self.seed = None
        self._skip = 0

    def saved_state(self):
        path = os.path.join(self.backup_dir, self.STATE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def restore(self, model, state):
        """Load the backup into `model` (compiled); returns (epoch, step) to resume at."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(self.backup_dir, state["weights"]))
        self._skip = state["step"] // model.steps_per_execution
        return state["epoch"], state["step"]

    def delete(self):
        shutil.rmtree(self.backup_dir, ignore_errors=True)

    def on_train_begin(self, logs=None):
        # The data stream already starts after the saved step; the resumed epoch's first
        # `step` calls return at once so that Keras' epoch ends where it ended before.
        skip, self._skip = self._skip, 0
        self._inner = self.model.train_function
        if not skip:
            return
        remaining = [skip]

        def train_function(iterator):
            if remaining[0]:
                remaining[0] -= 1
                return {}  # no step, no data consumed
            return self._inner(iterator)

        self.model.train_function = train_function

    def on_train_end(self, logs=None):
        self.model.train_function = self._inner

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not logs:
            return  # a skipped step (see on_train_begin): nothing new to save
        step = batch + 1
        global_step = self._current_epoch * self.params["steps"] + step
        if global_step % self.save_freq == 0 and step < self.params["steps"]:
            self._save(self._current_epoch, step)

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1, 0)

    def _save(self, epoch, step):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"backup-e{epoch:05d}-s{step:07d}.weights.h5"
        path = os.path.join(self.backup_dir, name)
        atomic_save(path, self.model.save_weights)
        previous = self.saved_state()
        _write_json(os.path.join(self.backup_dir, self.STATE), {
            "epoch": epoch, "step": step, "phase": self.phase, "seed": self.seed,
            "weights": name})
        if previous and previous["weights"] != name:
            old = os.path.join(self.backup_dir, previous["weights"])
            if os.path.exists(old):
                os.remove(old)


class TrainingLog(keras.callbacks.Callback):
    """Per-epoch metrics and learning rate -> `history.json` and a PNG of the curves (both
    rewritten atomically every epoch). `history` starts from an earlier run's epochs."""

    def __init__(self, json_path, plot_path, history=None):
        super().__init__()
        self.json_path, self.plot_path = json_path, plot_path
        self.history = history or {"epoch": []}

    def on_epoch_end(self, epoch, logs=None):
        row = {k: float(np.mean(v)) for k, v in (logs or {}).items()}
        row["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
        known = len(self.history["epoch"])
        self.history["epoch"].append(epoch + 1)
        for key, value in row.items():
            self.history.setdefault(key, [None] * known).append(value)
        for key, values in self.history.items():
            if len(values) < known + 1:
                values.append(None)
        _write_json(self.json_path, self.history)
        atomic_save(self.plot_path, lambda path: plot_history(self.history, path))


def plot_history(history, path):
    """Loss, accuracy and learning-rate curves of a `history.json` dict -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = (("loss", "loss"), ("accuracy", "top-1 accuracy"), ("learning_rate", "learning rate"))
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    epochs = history["epoch"]
    for axis, (key, title) in zip(axes, panels):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            values = history.get(prefix + key)
            if values and any(v is not None for v in values):
                axis.plot(epochs, [np.nan if v is None else v for v in values], style,
                          markersize=3, label=(prefix + key).replace("_", " "))
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


class BatchImages(keras.callbacks.Callback):
    """Writes a training batch, un-normalised, as a TensorBoard image summary.

    `images()` is called after the first step, once `fit` holds its data iterator: a new iterator
    of the training data made earlier would reshuffle the stream `fit` sees."""

    def __init__(self, log_dir, images, preprocessing):
        super().__init__()
        self.log_dir, self.images, self.preprocessing = log_dir, images, preprocessing
        self.written = False

    def on_train_batch_end(self, batch, logs=None):
        if self.written:
            return
        self.written = True
        mean = np.asarray(self.preprocessing.mean, "float32")
        std = np.asarray(self.preprocessing.std, "float32")
        pixels = np.clip(np.asarray(self.images()) * std + mean, 0.0, 1.0)  # [b, h, w, 3] in 0..1
        with tf.summary.create_file_writer(os.path.join(self.log_dir, "images")).as_default():
            tf.summary.image("training batch", pixels, step=0, max_outputs=IMAGE_SUMMARY_MAX)


# --------------------------------------------------------------------------------- models
@contextlib.contextmanager
def _dtype_policy(name):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _zoo_builder(name):
    from lambda_keras import models

    if name in models.BUILDERS:
        return name, models.BUILDERS[name]
    for arch, builder in models.BUILDERS.items():
        if builder is getattr(models, name, None):
            return arch, builder
    return None, None


def _default_image_size(model, weights):
    """Image size when neither the recipe nor the caller gives one: the model's input, the
    weights' preset, or the architecture's (architectures.py)."""
    from lambda_keras import architectures

    if isinstance(model, keras.Model):
        size = model.input_shape[1]
        return size or weights_lib.DEFAULT_PREPROCESSING.input_size[0]
    arch, _ = _zoo_builder(model) if isinstance(model, str) else (None, None)
    if arch is None:
        return weights_lib.DEFAULT_PREPROCESSING.input_size[0]
    if weights is not None and (weights == "imagenet" or weights in weights_lib.PRESETS):
        return weights_lib.resolve_preprocessing(
            arch if weights == "imagenet" else weights).input_size[0]
    return architectures.ARCHITECTURES[arch].image_size


def _preprocessing(model, weights, image_size):
    prep = weights_lib.DEFAULT_PREPROCESSING
    if isinstance(weights, str) and (weights == "imagenet" or weights in weights_lib.PRESETS):
        arch = _zoo_builder(model)[0] if isinstance(model, str) else None
        prep = weights_lib.resolve_preprocessing(weights if weights != "imagenet" else arch)
    return dataclasses.replace(prep, input_size=(image_size, image_size))


def build_model(model, *, image_size, classes, weights=None, recipe=None):
    """A builder name ("lambda_resnet50" or "LambdaResNet50"), a `.keras` file, or a callable
    `f(input_shape=, classes=, [weights=], [drop_rate=], [drop_path_rate=])` -> keras.Model.
    Call it inside the strategy's scope and dtype policy."""
    if isinstance(model, str) and model.endswith(".keras"):
        if not os.path.exists(model):
            raise ValueError(f"`model` file does not exist. Received: model={model!r}")
        return keras.saving.load_model(model)  # safe_mode=True by default
    if isinstance(model, str):
        arch, builder = _zoo_builder(model)
        if builder is None:
            from lambda_keras import models

            raise ValueError(f"`model` must be a builder name ({sorted(models.BUILDERS)}), a "
                             f".keras file, a callable or a keras.Model. Received: model={model!r}")
        kwargs = {"weights": weights}
    elif callable(model):
        builder, kwargs = model, ({"weights": weights} if weights is not None else {})
    else:
        raise TypeError("`model` must be a builder name, a .keras path, a callable or a "
                        f"keras.Model. Received: model={model!r}")
    for rate in ("drop_rate", "drop_path_rate"):
        if recipe is not None and getattr(recipe, rate) is not None:
            kwargs[rate] = getattr(recipe, rate)
    return builder(input_shape=(image_size, image_size, 3), classes=classes, **kwargs)


def _check_model(model, strategy, classes, precision):
    if model.output_shape[-1] != classes:
        raise ValueError(f"`model` has {model.output_shape[-1]} outputs; the data has {classes} "
                         f"classes. Received: model={model.name!r}")
    if strategy is not tf.distribute.get_strategy() and getattr(
            model, "_distribute_strategy", None) is not strategy:
        raise ValueError("A keras.Model passed to train() under a distribution strategy must be "
                         "created inside `strategy.scope()`; pass a builder name or callable "
                         f"instead. Received: model={model.name!r}")
    if precision is not None and model.dtype_policy.name != precision:
        raise ValueError(f"`mixed_precision` applies when train() builds the model; this model "
                         f"uses {model.dtype_policy.name!r}. "
                         f"Received: mixed_precision={precision!r}")


def _set_trainable(model, freeze_backbone, freeze_batch_norm, sync_batch_norm):
    """Backbone (everything but the classifier) and BN trainability, and SyncBN."""
    if freeze_backbone and CLASSIFIER not in [layer.name for layer in model.layers]:
        raise ValueError(f"`freeze_backbone_epochs` needs a classifier layer named {CLASSIFIER!r} "
                         f"(models.py). Received: model={model.name!r}")
    for layer in model.layers:
        layer.trainable = not freeze_backbone or layer.name == CLASSIFIER
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = sync_batch_norm
            if freeze_batch_norm:
                layer.trainable = False  # Keras runs frozen BN in inference mode


def _from_logits(model):
    try:
        classifier = model.get_layer(CLASSIFIER)
    except ValueError:
        return False
    return getattr(classifier, "activation", None) is keras.activations.linear


def _compile(model, optimizer, *, label_smoothing, jit_compile, steps_per_execution):
    output_dtype = keras.backend.standardize_dtype(model.outputs[0].dtype)
    if output_dtype != "float32":
        raise ValueError("The model's output must be float32 (a float32 classifier, "
                         "`Dense(..., dtype='float32')` as in models.py) so that the softmax, loss "
                         f"and top-k run in full precision. Received: output dtype {output_dtype}")
    classes = model.output_shape[-1]
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing,
                                                  from_logits=_from_logits(model)),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(k=min(TOP_K, classes),
                                                       name=f"top{TOP_K}_accuracy")],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )


# ---------------------------------------------------------------------------------- train
@dataclasses.dataclass
class TrainResult:
    """What `train` made; paths are None where nothing was written (non-chief workers)."""

    model: keras.Model
    history: dict  # per epoch, including epochs of an interrupted earlier run
    metrics: dict  # final validation metrics (loss, top1, top5), None without validation
    recipe: Recipe
    strategy: str  # class name of the distribution strategy
    precision: str  # the dtype policy the model was built with
    jit_compile: bool
    output_dir: str
    best_checkpoint: str
    last_checkpoint: str
    history_json: str
    plot: str
    tensorboard_dir: str
    seed: int = None

    def summary(self):
        """JSON-ready: everything but the model and the history, the recipe as a dict."""
        skipped = ("model", "history", "recipe")
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name not in skipped}, "recipe": self.recipe.summary}


@dataclasses.dataclass(frozen=True)
class _Phase:
    first_epoch: int
    end_epoch: int  # exclusive
    freeze_backbone: bool


def _phases(recipe):
    frozen = recipe.freeze_backbone_epochs
    phases = [_Phase(0, frozen, True)] if frozen else []
    return phases + [_Phase(frozen, recipe.epochs, False)]


def _earlier_history(path, first_epoch):
    """history.json of an interrupted run, cut to the epochs before `first_epoch`."""
    if not first_epoch or not os.path.exists(path):
        return None
    with open(path) as f:
        history = json.load(f)
    keep = sum(1 for e in history.get("epoch", []) if e <= first_epoch)
    return {k: v[:keep] for k, v in history.items()}


def _best_so_far(history, monitor):
    values = [v for v in (history or {}).get(monitor, []) if v is not None]
    return max(values) if values else None


def training_data(data_spec, recipe, *, image_size, preprocessing, seed,
                  validation_spec="auto", static_shapes=False, data_dir=None):
    """(train, validation or None, DatasetInfo) for `recipe`: one-hot labels, global batches.

    The training set repeats forever as one deterministic stream (for a given seed): the batch
    of global step g is element g, whichever run reads it, which is what resuming relies on.
    `static_shapes` (TPU) also drops the last partial validation batch.
    NOTE: on a TPU the few validation examples of that partial batch are not evaluated.
    """
    options = dict(image_size=image_size, batch_size=recipe.batch_size,
                   preprocessing=preprocessing, one_hot=True, data_dir=data_dir)
    train_ds, info = data_lib.make_dataset(
        data_spec, "train", training=True, augment=recipe.augment,
        randaugment_layers=recipe.randaugment_layers,
        randaugment_magnitude=recipe.randaugment_magnitude, mixup_alpha=recipe.mixup_alpha,
        cutmix_alpha=recipe.cutmix_alpha, seed=seed, repeat=True, **options)
    if validation_spec is None or validation_spec == "none":
        return train_ds, None, info
    val_spec = data_spec if validation_spec == "auto" else validation_spec
    val_ds, val_info = data_lib.make_dataset(val_spec, "validation", training=False,
                                             drop_remainder=static_shapes, **options)
    if val_spec == data_spec and val_info.split == info.split:
        raise ValueError(f"The validation data would be the training split {info.split!r}; "
                         f"pass validation_spec. Received: validation_spec={validation_spec!r}")
    return train_ds, val_ds, info


def _callbacks(extra, *, chief, paths, state, backup, recipe, has_validation, first_images,
               preprocessing):
    """Callback list: user's, EMA swap for validation, chief-only logs/checkpoints, backup."""
    monitor = "val_accuracy" if has_validation else "accuracy"
    history = _earlier_history(paths["history_json"], state["epoch"] if state else 0)
    ema_swapper = (keras.callbacks.SwapEMAWeights(swap_on_epoch=False)
                   if recipe.ema_momentum is not None else None)
    callbacks = list(extra) + ([ema_swapper] if ema_swapper else [])
    if chief:
        if not state:
            callbacks.append(BatchImages(paths["tensorboard"], first_images, preprocessing))
        callbacks += [
            keras.callbacks.TensorBoard(paths["tensorboard"], write_graph=False),
            AtomicModelCheckpoint(paths["best"], monitor=monitor, mode="max",
                                  save_best_only=True, ema_swapper=ema_swapper,
                                  initial_value_threshold=_best_so_far(history, monitor)),
            AtomicModelCheckpoint(paths["last"], ema_swapper=ema_swapper),
            TrainingLog(paths["history_json"], paths["plot"], history),
        ]
    return callbacks + [backup]  # last: an epoch is done once everything else is written


def _fit_phases(model, recipe, strategy, *, train_data, val_ds, steps, state, backup, callbacks,
                jit_compile, verbose):
    """Compile and fit each phase (classifier-only warm-up, then everything), resuming from
    `state` (the backup's): skipped phases are done, the resumed one restarts at its step.

    `train_data()` makes a new training dataset object for each `fit`: its first iterator then
    yields the same stream in a fresh, a resumed and a continuing run (module NOTE)."""
    for index, phase in enumerate(_phases(recipe)):
        if state and state["phase"] > index:
            continue
        _set_trainable(model, phase.freeze_backbone, recipe.freeze_batch_norm,
                       recipe.sync_batch_norm)
        phase_steps = (phase.end_epoch - phase.first_epoch) * steps
        warmup = 0 if phase.freeze_backbone else min(int(recipe.warmup_epochs * steps),
                                                     phase_steps)
        with strategy.scope():
            optimizer = make_optimizer(recipe, phase_steps, warmup,
                                       use_ema=not phase.freeze_backbone)
            _compile(model, optimizer, label_smoothing=recipe.label_smoothing,
                     jit_compile=jit_compile, steps_per_execution=recipe.steps_per_execution)
        train_ds = train_data()
        _symbolic_build_from_spec(model, strategy, train_ds.element_spec)
        _fix_multi_worker(model, strategy)
        backup.phase = index
        epoch, step = phase.first_epoch, 0
        if state and state["phase"] == index:
            epoch, step = backup.restore(model, state)
        state = None
        if epoch >= phase.end_epoch:
            continue  # the backup was taken at the end of this phase
        model.fit(train_ds.skip(epoch * steps + step), epochs=phase.end_epoch,
                  initial_epoch=epoch, steps_per_epoch=steps, validation_data=val_ds,
                  callbacks=callbacks, verbose=verbose, shuffle=False)


def train(model, data_spec="digits", recipe="finetune", *, output_dir, epochs=None,
          batch_size=None, image_size=None, weights=None, validation_spec="auto", tpu=None,
          strategy=None, jit_compile="auto", mixed_precision=None, steps_per_epoch=None,
          seed=None, deterministic=False, data_dir=None, verbose="auto", callbacks=(),
          **recipe_overrides):
    """Train `model` on `data_spec` with `recipe`; resumes from `output_dir` after a crash.

    Args:
        model: a builder name ("lambda_resnet50", "LambdaResNet26T"), a `.keras` file, a callable
            `f(input_shape=, classes=, ...)` -> keras.Model (built in the strategy's scope), or a
            keras.Model (created in that scope by the caller).
        data_spec: data.make_dataset spec: "digits", "tfds:NAME[:SPLIT]", "folder:PATH".
        recipe: a RECIPES name or a Recipe; `epochs`, `batch_size` (global), `image_size` and
            any `**recipe_overrides` replace its fields.
        output_dir: checkpoints/{best,last}.keras, tensorboard/, history.json, history.png,
            result.json; backup/ (backup-workerN/ on other workers) while running.
        weights: pretrained weights for builder names ("imagenet", a preset, a file).
        validation_spec: "auto" (the "validation" split of data_spec), another spec, or None
            (or "none": no validation).
        tpu, strategy: see resolve_strategy; `strategy` overrides `tpu`.
        jit_compile: True, False or "auto" (resolve_jit_compile).
        mixed_precision: None (the recipe's `precision`) or one of PRECISIONS.
        steps_per_epoch: default: one pass over the training split.
        seed: seeds the model and the data order; None draws one (kept in the backup, so a
            resumed run sees the same data).
        deterministic: `tf.config.experimental.enable_op_determinism()` (process-wide).
        data_dir: tensorflow-datasets data directory.
        verbose: Keras' `fit` verbosity ("auto", 0, 1, 2).
        callbacks: extra Keras callbacks (they run before train's own).

    Returns a TrainResult. Rerunning the same call after a kill continues from the last backup
    (every `recipe.backup_every` steps and every epoch end) to the same final weights.
    """
    sizes = {"epochs": epochs, "batch_size": batch_size, "image_size": image_size}
    recipe = get_recipe(recipe, **{k: v for k, v in sizes.items() if v is not None},
                        **recipe_overrides)
    strategy = resolve_strategy(tpu) if strategy is None else strategy
    if recipe.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"`batch_size` (global) must be divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas of {_strategy_name(strategy)}. "
                         f"Received: batch_size={recipe.batch_size}")
    precision = resolve_precision(mixed_precision or recipe.precision, strategy)
    jit = resolve_jit_compile(jit_compile, strategy)
    worker = _worker_index(strategy)
    chief = worker == 0
    paths = _output_paths(output_dir, chief)
    # Each worker backs up its own state (shared or local disks alike); the chief's is backup/.
    backup = ResumableBackup(paths["backup"] + ("" if chief else f"-worker{worker}"),
                             save_freq=recipe.backup_every)
    _remove_temporaries(backup.backup_dir)
    state = backup.saved_state()
    seed = state["seed"] if state else (random.randrange(2**31) if seed is None else seed)
    backup.seed = seed
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()

    size = recipe.image_size or _default_image_size(model, weights)
    preprocessing = _preprocessing(model, weights, size)
    train_ds, val_ds, info = training_data(
        data_spec, recipe, image_size=size, preprocessing=preprocessing, seed=seed,
        validation_spec=validation_spec, static_shapes=is_tpu_strategy(strategy),
        data_dir=data_dir)
    steps = steps_per_epoch or info.steps_per_epoch
    if not _is_int(steps, 1) or steps % recipe.steps_per_execution:
        raise ValueError("`steps_per_epoch` must be a positive multiple of steps_per_execution "
                         f"({recipe.steps_per_execution}). Received: steps_per_epoch={steps!r}")
    if isinstance(model, keras.Model):
        _check_model(model, strategy, info.num_classes, mixed_precision)
    else:
        with _dtype_policy(precision), strategy.scope():
            model = build_model(model, image_size=size, classes=info.num_classes,
                                weights=weights, recipe=recipe)

    if chief:
        _remove_temporaries(paths["checkpoints"])
    all_callbacks = _callbacks(
        callbacks, chief=chief, paths=paths, state=state, backup=backup, recipe=recipe,
        has_validation=val_ds is not None, preprocessing=preprocessing,
        first_images=lambda: next(iter(train_ds.take(1)))[0][:IMAGE_SUMMARY_MAX])
    fresh = [train_ds]  # the first fit gets this one; later fits a new one (see _fit_phases)

    def train_data():
        if fresh:
            return fresh.pop()
        return training_data(data_spec, recipe, image_size=size, preprocessing=preprocessing,
                             seed=seed, validation_spec=None, data_dir=data_dir)[0]

    _fit_phases(model, recipe, strategy, train_data=train_data, val_ds=val_ds, steps=steps,
                state=state, backup=backup, callbacks=all_callbacks, jit_compile=jit,
                verbose=verbose)
    metrics = evaluate_dataset(model, val_ds) if val_ds is not None else None
    log = next((c for c in all_callbacks if isinstance(c, TrainingLog)), None)
    written = {key: paths[key] if chief else None
               for key in ("best", "last", "history_json", "plot", "tensorboard")}
    result = TrainResult(
        model=model, history=log.history if log else None, metrics=metrics, recipe=recipe,
        strategy=_strategy_name(strategy), precision=model.dtype_policy.name,
        jit_compile=bool(model.jit_compile), output_dir=os.fspath(output_dir),
        best_checkpoint=written["best"], last_checkpoint=written["last"],
        history_json=written["history_json"], plot=written["plot"],
        tensorboard_dir=written["tensorboard"], seed=seed)
    if chief:
        _write_json(os.path.join(output_dir, "result.json"), result.summary())
    backup.delete()
    return result


def _output_paths(output_dir, chief):
    if not isinstance(output_dir, (str, os.PathLike)) or not str(output_dir):
        raise ValueError("`output_dir` must be a directory path. "
                         f"Received: output_dir={output_dir!r}")
    output_dir = os.fspath(output_dir)
    paths = {
        "checkpoints": os.path.join(output_dir, "checkpoints"),
        "tensorboard": os.path.join(output_dir, "tensorboard"),
        "backup": os.path.join(output_dir, "backup"),
        "history_json": os.path.join(output_dir, "history.json"),
        "plot": os.path.join(output_dir, "history.png"),
    }
    paths["best"] = os.path.join(paths["checkpoints"], "best.keras")
    paths["last"] = os.path.join(paths["checkpoints"], "last.keras")
    if chief:
        for key in ("checkpoints", "tensorboard"):
            os.makedirs(paths[key], exist_ok=True)
    return paths


# ------------------------------------------------------------------------------- evaluate
def evaluate_dataset(model, dataset, verbose=0):
    """Loss, top-1 and top-5 accuracy of a compiled `model` (train's metrics) on `dataset`."""
    logs = model.evaluate(dataset, return_dict=True, verbose=verbose)
    return {"loss": float(np.mean(logs["loss"])), "top1": float(np.mean(logs["accuracy"])),
            f"top{TOP_K}": float(np.mean(logs[f"top{TOP_K}_accuracy"]))}


def evaluate(model, data_spec="digits", *, split="validation", batch_size=64, image_size=None,
             weights=None, preprocessing=None, tpu=None, strategy=None, jit_compile="auto",
             data_dir=None, verbose="auto"):
    """Top-1, top-5 and loss (cross-entropy, no smoothing) of `model` on a split of `data_spec`.

    `model` is a keras.Model, a `.keras` file or a builder name (with `weights`, default
    "imagenet"). The model is compiled here for evaluation (a model passed in keeps its
    weights, not its compile settings). Returns {"loss", "top1", "top5", "num_examples"}.
    """
    strategy = resolve_strategy(tpu) if strategy is None else strategy
    if isinstance(model, str) and not model.endswith(".keras") and weights is None:
        weights = "imagenet"
    if isinstance(model, str) and model.endswith(".keras"):
        with strategy.scope():
            model = build_model(model, image_size=None, classes=None)
    size = image_size or _default_image_size(model, weights)
    if preprocessing is None:
        preprocessing = _preprocessing(model, weights, size)
    dataset, info = data_lib.make_dataset(
        data_spec, split, image_size=size, batch_size=batch_size, training=False,
        preprocessing=preprocessing, one_hot=True, drop_remainder=is_tpu_strategy(strategy),
        data_dir=data_dir)
    if not isinstance(model, keras.Model):
        with strategy.scope():
            model = build_model(model, image_size=size, classes=info.num_classes,
                                weights=weights)
    if model.output_shape[-1] != info.num_classes:
        raise ValueError(f"`model` has {model.output_shape[-1]} outputs; {data_spec!r} has "
                         f"{info.num_classes} classes. Received: data_spec={data_spec!r}")
    with strategy.scope():
        _compile(model, None, label_smoothing=0.0,
                 jit_compile=resolve_jit_compile(jit_compile, strategy), steps_per_execution=1)
    _symbolic_build_from_spec(model, strategy, dataset.element_spec)
    _fix_multi_worker(model, strategy)
    metrics = evaluate_dataset(model, dataset, verbose=verbose)
    return {**metrics, "num_examples": info.num_examples}
