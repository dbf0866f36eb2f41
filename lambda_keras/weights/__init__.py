"""Pretrained weights: download/cache, strict loading, timm conversion; ImageNet labels.

The package, one concern per module, everything public re-exported here:
- `loading`: `validate_weights`, `load_weights` (the builders' entry points), `convert_timm`;
- `strict`: the all-or-nothing load contract (`assign_strict`, Keras `.weights.h5` files);
- `timm_format`: reading timm safetensors files and the timm -> Keras mapping (`timm_to_keras`);
- `download`: preset downloads and the cache (`download_preset`, `cached_weights`; the timeout
  is `lambda_keras.weights.download.DOWNLOAD_TIMEOUT`);
- `imagenet`: `preprocess_input`, `imagenet_classes`, `decode_predictions`.

Sits above models.py: `convert_timm` builds models; models.py imports this package only when a
builder is asked for weights (`python -c "import lambda_keras.models"` does not load it). The
presets, model names and preprocessing metadata are data in presets.py (re-exported here).

Implemented:
- `validate_weights` (called by the builders before any layer is built) and `load_weights` (after):
  `weights` is None, "imagenet", a preset name, or a path to a timm `.safetensors` file (converted
  on load, read with safetensors' NumPy API: no torch at run time) or a Keras `.weights.h5` file
  (the optimizer state in the file of a compiled model is skipped, strict.OPTIMIZER_GROUP).
  Pickle checkpoints (.pth .pt .bin .ckpt .pkl) are refused: no pickle ever runs.
- Strict loading: every checkpoint tensor is used and every model weight is set, otherwise a
  ValueError names the missing / unexpected / mis-shaped tensors and the model is left untouched
  (values are assigned only after everything was checked). The classifier ("predictions"), the
  same for both formats (strict.py): skipped when the model has none (include_top=False) or was
  built for other `classes` than the default 1000 (a new classifier, for fine-tuning); a model of
  1000 classes refuses a checkpoint without a classifier or with another number of classes, the
  error naming both counts and the ways out (`classes=<the file's>`, include_top=False). timm's
  `num_batches_tracked` counters are ignored (Keras BN has none).
- Downloads (urllib, `download.DOWNLOAD_TIMEOUT` seconds for the connection and for each read) go
  into the Keras cache (`models/` under `KERAS_HOME`, honoured at call time) under a temporary name
  (utils.temp_path) that becomes the cache name only once the sha256 (when known) and the strict
  load into the model passed: a stalled, truncated, hash-mismatched, unreadable or non-fitting
  download leaves nothing in the cache and raises, naming the ways out (`weights=None`, a local
  file, the file placed at its cache path). A cached file that fails the strict load because of
  the file (unreadable, non-finite tensors, or tensors that do not fit the preset's own
  architecture, its 1000-class classifier included) is quarantined (renamed `*.rejected`, the
  reason in the error): the next call downloads again. Leftovers of killed downloads are removed;
  a directory at a cache path is named before any download.
- Non-finite tensors (NaN/inf) are refused at load, naming them; the model is left unchanged.
- `convert_timm(src, dst)` writes a Keras `.weights.h5` (the `lambda-keras convert` command); a
  `src` holding non-finite tensors, or a `dst` that is a directory, is refused before anything is
  written. Keras reads `.weights.h5` only in lower case: `X.WEIGHTS.H5` is refused, naming it.
- `preprocess_input` and `decode_predictions` with the 1000 ImageNet class names bundled in
  assets/imagenet_classes.txt (WordNet ids in the standard sorted order, torchvision's names).

timm -> Keras mapping (layer names from models.py / blocks.py):
  stem.conv{i}.conv.weight [O,I,H,W]          -> stem_conv{i}/kernel [H,W,I,O]
  *.bn.{weight,bias,running_mean,running_var} -> *_bn/{gamma,beta,moving_mean,moving_variance}
  stages.{s}.{b}.{conv1_1x1,conv2_kxk,conv3_1x1,shortcut} -> stage{s+1}_block{b+1}_{conv1,conv2,
                                                 conv3,shortcut_conv} (+ _bn / shortcut_bn)
  stages.{s}.{b}.post_attn.*                  -> stage{s+1}_block{b+1}_lambda_bn/*
  stages.{s}.{b}.self_attn.qkv.weight [h*k+k+v, d, 1, 1] -> lambda/{query,key,value}_kernel
                                                 [d, h*k], [d, k], [d, v] (split in that order)
  self_attn.norm_q / norm_v                   -> lambda/query_norm / value_norm
  self_attn.conv_lambda.weight [k, 1, r, r, 1] -> lambda/position_embeddings [r, r, 1, k]
  self_attn.conv_lambda.bias [k]              -> lambda/position_bias [k]
  self_attn.pos_emb [2H-1, 2W-1, k]           -> lambda/position_embeddings [2H-1, 2W-1, 1, k]
  head.fc.weight [C, D], head.fc.bias         -> predictions/kernel [D, C], predictions/bias
The eval resize + center crop of a Preprocessing is `lambda_keras.data.eval_transform`.
"""

from lambda_keras.presets import (  # noqa: F401 - re-exported: the public names of this package
    DEFAULT_PREPROCESSING,
    IMAGENET_MEAN,
    IMAGENET_PRESETS,
    IMAGENET_STD,
    PRESETS,
    Preprocessing,
    Preset,
    preset_for,
    replace_input_size,
    resolve_model_name,
    resolve_preprocessing,
)
from lambda_keras.weights.download import cached_weights, download_preset, file_fault  # noqa: F401
from lambda_keras.weights.imagenet import (  # noqa: F401
    decode_predictions,
    imagenet_classes,
    preprocess_input,
)
from lambda_keras.weights.loading import (  # noqa: F401
    KERAS_WEIGHTS_SUFFIX,
    convert_timm,
    load_weights,
    validate_weights,
)
from lambda_keras.weights.strict import assign_strict  # noqa: F401
from lambda_keras.weights.timm_format import (  # noqa: F401
    SAFETENSORS_SUFFIX,
    infer_timm_arch,
    timm_to_keras,
)
