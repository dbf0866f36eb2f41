"""The `lambda-keras` command: train, evaluate, export, predict, autotune, bench, convert, demo.

Each subcommand is a thin layer over the package's modules (training, data, export, weights);
heavy modules are imported inside their subcommand, after the command line was
parsed and TensorFlow's logging set.

Models: `--model` takes any model name (registry key `lambda_resnet26t`, builder `LambdaResNet26T`
or preset `lambda_resnet26t.c1_in1k`; resolved by lambda_keras.presets.resolve_model_name, the
resolver of the Python API) or a `.keras` file (loaded with Keras' safe mode on). `--weights`
defaults to what the name means everywhere: a preset's weights, "imagenet" for the timm variants,
none for the paper family; `--weights none` starts from random weights.

`autotune` times the lambda layers' formulations of a model (`lambda_keras.autotune`) under the
command's own settings (oneDNN and the pooled allocator, as its other subcommands run): the
picks serve `train`, `evaluate`, `export` and `predict` on this machine, and programs that run
with the same settings. Picks are stored per compute dtype: `--mixed-precision` tunes for the
policy `train --mixed-precision` will use. A `.keras` file that takes any input size is tuned at
`--image-size` (a copy built for that size: the lambda layers' map sizes follow from it).

`bench` times a model's inference (and training step) against a keras.applications baseline
built at the same input size, classes and dtype policy, interleaved in one process
(`lambda_keras.benchmark.compare`), and prints the runtime it measured in (backend, device, CPU
flags, oneDNN) with a Markdown table of times and ratios; `--output` writes them as JSON.

Modules: `arguments.py` (what the flags become: models, images, checks), `commands.py` (each
subcommand's function and parser); `main` (here) runs one and turns expected failures into one
line.

Errors: every expected failure (a bad argument, a file that is missing, unreadable or not what it
should be) prints one `error:` line naming the file or argument and exits with status 2; the
traceback is printed only with `--verbose`. Messages name the command line's own arguments
(`--image-size`, `src`), not the Python arguments they become: integer flags are checked
(`check_int_flags`) before anything is built. A flag the command would ignore (export's TFLite
flags with `--format saved_model`, its SavedModel flags with `--format tflite`) is refused.

Logging: unless `--verbose`, TensorFlow's C++ log lines are silenced: `TF_CPP_MIN_LOG_LEVEL=3`
(unless the user set it) for what TensorFlow logs after its import, and the native stderr
redirected to /dev/null while TensorFlow is imported (TF 2.21 writes its import-time lines, e.g.
the oneDNN and CUDA notices, through absl before reading TF_CPP_MIN_LOG_LEVEL).
"""

import sys

from lambda_keras import runtime
from lambda_keras.cli.arguments import (
    INT_FLAGS, NO_WEIGHTS, QUIET_LOG_LEVEL, at_image_size, check_int_flags, check_output_folder,
    class_names, image_size_floor, load_model, model_preprocessing, parse_phases,
    quiet_tensorflow, read_image, recipe_overrides, resolve_model_arg, resolve_tpu, timed_model)
from lambda_keras.cli.commands import build_parser

__all__ = ["EXPECTED_ERRORS", "INT_FLAGS", "NO_WEIGHTS", "QUIET_LOG_LEVEL", "at_image_size",
           "build_parser", "check_int_flags", "check_output_folder", "class_names", "error_line",
           "image_size_floor", "load_model", "main", "model_preprocessing", "parse_phases",
           "quiet_tensorflow", "read_image", "recipe_overrides", "resolve_model_arg",
           "resolve_tpu", "timed_model"]


def main(argv=None):
    runtime.prefer_onednn()  # before TensorFlow is imported; see lambda_keras/runtime.py
    args = build_parser().parse_args(argv)
    quiet_tensorflow(args.verbose)  # before TensorFlow is imported, too
    try:
        check_int_flags(args)
        return args.func(args) or 0
    except EXPECTED_ERRORS as error:
        if args.verbose:
            raise
        print(error_line(error), file=sys.stderr)
        return 2


# Failures of the user's input or files (OSError: missing, unreadable, looping, full disk).
EXPECTED_ERRORS = (ValueError, TypeError, OSError)


def error_line(error):
    """One `error:` line: the message with its line breaks folded (Keras' messages span lines)."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
        message += f": {error.filename}"
    return f"error: {message}"
