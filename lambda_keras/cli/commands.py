"""The `lambda-keras` subcommands: each one's function (`_cmd_<name>`, a thin layer over the
package's modules, imported inside it) and its parser (`build_parser`).
"""

import argparse
import json
import os
import sys

from lambda_keras import utils
from lambda_keras.cli.arguments import (
    at_image_size, check_output_folder, class_names, flags_named, load_model,
    model_preprocessing, parse_phases, quiet_tensorflow, read_image, recipe_overrides,
    resolve_model_arg, resolve_tpu, timed_model)

PREDICT_BATCH = 32  # images per model call of `predict`
# Defaults of export's int8 calibration flags (None in the parser: a flag given is told apart).
CALIBRATION_DATA, CALIBRATION_STEPS = "digits", 256
DESCRIPTION = ("The `lambda-keras` command: train, evaluate, export, predict, autotune, bench, "
               "convert, demo.")


def _cmd_predict(args):
    import numpy as np

    from lambda_keras import data
    from lambda_keras.export import serving

    name, weights_arg = resolve_model_arg(args.model, args.weights)
    if weights_arg is None and not name.endswith(".keras"):
        print(f"note: {args.model} has no pretrained weights here: these are the predictions of "
              "a randomly initialised model (pass --weights FILE)", file=sys.stderr)
    model = load_model(args.model, args.weights, args.image_size)
    serving.check_classifier(model, "--model")  # what the images and labels below feed
    preprocessing = model_preprocessing(args.model, model, args.image_size)
    labels = class_names(args.labels, model.output_shape[-1])
    top = min(5, len(labels)) if args.top is None else args.top
    top = utils.check_int("--top", top, high=len(labels))
    # Every image is decoded and prepared before any is predicted: a bad file stops the command
    # before any output.
    images = np.stack([data.eval_transform(read_image(path), preprocessing)
                       for path in args.images])  # [N, h, w, 3]
    scores = np.asarray(model.predict(images, batch_size=PREDICT_BATCH, verbose=0))  # [N, classes]
    for path, probabilities in zip(args.images, scores):
        print(path)
        for i in np.argsort(-probabilities, kind="stable")[:top]:  # best first
            print(f"  {probabilities[i]:7.4f}  {labels[i]}")


def _cmd_autotune(args):
    from lambda_keras.layers import formulations

    phases = parse_phases(args.phases)
    model = timed_model(args)
    report = formulations.autotune(model, batch_size=args.batch_size, phases=phases,
                                   jit_compile=args.jit_compile, repeats=args.repeats)
    print(f"device: {report['device']}")
    for key, entry in report["picks"].items():
        times = ", ".join(f"{name} {result['ms']:.1f}" if "ms" in result else f"{name} skipped"
                          for name, result in entry["results"].items())
        print(f"{key}: {entry['formulation']} (ms: {times}; {', '.join(entry['layers'])})")
    if report["dynamic"]:
        print(f"not tuned (dynamic map size, the convolution; --image-size gives one): "
              f"{', '.join(report['dynamic'])}")
    print(f"stored in {formulations.autotuning.cache_path()}" if report["picks"]
          else "no lambda layer of static map size: nothing stored")


def _cmd_bench(args):
    from lambda_keras import benchmark

    phases = parse_phases(args.phases)  # every argument checked before anything is built
    benchmark.check_baseline(args.baseline, arg="--baseline")
    if args.output is not None and (not args.output.endswith(".json")
                                    or os.path.isdir(args.output)):
        raise ValueError(f"`--output` must name a .json file (written whole, replacing one "
                         f"there). Received: --output={args.output!r}")
    model = timed_model(args)
    if None in model.input_shape[1:3]:
        raise ValueError(f"--model {args.model} takes images of any size; pass --image-size")
    with utils.dtype_policy(utils.model_precision(model)):  # the model's, a .keras file's too
        baseline = benchmark.baseline_model(args.baseline, model.input_shape[1:],
                                            model.output_shape[-1])  # None for "none"
    result = benchmark.compare(model, baseline, batch_size=args.batch_size, phases=phases,
                               rounds=args.rounds, calls=args.calls, jit_compile=args.jit_compile)
    print(benchmark.format_report(result))
    if args.output is not None:
        utils.write_json(args.output, result)
        print(f"wrote {args.output}")


def _cmd_convert(args):
    from lambda_keras import weights
    from lambda_keras.weights import loading

    # Checked here too (convert_timm's own checks), before the file is read; the messages name
    # the command line's `src` and `--model` (the architecture goes to convert_timm's
    # `arch_name`, and `arch_arg` names it when the tensors do not tell it).
    loading.check_timm_file(args.src, "src")
    arch = None if args.model is None else loading.resolve_timm_arch(args.model, "--model")
    path = weights.convert_timm(args.src, args.dst, arch_name=arch, arch_arg="--model")
    print(f"wrote {path}")


def _check_export_flags(args):
    """Export flags that `--format` (or, for the calibration, `--quantization`) leaves unused are
    refused, not ignored; the message names each one given, with its value."""
    calibration = {"--calibration-data": args.calibration_data,
                   "--calibration-steps": args.calibration_steps}
    checks = []
    if args.format == "tflite":
        checks.append(({"--version": args.version, "--labels": args.labels,
                        "--no-warmup": args.no_warmup or None},
                       "--format tflite writes no SavedModel"))
    if args.format == "saved_model":
        checks.append(({"--quantization": args.quantization, **calibration},
                       "--format saved_model writes no TFLite file"))
    elif args.quantization != "int8":
        checks.append((calibration, "only --quantization int8 calibrates"))
    for flags, reason in checks:
        given = {flag: value for flag, value in flags.items() if value is not None}
        if given:
            received = ", ".join(f"{flag}={value!r}" for flag, value in given.items())
            raise ValueError(f"{', '.join(given)} would be ignored: {reason}. "
                             f"Received: {received}")


def _cmd_export(args):
    from lambda_keras import data, export
    from lambda_keras.export import litert, serving

    _check_export_flags(args)
    if args.calibration_data is None:
        args.calibration_data = CALIBRATION_DATA
    if args.calibration_steps is None:
        args.calibration_steps = CALIBRATION_STEPS
    check_output_folder(args)
    saved_model_dir = os.path.join(args.output, "saved_model")
    tflite_path = os.path.join(args.output, f"model_{args.quantization or 'float32'}.tflite")
    if args.format in ("saved_model", "all"):  # before writing anything
        serving.check_version_directory(saved_model_dir, args.version, args.overwrite,
                                        version_arg="--version", overwrite_arg="--overwrite")
    if args.format in ("tflite", "all"):  # before writing anything (the SavedModel comes first)
        litert.check_tflite_path(tflite_path, args.overwrite, path_arg="--output",
                                 overwrite_arg="--overwrite")
    int8 = args.format in ("tflite", "all") and args.quantization == "int8"
    if int8:
        data.check_spec(args.calibration_data, arg="--calibration-data")
    model = load_model(args.model, args.weights, args.image_size)
    if None in model.input_shape[1:3]:  # a .keras file that takes any size
        if args.image_size is None:
            raise ValueError(f"--model {args.model} takes images of any size; pass --image-size "
                             "for the exported model's input (the served signatures resize to it)")
        model = at_image_size(model, args.image_size)
    preprocessing = model_preprocessing(args.model, model)
    labels = class_names(args.labels, model.output_shape[-1])
    representative = None  # the calibration data is checked before anything is written
    if int8:
        representative, _ = data.make_dataset(
            args.calibration_data, split="train", image_size=model.input_shape[1],
            batch_size=1, training=False, preprocessing=preprocessing)
        representative = representative.take(args.calibration_steps)
    if args.format in ("saved_model", "all"):
        path = export.saved_model(model, saved_model_dir, version=args.version,
                                  preprocessing=preprocessing, labels=labels,
                                  overwrite=args.overwrite, warmup=not args.no_warmup)
        print(f"SavedModel: {path}")
    if args.format in ("tflite", "all"):
        path = export.tflite(model, tflite_path, quantization=args.quantization,
                             representative_data=representative, overwrite=args.overwrite)
        print(f"TFLite: {path}")


def _cmd_train(args):
    from lambda_keras import data, training

    model, weights = resolve_model_arg(args.model, args.weights)
    overrides = recipe_overrides(args)
    validation = None if args.validation_data == "none" else args.validation_data
    # train's own checks, early, naming the flags: the output folder, the data, the TPU.
    check_output_folder(args)
    data.check_spec(args.data, data_dir=args.data_dir, arg="--data")
    if validation not in (None, "auto"):
        data.check_spec(validation, data_dir=args.data_dir, arg="--validation-data")
    result = training.train(
        model, args.data, recipe=args.recipe, output_dir=args.output, weights=weights,
        validation_spec=validation, strategy=resolve_tpu(args), jit_compile=args.jit_compile,
        mixed_precision=args.mixed_precision, steps_per_epoch=args.steps_per_epoch,
        seed=args.seed, deterministic=args.deterministic, data_dir=args.data_dir,
        verify_images=args.verify_images, overwrite=args.overwrite, **overrides)
    print(json.dumps(result.summary(), indent=2, default=str))


def _cmd_evaluate(args):
    from lambda_keras import data, training

    data.check_spec(args.data, data_dir=args.data_dir, arg="--data")
    preprocessing = None  # a .keras file: training.evaluate's (its record, else the default)
    if args.model.endswith(".keras"):
        model = resolve_model_arg(args.model, args.weights)[0]
    else:  # the name's default weights and preprocessing, as everywhere
        model = load_model(args.model, args.weights, args.image_size)
        preprocessing = model_preprocessing(args.model, model, args.image_size)
    with flags_named(split="--split"):  # the data sources check the split
        metrics = training.evaluate(
            model, args.data, split=args.split, batch_size=args.batch_size,
            image_size=args.image_size, preprocessing=preprocessing,
            strategy=resolve_tpu(args), data_dir=args.data_dir)
    print(json.dumps(metrics, indent=2, default=str))


def _cmd_demo(args):
    from lambda_keras import data, demo

    model, _ = resolve_model_arg(args.model)
    if model.endswith(".keras"):
        raise ValueError("demo --model takes a model name, not a .keras file")
    data.check_spec(args.data, arg="--data")  # before the demo starts (train names `data_spec`)
    summary = demo.run(model_name=model, data_spec=args.data, epochs=args.epochs,
                       image_size=args.image_size, output_dir=args.output)
    return 0 if summary["meets_target"] else 1


def _jit_flag(text):
    value = {"auto": "auto", "true": True, "false": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected auto, true or false, got {text!r}")
    return value


class _RecipeOrHelp(argparse.Action):
    """`--recipe NAME`; `--recipe help` prints the recipe table and exits, like --help."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values == "help":
            quiet_tensorflow(getattr(namespace, "verbose", False))
            from lambda_keras import training

            print(training.describe_recipes())
            parser.exit()
        setattr(namespace, self.dest, values)


def build_parser():
    parser = argparse.ArgumentParser(prog="lambda-keras", description=DESCRIPTION)
    parser.add_argument("--verbose", action="store_true",
                        help="keep TensorFlow's C++ log lines (silenced by default)")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_args(p):
        p.add_argument("--model", required=True,
                       help="model name (lambda_resnet26t, LambdaResNet26T, "
                            "lambda_resnet26t.c1_in1k, ...) or a .keras file")
        p.add_argument("--weights", default=None,
                       help="'imagenet', a preset, a .safetensors/.weights.h5 path or 'none' "
                            "(default: the model name's: its preset / 'imagenet' for the timm "
                            "variants, none for the paper family)")
        p.add_argument("--image-size", type=int, default=None,
                       help="input height and width (default: the weights' or the "
                            "architecture's; a .keras file's own)")

    p = sub.add_parser("train", help="train or fine-tune a model on a dataset spec")
    model_args(p)
    p.add_argument("--data", default="digits",
                   help="tfds:NAME[:split] | folder:PATH | digits (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    p.add_argument("--verify-images", action="store_true",
                   help="decode every image of a folder: spec before training (slow; finds "
                        "damage inside complete files)")
    p.add_argument("--validation-data", default="auto",
                   help="a spec, 'auto' or 'none' (default: %(default)s)")
    p.add_argument("--recipe", default="finetune", action=_RecipeOrHelp,
                   help="a recipe name (default: %(default)s); `--recipe help` lists them all")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--batch-size", type=int, default=None,
                   help="global batch size (default: the recipe's)")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="default: one pass over the data")
    p.add_argument("--tpu", default=None, help="TPU name/address, 'local' or 'auto'")
    p.add_argument("--mixed-precision", default=None,
                   choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"),
                   help="dtype policy (default: the recipe's precision)")
    p.add_argument("--jit-compile", default="auto", type=_jit_flag,
                   help="auto (XLA on a single GPU) | true | false (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None,
                   help="seeds the model and the data order (default: drawn, kept for a resume)")
    p.add_argument("--deterministic", action="store_true",
                   help="TensorFlow op determinism (reproducible, slower)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a recipe field (repeatable), e.g. --set drop_path_rate=0.1")
    p.add_argument("--output", default="runs/train",
                   help="the run's folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier finished run in --output (a killed run resumes)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="top-1/top-5 of a model on a dataset spec")
    model_args(p)
    p.add_argument("--data", required=True, help="tfds:NAME[:split] | folder:PATH | digits")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    p.add_argument("--split", default="validation",
                   help="the split to evaluate on (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--tpu", default=None, help="TPU name/address, 'local' or 'auto'")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("export", help="SavedModel for TF Serving and/or TFLite")
    model_args(p)
    p.add_argument("--output", default="export",
                   help="the folder written to (default: %(default)s)")
    p.add_argument("--format", choices=("saved_model", "tflite", "all"), default="all",
                   help="(default: %(default)s)")
    p.add_argument("--version", type=int, default=None,
                   help="SavedModel version directory (default: the next integer)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --version directory or .tflite file")
    p.add_argument("--quantization", choices=("float16", "dynamic", "int8"), default=None,
                   help="TFLite only (default: none, float32)")
    p.add_argument("--calibration-data", default=None,
                   help="int8 only: a data spec of images like the model's inputs "
                        f"(default: {CALIBRATION_DATA}, the bundled digits)")
    p.add_argument("--calibration-steps", type=int, default=None,
                   help=f"int8 only: images to calibrate on (default: {CALIBRATION_STEPS})")
    p.add_argument("--labels", default=None,
                   help="labels.txt, one name per line (default: ImageNet names for 1000 "
                        "classes, else the class numbers)")
    p.add_argument("--no-warmup", action="store_true", help="skip the TF Serving warmup requests")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("predict", help="print the top-5 labels of images")
    p.add_argument("images", nargs="+",
                   help="image files (PNG, JPEG, GIF, BMP; WebP where TensorFlow reads it)")
    model_args(p)
    p.add_argument("--top", type=int, default=None, help="default: 5 (fewer classes: all)")
    p.add_argument("--labels", default=None,
                   help="labels.txt, one name per line (default: ImageNet names for 1000 "
                        "classes, else the class numbers)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("autotune", help="time the lambda layers' formulations on this machine; "
                                        '"auto" then uses the fastest')
    p.add_argument("--model", required=True, help="model name or a .keras file")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size the layers are timed at (default: the model's; a .keras "
                        "file that takes any size is tuned only with it)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="batch the formulations are timed at (default: %(default)s)")
    p.add_argument("--phases", default="fwd,train",
                   help="fwd (inference), train or fwd,train (default: %(default)s)")
    p.add_argument("--jit-compile", default="auto", type=_jit_flag,
                   help="auto (XLA on a single GPU, as `train`) | true | false "
                        "(default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed calls per formulation, the median counts (default: %(default)s)")
    p.add_argument("--mixed-precision", default=None,
                   choices=("float32", "mixed_float16", "mixed_bfloat16"),
                   help="the dtype policy `train --mixed-precision` will use (default: float32, "
                        "or a .keras file's own): picks are stored per compute dtype")
    p.set_defaults(func=_cmd_autotune)

    p = sub.add_parser("bench", help="time a model against a keras.applications baseline "
                                     "on this machine (interleaved, one process)")
    p.add_argument("--model", required=True,
                   help="model name (built with random weights) or a .keras file")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size (default: the model's; a .keras file that takes any size "
                        "needs it)")
    p.add_argument("--batch-size", type=int, default=8, help="(default: %(default)s)")
    p.add_argument("--baseline", default="resnet50",
                   help="resnet50 | resnet101 | resnet152 (weights=None, the model's input "
                        "and classes) | none (default: %(default)s)")
    p.add_argument("--phases", default="fwd",
                   help="fwd (inference), train (forward + backward) or fwd,train "
                        "(default: %(default)s)")
    p.add_argument("--rounds", type=int, default=5,
                   help="rounds, each timing both models, the order alternating "
                        "(default: %(default)s)")
    p.add_argument("--calls", type=int, default=3,
                   help="timed calls per model and round (default: %(default)s)")
    p.add_argument("--jit-compile", default="auto", type=_jit_flag,
                   help="auto (XLA on a single GPU) | true | false (default: %(default)s)")
    p.add_argument("--mixed-precision", default=None,
                   choices=("float32", "mixed_float16", "mixed_bfloat16"),
                   help="dtype policy of both models (default: float32, or a .keras file's own)")
    p.add_argument("--output", default=None, help="also write the results to this .json file")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("convert", help="timm .safetensors -> Keras .weights.h5")
    p.add_argument("src", help="the timm .safetensors checkpoint")
    p.add_argument("dst", help="the .weights.h5 file to write")
    p.add_argument("--model", default=None,
                   help="model name (inferred from the file if omitted)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("demo", help="the main job: train on the bundled digits, export, verify")
    p.add_argument("--model", default="lambda_resnet26t",
                   help="model name (default: %(default)s)")
    p.add_argument("--data", default="digits", help="a data spec (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=10, help="(default: %(default)s)")
    p.add_argument("--image-size", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--output", default="runs/demo",
                   help="its folder (default: %(default)s; a rerun replaces the run there)")
    p.set_defaults(func=_cmd_demo)
    for p in sub.choices.values():  # --verbose before or after the subcommand
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="keep TensorFlow's C++ log lines (silenced by default)")
    return parser
