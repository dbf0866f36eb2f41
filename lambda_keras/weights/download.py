"""Preset downloads and the weights cache: verified before kept, quarantined when unusable."""

import hashlib
import os
import tempfile
import urllib.error
import urllib.request

from lambda_keras import models, utils
from lambda_keras.presets import IMAGENET_PRESETS, PRESETS, Preset, resolve_model_name
from lambda_keras.weights.strict import check_finite, load_timm_file, strict_problems
from lambda_keras.weights.timm_format import SAFETENSORS_SUFFIX, read_safetensors, timm_to_keras

DOWNLOAD_TIMEOUT = 60.0  # seconds: connecting, and each read (a stalled download fails)
DOWNLOAD_CHUNK = 1 << 20  # bytes per read
REJECTED_SUFFIX = ".rejected"  # a cached file that failed verification is renamed to this


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
    does not fit the preset's own architecture, its classifier of `preset.num_classes` included.
    A model built with other overrides that cannot take a good file is not the file's fault.
    """
    try:
        state = read_safetensors(path)
        check_finite(state, path, outcome="")
    except ValueError as error:
        return str(error)
    height, width = preset.preprocessing.input_size
    reference = models.build_lambda_resnet(preset.arch, weights=None, classes=preset.num_classes,
                                           input_shape=(height, width, 3))
    converted, unconverted = timm_to_keras(state)
    return strict_problems(reference, converted, path, unconverted, keeps_own=False)


def _quarantine(path):
    rejected = path + REJECTED_SUFFIX
    os.replace(path, rejected)
    return rejected


def download_preset(name, cache_dir=None, timeout=None, verify=None):
    """Downloads (or finds in the cache) the weights file of the preset `name`.

    The download is written under a temporary name and renamed to the cache name only after the
    sha256 (when known) and `verify` (or, without `verify`, parsing the file) passed: a stalled,
    truncated, mismatched or unreadable download leaves no file in the cache. A cached file whose
    sha256 does not match is quarantined (renamed `*.rejected`) and downloaded again.

    Args:
        name: a preset name (a key of `PRESETS`, e.g. "lambda_resnet26t.c1_in1k") or a `Preset`.
        cache_dir: the Keras home (default: `KERAS_HOME` or ~/.keras); files go to its models/
            (/tmp/.keras/models where it is not writable, as `keras.utils.get_file`).
        timeout: seconds allowed for connecting and for each read (default `DOWNLOAD_TIMEOUT`).
        verify: called with the file's path before it is kept (the strict load into the model);
            a file it refuses for the file's own fault is not kept.

    Returns:
        The local path of the safetensors file, `<cache_dir>/models/<preset>.safetensors`.

    Raises:
        TypeError: `name` is neither a string nor a Preset, or `timeout` is not a number.
        ValueError: `name` is no preset; `timeout` is not > 0; the cache path is a directory or
            another non-regular file (before any download); the download failed or the file was
            refused (the message names the ways out: `weights=None`, a local file, or the file
            placed at its cache path).

    Example:

    ```python
    path = download_preset("lambda_resnet26t.c1_in1k")  # downloads once, then cached
    ```
    """
    if not isinstance(name, (str, Preset)):
        raise TypeError(f"`name` must be a preset name or a Preset. Received: name={name!r}")
    if isinstance(name, str) and name not in PRESETS:
        raise ValueError(f"`name` must be a preset name, one of {tuple(PRESETS)}. "
                         f"Received: name={name!r}")
    preset = PRESETS[name] if isinstance(name, str) else name
    cache_dir = cache_dir or _cache_dir()
    timeout = DOWNLOAD_TIMEOUT if timeout is None else utils.check_number(
        "timeout", timeout, low=0, low_open=True)
    try:  # an unwritable cache_dir falls back to /tmp/.keras (as keras.utils.get_file does)
        os.makedirs(os.path.expanduser(cache_dir), exist_ok=True)
    except OSError:
        pass
    target = _download_target(cache_dir, f"{preset.name}{SAFETENSORS_SUFFIX}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target) and not os.path.isfile(target):  # the download could not land
        kind = "a directory" if os.path.isdir(target) else "not a regular file"
        raise ValueError(
            f"The cache path of the weights of {preset.name!r}, {target}, is {kind}: remove or "
            "rename it (the file is kept there), or pass the path of a local file as `weights`.")
    if os.path.isfile(target):
        if preset.sha256 is None or _sha256_of(target) == preset.sha256:
            if verify is not None:
                verify(target)
            return target
        _quarantine(target)
    utils.remove_temporaries(os.path.dirname(target), os.path.basename(target))
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
            read_safetensors(partial)  # a truncated file fails here when no hash is known
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
            "kept in the cache. Without the download: pass `weights=None` (command line: "
            "--weights none) for random initialisation, pass the path of a local file as "
            "`weights` (--weights FILE; a timm model.safetensors or a Keras .weights.h5), or "
            f"place the file from that URL at {target}. Cause: {error}") from error
    os.replace(partial, target)
    return target


def load_preset(model, preset, cache_dir=None, timeout=None):
    """Loads the weights of `preset` into `model`, from the cache or downloaded (see module)."""
    target = _download_target(cache_dir or _cache_dir(), f"{preset.name}{SAFETENSORS_SUFFIX}")
    if not os.path.isfile(target) or preset.sha256 is not None:
        download_preset(preset, cache_dir, timeout, verify=lambda path: load_timm_file(model, path))
        return
    try:
        load_timm_file(model, target)
    except ValueError as error:
        fault = file_fault(preset, target)
        if fault is None:
            raise  # a good file the model cannot take (e.g. other architecture overrides)
        rejected = _quarantine(target)
        raise ValueError(
            f"The cached weights of {preset.name!r} ({target}) are unusable and were moved to "
            f"{rejected}; the next use downloads them again. Cause: {fault}") from error
