"""Resuming a killed run: `ResumableBackup` writes and restores `backup/`, and checks it first.

NOTE: Keras' `BackupAndRestore` records the batch but restores only the epoch, so a run killed
mid-epoch replays that epoch from mid-epoch weights; it also writes its files in place.
`ResumableBackup` saves every `save_freq` global steps (and at every epoch end) a weights file
(model + optimizer state, hence the schedule position and the EMA) under a new name, then
`state.json` pointing at it, both renamed into place. `restore(model, state)` loads them; `train`
feeds the data stream from the saved global step, and the first `step` steps of the resumed epoch
are skipped by this callback (see `on_train_begin`). A mid-epoch backup also keeps the epoch's
running metric totals (`metrics`: `model.metrics_variables`), restored when the epoch begins
again, so the epoch's logged loss and accuracy average all its steps (Keras would average only
the steps after the restart).

A backup that cannot belong to the run being resumed (unreadable or foreign `state.json`, an epoch
or step past the run's end, another model, a weights file that does not load) stops `train` with
a ValueError that names the file and says to delete the backup folder (or use another
`output_dir`): resuming from it would train something else, or nothing, and then delete it.
"""

import json
import os
import shutil

import keras
import numpy as np

from lambda_keras import utils

STATE = "state.json"
# state.json: key -> (type, description); "model" and "num_weights" are absent in older backups.
STATE_FIELDS = {"epoch": int, "step": int, "phase": int, "seed": int, "weights": str}


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that resumes at the saved step, with atomic files (module docstring).

    Saves `state.json` and a weights file every `save_freq` global steps and at every epoch
    end; `saved_state`, `check` and `restore` resume a killed run from them (`train` calls
    them), `delete` removes the folder once the run is done.

    Args:
        backup_dir: the folder of this worker's backup (created on the first save).
        save_freq: global steps between backups, an int; every epoch end is saved too.

    Raises:
        ValueError: `backup_dir` is empty or `save_freq` is not an int ("epoch" aside: Keras'
            checks); when resuming (`saved_state`, `check`, `restore`, the resumed epoch's
            metric totals), a backup that cannot belong to this run, naming the file and the
            folder to delete.

    Example:

    ```python
    backup = training.ResumableBackup("runs/x/backup", save_freq=256)
    state, epoch = backup.saved_state(), 0  # state: None on the first run
    if state is not None:
        backup.check(state, epochs=10, phases=1, steps_per_epoch=100, model=model)
        epoch, step = backup.restore(model, state)  # feed the data from that step on
    model.fit(train_ds, epochs=10, initial_epoch=epoch, steps_per_epoch=100,
              callbacks=[backup])
    ```
    """

    STATE = STATE

    def __init__(self, backup_dir, save_freq=200):
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=False)
        self.phase = 0
        self.seed = None
        self.run = None  # what defines the run (recipe, data, sizes): JSON data, see `check`
        self._skip = 0
        self._metrics = None  # the resumed epoch's running metric totals, set on its begin

    @property
    def state_path(self):
        return os.path.join(self.backup_dir, self.STATE)

    def _refuse(self, problem):
        raise ValueError(
            f"Cannot resume from the training backup {self.state_path}: {problem}. Delete the "
            f"folder {self.backup_dir} to start this run from scratch, or pass another "
            "`output_dir`.")

    def saved_state(self):
        """The parsed, schema-checked `state.json`, or None when there is no backup."""
        if not os.path.exists(self.state_path):
            return None
        try:
            with open(self.state_path) as f:
                state = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            self._refuse(f"it is not readable JSON ({error})")
        if not isinstance(state, dict):
            self._refuse(f"it holds a {type(state).__name__}, not a JSON object")
        for key, kind in STATE_FIELDS.items():
            value = state.get(key)
            if not isinstance(value, kind) or isinstance(value, bool) or (
                    kind is int and value < 0):
                self._refuse(f"field {key!r} must be a{' non-negative' if kind is int else ''} "
                             f"{kind.__name__}; it is {value!r}")
        name = state["weights"]
        if os.path.basename(name) != name or not os.path.isfile(
                os.path.join(self.backup_dir, name)):
            self._refuse(f"its weights file {name!r} is not a file in {self.backup_dir}")
        return state

    def check(self, state, *, epochs, phases, steps_per_epoch, model, seed=None):
        """Refuses a `state` that does not fit this run: epoch/step/phase range, model, an
        explicit `seed` other than the backup's, and what defines the run (`self.run`: recipe,
        data, sizes; absent in older backups), naming the fields that differ."""
        epoch, step, phase = state["epoch"], state["step"], state["phase"]
        if epoch > epochs or (epoch == epochs and step) or step >= steps_per_epoch:
            self._refuse(f"it is at epoch {epoch} step {step}, past the end of this run "
                         f"({epochs} epochs of {steps_per_epoch} steps)")
        if phase >= phases:
            self._refuse(f"it is in training phase {phase}; this run has {phases}")
        for key, value in (("model", model.name), ("num_weights", len(model.weights))):
            if key in state and state[key] != value:
                self._refuse(f"it was written for {key} {state[key]!r}; this run has {value!r}")
        if seed is not None and seed != state["seed"]:
            self._refuse(f"it was written with seed {state['seed']}; this run asks for {seed}")
        saved_run, run = state.get("run"), _as_json(self.run)
        if saved_run is not None and run is not None and saved_run != run:
            changed = sorted(key for key in {*saved_run, *run}
                             if saved_run.get(key) != run.get(key))
            self._refuse("it was written by a run with other settings: " + ", ".join(
                f"{key} {saved_run.get(key)!r} (now {run.get(key)!r})" for key in changed))

    def restore(self, model, state):
        """Load the backup into `model` (compiled); returns (epoch, step) to resume at."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        path = os.path.join(self.backup_dir, state["weights"])
        try:
            model.load_weights(path)
        except Exception as error:  # Keras/h5py raise many kinds; all mean "not this model"
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            self._refuse(f"its weights file {path} does not load into this model "
                         f"({type(error).__name__}: {first[:300]})")
        self._skip = state["step"] // model.steps_per_execution
        self._metrics = state.get("metrics") if state["step"] else None
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
        # Keras has just reset the metrics: the resumed epoch continues the running totals
        # (loss, top-1, ...) of its steps before the backup, so its logged averages cover every
        # step of the epoch, as in an uninterrupted run.
        saved, self._metrics = self._metrics, None
        if saved is None:
            return
        variables = self.model.metrics_variables
        shapes = [tuple(v.shape) for v in variables]
        if not isinstance(saved, list) or [np.shape(value) for value in saved] != shapes:
            self._refuse(f"its running metric totals do not fit this model's metrics (shapes "
                         f"{shapes})")
        for variable, value in zip(variables, saved):
            variable.assign(np.asarray(value, variable.dtype))

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
        utils.atomic_write(path, self.model.save_weights)
        previous_name = None
        if os.path.exists(self.state_path):
            with open(self.state_path) as f:
                previous_name = json.load(f).get("weights")
        utils.write_json(self.state_path, {
            "epoch": epoch, "step": step, "phase": self.phase, "seed": self.seed,
            "weights": name, "model": self.model.name, "num_weights": len(self.model.weights),
            "run": _as_json(self.run), **({"metrics": [
                keras.ops.convert_to_numpy(v).tolist() for v in self.model.metrics_variables]}
                if step else {})})
        if previous_name and previous_name != name and os.path.basename(previous_name) == \
                previous_name:
            old = os.path.join(self.backup_dir, previous_name)
            if os.path.exists(old):
                os.remove(old)


def _as_json(value):
    """`value` as it reads back from state.json (tuples become lists), for comparisons."""
    return None if value is None else json.loads(json.dumps(value, default=str))
