"""Evaluation: loss, top-1 and top-5 accuracy of a model on a dataset spec or a dataset."""

import keras
import numpy as np

from lambda_keras import data as data_lib
from lambda_keras import runtime, utils
from lambda_keras.training import keras_patches
from lambda_keras.training import model_setup
from lambda_keras.training.model_setup import DEFAULT_WEIGHTS, TOP_K
from lambda_keras.training.strategy import (
    check_strategy, is_tpu_strategy, resolve_jit_compile, resolve_strategy)

VERBOSITIES = ("auto", 0, 1, 2)  # what Keras' fit and evaluate take as `verbose`


def evaluate_dataset(model, dataset, verbose=0):
    """Loss, top-1 and top-5 accuracy of a compiled `model` (train's metrics) on `dataset`.

    Args:
        model: a keras.Model compiled as `train` and `evaluate` compile it: metrics named
            "accuracy" and "top5_accuracy".
        dataset: batches of (images, one-hot labels), e.g. from `data.make_dataset`.
        verbose: `keras.Model.evaluate`'s verbosity ("auto", 0, 1, 2).

    Returns:
        A dict {"loss", "top1", "top5"} of floats.

    Raises:
        ValueError: `model` is not compiled (Keras).
        KeyError: `model` was compiled without the metric "accuracy" or "top5_accuracy".

    Example:

    ```python
    result = training.train("lambda_resnet26t", "digits", output_dir="runs/digits")
    training.evaluate_dataset(result.model, val_ds)  # {"loss": ..., "top1": ..., "top5": ...}
    ```
    """
    logs = model.evaluate(dataset, return_dict=True, verbose=verbose)
    return {"loss": float(np.mean(logs["loss"])), "top1": float(np.mean(logs["accuracy"])),
            f"top{TOP_K}": float(np.mean(logs[f"top{TOP_K}_accuracy"]))}


def evaluate(model, data_spec="digits", *, split="validation", batch_size=64, image_size=None,
             weights=DEFAULT_WEIGHTS, preprocessing=None, tpu=None, strategy=None,
             jit_compile="auto", data_dir=None, verbose="auto"):
    """Top-1, top-5 and loss (cross-entropy, no smoothing) of `model` on a split of `data_spec`.

    The model is compiled here for evaluation (a model passed in keeps its weights, not its
    compile settings); the images are prepared by `lambda_keras.data.make_dataset`'s evaluation
    transform (resize, center crop, normalise), never augmented.

    Args:
        model: a keras.Model, a `.keras` file or a model name ("lambda_resnet26t",
            "LambdaResNet50", a preset name).
        data_spec: a dataset spec: "tfds:NAME[:SPLIT]", "folder:PATH" or "digits".
        split: the split evaluated ("validation", "test", "train", ...; `make_dataset`).
        batch_size: examples per batch.
        image_size: side of the square images; default the model's input size, the weights'
            preset or the architecture's.
        weights: for a model name only: "default" (`DEFAULT_WEIGHTS`, the name's own weights,
            as in `train`), "imagenet", a preset name, a weights file, or None (random). A
            keras.Model or `.keras` file has its own: other values than these two refuse it.
        preprocessing: a `lambda_keras.weights.Preprocessing`; default what the weights were
            trained with: for a `.keras` file the one its run recorded beside it
            (`presets.preprocessing_beside`), the preset's for ImageNet weights, else
            `DEFAULT_PREPROCESSING`.
        tpu: a TPU to evaluate on (`resolve_strategy`); None: the default strategy.
        strategy: a `tf.distribute.Strategy`, instead of `tpu`.
        jit_compile: True, False or "auto" (`resolve_jit_compile`).
        data_dir: tensorflow-datasets data directory (tfds specs only).
        verbose: `keras.Model.evaluate`'s verbosity ("auto", 0, 1, 2).

    Returns:
        A dict {"loss", "top1", "top5" (floats), "num_examples" (int)}.

    Raises:
        TypeError: `model` is neither a keras.Model, a str/path nor a callable; `strategy` is
            not a tf.distribute.Strategy; `image_size` is not an int.
        ValueError: Keras on another backend than TensorFlow; `image_size` < 1, a `verbose`
            other than "auto", 0, 1, 2, an unknown model name, a missing `.keras` file,
            `weights` given for a keras.Model or `.keras` file, a fixed-size model and another
            `image_size`, a model with another number of outputs than the dataset's classes, or
            a bad argument of `make_dataset` (spec, split, batch size).

    Example:

    ```python
    metrics = training.evaluate("runs/digits/checkpoints/best.keras", "digits",
                                image_size=64)
    print(f"top-1 {metrics['top1']:.3f} on {metrics['num_examples']} images")
    ```
    """
    runtime.require_tensorflow_backend("`lambda_keras.training.evaluate`")
    image_size = utils.check_int("image_size", image_size, optional=True)  # 0: no default
    utils.check_choice("verbose", verbose, VERBOSITIES)
    data_lib.check_spec(data_spec, data_dir=data_dir, arg="data_spec")  # named as evaluate's own
    strategy = resolve_strategy(tpu) if check_strategy(strategy) is None else strategy
    weights = model_setup.resolve_weights(model, weights)
    given = model  # a file's recorded preprocessing is looked up beside it
    if model_setup.is_model_file(model):
        with strategy.scope():
            model = model_setup.build_model(model, image_size=None, classes=None)
    size = model_setup.default_image_size(model, weights) if image_size is None else image_size
    if isinstance(model, keras.Model):
        model_setup.check_image_size(model, size)
    if preprocessing is None:
        preprocessing = model_setup.preprocessing_for(given, weights, size)
    dataset, info = data_lib.make_dataset(
        data_spec, split, image_size=size, batch_size=batch_size, training=False,
        preprocessing=preprocessing, one_hot=True, drop_remainder=is_tpu_strategy(strategy),
        data_dir=data_dir)
    if not isinstance(model, keras.Model):
        with strategy.scope():
            model = model_setup.build_model(model, image_size=size,
                                            classes=info.num_classes, weights=weights)
    if model.output_shape[-1] != info.num_classes:
        raise ValueError(f"`model` has {model.output_shape[-1]} outputs; {data_spec!r} has "
                         f"{info.num_classes} classes. Received: data_spec={data_spec!r}")
    with strategy.scope():
        model_setup.compile_model(model, None, label_smoothing=0.0,
                                  jit_compile=resolve_jit_compile(jit_compile, strategy),
                                  steps_per_execution=1)
    keras_patches.symbolic_build_from_spec(model, strategy, dataset.element_spec)
    keras_patches.fix_multi_worker(model, strategy)
    metrics = evaluate_dataset(model, dataset, verbose=verbose)
    return {**metrics, "num_examples": info.num_examples}
