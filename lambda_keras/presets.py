"""Weight presets and model names, as data: what a name means and how its images are prepared.

This module is pure data plus small lookups; it imports nothing heavy (no Keras, no TensorFlow),
so the CLI, data pipelines and export code can read it cheaply. (Only `preprocessing_beside`,
checking a record it found, loads lambda_keras.data's check, and with it TensorFlow.)

- `Preprocessing`: eval resize + center crop and normalisation of a model's inputs.
- `PRESETS`: the published weights (source URL, sha256, preprocessing, classes, top-1, licence).
  The paper (Bello, ICLR 2021) published no checkpoints; the only public ImageNet weights of
  lambda networks are timm's, for three timm architectures that models.py reproduces exactly.
- `resolve_model_name`: THE model-name resolver. A model is named by its registry key
  (`lambda_resnet26t`), its builder (`LambdaResNet26T`) or a preset (`lambda_resnet26t.c1_in1k`);
  every kind is accepted by the Python API and by every CLI subcommand, and every kind has one
  default for `weights`: a preset name means its weights, a builder or registry key means the
  builder's default (keras.applications: "imagenet" where weights exist, else None).
- `resolve_preprocessing` / `replace_input_size`: the Preprocessing of any model name.
- `save_preprocessing` / `preprocessing_beside`: the Preprocessing a run trained with, kept in
  PREPROCESSING_FILE beside its `.keras` checkpoints (a `.keras` file has no room for it), so
  that evaluating, predicting with or exporting a checkpoint prepares images as training did.

NOTE: the Hugging Face files' sha256 digests are not recorded here (this project was built without
access to the hub), so `sha256=None` for every preset: the download is then verified by parsing the
safetensors file and by the strict load (every tensor name and shape must match), not by a digest.
"""

import dataclasses
import json
import os

from lambda_keras import architectures, utils

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How images are prepared for a model: eval resize + center crop, then normalisation.

    Models take float32 RGB images normalised as ((pixels / 255) - mean) / std.
    Evaluation: resize the shorter side to input_size / crop_pct with `interpolation`, then
    center-crop input_size (timm's eval transform, `lambda_keras.data.eval_transform`). The
    fields are checked where the preprocessing is applied (the transforms, `export`), not here.

    Args:
        input_size: (height, width) the model is evaluated at.
        crop_pct: fraction of the resized image kept by the center crop, in (0, 1].
        interpolation: resize method: "bilinear", "bicubic" or "nearest".
        mean: per-channel (RGB) mean of pixels / 255.
        std: per-channel (RGB) standard deviation of pixels / 255.

    Example:

    >>> prep = Preprocessing(input_size=(256, 256), crop_pct=0.94)  # ImageNet mean and std
    >>> prep == lambda_keras.resolve_preprocessing("LambdaResNet26T")
    True
    """

    input_size: tuple = (224, 224)  # (height, width) the model is evaluated at
    crop_pct: float = 0.875  # fraction of the resized image kept by the center crop
    interpolation: str = "bicubic"  # resize method ("bilinear" or "bicubic")
    mean: tuple = IMAGENET_MEAN  # per-channel mean of pixels / 255
    std: tuple = IMAGENET_STD  # per-channel std of pixels / 255


DEFAULT_PREPROCESSING = Preprocessing()


@dataclasses.dataclass(frozen=True)
class Preset:
    """One set of published weights."""

    name: str  # timm's "architecture.tag"; also accepted as `weights=` and as a model name
    arch: str  # architectures.ARCHITECTURES key
    builder: str  # public lambda_keras builder
    url: str  # the safetensors file
    sha256: str  # hex digest of that file, None where unknown (see module NOTE)
    preprocessing: Preprocessing  # timm's pretrained_cfg
    num_classes: int
    top1: float  # ImageNet-1k top-1 (%) reported by the source (timm's results tables)
    top1_size: int  # image size of that top-1
    license: str
    source: str  # where the weights come from


HF_URL = "https://huggingface.co/timm/{name}/resolve/main/model.safetensors"
_TIMM_SOURCE = "timm (Ross Wightman), trained on ImageNet-1k; Hugging Face hub"


def _timm_preset(name, crop_pct, top1):
    arch = name.split(".")[0]
    return Preset(
        name=name, arch=arch, builder=architectures.ARCHITECTURES[arch].builder,
        url=HF_URL.format(name=name), sha256=None, num_classes=1000, top1=top1, top1_size=256,
        license="apache-2.0", source=_TIMM_SOURCE,
        preprocessing=Preprocessing(input_size=(256, 256), crop_pct=crop_pct,
                                    interpolation="bicubic"))


# timm 1.0 pretrained_cfg of each (byoanet.py default_cfgs); top-1 from timm's results tables.
PRESETS = {p.name: p for p in (
    _timm_preset("lambda_resnet26t.c1_in1k", crop_pct=0.94, top1=79.1),
    _timm_preset("lambda_resnet50ts.a1h_in1k", crop_pct=0.95, top1=81.2),
    _timm_preset("lambda_resnet26rpt_256.c1_in1k", crop_pct=0.94, top1=79.0),
)}
# weights="imagenet" for an architecture -> its preset.
IMAGENET_PRESETS = {p.arch: p.name for p in PRESETS.values()}


# --------------------------------------------------------------------------- model names
@dataclasses.dataclass(frozen=True)
class ModelName:
    """What a model name resolves to (`resolve_model_name`)."""

    name: str  # as given
    arch: str  # architectures.ARCHITECTURES key
    builder: str  # public builder function name, e.g. "LambdaResNet26T"
    preset: str = None  # the preset the name names, if it names one
    default_weights: str = None  # `weights` when none is given: a preset, "imagenet" or None


def _key(name):
    """Case-, underscore- and hyphen-blind form of a name."""
    return name.lower().replace("_", "").replace("-", "")


def model_names():
    """Every accepted model name: registry keys, builder names and preset names, sorted."""
    names = set(PRESETS)
    for arch in architectures.ARCHITECTURES.values():
        names.update((arch.name, arch.builder))
    return sorted(names)


def resolve_model_name(name):
    """The architecture, builder and default weights a model name means.

    Args:
        name: a registry key ("lambda_resnet50"), a builder name ("LambdaResNet50") or a preset
            name ("lambda_resnet26t.c1_in1k"); case, underscores and hyphens are ignored.

    Returns:
        A `ModelName`. `default_weights` is the preset for a preset name, "imagenet" for an
        architecture with a preset, else None.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        TypeError: `name` is not a string.

    Example:
    >>> resolve_model_name("LambdaResNet26T").default_weights
    'imagenet'
    """
    if not isinstance(name, str):
        raise TypeError(f"A model name must be a string. Received: name={name!r}")
    key = _key(name)
    for preset in PRESETS.values():
        if key == _key(preset.name):
            return ModelName(name, preset.arch, preset.builder, preset.name, preset.name)
    for arch in architectures.ARCHITECTURES.values():
        if key in (_key(arch.name), _key(arch.builder)):
            return ModelName(name, arch.name, arch.builder, None,
                             "imagenet" if arch.name in IMAGENET_PRESETS else None)
    raise ValueError(f"Unknown model name. Valid: {', '.join(model_names())}. "
                     f"Received: name={name!r}")


def preset_for(weights, arch_name, arg="weights"):
    """The Preset that `weights` ("imagenet" or a preset name) means for the model `arch_name`;
    `arg` is how the message names `weights` (the command line's `--weights`)."""
    arch = resolve_model_name(arch_name).arch
    name = IMAGENET_PRESETS.get(arch) if weights == "imagenet" else weights
    if name is None or name not in PRESETS or PRESETS[name].arch != arch:
        with_weights = tuple(p.builder for p in PRESETS.values())
        raise ValueError(
            f"No pretrained weights {weights!r} for architecture {arch_name!r}. Builders with "
            f"ImageNet weights: {with_weights}; the paper's LambdaResNet-50..420 have no "
            f"published weights. Received: {arg}={weights!r}")
    return PRESETS[name]


# ------------------------------------------------------------------------ preprocessing
def resolve_preprocessing(name, *, arg="name"):
    """The Preprocessing of a model name, a Preprocessing or None.

    Args:
        name: a model name (registry key, builder or preset name; see `resolve_model_name`), a
            `Preprocessing` (returned as is) or None (`DEFAULT_PREPROCESSING`). A preset name
            gets that preset's preprocessing, an architecture with ImageNet weights its preset's,
            the paper family (no weights) the ImageNet defaults (crop 0.875, bicubic, ImageNet
            mean/std) at its architecture's image size.
        arg: how the messages name `name` (a caller's own argument, e.g. `preprocessing`).

    Returns:
        A `Preprocessing`.

    Raises:
        TypeError: `name` is neither a string, a Preprocessing nor None.
        ValueError: `name` is an unknown model name (the message lists the valid ones).

    Example:
    >>> resolve_preprocessing("LambdaResNet50TS").crop_pct
    0.95
    """
    if name is None:
        return DEFAULT_PREPROCESSING
    if isinstance(name, Preprocessing):
        return name
    if not isinstance(name, str):
        raise TypeError(f"`{arg}` must be a Preprocessing, None or a model name. "
                        f"Received: {arg}={name!r}")
    try:
        resolved = resolve_model_name(name)
    except ValueError:
        raise ValueError(
            f"No preprocessing is known for {name!r}; valid: a Preprocessing, None or a model "
            f"name ({', '.join(model_names())}). Received: {arg}={name!r}") from None
    preset = resolved.preset or IMAGENET_PRESETS.get(resolved.arch)
    if preset is not None:
        return PRESETS[preset].preprocessing
    size = architectures.ARCHITECTURES[resolved.arch].image_size
    return dataclasses.replace(DEFAULT_PREPROCESSING, input_size=(size, size))


def replace_input_size(preprocessing, input_size):
    """`preprocessing` (a Preprocessing or model name) evaluated at another (height, width)."""
    size = utils.check_size_pair("input_size", input_size)
    return dataclasses.replace(resolve_preprocessing(preprocessing, arg="preprocessing"),
                               input_size=size)


# NOTE: timm keeps a model's data config (crop, interpolation, mean/std) in its pretrained_cfg
# beside the weights; a `.keras` archive has no field for it, so a run writes this file into its
# checkpoints folder (lambda_keras.training) and readers of a `.keras` file look beside it.
PREPROCESSING_FILE = "preprocessing.json"


def save_preprocessing(directory, preprocessing):
    """Writes `preprocessing` (a Preprocessing) to `directory`/PREPROCESSING_FILE, atomically;
    returns the path."""
    path = os.path.join(directory, PREPROCESSING_FILE)
    utils.atomic_write_bytes(path, json.dumps(dataclasses.asdict(preprocessing), indent=1)
                             .encode())
    return path


def preprocessing_beside(model_path):
    """The Preprocessing recorded beside the `.keras` file `model_path` (PREPROCESSING_FILE in its
    folder, written by the run that trained it); DEFAULT_PREPROCESSING where there is none.

    Raises:
        ValueError: the file exists but does not describe a Preprocessing: not a JSON object,
            an unknown field, or a field of the wrong type or out of range (names the file).
    """
    path = os.path.join(os.path.dirname(os.path.abspath(os.fspath(model_path))),
                        PREPROCESSING_FILE)
    if not os.path.isfile(path):
        return DEFAULT_PREPROCESSING
    try:
        with open(path) as f:
            fields = json.load(f)
        recorded = _recorded_preprocessing(fields)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{path} (the preprocessing recorded beside {os.fspath(model_path)!r}) "
                         f"is not a preprocessing record: {error}. Remove or mend it.") from error
    return recorded


def _recorded_preprocessing(fields):
    """The Preprocessing of the fields read from a PREPROCESSING_FILE (missing fields: the
    defaults); every field checked. Raises TypeError or ValueError naming the field."""
    if not isinstance(fields, dict):
        raise ValueError("it must hold a JSON object of Preprocessing fields. Received: "
                         f"{json.dumps(fields)[:80]}")
    names = tuple(field.name for field in dataclasses.fields(Preprocessing))
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; the fields are {names}")
    default = dataclasses.asdict(DEFAULT_PREPROCESSING)
    value = {name: fields.get(name, default[name]) for name in names}
    recorded = Preprocessing(
        input_size=utils.check_size_pair("input_size", value["input_size"]),
        crop_pct=utils.check_number("crop_pct", value["crop_pct"], low=0, low_open=True, high=1),
        interpolation=value["interpolation"],
        mean=_check_channels("mean", value["mean"]),
        std=_check_channels("std", value["std"], positive=True))
    # The one home of the accepted interpolations (RESIZE_METHODS); the readers of a record
    # (the CLI, training) load lambda_keras.data anyway.
    from lambda_keras.data.transforms import check_preprocessing

    check_preprocessing(recorded)
    return recorded


def _check_channels(name, value, positive=False):
    """`value`, one finite number per RGB channel (> 0 when `positive`), as a tuple of floats."""
    kind = f"3 finite numbers{' > 0' if positive else ''} (one per RGB channel)"
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"`{name}` must be {kind}. Received: {name}={value!r}")
    if len(value) != 3:
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={value!r}")
    return tuple(utils.check_number(name, v, low=0 if positive else None, low_open=positive)
                 for v in value)
