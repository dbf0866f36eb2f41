"""The main job (`make demo`, `lambda-keras demo`): train, evaluate, export and verify, offline.

1. Model: a small member of the family (LambdaResNet-26T by default, built by the same generic
   builder as the paper's models). When its ImageNet weights are already in the Keras cache it is
   fine-tuned from them ("finetune" recipe); otherwise it trains from scratch ("scratch" recipe),
   since no model hub is reachable offline.
2. Data: scikit-learn's bundled handwritten digits (1437 train / 360 held-out images), upscaled to
   RGB at `image_size` (lambda_keras.data, spec "digits").
3. Training with progress bars, TensorBoard logs, best/last checkpoints and a PNG of the curves
   (lambda_keras.training), then held-out top-1 accuracy of the last epoch's weights, with the
   preprocessing they were trained with (target >= 95%).
4. Export through lambda_keras.export: a TF Serving SavedModel and TFLite float32 + int8 files;
   their predictions are checked against the Keras model on held-out images.
5. A summary of numbers and paths, also written to OUTPUT/summary.json.
"""

import dataclasses
import os
import time

import numpy as np

from lambda_keras import runtime, utils

TARGET_ACCURACY = 0.95
CALIBRATION_BATCHES = 128  # int8 calibration images (batch 1)


def _machine():
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return (f"{runtime.cpu_model()}, {runtime.usable_cores()} cores, TF {tf.__version__}, "
            f"GPU: {gpus or 'none'}")


def _step(message):
    print(f"\n=== {message}", flush=True)


def _held_out(data_spec, image_size, preprocessing):
    """All held-out images (normalised), their raw 0..255 pixels and labels."""
    from lambda_keras import data

    dataset, info = data.make_dataset(data_spec, "validation", image_size=image_size,
                                      batch_size=64, training=False, preprocessing=preprocessing)
    images = np.concatenate([x for x, _ in dataset.as_numpy_iterator()])  # [N, H, W, 3]
    labels = np.concatenate([y for _, y in dataset.as_numpy_iterator()])  # [N]
    mean = np.asarray(preprocessing.mean, "float32")
    std = np.asarray(preprocessing.std, "float32")
    pixels = (images * std + mean) * 255.0  # [N, H, W, 3], undoes data.normalize
    return images, pixels, labels, info


def _tflite_predict(path, images):
    from lambda_keras.export import LiteRTRunner

    return LiteRTRunner(path).predict(images, batch_size=1)  # [N, classes], image by image


def run(model_name="lambda_resnet26t", data_spec="digits", epochs=10, image_size=64,
        output_dir="runs/demo"):
    """Runs the demo; returns the summary dict. Raises nothing on low accuracy: it reports it."""
    import tensorflow as tf

    from lambda_keras import export, training, weights

    start = time.time()
    output_dir = os.path.abspath(output_dir)
    _step(f"lambda_keras demo on {_machine()}")
    cached = weights.cached_weights(model_name)
    recipe = "finetune" if cached else "scratch"
    print(f"model {model_name}, data {data_spec!r} at {image_size}px, recipe {recipe!r}: "
          + (f"fine-tuning the cached ImageNet weights {cached}" if cached else
             "no ImageNet weights in the Keras cache (no model hub offline): "
             "training from scratch"))

    _step("training")
    result = training.train(model_name, data_spec, recipe, output_dir=output_dir,
                            epochs=epochs, image_size=image_size,
                            weights="imagenet" if cached else None, seed=0,
                            overwrite=True)  # the demo's own folder: a rerun replaces it
    # The last epoch's weights (checkpoints/last.keras), evaluated and exported with the
    # preprocessing they were trained with (DEFAULT_PREPROCESSING from scratch, the preset's
    # when fine-tuning), as the served model will see its images.
    model, preprocessing = result.model, result.preprocessing
    images, pixels, labels, info = _held_out(data_spec, image_size, preprocessing)
    keras_probs = np.asarray(model.predict(images, batch_size=64, verbose=0))  # [N, classes]
    accuracy = float(np.mean(keras_probs.argmax(-1) == labels))
    print(f"held-out top-1 accuracy of the last epoch's weights: {accuracy:.4f} on "
          f"{len(labels)} images ({'meets' if accuracy >= TARGET_ACCURACY else 'BELOW'} the "
          f"{TARGET_ACCURACY:.0%} target)")

    _step("export")
    export_dir = os.path.join(output_dir, "export")
    saved = export.saved_model(model, os.path.join(export_dir, "saved_model"),
                               preprocessing=preprocessing, labels=info.class_names)
    tflite_paths = {"float32": export.tflite(model,
                                             os.path.join(export_dir, "model_float32.tflite"))}
    calibration = tf.data.Dataset.from_tensor_slices(images[:CALIBRATION_BATCHES]).batch(1)
    tflite_paths["int8"] = export.tflite(model, os.path.join(export_dir, "model_int8.tflite"),
                                         quantization="int8", representative_data=calibration)

    _step("checking the exported models against Keras on the held-out images")
    served = tf.saved_model.load(saved).signatures["serving_default"]
    saved_probs = served(images=tf.constant(pixels, tf.float32))["probabilities"].numpy()
    checks = {"saved_model_max_abs_diff": float(np.abs(saved_probs - keras_probs).max())}
    for kind, path in tflite_paths.items():
        probs = _tflite_predict(path, images)
        checks[f"tflite_{kind}_top1_agreement"] = float(np.mean(probs.argmax(-1)
                                                                == keras_probs.argmax(-1)))
        checks[f"tflite_{kind}_max_abs_diff"] = float(np.abs(probs - keras_probs).max())
        checks[f"tflite_{kind}_bytes"] = os.path.getsize(path)
    for name, value in checks.items():
        print(f"  {name}: {value:.6g}" if isinstance(value, float) else f"  {name}: {value}")

    summary = {
        "model": model_name, "data": data_spec, "image_size": image_size, "recipe": recipe,
        "epochs": len(result.history.get("loss", [])), "held_out_accuracy": accuracy,
        "meets_target": accuracy >= TARGET_ACCURACY, "evaluated_checkpoint": "last",
        "preprocessing": dataclasses.asdict(preprocessing), **checks,
        "duration_s": round(time.time() - start, 1),
        "paths": {"output": output_dir, "best_checkpoint": result.best_checkpoint,
                  "last_checkpoint": result.last_checkpoint, "curves": result.plot,
                  "tensorboard": result.tensorboard_dir, "saved_model": saved, **{
                      f"tflite_{k}": v for k, v in tflite_paths.items()}},
    }
    utils.write_json(os.path.join(output_dir, "summary.json"), summary)
    _step(f"done in {summary['duration_s']:.0f} s")
    for name, path in summary["paths"].items():
        print(f"  {name:16s} {path}")
    print(f"  view the logs:   tensorboard --logdir {result.tensorboard_dir}")
    print(f"  serve it: see export/README.md (model base path {os.path.dirname(saved)})")
    return summary
