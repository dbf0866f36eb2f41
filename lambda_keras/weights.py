"""Pretrained weights: download/cache, strict loading, timm conversion; ImageNet labels.

One module of ~660 lines on purpose: its sections (validation, download, reading, the timm ->
Keras mapping, strict load, convert, preprocessing) share the strict-load contract and are read
together when a checkpoint does not load; a split into a package is the next step if it grows.

Sits above models.py: `convert_timm` builds models; models.py imports this module only when a
builder is asked for weights (`python -c "import lambda_keras.models"` does not load it). The
presets, model names and preprocessing metadata are data in presets.py (re-exported here).

Implemented:
- `validate_weights` (called by the builders before any layer is built) and `load_weights` (after):
  `weights` is None, "imagenet", a preset name, or a path to a timm `.safetensors` file (converted
  on load, read with safetensors' NumPy API: no torch at run time) or a Keras `.weights.h5` file.
  Pickle checkpoints (.pth .pt .bin .ckpt .pkl) are refused: no pickle ever runs.
- Strict loading: every checkpoint tensor is used and every model weight is set, otherwise a
  ValueError names the missing / unexpected / mis-shaped tensors and the model is left untouched
  (values are assigned only after everything was checked). The classifier ("predictions") is
  skipped when the model has none (include_top=False) or a different number of classes, as
  keras.applications does; timm's `num_batches_tracked` counters are ignored (Keras BN has none).
- Downloads (urllib, `DOWNLOAD_TIMEOUT` seconds for the connection and for each read) go into the
  Keras cache (`models/` under `KERAS_HOME`, honoured at call time) under a temporary name
  (utils.temp_path) that becomes the cache name only once the sha256 (when known) and the strict
  load into the model passed: a stalled, truncated, hash-mismatched, unreadable or non-fitting
  download leaves nothing in the cache and raises. A cached file that fails the strict load
  because of the file (unreadable, non-finite tensors, or tensors that do not fit the preset's own
  architecture) is quarantined (renamed `*.rejected`, the reason in the error): the next call
  downloads again. Leftovers of killed downloads are removed.
- Non-finite tensors (NaN/inf) are refused at load, naming them; the model is left unchanged.
- `convert_timm(src, dst)` writes a Keras `.weights.h5` (the `lambda-keras convert` command).
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

import functools
import hashlib
import importlib.resources
import os
import re
import tempfile
import urllib.error
import urllib.request
import warnings

import numpy as np
import keras

from lambda_keras import models, utils
from lambda_keras.presets import (  # noqa: F401 - re-exported: the public names of this module
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

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle")
SAFETENSORS_SUFFIX = ".safetensors"
KERAS_WEIGHTS_SUFFIX = ".weights.h5"
CLASSIFIER = models.CLASSIFIER  # name of the classifier layer
MAX_LISTED = 12  # names listed per category in a strict-loading error
DOWNLOAD_TIMEOUT = 60.0  # seconds: connecting, and each read (a stalled download fails)
DOWNLOAD_CHUNK = 1 << 20  # bytes per read
REJECTED_SUFFIX = ".rejected"  # a cached file that failed verification is renamed to this


# ----------------------------------------------------------------------------- validation
def _check_file_kind(path):
    """Raise ValueError unless `path` names a safetensors or Keras weights file that exists."""
    lowered = path.lower()
    if lowered.endswith(PICKLE_SUFFIXES):
        raise ValueError(
            "Pickle checkpoints are refused (loading one can run arbitrary code). Use the "
            "checkpoint's .safetensors file instead (timm models on the Hugging Face hub ship "
            "model.safetensors), or convert it where you trust it: `safetensors.torch.save_file("
            "torch.load(path, weights_only=True), 'model.safetensors')`. "
            f"Received: weights={path!r}")
    if not lowered.endswith((SAFETENSORS_SUFFIX, KERAS_WEIGHTS_SUFFIX)):
        raise ValueError(
            "`weights` must be None, 'imagenet', a preset name "
            f"{tuple(PRESETS)}, or the path to a {SAFETENSORS_SUFFIX} (timm) or "
            f"{KERAS_WEIGHTS_SUFFIX} (Keras) file. Received: weights={path!r}")
    if not os.path.exists(path):
        raise ValueError(f"The weights file does not exist. Received: weights={path!r}")
    if os.path.isdir(path):
        raise ValueError("`weights` is a directory, not a weights file. "
                         f"Received: weights={path!r}")
    if not os.path.isfile(path):
        raise ValueError("`weights` is not a regular file (a device, pipe or socket); pass a "
                         f"weights file. Received: weights={path!r}")


def validate_weights(weights, arch_name, include_top=True, classes=1000):
    """Check `weights` for the builder of `arch_name` before any layer is built.

    `include_top=False` or `classes != 1000` are valid with pretrained weights: everything but
    the classifier is loaded.
    """
    del include_top, classes  # every combination loads (the classifier is skipped if it differs)
    if weights is None:
        return
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str):
        raise TypeError(f"`weights` must be None, 'imagenet' or a file path. "
                        f"Received: weights={weights!r} of type {type(weights).__name__}")
    if weights == "imagenet" or weights in PRESETS:
        preset_for(weights, arch_name)
        return
    _check_file_kind(weights)


# ------------------------------------------------------------------------------- download
def _cache_dir():
    # KERAS_HOME is read at call time (keras reads it once at import).
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def _download_target(cache_dir, fname):
    """Where the download of `fname` goes (get_file's fallback for an unwritable cache_dir)."""
    base = os.path.expanduser(cache_dir)
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return os.path.join(base, "models", fname)


def cached_weights(name, cache_dir=None):
    """Local path of the ImageNet weights of the model `name` (any model name, see
    presets.resolve_model_name) when they are already in the Keras cache, else None. Never
    downloads."""
    resolved = resolve_model_name(name)
    preset_name = resolved.preset or IMAGENET_PRESETS.get(resolved.arch)
    if preset_name is None:
        return None
    path = _download_target(cache_dir or _cache_dir(), f"{preset_name}{SAFETENSORS_SUFFIX}")
    return path if os.path.isfile(path) else None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _remove_stale_partials(target):
    """Removes partial downloads of `target` left by processes that no longer run (killed)."""
    directory, name = os.path.split(target)
    stem = name.partition(".")[0] + utils.TEMP_MARK
    for leftover in os.listdir(directory):
        pid = leftover[len(stem):].partition(".")[0]
        if leftover.startswith(stem) and pid.isdigit() and not _pid_alive(int(pid)):
            try:
                os.remove(os.path.join(directory, leftover))
            except OSError:
                pass


def _fetch(url, destination, timeout):
    """Writes the bytes at `url` to `destination`; returns their sha256 hex digest.

    `timeout` bounds the connection and every read: a server that stops answering raises
    TimeoutError instead of hanging. A body shorter than its Content-Length raises ValueError.
    """
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - preset URLs
        expected = response.headers.get("Content-Length")
        with open(destination, "wb") as f:
            while True:
                chunk = response.read(DOWNLOAD_CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                digest.update(chunk)
                received += len(chunk)
            f.flush()
            os.fsync(f.fileno())
    if expected is not None and expected.isdigit() and received != int(expected):
        raise ValueError(f"truncated download: {received} of {expected} bytes received")
    return digest.hexdigest()


def _sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(DOWNLOAD_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_fault(preset, path):
    """Why the file `path` cannot be the weights of `preset`, or None when it can.

    The file is at fault when it is not a readable safetensors file, holds non-finite tensors, or
    does not fit the preset's own architecture (headless, so the classifier's size is free). A
    model built with other overrides that cannot take a good file is not the file's fault.
    """
    try:
        state = _read_safetensors(path)
        _check_finite(state, path)
    except ValueError as error:
        return str(error)
    height, width = preset.preprocessing.input_size
    reference = models.build_lambda_resnet(preset.arch, include_top=False, weights=None,
                                           input_shape=(height, width, 3))
    converted, unconverted = timm_to_keras(state)
    return _strict_problems(reference, converted, path, unconverted)


def _quarantine(path):
    rejected = path + REJECTED_SUFFIX
    os.replace(path, rejected)
    return rejected


def download_preset(name, cache_dir=None, timeout=None, verify=None):
    """Download (or find in the cache) the file of preset `name`; returns its local path.

    Args:
        name: a preset name or `Preset`.
        cache_dir: the Keras home (default: `KERAS_HOME` or ~/.keras); files go to its models/.
        timeout: seconds allowed for connecting and for each read (default `DOWNLOAD_TIMEOUT`).
        verify: called with the downloaded file's temporary path before it is kept (the strict
            load into the model); a file it refuses for the file's own fault is not kept.

    The download is written under a temporary name and renamed to the cache name only after the
    sha256 (when known) and `verify` (or, without `verify`, parsing the file) passed: a stalled,
    truncated, mismatched or unreadable download leaves no file in the cache and raises
    ValueError. A cached file whose sha256 does not match is quarantined and downloaded again.
    """
    preset = name if isinstance(name, Preset) else PRESETS[name]
    cache_dir = cache_dir or _cache_dir()
    timeout = DOWNLOAD_TIMEOUT if timeout is None else utils.check_number(
        "timeout", timeout, low=0, low_open=True)
    try:  # an unwritable cache_dir falls back to /tmp/.keras (as keras.utils.get_file does)
        os.makedirs(os.path.expanduser(cache_dir), exist_ok=True)
    except OSError:
        pass
    target = _download_target(cache_dir, f"{preset.name}{SAFETENSORS_SUFFIX}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.isfile(target):
        if preset.sha256 is None or _sha256_of(target) == preset.sha256:
            if verify is not None:
                verify(target)
            return target
        _quarantine(target)
    _remove_stale_partials(target)
    partial = utils.temp_path(target)
    try:
        try:
            digest = _fetch(preset.url, partial, timeout)
        except TimeoutError as error:
            raise ValueError(f"no data for {timeout:g} s (timed out; DOWNLOAD_TIMEOUT)") from error
        except (urllib.error.URLError, OSError) as error:
            raise ValueError(f"{type(error).__name__}: {error}") from error
        if preset.sha256 is not None and digest != preset.sha256:
            raise ValueError(f"sha256 hash mismatch: expected {preset.sha256}, got {digest}")
        if verify is None:
            _read_safetensors(partial)  # a truncated file fails here when no hash is known
        else:
            try:
                verify(partial)
            except ValueError:
                if file_fault(preset, partial) is None:
                    os.replace(partial, target)  # a good file the model cannot take: kept
                raise
    except Exception as error:
        if os.path.exists(partial):
            os.remove(partial)
        if os.path.exists(target):  # downloaded and kept; the model refused it
            raise
        raise ValueError(
            f"Downloading the weights of {preset.name!r} from {preset.url} failed; nothing was "
            f"kept in the cache ({target}). Cause: {error}") from error
    os.replace(partial, target)
    return target


def _load_preset(model, preset, cache_dir=None, timeout=None):
    """Loads the weights of `preset` into `model`, from the cache or downloaded (see module)."""
    target = _download_target(cache_dir or _cache_dir(), f"{preset.name}{SAFETENSORS_SUFFIX}")
    if not os.path.isfile(target) or preset.sha256 is not None:
        download_preset(preset, cache_dir, timeout, verify=lambda path: _load_timm(model, path))
        return
    try:
        _load_timm(model, target)
    except ValueError as error:
        fault = file_fault(preset, target)
        if fault is None:
            raise  # a good file the model cannot take (e.g. other architecture overrides)
        rejected = _quarantine(target)
        raise ValueError(
            f"The cached weights of {preset.name!r} ({target}) are unusable and were moved to "
            f"{rejected}; the next use downloads them again. Cause: {fault}") from error


# ------------------------------------------------------------------------- reading files
def _read_safetensors(path):
    """{name: np.ndarray} of a safetensors file; ValueError naming the file if it is not one."""
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except Exception as error:  # SafetensorError, OSError, or a dtype NumPy lacks
        raise ValueError(
            f"Could not read {path!r} as a safetensors file ({type(error).__name__}: {error}). "
            "Pass the model.safetensors file of a timm checkpoint or a Keras .weights.h5 file."
        ) from error


# ------------------------------------------------------------------ timm -> Keras mapping
_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
       "running_var": "moving_variance"}
_CONV = {"conv1_1x1": "conv1", "conv2_kxk": "conv2", "conv3_1x1": "conv3", "shortcut": "shortcut"}
_BLOCK = r"stages\.(?P<s>\d+)\.(?P<b>\d+)\."
_BN_PARAM = r"(?P<p>weight|bias|running_mean|running_var)"


def _block(m):
    return f"stage{int(m['s']) + 1}_block{int(m['b']) + 1}_"


def _oihw_to_hwio(w):
    return np.transpose(w, (2, 3, 1, 0))  # [O, I, H, W] -> [H, W, I, O]


def _conv_name(m):
    part = _CONV[m["part"]]
    return f"{_block(m)}{part}_conv" if part == "shortcut" else f"{_block(m)}{part}"


def _lambda_kernel(w):
    return w[:, 0, :, :, 0].transpose(1, 2, 0)[:, :, None, :]  # [k, 1, r, r, 1] -> [r, r, 1, k]


# (pattern, Keras weight path from the match, conversion of the tensor)
_RULES = (
    (rf"stem\.conv(?P<i>\d+)\.conv\.weight", lambda m: f"stem_conv{m['i']}/kernel", _oihw_to_hwio),
    (rf"stem\.conv(?P<i>\d+)\.bn\.{_BN_PARAM}",
     lambda m: f"stem_conv{m['i']}_bn/{_BN[m['p']]}", None),
    (rf"{_BLOCK}(?P<part>conv1_1x1|conv2_kxk|conv3_1x1|shortcut)\.conv\.weight",
     lambda m: f"{_conv_name(m)}/kernel", _oihw_to_hwio),
    (rf"{_BLOCK}(?P<part>conv1_1x1|conv2_kxk|conv3_1x1|shortcut)\.bn\.{_BN_PARAM}",
     lambda m: f"{_block(m)}{_CONV[m['part']]}_bn/{_BN[m['p']]}", None),
    (rf"{_BLOCK}post_attn\.{_BN_PARAM}", lambda m: f"{_block(m)}lambda_bn/{_BN[m['p']]}", None),
    (rf"{_BLOCK}self_attn\.norm_q\.{_BN_PARAM}",
     lambda m: f"{_block(m)}lambda/query_norm/{_BN[m['p']]}", None),
    (rf"{_BLOCK}self_attn\.norm_v\.{_BN_PARAM}",
     lambda m: f"{_block(m)}lambda/value_norm/{_BN[m['p']]}", None),
    (rf"{_BLOCK}self_attn\.conv_lambda\.weight",
     lambda m: f"{_block(m)}lambda/position_embeddings", _lambda_kernel),
    (rf"{_BLOCK}self_attn\.conv_lambda\.bias", lambda m: f"{_block(m)}lambda/position_bias", None),
    (rf"{_BLOCK}self_attn\.pos_emb",
     lambda m: f"{_block(m)}lambda/position_embeddings", lambda w: w[:, :, None, :]),
    (r"head\.fc\.weight", lambda m: f"{CLASSIFIER}/kernel", np.transpose),
    (r"head\.fc\.bias", lambda m: f"{CLASSIFIER}/bias", None),
)
_QKV = re.compile(rf"{_BLOCK}self_attn\.qkv\.weight")
IGNORED_SUFFIX = "num_batches_tracked"  # PyTorch BN step counters: no Keras counterpart


def _split_qkv(key, w, state):
    """timm's fused qkv 1x1 conv [h*k + k + v, d, 1, 1] -> {query,key,value}_kernel [d, *]."""
    prefix = key[: -len("qkv.weight")]
    q_dim = state.get(f"{prefix}norm_q.weight", np.empty(0)).shape[0]
    v_dim = state.get(f"{prefix}norm_v.weight", np.empty(0)).shape[0]
    if w.ndim != 4 or not q_dim or not v_dim or w.shape[0] <= q_dim + v_dim:
        raise ValueError("cannot split qkv without norm_q/norm_v of matching sizes")
    w = w[:, :, 0, 0].T  # [d, h*k + k + v]; channel order q = (head, k), then k, then v
    k_dim = w.shape[1] - q_dim - v_dim
    return np.split(w, [q_dim, q_dim + k_dim], axis=1)  # [d, h*k], [d, k], [d, v]


def timm_to_keras(state):
    """Map a timm state dict onto Keras weight paths.

    Returns ({keras_path: (array, timm_key, timm_shape)}, [timm keys no rule converts]).
    """
    converted, unconverted = {}, []
    for key, tensor in state.items():
        if key.endswith(IGNORED_SUFFIX):
            continue
        qkv = _QKV.fullmatch(key)
        try:
            if qkv:
                layer = f"{_block(qkv)}lambda"
                for part, array in zip(("query", "key", "value"), _split_qkv(key, tensor, state)):
                    converted[f"{layer}/{part}_kernel"] = (array, key, tuple(tensor.shape))
                continue
            for pattern, path, convert in _RULES:
                m = re.fullmatch(pattern, key)
                if m:
                    array = tensor if convert is None else convert(tensor)
                    converted[path(m)] = (array, key, tuple(tensor.shape))
                    break
            else:
                unconverted.append(key)
        except (ValueError, IndexError):  # wrong rank or size: reported as unexpected
            unconverted.append(f"{key} {tuple(tensor.shape)}")
    return converted, unconverted


# --------------------------------------------------------------------------- strict load
def _listed(names):
    names = sorted(names)
    more = f" ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


def _classifier_mismatch(converted, targets):
    """True when the model has no classifier or one shaped differently from the checkpoint's."""
    model_keys = [k for k in targets if k.startswith(f"{CLASSIFIER}/")]
    if not model_keys:
        return True
    return any(k in converted and tuple(converted[k][0].shape) != tuple(targets[k].shape)
               for k in model_keys)


def _strict_problems(model, converted, source, unconverted=()):
    """The strict-loading error message for `model` (see `assign_strict`), or None if it fits."""
    targets = {v.path: v for v in model.weights}
    if _classifier_mismatch(converted, targets):
        converted = {k: v for k, v in converted.items() if not k.startswith(f"{CLASSIFIER}/")}
        targets = {k: v for k, v in targets.items() if not k.startswith(f"{CLASSIFIER}/")}
    missing = [k for k in targets if k not in converted]
    unexpected = list(unconverted) + [
        f"{name} (-> {k})" for k, (_, name, _) in converted.items() if k not in targets]
    mis_shaped = [
        f"{name} {shape} -> {k}: converted {tuple(a.shape)}, model {tuple(targets[k].shape)}"
        for k, (a, name, shape) in converted.items()
        if k in targets and tuple(a.shape) != tuple(targets[k].shape)]
    if not (missing or unexpected or mis_shaped):
        return None
    problems = [
        f"{len(items)} {label}: {_listed(items)}"
        for label, items in (("model weights missing from the checkpoint", missing),
                             ("unexpected checkpoint tensors", unexpected),
                             ("mis-shaped tensors", mis_shaped)) if items]
    return f"Cannot load {source!r} into model {model.name!r}: " + "; ".join(problems) + "."


def assign_strict(model, converted, source, unconverted=()):
    """Assign {weight path: (array, source name, source shape)} to `model`, all or nothing.

    The classifier is skipped when the model has none or a different number of classes.
    Raises ValueError naming every missing, unexpected and mis-shaped tensor; the model is then
    unchanged.
    """
    problems = _strict_problems(model, converted, source, unconverted)
    if problems:
        raise ValueError(problems + " The model was left unchanged.")
    targets = {v.path: v for v in model.weights}
    if _classifier_mismatch(converted, targets):
        targets = {k: v for k, v in targets.items() if not k.startswith(f"{CLASSIFIER}/")}
    for key, variable in targets.items():
        variable.assign(converted[key][0].astype(variable.dtype))


def _check_finite(state, source):
    """ValueError naming the tensors of {name: array} that hold NaN or infinity."""
    bad = [name for name, array in state.items()
           if np.issubdtype(np.asarray(array).dtype, np.inexact)
           and not np.isfinite(array).all()]
    if bad:
        raise ValueError(f"{source!r} holds non-finite values (NaN or infinity) in {len(bad)} "
                         f"tensors: {_listed(bad)}. The model was left unchanged.")


def _load_timm(model, path):
    state = _read_safetensors(path)
    _check_finite(state, path)
    converted, unconverted = timm_to_keras(state)
    assign_strict(model, converted, path, unconverted)


def _keras_load(model, path):
    """model.load_weights, with Keras' "retain freshly-initialised weights" warnings as errors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_weights(path)
    skipped = [str(w.message) for w in caught
               if f"{os.sep}saving{os.sep}" in (w.filename or "")]
    if skipped:
        raise ValueError(f"Keras skipped part of the file: {skipped[0]}")
    _check_finite({v.path: v.numpy() for v in model.weights}, path)  # caller restores on error


def _check_h5_dtypes(path):
    """ValueError naming the datasets of a .weights.h5 file that are not floating point.

    Every weight of a lambda_keras model is a float; Keras would silently cast integers.
    A file h5py cannot open is left to Keras' own error.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError:
        return
    bad = []
    with f:
        f.visititems(lambda name, obj: bad.append(f"{name} ({obj.dtype})")
                     if isinstance(obj, h5py.Dataset) and obj.dtype.kind != "f" else None)
    if bad:
        raise ValueError(f"{path!r} holds {len(bad)} non-floating-point weight tensors: "
                         f"{_listed(bad)}. The model was left unchanged.")


def _load_keras_weights(model, path):
    """Keras .weights.h5 via model.load_weights, restored on failure (no partial model).

    A file whose classifier does not fit (or a headless file) loads into the backbone only when
    the model's classifier cannot take it, with a warning; the classifier then keeps its values.
    """
    _check_h5_dtypes(path)
    snapshot = [v.numpy() for v in model.weights]

    def restore():
        for variable, value in zip(model.weights, snapshot):
            variable.assign(value)

    try:
        _keras_load(model, path)
        return
    except Exception as error:  # noqa: BLE001 - keras raises ValueError/KeyError/OSError
        restore()
        first_error = error
    try:
        classifier = model.get_layer(CLASSIFIER)
    except ValueError:
        classifier = None
    if classifier is not None:
        backbone = keras.Model(model.inputs, classifier.input)
        try:
            _keras_load(backbone, path)
            warnings.warn(
                f"{path!r}: the classifier did not fit the model's {CLASSIFIER!r} layer; every "
                "other weight was loaded and the classifier kept its initial values.",
                stacklevel=3)
            return
        except Exception:  # noqa: BLE001
            restore()
    raise ValueError(f"Cannot load {path!r} into model {model.name!r}: {first_error} "
                     "The model was left unchanged.") from first_error


def load_weights(model, weights, arch_name):
    """Load `weights` (see validate_weights) into `model`, built for `arch_name`; returns model."""
    if weights is None:
        return model
    validate_weights(weights, arch_name)
    weights = os.fspath(weights)
    if weights == "imagenet" or weights in PRESETS:
        _load_preset(model, preset_for(weights, arch_name))
    elif weights.lower().endswith(SAFETENSORS_SUFFIX):
        _load_timm(model, weights)
    else:
        _load_keras_weights(model, weights)
    return model


# ------------------------------------------------------------------------------ convert
def infer_timm_arch(state):
    """Architecture of a timm lambda-network state dict, from the tensors it holds."""
    keys = set(state)
    if any(k.endswith("self_attn.pos_emb") for k in keys):
        return "lambda_resnet26rpt_256"
    if "stages.1.3.self_attn.qkv.weight" in keys:
        return "lambda_resnet50ts"
    if "stages.3.1.self_attn.qkv.weight" in keys:
        return "lambda_resnet26t"
    raise ValueError("Cannot tell which timm lambda network this checkpoint is; pass `arch_name` "
                     f"(one of {tuple(IMAGENET_PRESETS)}).")


def convert_timm(src, dst, arch_name=None):
    """Convert a timm `.safetensors` checkpoint to a Keras `.weights.h5` file; returns `dst`.

    Builds the matching lambda_keras model (classes from the checkpoint, headless if it has no
    classifier), loads strictly and saves. `arch_name` defaults to the one the tensors reveal.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if not dst.endswith(KERAS_WEIGHTS_SUFFIX):
        raise ValueError(f"`dst` must end with {KERAS_WEIGHTS_SUFFIX}. Received: dst={dst!r}")
    _check_file_kind(src)
    if not src.lower().endswith(SAFETENSORS_SUFFIX):
        raise ValueError(f"`src` must be a timm {SAFETENSORS_SUFFIX} file. Received: src={src!r}")
    state = _read_safetensors(src)
    if arch_name is None:
        arch = infer_timm_arch(state)
    else:
        try:
            arch = resolve_model_name(arch_name).arch
        except (TypeError, ValueError):
            arch = None
        if arch not in IMAGENET_PRESETS:
            raise ValueError(f"`arch_name` must be one of {tuple(IMAGENET_PRESETS)} (or their "
                             f"builder or preset names). Received: arch_name={arch_name!r}")
    head = state.get("head.fc.weight")
    model = models.build_lambda_resnet(
        arch, include_top=head is not None, weights=None,
        classes=1000 if head is None else int(head.shape[0]))
    converted, unconverted = timm_to_keras(state)
    assign_strict(model, converted, src, unconverted)
    utils.atomic_write(dst, model.save_weights)  # never a half-written dst
    return dst


# ------------------------------------------------------------------------ preprocessing
def preprocess_input(x, preprocessing=None):
    """Float RGB pixels in [0, 255], channels last -> ((x / 255) - mean) / std.

    `preprocessing` is a Preprocessing, a preset/architecture/builder name, or None (ImageNet
    mean/std). NumPy in -> NumPy float32 out; tensors in -> tensors out.
    """
    prep = DEFAULT_PREPROCESSING if preprocessing is None else resolve_preprocessing(preprocessing)
    if isinstance(x, (np.ndarray, list, tuple)):
        x = np.asarray(x, dtype="float32")
        return ((x / 255.0 - np.float32(prep.mean)) / np.float32(prep.std)).astype("float32")
    x = keras.ops.cast(x, "float32")
    mean = keras.ops.convert_to_tensor(prep.mean, "float32")
    std = keras.ops.convert_to_tensor(prep.std, "float32")
    return (x / 255.0 - mean) / std  # [..., 3]


@functools.lru_cache(maxsize=1)
def imagenet_classes():
    """The 1000 ImageNet-1k classes in model output order: ((wordnet_id, name), ...)."""
    text = importlib.resources.files("lambda_keras").joinpath(
        "assets/imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(tuple(line.split("\t")) for line in text.splitlines() if line)


def decode_predictions(preds, top=5):
    """[B, 1000] scores -> per example a list of `top` (wordnet_id, name, score), best first."""
    preds = np.asarray(keras.ops.convert_to_numpy(preds))
    classes = imagenet_classes()
    if preds.ndim != 2 or preds.shape[1] != len(classes):
        raise ValueError("`decode_predictions` expects a batch of predictions of shape "
                         f"(samples, {len(classes)}). Received: preds.shape={preds.shape}")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= len(classes):
        raise ValueError(f"`top` must be an integer in [1, {len(classes)}]. Received: top={top!r}")
    order = np.argsort(-preds, axis=1, kind="stable")[:, :top]  # [B, top]
    return [[(*classes[i], float(row[i])) for i in idx] for row, idx in zip(preds, order)]
