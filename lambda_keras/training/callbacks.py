"""Callbacks of a training run and the list `train` uses.

- `AtomicModelCheckpoint`: Keras' `ModelCheckpoint` written to a temporary name and renamed; with
  an EMA optimizer it saves the EMA weights.
- `TrainingLog`: per-epoch metrics and learning rate -> `history.json` and a PNG (`plot_history`).
- `BatchImages`: a training batch as a TensorBoard image summary.
- `check_callbacks`: train's `callbacks=` argument, a list of Keras callbacks (None: none).
- `make_callbacks`: the user's callbacks, EMA swap for validation, the chief's logs and
  checkpoints, the backup (last).
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from lambda_keras import utils

IMAGE_SUMMARY_MAX = 16  # images of the first training batch shown in TensorBoard


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that writes to a temporary name and renames it into place.

    A killed run leaves the previous checkpoint or the new one, never half a file. With an EMA
    optimizer it saves the EMA weights (swapped in by `ema_swapper`, then swapped back). `train`
    writes `checkpoints/best.keras` and `checkpoints/last.keras` with it.

    Args:
        filepath: the file to write, as `keras.callbacks.ModelCheckpoint`'s: a `.keras` file
            (`.weights.h5` with `save_weights_only=True`), possibly with `{epoch}`-style fields.
        ema_swapper: None (the model's weights are saved) or a
            `keras.callbacks.SwapEMAWeights(swap_on_epoch=False)` that is also in `fit`'s
            callbacks (which give it the model).
        **kwargs: the other arguments of `keras.callbacks.ModelCheckpoint` (`monitor`, `mode`,
            `save_best_only`, `save_weights_only`, `save_freq`, `initial_value_threshold`, ...).

    Raises:
        ValueError: as `keras.callbacks.ModelCheckpoint`: a `filepath` not ending in `.keras`
            (`.weights.h5` with `save_weights_only=True`) or an unknown `save_freq`.

    Example:

    ```python
    best = training.AtomicModelCheckpoint("runs/x/best.keras", monitor="val_accuracy",
                                          mode="max", save_best_only=True)
    model.fit(train_ds, validation_data=val_ds, epochs=5, callbacks=[best])
    ```
    """

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
            utils.atomic_write(super()._get_file_path(epoch, batch, logs), write)
        finally:
            if self.ema_swapper is not None:
                self.ema_swapper.on_test_end()



class TrainingLog(keras.callbacks.Callback):
    """Per-epoch metrics and learning rate -> `history.json` and a PNG of the curves.

    Both files are rewritten atomically at every epoch end (`plot_history` draws the PNG); the
    learning rate is the optimizer's at that point.

    Args:
        json_path: the JSON file of the history: {"epoch": [1, 2, ...], metric: [value per
            epoch, None where an epoch has none], ...}.
        plot_path: the PNG file of the curves.
        history: an earlier run's history to continue (a resumed run), or None.

    Raises:
        OSError: at an epoch end, `json_path` or `plot_path` cannot be written (a directory,
            no permission).

    Example:

    ```python
    log = training.TrainingLog("runs/x/history.json", "runs/x/history.png")
    model.fit(train_ds, epochs=5, callbacks=[log])  # log.history: the same dict as the file
    ```
    """

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
        utils.write_json(self.json_path, self.history)
        utils.atomic_write(self.plot_path, lambda path: plot_history(self.history, path))


def plot_history(history, path):
    """Loss, accuracy and learning-rate curves of a `history.json` dict -> PNG.

    Three panels (loss, top-1 accuracy, learning rate) against the epoch, the validation curves
    dashed; a metric the history lacks (or holds only None for) leaves its panel empty.

    Args:
        history: a dict with an "epoch" list and per-epoch lists (None where an epoch has no
            value) of "loss", "accuracy", "learning_rate" and their "val_" counterparts, as
            `TrainingLog` writes.
        path: the PNG file to write.

    Raises:
        KeyError: `history` has no "epoch" list.
        OSError: `path` cannot be written.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "history.png")
    >>> plot_history({"epoch": [1, 2], "loss": [2.3, 1.9], "val_loss": [2.2, 2.0]}, path)
    >>> open(path, "rb").read(4)[1:]
    b'PNG'
    >>> os.remove(path)
    """
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
    of the training data made earlier would reshuffle the stream `fit` sees. Up to
    `IMAGE_SUMMARY_MAX` images are written once, at step 0, under `log_dir/images`.

    Args:
        log_dir: the TensorBoard log directory.
        images: a function returning a batch of normalised images [batch, H, W, 3] (an array
            or a tensor).
        preprocessing: the `Preprocessing` whose mean and std normalised them (undone here).

    Example:

    ```python
    images = training.BatchImages("runs/x/tensorboard", lambda: batch_images, preprocessing)
    model.fit(train_ds, epochs=1, callbacks=[images])
    ```
    """

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



class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or batch-norm statistic.

    Raised by `StopOnNonFinite` (so by `train`) at the step where it happened, before anything
    of that step is saved; the message names the epoch, the step and the ways out. A
    `FloatingPointError`.

    Example:

    ```python
    try:
        training.train("lambda_resnet26t", "digits", output_dir="runs/digits")
    except training.NonFiniteError as error:
        print(error)  # lower the learning rate, then rerun: it resumes from the backup
    ```
    """


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops `fit` at the first non-finite loss or BN moving statistic, before anything is saved.

    Keras' `TerminateOnNaN` lets the epoch end, so the epoch-end callbacks would write the broken
    weights over the last checkpoint and the backup. This callback raises `NonFiniteError` from
    the step's `on_train_batch_end` (it runs before the checkpoint and backup callbacks), so
    `checkpoints/last.keras` and `backup/` keep the last good state. One NaN batch is enough to
    make BN moving statistics NaN for good (Keras BN averages them in), hence their check.

    Raises:
        NonFiniteError: in `fit`, after the first step whose loss or any BN moving statistic is
            NaN or infinite; the message names the epoch, the step and the statistics.

    Example:

    ```python
    model.fit(train_ds, epochs=5, callbacks=[training.StopOnNonFinite(), checkpoint])
    ```
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0
        self._statistics = None

    def on_train_begin(self, logs=None):
        variables = [v for layer in self.model._flatten_layers(include_self=False)
                     if isinstance(layer, keras.layers.BatchNormalization)
                     for v in (layer.moving_mean, layer.moving_variance)]
        self._variables = variables
        # One reduction over every statistic: a single device-to-host read per step.
        self._statistics = tf.function(lambda: tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))) for v in variables]
            or [True]))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not logs:
            return  # a step the resumed run skips (ResumableBackup)
        loss = float(np.mean(logs.get("loss", 0.0)))
        if not np.isfinite(loss):
            self._stop(batch, f"the training loss is {loss}")
        if not bool(self._statistics()):
            bad = [v.path for v in self._variables
                   if not np.isfinite(keras.ops.convert_to_numpy(v)).all()]
            self._stop(batch, f"batch-norm statistics are not finite: {', '.join(bad[:5])}"
                              + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))

    def _stop(self, batch, problem):
        raise NonFiniteError(
            f"Training stopped at epoch {self._epoch + 1}, step {batch + 1}: {problem}. Nothing "
            "from this step was saved: checkpoints/last.keras and the backup hold the last good "
            "state. Lower the learning rate (--set learning_rate=...) or check the data for "
            "non-finite values, then rerun the same command to resume from the backup.")


def earlier_history(path, first_epoch):
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


def check_callbacks(callbacks):
    """train's `callbacks` as a list: None (no callbacks, as in `Model.fit`) or an iterable of
    `keras.callbacks.Callback` instances.

    Raises:
        TypeError: `callbacks` is not iterable (a single callback: put it in a list) or holds
            something other than a Callback.
    """
    if callbacks is None:
        return []
    message = ("`callbacks` must be None or a list of keras.callbacks.Callback instances. "
               f"Received: callbacks={callbacks!r}")
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise TypeError(message) from None
    if not all(isinstance(c, keras.callbacks.Callback) for c in callbacks):
        raise TypeError(message)
    return callbacks


def make_callbacks(extra, *, chief, paths, state, backup, recipe, has_validation, first_images,
                   preprocessing):
    """Callback list: the user's, EMA swap for validation, a stop at the first non-finite loss,
    the chief's logs and checkpoints, and the backup last (an epoch is done once everything else
    is written)."""
    monitor = "val_accuracy" if has_validation else "accuracy"
    history = earlier_history(paths["history_json"], state["epoch"] if state else 0)
    ema_swapper = (keras.callbacks.SwapEMAWeights(swap_on_epoch=False)
                   if recipe.ema_momentum is not None else None)
    callbacks = list(extra) + ([ema_swapper] if ema_swapper else [])
    callbacks.append(StopOnNonFinite())
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
    return callbacks + [backup]
