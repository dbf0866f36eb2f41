"""Pretrained weights: preset registry, preprocessing metadata, download/cache, timm conversion.

(Skeleton: the preprocessing contract below is shared by data.py and export.py.)
"""

import dataclasses

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How images are prepared for a model: eval resize + center crop, then normalisation.

    Models take float32 RGB images normalised as ((pixels / 255) - mean) / std.
    Evaluation: resize the shorter side to input_size / crop_pct with `interpolation`, then
    center-crop input_size (timm's eval transform).
    """

    input_size: tuple = (224, 224)  # (height, width) the model is evaluated at
    crop_pct: float = 0.875  # fraction of the resized image kept by the center crop
    interpolation: str = "bicubic"  # resize method ("bilinear" or "bicubic")
    mean: tuple = IMAGENET_MEAN  # per-channel mean of pixels / 255
    std: tuple = IMAGENET_STD  # per-channel std of pixels / 255


DEFAULT_PREPROCESSING = Preprocessing()
