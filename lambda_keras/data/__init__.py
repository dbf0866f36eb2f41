"""Input pipelines: tf.data datasets from a spec string, ImageNet-style train/eval transforms.

`make_dataset(spec, split)` returns `(dataset, DatasetInfo)`. The dataset yields
`(images, labels)`: images float32 `(batch, height, width, 3)` normalised as
((pixels / 255) - mean) / std with the preset's `lambda_keras.weights.Preprocessing`, labels int32
class indices `(batch,)`, or float32 one-hot `(batch, num_classes)` when MixUp/CutMix is on (they
mix labels). Training datasets have a static batch dimension (`drop_remainder=True`), which TPUs
and XLA need. Everything runs inside tf.data (graph mode).

One concern per module:

| module | what it holds |
|---|---|
| `pipeline.py` | `make_dataset`: source -> shuffle -> transform -> batch -> mix; `check_spec` |
| `sources.py` | spec parsing (`SCHEMES`), the fixed 80/20 hold-out, the bundled `digits` |
| `folders.py` | `folder:PATH` (class folders, split folders, every file checked up front) |
| `tfds_source.py` | `tfds:NAME[:SPLIT]` (prepared tensorflow-datasets, never downloads) |
| `transforms.py` | `eval_transform`, `train_transform`, `normalize` (export.py reuses them) |
| `augment.py` | RandAugment as tensorflow/tpu computes it; MixUp / CutMix |

Dataset specs:
- `tfds:NAME[:SPLIT]`  a tensorflow-datasets dataset already prepared in `data_dir`.
- `folder:PATH`  class sub-folders of images; split folders or a fixed stratified 80/20 hold-out.
- `digits`  scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, offline).

RandAugment (augment.py) is the reference implementation's: magnitude M means what it means in
tensorflow/tpu's autoaugment.py (M = 10: rotations of exactly +-30 degrees, shears +-0.3,
translations +-100 px; ResNet-RS trains with M = 10 or 15), with its 16 ops.

Every name importable from the former `data.py` module is importable from this package.
"""

from lambda_keras.presets import DEFAULT_PREPROCESSING, Preprocessing
from lambda_keras.data.transforms import (
    RANDOM_RESIZED_CROP_RATIO, RANDOM_RESIZED_CROP_SCALE, RESIZE_METHODS, eval_transform,
    normalize, train_transform)
from lambda_keras.data.augment import (
    OPS as RANDAUGMENT_OPS, RANDAUGMENT_MAX_MAGNITUDE, RandAugment, make_randaugment)
from lambda_keras.data.sources import (
    HOLDOUT_FRACTION, HOLDOUT_SEED, HOLDOUT_SPLITS, SCHEMES)
from lambda_keras.data.folders import (FOLDER_SPLIT_DIRS, IMAGE_EXTENSIONS, IMAGE_FORMATS,
                                       IMAGE_SIGNATURES)
from lambda_keras.data.tfds_source import TFDS_SHUFFLE_BUFFER
from lambda_keras.data.pipeline import AUGMENTS, DatasetInfo, check_spec, make_dataset

__all__ = [
    "AUGMENTS", "DEFAULT_PREPROCESSING", "DatasetInfo", "FOLDER_SPLIT_DIRS", "HOLDOUT_FRACTION",
    "HOLDOUT_SEED", "HOLDOUT_SPLITS", "IMAGE_EXTENSIONS", "IMAGE_FORMATS", "IMAGE_SIGNATURES",
    "Preprocessing",
    "RANDAUGMENT_MAX_MAGNITUDE", "RANDAUGMENT_OPS", "RANDOM_RESIZED_CROP_RATIO",
    "RANDOM_RESIZED_CROP_SCALE", "RESIZE_METHODS", "RandAugment", "SCHEMES",
    "TFDS_SHUFFLE_BUFFER", "check_spec", "eval_transform", "make_dataset", "make_randaugment",
    "normalize", "train_transform",
]
