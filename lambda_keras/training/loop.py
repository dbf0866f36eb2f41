"""`train`: one run, as a sequence of steps, and the data and `fit` phases it uses.

`train(model, data_spec, recipe, output_dir=...)` reads, in order: the recipe, where it runs
(strategy, precision, XLA, which worker), the backup it resumes from (and its seed), the data, the
model, the output folders and callbacks, the `fit` phases, and the result. Nothing is written
before the arguments, the data and the model have been accepted: a refused run leaves no folder.

Data order: every new iterator of a tf.data dataset with `shuffle(reshuffle_each_iteration=True)`
draws a new order, so an extra iterator (Keras' symbolic build under a strategy, a peek at a
batch) would make the data order depend on the strategy and on resuming. Each `fit` gets a
dataset object nothing else iterated first, which makes the stream a function of the seed and the
global step. NOTE: RandAugment/MixUp/CutMix keep Keras seed-generator state across the
pipeline, so with those a resumed run sees the same images but other augmentations.
"""

import dataclasses
import os
import random
import shutil

import keras
import tensorflow as tf

from lambda_keras import data as data_lib
from lambda_keras import presets, runtime, utils
from lambda_keras.data.sources import parse_spec
from lambda_keras.training import keras_patches
from lambda_keras.training import model_setup
from lambda_keras.training.backup import ResumableBackup
from lambda_keras.training.callbacks import TrainingLog, check_callbacks, make_callbacks
from lambda_keras.training.callbacks import IMAGE_SUMMARY_MAX
from lambda_keras.training.evaluation import VERBOSITIES, evaluate_dataset
from lambda_keras.training.optimizer import make_optimizer
from lambda_keras.training.recipes import Recipe, get_recipe
from lambda_keras.training.strategy import (
    check_strategy, is_tpu_strategy, resolve_jit_compile, resolve_precision, resolve_strategy,
    strategy_name, worker_index)


@dataclasses.dataclass
class TrainResult:
    """What `train` made; paths are None where nothing was written (non-chief workers).

    `summary()` gives it as JSON-ready data (what `train` writes to `result.json`).

    Args:
        model: the trained keras.Model (with the EMA weights when the recipe has an EMA).
        history: per-epoch metrics, including the epochs of an interrupted earlier run (the
            dict of `history.json`); None on non-chief workers.
        metrics: final validation metrics {"loss", "top1", "top5"}; None without validation.
        recipe: the `Recipe` the run trained with, overrides applied.
        strategy: the class name of the distribution strategy.
        precision: the dtype policy the model was built with.
        jit_compile: whether the training steps were compiled with XLA.
        output_dir: the run's folder.
        best_checkpoint: path of `checkpoints/best.keras`.
        last_checkpoint: path of `checkpoints/last.keras`.
        history_json: path of `history.json`.
        plot: path of `history.png`.
        tensorboard_dir: the TensorBoard log folder.
        seed: the seed of the model and the data order (drawn when `train` got None).
        preprocessing: the `Preprocessing` (resize, crop and normalisation) the run trained and
            validated with: what an evaluation or an export of the model must apply
            (`export.saved_model(preprocessing=)`).

    Example:

    ```python
    result = training.train("lambda_resnet26t", "digits", "scratch", output_dir="runs/digits")
    print(result.metrics["top1"], result.best_checkpoint)
    export.saved_model(result.model, "models/digits", preprocessing=result.preprocessing)
    ```
    """

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
    # The inputs' resize, crop and normalisation the run trained and validated with: what an
    # evaluation or an export of this model must apply (`export.saved_model(preprocessing=)`).
    preprocessing: presets.Preprocessing = None

    def summary(self):
        """JSON-ready: everything but the model and the history; the recipe and the
        preprocessing as dicts."""
        skipped = ("model", "history", "recipe", "preprocessing")
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name not in skipped}, "recipe": self.recipe.summary,
                "preprocessing": (None if self.preprocessing is None
                                  else dataclasses.asdict(self.preprocessing))}


@dataclasses.dataclass(frozen=True)
class _Phase:
    first_epoch: int
    end_epoch: int  # exclusive
    freeze_backbone: bool


def _phases(recipe):
    frozen = recipe.freeze_backbone_epochs
    phases = [_Phase(0, frozen, True)] if frozen else []
    return phases + [_Phase(frozen, recipe.epochs, False)]


def training_data(data_spec, recipe, *, image_size, preprocessing, seed,
                  validation_spec="auto", static_shapes=False, data_dir=None,
                  verify_images=False):
    """(train, validation or None, DatasetInfo) for `recipe`: one-hot labels, global batches.

    The training set repeats forever as one deterministic stream (for a given seed): the batch
    of global step g is element g, whichever run reads it, which is what resuming relies on.
    NOTE: on a TPU the few validation examples of the last partial batch are not evaluated.

    Args:
        data_spec: the training data, a `data.make_dataset` spec.
        recipe: a `Recipe`: its batch size (global) and its augmentation (`augment`,
            RandAugment, MixUp, CutMix).
        image_size: int or (height, width) of the images.
        preprocessing: the `Preprocessing` of the images (interpolation, crop, mean and std).
        seed: int seeding the data order and the augmentation; None: not reproducible.
        validation_spec: "auto" (the "validation" split of `data_spec`), another spec, or None
            / "none" (no validation).
        static_shapes: drop the last partial validation batch too (TPU: static shapes).
        data_dir: tensorflow-datasets data directory (tfds specs only).
        verify_images: decode every file of a 'folder:' spec before training
            (`data.make_dataset`); ignored for other specs.

    Returns:
        (training dataset, validation dataset or None, the training split's `DatasetInfo`).

    Raises:
        ValueError: the training data has fewer than 2 classes; the validation data would be
            the training split or has other classes; `data.make_dataset`'s own (an unknown
            spec or split, a missing folder, a batch larger than the split, ...).
        TypeError: `data.make_dataset`'s own (an argument of the wrong type).

    Example:

    >>> train_ds, val_ds, info = training_data(
    ...     "digits", get_recipe("scratch"), image_size=32,
    ...     preprocessing=data.DEFAULT_PREPROCESSING, seed=0)
    >>> info.num_classes, train_ds.element_spec[0].shape, val_ds.element_spec[1].shape
    (10, TensorShape([64, 32, 32, 3]), TensorShape([None, 10]))
    """
    options = dict(image_size=image_size, batch_size=recipe.batch_size,
                   preprocessing=preprocessing, one_hot=True, data_dir=data_dir)

    def verify(spec):  # the option applies to folder specs only
        return verify_images and parse_spec(spec)[0] == "folder"

    train_ds, info = data_lib.make_dataset(
        data_spec, "train", training=True, augment=recipe.augment,
        randaugment_layers=recipe.randaugment_layers,
        randaugment_magnitude=recipe.randaugment_magnitude, mixup_alpha=recipe.mixup_alpha,
        cutmix_alpha=recipe.cutmix_alpha, seed=seed, repeat=True,
        verify_images=verify(data_spec), **options)
    if info.num_classes < 2:
        raise ValueError(f"Training a classifier needs at least 2 classes; {data_spec!r} has "
                         f"{_first(info.class_names)}: a one-class model "
                         f"learns nothing (loss 0, accuracy 1). Received: data_spec={data_spec!r}")
    if validation_spec is None or validation_spec == "none":
        return train_ds, None, info
    val_spec = data_spec if validation_spec == "auto" else validation_spec
    val_ds, val_info = data_lib.make_dataset(val_spec, "validation", training=False,
                                             drop_remainder=static_shapes,
                                             verify_images=verify(val_spec), **options)
    if val_spec == data_spec and val_info.split == info.split:
        raise ValueError(f"The validation data would be the training split {info.split!r}; "
                         f"pass validation_spec. Received: validation_spec={validation_spec!r}")
    if tuple(val_info.class_names) != tuple(info.class_names):
        raise ValueError(f"The validation data's classes {_first(val_info.class_names)} are not "
                         f"the training data's {_first(info.class_names)} (label i must mean "
                         f"one class in both). Received: validation_spec={validation_spec!r}")
    return train_ds, val_ds, info


def _first(names, count=5):
    names = list(names)
    shown = ", ".join(map(repr, names[:count]))
    return f"({len(names)}: {shown}{', ...' if len(names) > count else ''})"


def _fit_phases(model, recipe, strategy, *, train_data, val_ds, steps, state, backup, callbacks,
                jit_compile, verbose):
    """Compile and fit each phase (classifier-only warm-up, then everything), resuming from
    `state` (the backup's): skipped phases are done, the resumed one restarts at its step.

    `train_data()` makes a new training dataset object for each `fit`: its first iterator then
    yields the same stream in a fresh, a resumed and a continuing run (module docstring)."""
    for index, phase in enumerate(_phases(recipe)):
        if state and state["phase"] > index:
            continue
        model_setup.set_trainable(model, phase.freeze_backbone, recipe.freeze_batch_norm,
                                  recipe.sync_batch_norm)
        phase_steps = (phase.end_epoch - phase.first_epoch) * steps
        warmup = 0 if phase.freeze_backbone else min(int(recipe.warmup_epochs * steps),
                                                     phase_steps)
        with strategy.scope():
            optimizer = make_optimizer(recipe, phase_steps, warmup,
                                       use_ema=not phase.freeze_backbone)
            model_setup.compile_model(
                model, optimizer, label_smoothing=recipe.label_smoothing,
                jit_compile=jit_compile, steps_per_execution=recipe.steps_per_execution)
        train_ds = train_data()
        keras_patches.symbolic_build_from_spec(model, strategy, train_ds.element_spec)
        keras_patches.fix_multi_worker(model, strategy)
        backup.phase = index
        epoch, step = phase.first_epoch, 0
        if state and state["phase"] == index:
            keras_patches.build_from_spec(model, strategy, train_ds.element_spec)  # metrics
            epoch, step = backup.restore(model, state)
        state = None
        if epoch >= phase.end_epoch:
            continue  # the backup was taken at the end of this phase
        model.fit(train_ds.skip(epoch * steps + step), epochs=phase.end_epoch,
                  initial_epoch=epoch, steps_per_epoch=steps, validation_data=val_ds,
                  callbacks=callbacks, verbose=verbose, shuffle=False)


def output_paths(output_dir):
    """The files and folders of a run under `output_dir` (nothing is created here)."""
    if not isinstance(output_dir, (str, os.PathLike)) or not str(output_dir):
        raise ValueError("`output_dir` must be a directory path. "
                         f"Received: output_dir={output_dir!r}")
    output_dir = os.fspath(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError("`output_dir` is an existing file, not a directory. "
                         f"Received: output_dir={output_dir!r}")
    paths = {name: os.path.join(output_dir, name)
             for name in ("checkpoints", "tensorboard", "backup")}
    paths["history_json"] = os.path.join(output_dir, "history.json")
    paths["plot"] = os.path.join(output_dir, "history.png")
    paths["result"] = os.path.join(output_dir, "result.json")
    paths["best"] = os.path.join(paths["checkpoints"], "best.keras")
    paths["last"] = os.path.join(paths["checkpoints"], "last.keras")
    return paths


def _finished_run_files(paths):
    """The files of an earlier run in the output folder (names relative to it)."""
    keys = ("result", "history_json", "best", "last")
    root = os.path.dirname(paths["result"])
    return [os.path.relpath(paths[key], root) for key in keys if os.path.exists(paths[key])]


def _steps_per_epoch(steps_per_epoch, info, recipe):
    steps = info.steps_per_epoch if steps_per_epoch is None else steps_per_epoch
    if (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1
            or steps % recipe.steps_per_execution):
        raise ValueError("`steps_per_epoch` must be a positive multiple of steps_per_execution "
                         f"({recipe.steps_per_execution}). Received: steps_per_epoch={steps!r}")
    return steps


def train(model, data_spec="digits", recipe="finetune", *, output_dir, epochs=None,
          batch_size=None, image_size=None, weights=model_setup.DEFAULT_WEIGHTS,
          validation_spec="auto", tpu=None, strategy=None, jit_compile="auto",
          mixed_precision=None, steps_per_epoch=None, seed=None, deterministic=False,
          data_dir=None, verify_images=False, overwrite=False, verbose="auto", callbacks=(),
          **recipe_overrides):
    """Train `model` on `data_spec` with `recipe`; resumes from `output_dir` after a crash.

    Args:
        model: a builder name ("lambda_resnet50", "LambdaResNet26T"), a `.keras` file, a callable
            `f(input_shape=, classes=, ...)` -> keras.Model (built in the strategy's scope), or a
            keras.Model (created in that scope by the caller).
        data_spec: data.make_dataset spec: "digits", "tfds:NAME[:SPLIT]", "folder:PATH".
        recipe: a RECIPES name or a Recipe (`describe_recipes()` lists them); `epochs`,
            `batch_size`, `image_size` and any `**recipe_overrides` replace its fields.
        output_dir: checkpoints/{best,last}.keras with checkpoints/preprocessing.json (how the
            run prepared images; `presets.preprocessing_beside`), tensorboard/, history.json,
            history.png, result.json; backup/ (backup-workerN/ on other workers) while running.
        epochs: the recipe's `epochs` (None: the recipe's own).
        batch_size: the recipe's `batch_size`, the global batch over all replicas and workers
            (divisible by the number of replicas); None: the recipe's own.
        image_size: the recipe's `image_size`, the side of the square training images; None:
            the recipe's own, else the model's input size, the weights' preset or the
            architecture's.
        weights: "default" (the model name's own weights, as `get_model` and the CLI: a
            preset's, "imagenet" for a timm variant's builder or key, none for the paper family
            and for callables), None (random initialisation), "imagenet", a preset or a file. A
            keras.Model or `.keras` file has its own (other than "default": ValueError).
        validation_spec: "auto" (the "validation" split of data_spec), another spec, or None
            (or "none": no validation).
        tpu, strategy: see resolve_strategy; `strategy` (a tf.distribute.Strategy) overrides
            `tpu`.
        jit_compile: True, False or "auto" (resolve_jit_compile).
        mixed_precision: None (the recipe's `precision`) or one of PRECISIONS. A keras.Model, a
            `.keras` file or a callable's model must already compute in it (else ValueError);
            with "auto" they keep their own.
        steps_per_epoch: default: one pass over the training split.
        seed: an int in [0, 2**32 - 1] (NumPy's seeds) seeding the model and the data order;
            None draws one (kept in the backup, so a resumed run sees the same data).
        deterministic: `tf.config.experimental.enable_op_determinism()` (process-wide).
        data_dir: tensorflow-datasets data directory.
        verify_images: decode every image of a 'folder:' spec before training (slow; finds
            damage inside complete files, which would otherwise stop training mid-epoch).
        overwrite: what to do when `output_dir` holds an earlier run's checkpoints, history or
            result and no backup to resume from: False refuses (ValueError, nothing touched),
            True deletes them (and its TensorBoard logs) and trains anew.
        verbose: Keras' `fit` verbosity ("auto", 0, 1, 2).
        callbacks: a list of extra Keras callbacks (they run before train's own); None: none.
        **recipe_overrides: other `Recipe` fields to replace (`get_recipe`), e.g.
            `weight_decay=0.01`, `ema_momentum=None`.

    Returns:
        A TrainResult. Rerunning the same call after a kill continues from the last backup
        (every `recipe.backup_every` steps and every epoch end) to the same final weights.

    Raises:
        ValueError / TypeError: Keras on another backend than TensorFlow; a bad argument (e.g.
            `overwrite`, `deterministic` or `verify_images` not a bool, `callbacks` not a list
            of Callbacks, a `verbose` other than "auto", 0, 1, 2), a backup in `output_dir`
            that does not belong to this run (the message names the file to delete), or a
            finished run there without `overwrite=True`; nothing is written or deleted then.
        training.NonFiniteError: the loss or a BN statistic became non-finite; the last good
            checkpoint and backup are kept.

    Example:

    ```python
    result = train("lambda_resnet26t", "folder:/data/flowers", "finetune",
                   weights="imagenet", output_dir="runs/flowers")
    ```
    """
    # 1. The plain arguments (before anything is set, deleted or written), the recipe, and where
    # it runs.
    runtime.require_tensorflow_backend("`lambda_keras.training.train`")
    for name, flag in (("overwrite", overwrite), ("deterministic", deterministic),
                       ("verify_images", verify_images)):
        utils.check_bool(name, flag)  # "no" would be true
    seed = utils.check_int("seed", seed, low=0, high=2**32 - 1, optional=True)
    utils.check_choice("verbose", verbose, VERBOSITIES)
    callbacks = check_callbacks(callbacks)
    check_strategy(strategy)
    data_lib.check_spec(data_spec, data_dir=data_dir, arg="data_spec")  # named as train's own
    if validation_spec not in ("auto", None, "none"):
        data_lib.check_spec(validation_spec, data_dir=data_dir, arg="validation_spec")
    sizes = {"epochs": epochs, "batch_size": batch_size, "image_size": image_size}
    recipe = get_recipe(recipe, **{k: v for k, v in sizes.items() if v is not None},
                        **recipe_overrides)
    strategy = resolve_strategy(tpu) if strategy is None else strategy
    if recipe.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"`batch_size` (global) must be divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas of {strategy_name(strategy)}. "
                         f"Received: batch_size={recipe.batch_size}")
    weights = model_setup.resolve_weights(model, weights)
    requested_precision = mixed_precision or recipe.precision
    precision = resolve_precision(requested_precision, strategy)
    jit = resolve_jit_compile(jit_compile, strategy)
    worker = worker_index(strategy)
    chief = worker == 0
    paths = output_paths(output_dir)

    # 2. The backup to resume from (each worker keeps its own; the chief's is backup/), the seed.
    backup = ResumableBackup(paths["backup"] + ("" if chief else f"-worker{worker}"),
                             save_freq=recipe.backup_every)
    utils.remove_temporaries(backup.backup_dir)
    state = backup.saved_state()
    finished = [] if state or not chief else _finished_run_files(paths)
    if finished and not overwrite:
        raise ValueError(
            f"`output_dir` holds an earlier run ({', '.join(finished)}) and no backup to resume "
            "from; pass overwrite=True (CLI: --overwrite) to replace it, or another `output_dir`. "
            f"Received: output_dir={os.fspath(output_dir)!r}")
    seed_argument = seed
    seed = state["seed"] if state else (random.randrange(2**31) if seed is None else seed)
    backup.seed = seed
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()

    # 3. The data, at the size of a given model (a .keras file is loaded first for that), prepared
    # as the model's weights were (a file: as recorded beside it).
    given = model
    if isinstance(model, keras.Model):
        source = f"the keras.Model {model.name!r}"
    elif model_setup.is_model_file(model):
        source = f"the model loaded from {os.fspath(model)!r}"
        with utils.dtype_policy(precision), strategy.scope():
            model = model_setup.build_model(model, image_size=None, classes=None)
    else:
        source = f"the model built by {getattr(model, '__name__', model)!r}"
    size = recipe.image_size or model_setup.default_image_size(model, weights)
    preprocessing = model_setup.preprocessing_for(given, weights, size)
    train_ds, val_ds, info = training_data(
        data_spec, recipe, image_size=size, preprocessing=preprocessing, seed=seed,
        validation_spec=validation_spec, static_shapes=is_tpu_strategy(strategy),
        data_dir=data_dir, verify_images=verify_images)
    steps = _steps_per_epoch(steps_per_epoch, info, recipe)
    backup.run = {**dataclasses.asdict(recipe), "image_size": size, "data": data_spec,
                  "validation": validation_spec, "steps_per_epoch": steps,
                  "precision": precision}

    # 4. The model; it must compute in the precision asked for ("auto": any, a given model or
    # file keeps its own), and the backup must fit it and this run.
    if isinstance(model, keras.Model):
        model_setup.check_model(model, strategy, info.num_classes, size)
    else:
        with utils.dtype_policy(precision), strategy.scope():
            model = model_setup.build_model(model, image_size=size, classes=info.num_classes,
                                            weights=weights, recipe=recipe)
    model_setup.check_precision(
        model, None if requested_precision == "auto" else precision, source)
    if state:
        backup.check(state, epochs=recipe.epochs, phases=len(_phases(recipe)),
                     steps_per_epoch=steps, model=model, seed=seed_argument)

    # 5. Output folders (only now: a refused run writes nothing) and callbacks.
    if finished:  # overwrite=True: the earlier run's files go before this run writes its own
        for key in ("result", "history_json", "plot", "best", "last"):
            if os.path.exists(paths[key]):
                os.remove(paths[key])
        shutil.rmtree(paths["tensorboard"], ignore_errors=True)
    if chief:
        for key in ("checkpoints", "tensorboard"):
            os.makedirs(paths[key], exist_ok=True)
        utils.remove_temporaries(paths["checkpoints"])
        # What evaluating, predicting with or exporting these checkpoints must apply.
        presets.save_preprocessing(paths["checkpoints"], preprocessing)
    all_callbacks = make_callbacks(
        callbacks, chief=chief, paths=paths, state=state, backup=backup, recipe=recipe,
        has_validation=val_ds is not None, preprocessing=preprocessing,
        first_images=lambda: next(iter(train_ds.take(1)))[0][:IMAGE_SUMMARY_MAX])

    # 6. Fit, phase by phase; the first fit gets train_ds, later ones a new dataset object.
    fresh = [train_ds]

    def train_data():
        if fresh:
            return fresh.pop()
        return training_data(data_spec, recipe, image_size=size, preprocessing=preprocessing,
                             seed=seed, validation_spec=None, data_dir=data_dir)[0]

    _fit_phases(model, recipe, strategy, train_data=train_data, val_ds=val_ds, steps=steps,
                state=state, backup=backup, callbacks=all_callbacks, jit_compile=jit,
                verbose=verbose)

    # 7. The result; the backup is no longer needed.
    metrics = evaluate_dataset(model, val_ds) if val_ds is not None else None
    log = next((c for c in all_callbacks if isinstance(c, TrainingLog)), None)
    written = {key: paths[key] if chief else None
               for key in ("best", "last", "history_json", "plot", "tensorboard")}
    result = TrainResult(
        model=model, history=log.history if log else None, metrics=metrics, recipe=recipe,
        strategy=strategy_name(strategy), precision=utils.model_precision(model),
        jit_compile=bool(model.jit_compile), output_dir=os.fspath(output_dir),
        best_checkpoint=written["best"], last_checkpoint=written["last"],
        history_json=written["history_json"], plot=written["plot"],
        tensorboard_dir=written["tensorboard"], seed=seed, preprocessing=preprocessing)
    if chief:
        utils.write_json(paths["result"], result.summary())
    backup.delete()
    return result
