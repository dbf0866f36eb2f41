"""Tests of lambda_keras.weights.download: preset downloads and the weights cache.

Downloads use file:// URLs and local HTTP / TCP servers (no network): verified before kept,
nothing left in the cache by a download that stalls (weights.download.DOWNLOAD_TIMEOUT), is
truncated, mismatches its sha256, is unreadable, holds non-finite tensors or does not fit; killed
downloads' leftovers removed; cached files that do not fit quarantined and downloaded again.
The checkpoint is timm's lambda_resnet26t with 10 classes (tests/timm_checkpoints.py, fixtures in
conftest.py).
"""

import dataclasses
import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest

from lambda_keras import weights as W

from helpers import weights_by_path
from timm_checkpoints import CLASSES, make_timm_reference, save_state, small_26t


@pytest.fixture(scope="module")
def timm_reference(tmp_path_factory):
    """The small timm checkpoint only (no parity references)."""
    return make_timm_reference(tmp_path_factory.mktemp("timm"))


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def preset_from(monkeypatch, tmp_path):
    """Point the lambda_resnet26t preset at `url` (with `sha256`) and the cache into tmp_path.

    The preset's classes become the checkpoint's (`CLASSES`) unless `num_classes` is given.
    """
    cache = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(cache))
    name = "lambda_resnet26t.c1_in1k"

    def point(url, sha256, num_classes=CLASSES):
        monkeypatch.setitem(W.PRESETS, name, dataclasses.replace(
            W.PRESETS[name], url=url, sha256=sha256, num_classes=num_classes))
        return cache / "models" / f"{name}.safetensors"

    return point


def test_imagenet_downloads_verifies_and_caches(checkpoint, loaded, preset_from, tmp_path):
    source = tmp_path / "hub.safetensors"
    source.write_bytes(open(checkpoint, "rb").read())
    cached = preset_from(source.as_uri(), _sha256(source))
    model = small_26t(weights="imagenet")
    assert cached.is_file() and _sha256(cached) == _sha256(source)
    for key, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, loaded[key], err_msg=key)
    # Second use: from the cache, the source is gone.
    source.unlink()
    model = small_26t(weights="lambda_resnet26t.c1_in1k")
    np.testing.assert_array_equal(weights_by_path(model)["stem_conv1/kernel"],
                                  loaded["stem_conv1/kernel"])
    # Fine-tuning: other classes than the preset's get a new classifier, the rest is loaded.
    model = small_26t(weights="imagenet", classes=CLASSES + 3)
    got = weights_by_path(model)
    assert got["predictions/kernel"].shape == (2048, CLASSES + 3)
    np.testing.assert_array_equal(got["stem_conv1/kernel"], loaded["stem_conv1/kernel"])


def test_hash_mismatch_leaves_no_file(checkpoint, preset_from):
    cached = preset_from(f"file://{checkpoint}", "0" * 64)
    with pytest.raises(ValueError, match="hash"):
        small_26t(weights="imagenet")
    assert not cached.exists()


def test_unreadable_download_leaves_no_file(preset_from, tmp_path):
    # No hash known: the file is checked by parsing it.
    source = tmp_path / "hub.safetensors"
    source.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{truncated")
    cached = preset_from(source.as_uri(), None)
    with pytest.raises(ValueError, match="nothing was kept"):
        small_26t(weights="imagenet")
    assert not cached.exists()


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Announces 1 MB and closes the connection after 1000 bytes."""

    def do_GET(self):  # noqa: N802 - http.server API
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        self.wfile.write(b"x" * 1000)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_truncated_download_leaves_no_file(preset_from):
    server = http.server.HTTPServer(("127.0.0.1", 0), _TruncatingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cached = preset_from(f"http://127.0.0.1:{server.server_port}/model.safetensors", None)
        with pytest.raises(ValueError, match="nothing was kept"):
            small_26t(weights="imagenet")
        assert not cached.exists()
        assert not any(cached.parent.iterdir())
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _SilentServer:
    """A local TCP server that accepts connections and never answers (a stalled download)."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(4)
        self.stop = threading.Event()
        self.accepted = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.socket.settimeout(0.1)
        while not self.stop.is_set():
            try:
                self.accepted.append(self.socket.accept()[0])  # held open, never answered
            except OSError:
                pass

    @property
    def url(self):
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}/model.safetensors"

    def close(self):
        self.stop.set()
        self.thread.join()
        for connection in self.accepted:
            connection.close()
        self.socket.close()


def test_stalled_download_times_out_and_leaves_no_file(preset_from, monkeypatch):
    monkeypatch.setattr(W.download, "DOWNLOAD_TIMEOUT", 0.5)
    server = _SilentServer()
    try:
        cached = preset_from(server.url, None)
        with pytest.raises(ValueError, match="timed out") as info:  # else it would hang
            small_26t(weights="imagenet")
        _assert_says_what_to_do(str(info.value), cached)
        assert not any(cached.parent.iterdir())  # no partial file under any name
    finally:
        server.close()


def _assert_says_what_to_do(message, cached):
    """The download error names the ways out: no weights, a local file, the cache path."""
    assert "nothing was kept" in message
    ways_out = ("`weights=None`", "--weights none", "timm model.safetensors", "Keras .weights.h5",
                f"at {cached}.")
    for way_out in ways_out:
        assert way_out in message, (way_out, message)


def test_offline_download_says_what_to_do(preset_from):
    with socket.socket() as closed:  # a port nobody listens on: connection refused, at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    cached = preset_from(f"http://127.0.0.1:{port}/model.safetensors", None)
    with pytest.raises(ValueError, match="Cause: URLError") as info:
        small_26t(weights="imagenet")
    _assert_says_what_to_do(str(info.value), cached)
    assert not cached.exists()


def test_unknown_preset_name_is_named(tmp_path):
    """Was a bare KeyError; refused before anything is downloaded or written."""
    with pytest.raises(ValueError, match=r"`name` must be a preset name, one of \(.*"
                                         r"'lambda_resnet26t\.c1_in1k'.*Received: name='resnet50'"):
        W.download_preset("resnet50", cache_dir=str(tmp_path))
    with pytest.raises(TypeError, match="Received: name=42"):
        W.download_preset(42, cache_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_download_timeout_argument(preset_from, tmp_path):
    server = _SilentServer()
    try:
        preset_from(server.url, None)
        with pytest.raises(ValueError, match="no data for 0.2 s"):
            W.download_preset("lambda_resnet26t.c1_in1k", timeout=0.2)
        with pytest.raises(ValueError, match="Received: timeout=0"):
            W.download_preset("lambda_resnet26t.c1_in1k", timeout=0)
    finally:
        server.close()


def test_killed_download_leftover_is_removed(checkpoint, loaded, preset_from):
    cached = preset_from(f"file://{checkpoint}", None)
    cached.parent.mkdir(parents=True)
    dead_pid = 2**22 + 17  # above Linux's pid_max: no such process
    leftover = cached.parent / f"lambda_resnet26t.tmp-{dead_pid}.c1_in1k.safetensors"
    leftover.write_bytes(b"partial")
    unrelated = cached.parent / "other_model.safetensors"
    unrelated.write_bytes(b"kept")
    model = small_26t(weights="imagenet")
    assert sorted(p.name for p in cached.parent.iterdir()) == sorted([cached.name, unrelated.name])
    np.testing.assert_array_equal(weights_by_path(model)["stem_conv1/kernel"],
                                  loaded["stem_conv1/kernel"])


def _without(state, key):
    return {k: v for k, v in state.items() if k != key}


MISSING = "stages.0.0.conv1_1x1.conv.weight"


def test_cached_file_that_does_not_fit_is_quarantined(timm_state, checkpoint, loaded,
                                                      preset_from):
    cached = preset_from(f"file://{checkpoint}", None)
    cached.parent.mkdir(parents=True)
    save_state(_without(timm_state, MISSING), cached)  # valid safetensors, one tensor missing
    model = small_26t()
    before = weights_by_path(model)
    with pytest.raises(ValueError) as info:
        W.load_weights(model, "imagenet", "lambda_resnet26t")
    message = str(info.value)
    assert "stage1_block1_conv1/kernel" in message and "downloads them again" in message
    assert not cached.exists() and (cached.parent / (cached.name + ".rejected")).is_file()
    for key, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    # The next call downloads the good file again.
    model = small_26t(weights="imagenet")
    assert cached.is_file()
    np.testing.assert_array_equal(weights_by_path(model)["stem_conv1/kernel"],
                                  loaded["stem_conv1/kernel"])


def test_cached_file_with_a_wrong_hash_is_downloaded_again(checkpoint, preset_from):
    cached = preset_from(f"file://{checkpoint}", _sha256(checkpoint))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"stale")
    small_26t(weights="imagenet")
    assert _sha256(cached) == _sha256(checkpoint)


def test_download_that_does_not_fit_leaves_no_file(timm_state, preset_from, tmp_path):
    source = save_state(_without(timm_state, MISSING), tmp_path / "hub.safetensors")
    cached = preset_from(f"file://{source}", None)
    with pytest.raises(ValueError, match="nothing was kept") as info:
        small_26t(weights="imagenet")
    assert "stage1_block1_conv1/kernel" in str(info.value)
    assert not any(cached.parent.iterdir())


def test_good_cached_file_is_kept_when_the_model_cannot_take_it(checkpoint, preset_from):
    # A model built with other overrides: the model's fault, not the file's.
    cached = preset_from(f"file://{checkpoint}", None)
    small_26t(weights="imagenet")
    assert cached.is_file()
    with pytest.raises(ValueError, match="unexpected checkpoint tensors"):
        small_26t(weights="imagenet", layout="CCCC")
    assert cached.is_file() and _sha256(cached) == _sha256(checkpoint)


def test_non_finite_download_is_not_cached(timm_state, preset_from, tmp_path):
    state = dict(timm_state)
    state["head.fc.bias"] = np.full_like(state["head.fc.bias"], np.nan)
    cached = preset_from(f"file://{save_state(state, tmp_path / 'hub.safetensors')}", None)
    with pytest.raises(ValueError, match="head.fc.bias"):
        small_26t(weights="imagenet")
    assert not any(cached.parent.iterdir())


def test_cached_file_of_other_classes_is_refused(checkpoint, preset_from):
    # A 10-class file under the name of the 1000-class preset: not the preset's file.
    cached = preset_from(f"file://{checkpoint}", None, num_classes=1000)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(open(checkpoint, "rb").read())
    model = small_26t(classes=1000)
    before = weights_by_path(model)
    with pytest.raises(ValueError) as info:
        W.load_weights(model, "imagenet", "lambda_resnet26t")
    message = str(info.value)
    for part in (str(cached), "head.fc.weight", "has 10 classes", "layer has 1000",
                 "classes=10", "include_top=False", "downloads them again"):
        assert part in message, (part, message)
    assert not cached.exists() and (cached.parent / (cached.name + ".rejected")).is_file()
    for key, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_directory_at_the_cache_path_is_named(preset_from, monkeypatch):
    monkeypatch.setattr(W.download, "DOWNLOAD_TIMEOUT", 0.5)
    server = _SilentServer()  # a download would stall: the error must come before one
    try:
        cached = preset_from(server.url, None)
        (cached / "inside").mkdir(parents=True)
        with pytest.raises(ValueError, match="is a directory") as info:
            small_26t(weights="imagenet")
        assert str(cached) in str(info.value) and "Downloading" not in str(info.value)
        assert not server.accepted and (cached / "inside").is_dir()
    finally:
        server.close()
