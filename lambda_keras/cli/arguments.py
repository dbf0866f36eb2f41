"""What the `lambda-keras` command's flags become: models (`--model`, `--weights`), images,
labels, TPUs, and the checks that run before anything is built, their messages naming the flags.

Heavy modules (Keras, TensorFlow) are imported inside the functions.
"""

import contextlib
import os
import sys
import zipfile

from lambda_keras import presets, utils

QUIET_LOG_LEVEL = "3"  # TF_CPP_MIN_LOG_LEVEL: 3 drops INFO, WARNING and ERROR (e.g. cuInit)
NO_WEIGHTS = "none"


def quiet_tensorflow(verbose=False):
    """Silences TensorFlow's C++ logging for this process unless `verbose`; imports TensorFlow.

    Must run before anything imports TensorFlow (it has no effect on the import-time lines of a
    TensorFlow already imported).
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_LOG_LEVEL)
    if "tensorflow" not in sys.modules:
        with utils.native_stderr_silenced():
            import tensorflow  # noqa: F401


def resolve_model_arg(model, weights=None):
    """`--model` and `--weights` -> (registry key or .keras path, weights to load).

    Names go through the package's resolver; `weights` None means the name's default weights,
    "none" means random initialisation. Weights given are checked for the model here, before
    anything is built, the messages naming `--weights`.
    """
    if model.endswith(".keras"):
        if not os.path.exists(model):
            raise FileNotFoundError(f"--model file not found: {model}")
        if not os.path.isfile(model):
            raise ValueError(f"--model is not a regular file: {model}")
        if weights is not None:
            raise ValueError(f"--weights {weights} would be ignored: the .keras file {model} "
                             f"carries its own weights (--weights goes with a model name)")
        return model, None
    try:
        resolved = presets.resolve_model_name(model)
    except ValueError:
        raise ValueError(f"unknown --model {model!r}; valid: "
                         f"{', '.join(presets.model_names())} or a .keras file") from None
    if weights is None:
        return resolved.arch, resolved.default_weights
    if weights.lower() == NO_WEIGHTS:
        return resolved.arch, None
    from lambda_keras.weights import loading

    loading.validate_weights(weights, resolved.arch, arg="--weights")
    return resolved.arch, weights


def load_model(model, weights=None, image_size=None):
    """A model name (+ weights, see `resolve_model_arg`) or a `.keras` file -> keras.Model.

    A `.keras` file is loaded with `lambda_keras.models.load_model` (the package's layers and
    optimizer registered, Keras' safe mode on).
    """
    from lambda_keras import models
    from lambda_keras.training import model_setup

    name, weights = resolve_model_arg(model, weights)
    if name.endswith(".keras"):
        if not zipfile.is_zipfile(name):  # Keras would say "File not found"
            raise ValueError(f"--model {name} is not a Keras .keras file (not a zip archive); "
                             "it may be truncated or corrupted")
        try:
            loaded = models.load_model(name, safe_mode=True)
        except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile) as error:
            raise ValueError(f"--model {name} could not be loaded as a Keras model: "
                             f"{type(error).__name__}: {error}") from error
        if image_size is not None:
            model_setup.check_image_size(loaded, image_size, model_arg=f"--model {name}",
                                         size_arg="--image-size")
        return loaded
    kwargs = {"weights": weights}
    if image_size is not None:
        kwargs["input_shape"] = (image_size, image_size, 3)
    return models.get_model(name, **kwargs)


# Integer flags and the least value each takes, or (least, most) (--seed: NumPy's seeds);
# --image-size: `image_size_floor`; --top is checked against the model's classes in predict.
INT_FLAGS = {"batch_size": 1, "repeats": 1, "rounds": 1, "calls": 1, "epochs": 1,
             "steps_per_epoch": 1, "calibration_steps": 1, "version": 0, "seed": (0, 2**32 - 1)}


def image_size_floor(args):
    """The least `--image-size`: the networks' (they downsample by 32) for a model name and for
    `train` (its recipes'); any positive size for a `.keras` file (it says what it takes)."""
    from lambda_keras.models import MIN_INPUT_SIZE

    model = getattr(args, "model", None) or ""
    return 1 if model.endswith(".keras") and args.command != "train" else MIN_INPUT_SIZE


def check_int_flags(args):
    """Checks the integer flags given (`INT_FLAGS`, `--image-size`) before anything is built or
    measured; a message names the flag, e.g. "`--image-size` must be an int >= 32. Received:
    --image-size=0"."""
    for field, bounds in INT_FLAGS.items():
        low, high = bounds if isinstance(bounds, tuple) else (bounds, None)
        if getattr(args, field, None) is not None:
            utils.check_int(f"--{field.replace('_', '-')}", getattr(args, field), low=low,
                            high=high)
    if getattr(args, "image_size", None) is not None:
        utils.check_int("--image-size", args.image_size, low=image_size_floor(args))


def recipe_overrides(args):
    """`train`'s recipe fields set on the command line, `--set FIELD=VALUE` and the `--epochs` /
    `--batch-size` / `--image-size` flags (which must agree with a `--set` of the same field), as
    `training.train`'s keyword arguments; `--recipe` with them is resolved and checked here,
    before anything is built."""
    from lambda_keras import training

    overrides = training.parse_recipe_overrides(args.set or [])
    for field in ("epochs", "batch_size", "image_size"):  # their flags and --set both set them
        flag = getattr(args, field)
        if flag is not None and field in overrides and overrides[field] != flag:
            raise ValueError(f"--{field.replace('_', '-')} {flag} and --set {field}="
                             f"{overrides[field]} disagree; give one")
        if flag is not None:
            overrides[field] = flag
    training.get_recipe(args.recipe, **overrides)  # its fields' checks, e.g. backup_every
    return overrides


@contextlib.contextmanager
def flags_named(**flags):
    """Re-raises the errors of the library calls inside that name a Python argument a flag gave
    (`` `split` ... Received: split='bogus' ``: the data module's, whichever source checks the
    split) naming the flag instead (`flags_named(split="--split")`)."""
    try:
        yield
    except (ValueError, TypeError) as error:
        message = str(error)
        for name, flag in flags.items():
            if f"Received: {name}=" in message:
                message = message.replace(f"`{name}`", f"`{flag}`").replace(
                    f"Received: {name}=", f"Received: {flag}=")
        if message == str(error):
            raise
        raise (TypeError if isinstance(error, TypeError) else ValueError)(message) from error


def at_image_size(model, size):
    """A copy of `model` (input of any size) whose layers are built for `size` x `size` inputs,
    with its weights and its layers' dtype policies: what `autotune` measures (the lambda
    layers' map sizes) and `export` writes (static shapes)."""
    import keras

    copy = keras.models.clone_model(
        model, input_tensors=keras.Input((size, size, model.input_shape[-1] or 3)))
    copy.set_weights(model.get_weights())
    return copy


def model_preprocessing(model_arg, model, image_size=None):
    """How the images of `model` (what `--model` `model_arg` loaded) are prepared: a `.keras`
    file's record of its training run (`presets.preprocessing_beside`: the default where there
    is none), a model name's preset's. At the model's input size, else `image_size`,
    else the preprocessing's own."""
    if model_arg.endswith(".keras"):
        preprocessing = presets.preprocessing_beside(model_arg)
    else:
        preprocessing = presets.resolve_preprocessing(model_arg)
    height, width = model.input_shape[1:3]
    size = height or image_size or preprocessing.input_size[0]
    return presets.replace_input_size(preprocessing, (size, width or size))


def class_names(labels, classes):
    """`--labels` (a labels.txt) or, without it, ImageNet's names for 1000 classes and "0", "1",
    ... for any other number (a model trained on the digits, on folders); messages name
    `--labels`."""
    from lambda_keras import weights
    from lambda_keras.export import serving

    if labels is None and classes == 1000:
        return [name for _, name in weights.imagenet_classes()]
    return serving.resolve_labels(labels, classes, "--labels")


def read_image(path):
    """An image file (a predict argument) -> [H, W, 3] uint8 tensor; errors name the file."""
    import tensorflow as tf

    from lambda_keras import data

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.OpError as error:
        raise ValueError(f"{path} is not a readable image ({data.IMAGE_FORMATS}): "
                         f"{error.message}") from None


def parse_phases(text):
    """`--phases` of autotune and bench ("fwd", "train" or "fwd,train") -> a tuple."""
    from lambda_keras.layers.formulations.autotuning import PHASES

    phases = tuple(phase.strip() for phase in text.split(","))
    if any(phase not in PHASES for phase in phases):
        raise ValueError(f"`--phases` must be a comma-separated list of {', '.join(PHASES)}. "
                         f"Received: --phases={text!r}")
    return phases


def timed_model(args):
    """The model autotune and bench time: a name built with random weights (weights don't change
    times) under `--mixed-precision` (autotune's picks are stored per compute dtype: it tunes
    under the policy `train` will use), a .keras file as saved (a file of any size: a copy at
    `--image-size`)."""
    with utils.dtype_policy(args.mixed_precision or "float32"):
        model = load_model(args.model, None if args.model.endswith(".keras") else NO_WEIGHTS,
                           args.image_size)
    # A .keras file's layers keep the policies they were saved with.
    precision = utils.model_precision(model)
    if args.mixed_precision and precision != args.mixed_precision:
        raise ValueError(f"--mixed-precision applies when {args.command} builds the model; "
                         f"{args.model} computes in {precision!r}. "
                         f"Received: --mixed-precision {args.mixed_precision}")
    if args.image_size is not None and None in model.input_shape[1:3]:  # a file of any size
        model = at_image_size(model, args.image_size)
    return model


def check_output_folder(args):
    """`--output` of train and export: a folder (missing or a directory), checked first."""
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ValueError(f"--output {args.output} exists and is not a directory ({args.command} "
                         "writes a folder there)")


def resolve_tpu(args):
    """The strategy of `--tpu` (messages name the flag), or None without it (train and evaluate
    then pick theirs)."""
    from lambda_keras import training

    return None if args.tpu is None else training.resolve_strategy(args.tpu, tpu_arg="--tpu")
