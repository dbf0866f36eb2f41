"""The `lambda-keras` command: train, evaluate, export, predict, convert, bench, demo.

Each subcommand is a thin layer over the package's modules (training, data, export, weights,
benchmarks); heavy modules (export, training, benchmarks) are imported inside their subcommand.
A model is given by builder name (`lambda_resnet50`, `lambda_resnet26t`, ...) plus `--weights`,
or by a `.keras` file (loaded with Keras' safe mode on).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _model_names():
    from lambda_keras.architectures import ARCHITECTURES

    return sorted(ARCHITECTURES)


def load_model(model, weights=None, image_size=None, classes=None):
    """A builder name (+ weights) or a `.keras` file -> keras.Model."""
    import keras

    from lambda_keras import models

    if model.endswith(".keras"):
        if not os.path.exists(model):
            raise SystemExit(f"error: --model file not found: {model}")
        return keras.saving.load_model(model, safe_mode=True)
    if model not in models.BUILDERS:
        raise SystemExit(f"error: unknown --model {model!r}; valid: {', '.join(_model_names())} "
                         "or a .keras file")
    kwargs = {"weights": None if weights in (None, "none") else weights}
    if image_size:
        kwargs["input_shape"] = (image_size, image_size, 3)
    if classes:
        kwargs["classes"] = classes
    return models.BUILDERS[model](**kwargs)


def _cmd_predict(args):
    import numpy as np
    import tensorflow as tf

    from lambda_keras import data, weights

    model = load_model(args.model, args.weights, args.image_size)
    preprocessing = weights.resolve_preprocessing(args.model if not args.model.endswith(".keras")
                                                  else None)
    size = model.input_shape[1] or preprocessing.input_size[0]
    preprocessing = weights.replace_input_size(preprocessing, (size, model.input_shape[2] or size))
    for path in args.images:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image not found: {path}")
        image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                                   expand_animations=False)  # [H, W, 3] uint8
        batch = data.eval_transform(image, preprocessing)[None]  # [1, h, w, 3] normalised
        probabilities = np.asarray(model.predict(batch, verbose=0))
        print(path)
        for _, label, score in weights.decode_predictions(probabilities, top=args.top)[0]:
            print(f"  {score:7.4f}  {label}")


def _cmd_convert(args):
    from lambda_keras import weights

    path = weights.convert_timm(args.src, args.dst, arch_name=args.model)
    print(f"wrote {path}")


def _cmd_export(args):
    from lambda_keras import data, export, weights

    model = load_model(args.model, args.weights, args.image_size)
    name = None if args.model.endswith(".keras") else args.model
    preprocessing = weights.replace_input_size(weights.resolve_preprocessing(name),
                                               tuple(model.input_shape[1:3]))
    labels = args.labels
    if labels is None and model.output_shape[-1] == 1000:
        labels = [name for _, name in weights.imagenet_classes()]
    if args.format in ("saved_model", "all"):
        path = export.saved_model(model, os.path.join(args.output, "saved_model"),
                                  version=args.version, preprocessing=preprocessing,
                                  labels=labels, overwrite=args.overwrite,
                                  warmup=not args.no_warmup)
        print(f"SavedModel: {path}")
    if args.format in ("tflite", "all"):
        representative = None
        if args.quantization == "int8":
            representative, _ = data.make_dataset(
                args.calibration_data, split="train", image_size=model.input_shape[1],
                batch_size=1, training=False, preprocessing=preprocessing)
            representative = representative.take(args.calibration_steps)
        filename = f"model_{args.quantization or 'float32'}.tflite"
        path = export.tflite(model, os.path.join(args.output, filename),
                             quantization=args.quantization, representative_data=representative)
        print(f"TFLite: {path}")


def _cmd_train(args):
    from lambda_keras import training

    overrides = training.parse_recipe_overrides(args.set or [])
    validation = None if args.validation_data == "none" else args.validation_data
    result = training.train(
        args.model, args.data, recipe=args.recipe, output_dir=args.output, epochs=args.epochs,
        batch_size=args.batch_size, image_size=args.image_size,
        weights=None if args.weights in (None, "none") else args.weights,
        validation_spec=validation, tpu=args.tpu, jit_compile=args.jit_compile,
        mixed_precision=args.mixed_precision, steps_per_epoch=args.steps_per_epoch,
        seed=args.seed, deterministic=args.deterministic, data_dir=args.data_dir, **overrides)
    print(json.dumps(result.summary(), indent=2, default=str))


def _cmd_evaluate(args):
    from lambda_keras import training

    model = args.model if args.model.endswith(".keras") else load_model(
        args.model, args.weights, args.image_size)
    metrics = training.evaluate(model, args.data, split=args.split, batch_size=args.batch_size,
                                image_size=args.image_size, tpu=args.tpu, data_dir=args.data_dir)
    print(json.dumps(metrics, indent=2, default=str))


def _cmd_bench(args):
    try:  # benchmarks/ lives beside the package in a source checkout (make bench)
        from benchmarks import run as bench_run
    except ImportError:
        raise SystemExit("error: `lambda-keras bench` runs from a source checkout of lambda_keras "
                         "(it needs the benchmarks/ folder); run it from the repository root.")
    argv = ["--out", args.output] + (["--quick"] if args.quick else [])
    return bench_run.main(argv + (["--only", args.only] if args.only else []))


def _cmd_demo(args):
    from lambda_keras import demo

    summary = demo.run(model_name=args.model, data_spec=args.data, epochs=args.epochs,
                       image_size=args.image_size, output_dir=args.output)
    return 0 if summary["meets_target"] else 1


def _jit_flag(text):
    value = {"auto": "auto", "true": True, "false": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected auto, true or false, got {text!r}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(prog="lambda-keras", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def model_args(p, weights_default=None):
        p.add_argument("--model", required=True, help="builder name or .keras file")
        p.add_argument("--weights", default=weights_default,
                       help="'imagenet', a .safetensors/.weights.h5 path, or 'none'")
        p.add_argument("--image-size", type=int, default=None)

    p = sub.add_parser("train", help="train or fine-tune a model on a dataset spec")
    model_args(p)
    p.add_argument("--data", default="digits", help="tfds:NAME[:split] | folder:PATH | digits")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    p.add_argument("--validation-data", default="auto", help="a spec, 'auto' or 'none'")
    p.add_argument("--recipe", default="finetune", help="paper-imagenet | finetune | scratch")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch size")
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--tpu", default=None, help="TPU name/address, 'local' or 'auto'")
    p.add_argument("--mixed-precision", default=None,
                   choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"))
    p.add_argument("--jit-compile", default="auto", type=_jit_flag, help="auto | true | false")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a recipe field (repeatable), e.g. --set drop_path_rate=0.1")
    p.add_argument("--output", default="runs/train")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="top-1/top-5 of a model on a dataset spec")
    model_args(p)
    p.add_argument("--data", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="validation")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tpu", default=None)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("export", help="SavedModel for TF Serving and/or TFLite")
    model_args(p)
    p.add_argument("--output", default="export")
    p.add_argument("--format", choices=("saved_model", "tflite", "all"), default="all")
    p.add_argument("--version", type=int, default=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quantization", choices=("float16", "dynamic", "int8"), default=None)
    p.add_argument("--calibration-data", default="digits")
    p.add_argument("--calibration-steps", type=int, default=256)
    p.add_argument("--labels", default=None,
                   help="labels.txt, one name per line (default: ImageNet names for 1000 classes)")
    p.add_argument("--no-warmup", action="store_true", help="skip the TF Serving warmup requests")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("predict", help="print the top-5 labels of images")
    p.add_argument("images", nargs="+")
    model_args(p, weights_default="imagenet")
    p.add_argument("--top", type=int, default=5)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("convert", help="timm .safetensors -> Keras .weights.h5")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--model", default=None, help="architecture (inferred from the file if omitted)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("bench", help="benchmarks (benchmarks/README.md)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default=None)
    p.add_argument("--output", default="benchmarks/results")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="the main job: train on the bundled digits, export, verify")
    p.add_argument("--model", default="lambda_resnet26t")
    p.add_argument("--data", default="digits")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--output", default="runs/demo")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
