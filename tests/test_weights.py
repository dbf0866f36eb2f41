"""Tests of lambda_keras.weights on timm's checkpoints: parity, strict loading, conversion,
preprocessing, damaged checkpoints refused (the downloads and the cache: test_weights_download.py;
the `weights` argument and the files refused or read without a timm checkpoint:
test_weights_files.py).

Parity: for each timm architecture the real timm model (torch, CPU, in a subprocess:
tests/timm_checkpoints.py) is created with a fixed seed and non-trivial batch-norm tensors, its
state_dict is saved as safetensors, loaded with `weights=that_file`, and logits and
include_top=False features are compared on the same random batch at the native 256 x 256 size.

Loading tests use small models (64 x 64 inputs) and a timm lambda_resnet26t checkpoint with 10
classes made by that subprocess (fixtures `timm_state`, `checkpoint`, `loaded` in conftest.py).
"""

import os

import numpy as np
import pytest
import keras

import lambda_keras
from lambda_keras import models, presets
from lambda_keras import weights as W

from helpers import assert_close, max_abs_diff, weights_by_path
from timm_checkpoints import CLASSES, SIZE, make_timm_reference, save_state, small_26t

PARITY_ATOL = 1e-4
FEATURES_RTOL = 2e-4  # of max |features| (test_features_match_timm)
PARITY_SIZE = 256  # native size of the three presets
ARCHS = ("lambda_resnet26t", "lambda_resnet50ts", "lambda_resnet26rpt_256")


@pytest.fixture(scope="module")
def timm_reference(tmp_path_factory):
    """The three timm architectures at their native size, the presets' configs, the small one."""
    return make_timm_reference(tmp_path_factory.mktemp("timm"), ARCHS, W.PRESETS, PARITY_SIZE)


# ------------------------------------------------------------------------------- parity
@pytest.fixture(scope="module", params=ARCHS)
def parity_case(request, timm_reference):
    out_dir, meta = timm_reference
    arch = request.param
    load = lambda suffix: np.load(os.path.join(out_dir, f"{arch}_{suffix}.npy"))  # noqa: E731
    return dict(arch=arch, path=os.path.join(out_dir, f"{arch}.safetensors"),
                x=np.load(os.path.join(out_dir, "x.npy")), params=meta["params"][arch],
                **{name: load(name) for name in ("logits", "logits64", "features", "features64")})


def _check_parity(case, output, name):
    """output vs timm float32 (the criterion) and vs timm float64 (against timm's round-off)."""
    error = max_abs_diff(output, case[name])
    timm_round_off = max_abs_diff(case[name], case[f"{name}64"])
    error64 = max_abs_diff(output, case[f"{name}64"])
    print(f"\n{case['arch']} {name}: max |diff| vs timm {error:.3g}; vs timm float64 "
          f"{error64:.3g} (timm float32 itself: {timm_round_off:.3g}); "
          f"max |{name}| {np.abs(case[name]).max():.3g}")
    # As exact as timm's own float32 computation, measured against float64.
    assert error64 <= 3 * timm_round_off + 1e-6, (error64, timm_round_off)
    return error


@pytest.mark.slow
def test_logits_match_timm(parity_case):
    case = parity_case
    model = models.build_lambda_resnet(case["arch"], weights=case["path"],
                                       classifier_activation=None)
    logits = keras.ops.convert_to_numpy(model(case["x"], training=False))
    assert _check_parity(case, logits, "logits") <= PARITY_ATOL
    top5 = np.argsort(-logits, axis=1)[:, :5]
    np.testing.assert_array_equal(top5, np.argsort(-case["logits"], axis=1)[:, :5])
    # Parameters as timm counts them (trainable: BN moving statistics excluded).
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == case["params"]


@pytest.mark.slow
def test_features_match_timm(parity_case):
    case = parity_case
    model = models.build_lambda_resnet(case["arch"], weights=case["path"], include_top=False,
                                       input_shape=(PARITY_SIZE, PARITY_SIZE, 3))
    features = keras.ops.convert_to_numpy(model(case["x"], training=False))
    # Features reach |x| ~ 10-40, where float32 round-off is ~1e-3 (timm's own float32 vs float64
    # error: 2.2e-3 for lambda_resnet50ts). The criterion is _check_parity's (as exact as timm's
    # own float32, measured against float64), plus a bound relative to the features' scale:
    # FEATURES_RTOL, because TensorFlow's oneDNN kernels (on by default on AVX-512 CPUs) sum in
    # another order: 50ts differs by 1.15e-4 x scale with oneDNN, 0.69e-4 without (measured).
    assert_close(features, case["features"], FEATURES_RTOL, what=f"{case['arch']} features")
    _check_parity(case, features, "features")


def test_relative_positions_need_the_checkpoint_size(timm_reference):
    # lambda_resnet26rpt_256's relative tables are made for 256 px: another size is mis-shaped.
    path = os.path.join(timm_reference[0], "lambda_resnet26rpt_256.safetensors")
    with pytest.raises(ValueError) as info:
        lambda_keras.LambdaResNet26RPT256(weights=path, include_top=False,
                                          input_shape=(128, 128, 3))
    message = str(info.value)
    assert ("stages.3.1.self_attn.pos_emb (15, 15, 16) -> stage4_block2_lambda/position_embeddings"
            in message), message
    assert "model (7, 7, 1, 16)" in message, message


# ------------------------------------------------------------------------------ mapping
def test_loaded_values_follow_the_mapping(timm_state, loaded):
    # Independent spot checks of the layout conversions against the raw timm tensors.
    qkv = timm_state["stages.3.0.self_attn.qkv.weight"][:, :, 0, 0]  # [64 + 16 + 128, 512]
    expected = {
        "stem_conv1/kernel": timm_state["stem.conv1.conv.weight"].transpose(2, 3, 1, 0),
        "stage2_block1_shortcut_conv/kernel":
            timm_state["stages.1.0.shortcut.conv.weight"].transpose(2, 3, 1, 0),
        "stage2_block1_shortcut_bn/moving_variance":
            timm_state["stages.1.0.shortcut.bn.running_var"],
        "stage4_block1_lambda/query_kernel": qkv[:64].T,
        "stage4_block1_lambda/key_kernel": qkv[64:80].T,
        "stage4_block1_lambda/value_kernel": qkv[80:].T,
        "stage4_block1_lambda/query_norm/moving_mean":
            timm_state["stages.3.0.self_attn.norm_q.running_mean"],
        "stage4_block1_lambda_bn/gamma": timm_state["stages.3.0.post_attn.weight"],
        "stage4_block1_lambda/position_bias":
            timm_state["stages.3.0.self_attn.conv_lambda.bias"],
        "predictions/kernel": timm_state["head.fc.weight"].T,
    }
    for path, value in expected.items():
        np.testing.assert_array_equal(loaded[path], value, err_msg=path)
    lam = timm_state["stages.2.1.self_attn.conv_lambda.weight"]  # [k, 1, r, r, 1]
    for k, i, j in [(0, 0, 8), (5, 3, 1), (15, 8, 0)]:
        assert loaded["stage3_block2_lambda/position_embeddings"][i, j, 0, k] == lam[k, 0, i, j, 0]


def test_num_batches_tracked_is_ignored(timm_state, loaded):
    counters = [k for k in timm_state if k.endswith("num_batches_tracked")]
    assert counters  # present in the checkpoint, no Keras counterpart, and the load succeeded
    assert not any("num_batches" in path for path in loaded)


# ------------------------------------------------------------------------- strictness
def _strict_error(state, tmp_path, **model_kwargs):
    """Load a modified checkpoint; returns the error message after checking nothing changed."""
    path = save_state(state, tmp_path / "bad.safetensors")
    model = small_26t(**model_kwargs)
    before = weights_by_path(model)
    with pytest.raises(ValueError) as info:
        W.load_weights(model, path, "lambda_resnet26t")
    after = weights_by_path(model)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=f"{key} changed")
    message = str(info.value)
    assert path in message and "left unchanged" in message, message
    return message


def test_missing_tensor_is_named(timm_state, tmp_path):
    state = dict(timm_state)
    del state["stages.0.1.conv2_kxk.conv.weight"]
    message = _strict_error(state, tmp_path)
    assert "missing" in message and "stage1_block2_conv2/kernel" in message, message


def test_unexpected_tensor_is_named(timm_state, tmp_path):
    state = {**timm_state, "stages.0.1.extra.weight": np.zeros((3,), "float32")}
    message = _strict_error(state, tmp_path)
    assert "unexpected" in message and "stages.0.1.extra.weight" in message, message


def test_mis_shaped_tensor_is_named(timm_state, tmp_path):
    state = dict(timm_state)
    state["stages.1.1.conv1_1x1.conv.weight"] = np.zeros((128, 512, 3, 3), "float32")
    message = _strict_error(state, tmp_path)
    assert ("stages.1.1.conv1_1x1.conv.weight (128, 512, 3, 3) -> stage2_block2_conv1/kernel: "
            "converted (3, 3, 512, 128), model (1, 1, 512, 128)") in message, message


def test_two_tensors_for_one_weight_are_refused(timm_state, tmp_path):
    # pos_emb and conv_lambda.weight both map to position_embeddings; the second one (here of
    # the very shape that fits) overwrote the first and loaded silently.
    lam = timm_state["stages.2.1.self_attn.conv_lambda.weight"]  # [k, 1, r, r, 1]
    pos_emb = np.ones((lam.shape[2], lam.shape[3], lam.shape[0]), "float32")  # [r, r, k]
    message = _strict_error({**timm_state, "stages.2.1.self_attn.pos_emb": pos_emb}, tmp_path)
    assert ("1 unexpected checkpoint tensors: stages.2.1.self_attn.pos_emb (-> "
            "stage3_block2_lambda/position_embeddings, already taken by "
            "stages.2.1.self_attn.conv_lambda.weight)") in message, message


def test_every_problem_is_reported_at_once(timm_state, tmp_path):
    state = {k: v for k, v in timm_state.items() if not k.startswith("stages.3.1.self_attn")}
    state["head.extra"] = np.zeros((1,), "float32")
    message = _strict_error(state, tmp_path)
    for name in ("stage4_block2_lambda/query_kernel", "stage4_block2_lambda/position_bias",
                 "head.extra"):
        assert name in message, message


def test_architecture_mismatch_is_refused(checkpoint):
    # A lambda_resnet26t checkpoint into a lambda_resnet50ts: missing and unexpected tensors.
    with pytest.raises(ValueError, match="missing.*unexpected"):
        models.build_lambda_resnet("lambda_resnet50ts", weights=checkpoint, include_top=False,
                                   input_shape=(SIZE, SIZE, 3))


def _assert_classifier_advice(message, source, tensor, file_classes):
    """The error of a checkpoint whose classifier a 1000-class model cannot take."""
    assert source in message and tensor in message, message
    if file_classes is None:
        assert "has no classifier" in message and "include_top=False" in message, message
    else:
        assert f"has {file_classes} classes" in message, message
        assert f"classes={file_classes}" in message and "include_top=False" in message, message
    assert "'predictions' layer has 1000" in message, message
    assert message.count("left unchanged") == 1, message


def _assert_new_classifier_on_the_loaded_backbone(build, loaded):
    """`build(classes=7)` (a new 7-class classifier on pretrained weights) equals the checkpoint
    `loaded` but for the classifier, which keeps the initial values of a fresh model's."""
    keras.utils.set_random_seed(3)
    model = build(classes=7)
    keras.utils.set_random_seed(3)
    fresh = weights_by_path(small_26t(classes=7))
    for key, value in weights_by_path(model).items():
        expected = fresh[key] if key.startswith("predictions/") else loaded[key]
        np.testing.assert_array_equal(value, expected, err_msg=key)


def test_other_classes_into_a_default_model_are_refused(timm_state, tmp_path):
    # A 10-class checkpoint and `classes` left at 1000: refused, not a random 1000-class head.
    message = _strict_error(timm_state, tmp_path, classes=1000)
    assert ("head.fc.weight (10, 2048) -> predictions/kernel: converted (2048, 10), model "
            "(2048, 1000)") in message, message
    _assert_classifier_advice(message, str(tmp_path / "bad.safetensors"), "head.fc.weight", 10)


def test_headless_checkpoint_needs_a_headless_model(timm_state, loaded, tmp_path):
    state = {k: v for k, v in timm_state.items() if not k.startswith("head.")}
    message = _strict_error(state, tmp_path, classes=1000)
    assert "2 model weights missing" in message, message
    assert "predictions/kernel" in message and "predictions/bias" in message, message
    _assert_classifier_advice(message, str(tmp_path / "bad.safetensors"), "head.fc.weight", None)
    # ... and loads into include_top=False, or as the backbone of a new classifier.
    path = save_state(state, tmp_path / "headless.safetensors")
    got = weights_by_path(small_26t(weights=path, include_top=False))
    assert set(loaded) - set(got) == {"predictions/kernel", "predictions/bias"}
    _assert_new_classifier_on_the_loaded_backbone(
        lambda **kwargs: small_26t(weights=path, **kwargs), loaded)


def test_include_top_false_loads_all_but_the_classifier(checkpoint, loaded):
    model = small_26t(weights=checkpoint, include_top=False, pooling="avg")
    got = weights_by_path(model)
    assert set(loaded) - set(got) == {"predictions/kernel", "predictions/bias"}
    for key, value in got.items():
        np.testing.assert_array_equal(value, loaded[key], err_msg=key)


def test_other_classes_load_all_but_the_classifier(checkpoint, loaded):
    keras.utils.set_random_seed(3)
    model = small_26t(weights=checkpoint, classes=7)
    keras.utils.set_random_seed(3)
    fresh = weights_by_path(small_26t(classes=7))
    got = weights_by_path(model)
    for key, value in got.items():
        if key.startswith("predictions/"):
            np.testing.assert_array_equal(value, fresh[key], err_msg=key)  # initial values
        else:
            np.testing.assert_array_equal(value, loaded[key], err_msg=key)


# ------------------------------------------------------------------ damaged checkpoints
def test_truncated_file_is_named(checkpoint, tmp_path):
    path = tmp_path / "cut.safetensors"
    with open(checkpoint, "rb") as f:
        path.write_bytes(f.read(1 << 20))
    with pytest.raises(ValueError, match="Could not read .*cut.safetensors"):
        small_26t(weights=str(path))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_safetensors_are_refused_naming_the_tensor(timm_state, tmp_path, value):
    state = dict(timm_state)
    bad = "stages.1.0.conv2_kxk.bn.running_var"
    state[bad] = state[bad].copy()
    state[bad][3] = value
    path = save_state(state, tmp_path / "nan.safetensors")
    model = small_26t()
    before = weights_by_path(model)
    with pytest.raises(ValueError, match="non-finite") as info:
        W.load_weights(model, path, "lambda_resnet26t")
    assert bad in str(info.value)
    assert str(info.value).count("The model was left unchanged.") == 1, str(info.value)
    for key, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


# ------------------------------------------------------------------------ conversion
def test_convert_timm_round_trip(checkpoint, loaded, tmp_path):
    dst = W.convert_timm(checkpoint, tmp_path / "out" / "model.weights.h5")  # arch inferred
    assert dst.endswith(".weights.h5") and os.path.isfile(dst)
    model = small_26t(weights=dst)
    for key, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, loaded[key], err_msg=key)


def _load_without_warnings(**kwargs):
    """small_26t(**kwargs), failing on any warning of lambda_keras' (none for a new head)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = small_26t(**kwargs)
    ours = [str(w.message) for w in caught if "lambda_keras" in (w.filename or "")]
    assert not ours, ours
    return model


@pytest.fixture(scope="module")
def keras_files(checkpoint, tmp_path_factory):
    """The 10-class checkpoint as Keras files: (with its classifier, headless)."""
    folder = tmp_path_factory.mktemp("keras_files")
    full = W.convert_timm(checkpoint, folder / "full.weights.h5")
    headless = str(folder / "headless.weights.h5")
    small_26t(weights=full, include_top=False).save_weights(headless)
    return full, headless


@pytest.mark.parametrize("which", ["full", "headless"])
def test_keras_files_follow_the_classifier_rule(keras_files, loaded, which):
    # The rule of the safetensors files: include_top=False and other classes (a new classifier)
    # load, without a warning; a model of the default 1000 classes refuses the file.
    path = keras_files[which == "headless"]
    got = weights_by_path(_load_without_warnings(weights=path, include_top=False))
    assert set(loaded) - set(got) == {"predictions/kernel", "predictions/bias"}
    for key, value in got.items():
        np.testing.assert_array_equal(value, loaded[key], err_msg=key)
    _assert_new_classifier_on_the_loaded_backbone(
        lambda **kwargs: _load_without_warnings(weights=path, **kwargs), loaded)
    model = small_26t(classes=1000)
    before = weights_by_path(model)
    with pytest.raises(ValueError) as info:
        W.load_weights(model, path, "lambda_resnet26t")
    _assert_classifier_advice(str(info.value), path, "layers/dense/vars/0",
                              None if which == "headless" else CLASSES)
    for key, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_keras_file_of_another_architecture_leaves_the_model_unchanged(checkpoint, tmp_path):
    dst = W.convert_timm(checkpoint, tmp_path / "model.weights.h5", arch_name="LambdaResNet26T")
    model = models.build_lambda_resnet("lambda_resnet50ts", weights=None, classes=CLASSES,
                                       input_shape=(SIZE, SIZE, 3))
    before = weights_by_path(model)
    with pytest.raises(ValueError, match="left unchanged"):
        W.load_weights(model, dst, "lambda_resnet50ts")
    for key, value in weights_by_path(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


@pytest.mark.parametrize("kwargs,message", [
    (dict(dst="model.h5"), "`dst` must end with .weights.h5"),
    (dict(arch_name="resnet50"), "`arch_name` must be one of"),
])
def test_convert_timm_arguments(checkpoint, tmp_path, kwargs, message):
    kwargs = {"dst": "model.weights.h5", **kwargs}
    kwargs["dst"] = str(tmp_path / kwargs["dst"])
    with pytest.raises(ValueError, match=message):
        W.convert_timm(checkpoint, **kwargs)


@pytest.mark.parametrize("src,dst,received", [
    (None, "model.weights.h5", "src=None of type NoneType"),
    (b"model.safetensors", "model.weights.h5", "src=b'model.safetensors' of type bytes"),
    ("model.safetensors", 5, "dst=5 of type int"),
])
def test_convert_timm_paths_of_a_wrong_type(src, dst, received, tmp_path, monkeypatch):
    # Was os.fspath's "expected str, bytes or os.PathLike object", naming neither argument.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError) as info:
        W.convert_timm(src, dst)
    message = str(info.value)
    assert f"`{received.split('=')[0]}` must be a file path" in message, message
    assert f"Received: {received}" in message, message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_convert_timm_refuses_non_finite_tensors(timm_state, tmp_path, value):
    state = dict(timm_state)
    bad = "stages.2.1.self_attn.conv_lambda.bias"
    state[bad] = np.full_like(state[bad], value)
    src = save_state(state, tmp_path / "nan.safetensors")
    dst = tmp_path / "out.weights.h5"
    with pytest.raises(ValueError, match="non-finite") as info:
        W.convert_timm(src, dst)
    assert bad in str(info.value) and f"Nothing was written to {str(dst)!r}" in str(info.value)
    assert os.listdir(tmp_path) == ["nan.safetensors"]


def test_convert_timm_checks_dst_before_converting(checkpoint, tmp_path, monkeypatch):
    dst = tmp_path / "out.weights.h5"
    dst.mkdir()
    monkeypatch.setattr(W.loading, "read_safetensors", lambda path: pytest.fail("src read"))
    with pytest.raises(ValueError, match="`dst` is a directory") as info:
        W.convert_timm(checkpoint, dst)
    assert f"Received: dst={str(dst)!r}" in str(info.value)
    assert not any(dst.iterdir()) and os.listdir(tmp_path) == ["out.weights.h5"]


def test_upper_case_keras_suffix_is_refused(checkpoint, tmp_path):
    # Keras reads ".weights.h5" only: the suffix check must not pass what Keras then refuses.
    path = str(W.convert_timm(checkpoint, tmp_path / "model.weights.h5"))
    upper = path.replace(".weights.h5", ".WEIGHTS.H5")
    os.rename(path, upper)
    with pytest.raises(ValueError, match="lower-case suffix .weights.h5") as info:
        small_26t(weights=upper)
    assert f"Received: weights={upper!r}" in str(info.value)


def test_infer_timm_arch_from_keys(timm_reference):
    for arch, keys in timm_reference[1]["keys"].items():
        assert W.infer_timm_arch(dict.fromkeys(keys)) == arch
    with pytest.raises(ValueError, match="pass `arch_name`"):
        W.infer_timm_arch({"stem.conv1.conv.weight": None})
    with pytest.raises(ValueError, match="pass `--model`"):
        W.infer_timm_arch({"stem.conv1.conv.weight": None}, "--model")


# ---------------------------------------------------------------------- preprocessing
def test_presets_carry_timm_pretrained_cfg(timm_reference):
    for preset in W.PRESETS.values():
        cfg = timm_reference[1]["cfg"][preset.name]
        prep = preset.preprocessing
        assert prep.input_size == tuple(cfg["input_size"][1:])
        assert prep.crop_pct == cfg["crop_pct"] and prep.interpolation == cfg["interpolation"]
        assert prep.mean == tuple(cfg["mean"]) and prep.std == tuple(cfg["std"])
        assert cfg["hf_hub_id"] == f"timm/{preset.name}"
        assert preset.num_classes == cfg["num_classes"] and preset.license == cfg["license"]
        assert preset.url.endswith(f"/timm/{preset.name}/resolve/main/model.safetensors")
        assert preset.arch in models.BUILDERS and hasattr(lambda_keras, preset.builder)


@pytest.mark.parametrize("name", ["lambda_resnet50ts.a1h_in1k", "lambda_resnet50ts",
                                  "LambdaResNet50TS"])
def test_resolve_preprocessing(name):
    assert W.resolve_preprocessing(name).crop_pct == 0.95


def test_resolve_preprocessing_unknown():
    with pytest.raises(ValueError, match="No preprocessing is known for 'resnet50'"):
        W.resolve_preprocessing("resnet50")


@pytest.mark.parametrize("name,size", [("lambda_resnet50", 224), ("LambdaResNet350", 320),
                                       (None, 224)])
def test_paper_models_get_imagenet_defaults(name, size):
    # No weights: ImageNet mean/std, crop 0.875, bicubic, at the architecture's image size.
    expected = W.Preprocessing(input_size=(size, size))
    assert W.resolve_preprocessing(name) == expected


def test_replace_input_size():
    prep = W.replace_input_size("lambda_resnet26t", (320, 288))
    assert prep.input_size == (320, 288) and prep.crop_pct == 0.94
    assert W.replace_input_size(prep, 224).input_size == (224, 224)
    with pytest.raises(ValueError, match=r"Received: input_size=\(0, 3\)"):
        W.replace_input_size(prep, (0, 3))


@pytest.mark.parametrize("record, expected", [
    ('[0.5, 0.5]', "JSON object of Preprocessing fields"),  # was AttributeError (a traceback)
    ("null", "JSON object of Preprocessing fields"),
    ('{"input_size": "224"}', "Received: input_size='224'"),
    ('{"input_size": [224, 0]}', "Received: input_size=[224, 0]"),
    ('{"crop_pct": 1.5}', "Received: crop_pct=1.5"),
    ('{"crop_pct": "0.9"}', "Received: crop_pct='0.9'"),
    ('{"interpolation": "lanczos"}', "interpolation='lanczos'"),
    ('{"mean": [0.5, 0.5]}', "Received: mean=[0.5, 0.5]"),
    ('{"std": [0.2, 0.0, 0.2]}', "Received: std=0.0"),
    ('{"size": 224}', "unknown field(s) ['size']"),
])
def test_preprocessing_record_that_is_not_one_names_the_file(record, expected, tmp_path):
    (tmp_path / presets.PREPROCESSING_FILE).write_text(record)
    with pytest.raises(ValueError) as info:
        presets.preprocessing_beside(tmp_path / "best.keras")
    message = str(info.value)
    assert str(tmp_path / presets.PREPROCESSING_FILE) in message and expected in message


def test_preprocessing_record_round_trip_and_int_size(tmp_path):
    prep = W.Preprocessing(input_size=(64, 48), crop_pct=0.9, interpolation="bilinear")
    presets.save_preprocessing(tmp_path, prep)
    assert presets.preprocessing_beside(tmp_path / "best.keras") == prep
    # An int size means (n, n), as everywhere (was kept as the int 224, which broke later).
    (tmp_path / presets.PREPROCESSING_FILE).write_text('{"input_size": 224}')
    assert presets.preprocessing_beside(tmp_path / "best.keras").input_size == (224, 224)


def test_preprocessing_arguments_are_named_as_the_caller_names_them():
    """Was ValueError "... Received: name=42" for preprocess_input(x, 42)."""
    x = np.zeros((1, 4, 4, 3), "float32")
    with pytest.raises(TypeError, match=r"`preprocessing` must be .* Received: preprocessing=42"):
        W.preprocess_input(x, 42)
    with pytest.raises(ValueError, match=r"Received: preprocessing='resnet50'"):
        W.preprocess_input(x, "resnet50")
    with pytest.raises(TypeError, match=r"Received: preprocessing=\[0\.5\]"):
        W.replace_input_size([0.5], 224)
    with pytest.raises(TypeError, match=r"Received: name=42"):
        W.resolve_preprocessing(42)


def test_preprocess_input_normalises():
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    expected = (pixels / 255.0 - np.array(W.IMAGENET_MEAN)) / np.array(W.IMAGENET_STD)
    out = W.preprocess_input(pixels, "LambdaResNet26T")
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    tensor_out = W.preprocess_input(keras.ops.convert_to_tensor(pixels))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tensor_out), expected, rtol=1e-6,
                               atol=1e-6)
    # Was a NumPy broadcast error ("operands could not be broadcast together").
    for x in (np.zeros((1, 8, 8, 2)), keras.ops.zeros((1, 8, 8, 4)), 3.0):
        with pytest.raises(ValueError, match=r"`x` must be RGB images with 3 channels last "
                                             r"\(\[\.\.\., 3\]\)\. Received: x of shape"):
            W.preprocess_input(x, "LambdaResNet50TS")


@pytest.mark.parametrize("x,error,received", [
    (None, TypeError, "x=None"),
    ("pixels", TypeError, "x='pixels'"),
    (np.array([["a", "b", "c"]]), TypeError, "of dtype <U1"),
    ([[0, None, 255]], TypeError, "x=[[0, None, 255]] of dtype object"),
    ([[0, 1, 2], [3, 4]], ValueError, "x=[[0, 1, 2], [3, 4]]"),
])
def test_preprocess_input_refuses_what_is_not_pixels(x, error, received):
    # Were NumPy/TensorFlow conversion errors naming no argument.
    with pytest.raises(error) as info:
        W.preprocess_input(x)
    message = str(info.value)
    assert "`x` must be" in message and received in message, message


@pytest.mark.parametrize("preds,error,received", [
    ([["a"] * 1000], TypeError, "preds of dtype <U1"),  # was NumPy's UFuncTypeError
    ([[0.0] * 1000, [1.0]], ValueError, "preds=[[0.0, 0.0"),
])
def test_decode_predictions_refuses_what_is_not_scores(preds, error, received):
    with pytest.raises(error) as info:
        W.decode_predictions(preds)
    message = str(info.value)
    assert "`preds` must" in message and received in message, message


def test_decode_predictions(timm_reference):
    classes = W.imagenet_classes()
    assert len(classes) == 1000 and len({wnid for wnid, _ in classes}) == 1000
    assert [wnid for wnid, _ in classes] == sorted(wnid for wnid, _ in classes)
    # Independent source: timm's own ImageNet synset list.
    assert [wnid for wnid, _ in classes] == timm_reference[1]["labels"]
    preds = np.zeros((2, 1000), "float32")
    preds[0, [1, 2, 3]] = [0.2, 0.5, 0.3]
    preds[1, 999] = 1.0
    decoded = W.decode_predictions(preds, top=3)
    assert [d[1] for d in decoded[0]] == ["great white shark", "tiger shark", "goldfish"]
    assert decoded[0][0] == ("n01484850", "great white shark", 0.5)
    assert decoded[1][0][:2] == ("n15075141", "toilet tissue")
    with pytest.raises(ValueError, match=r"Received: preds.shape=\(2, 10\)"):
        W.decode_predictions(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="Received: top=0"):
        W.decode_predictions(preds, top=0)
    # A wrong type is a TypeError (was ValueError); NumPy integers are integers.
    with pytest.raises(TypeError, match=r"`top` must be an int in \[1, 1000\]. Received: top=2.0"):
        W.decode_predictions(preds, top=2.0)
    assert W.decode_predictions(preds, top=np.int64(1))[0] == [decoded[0][0]]


def test_module_import_is_torch_free():
    # No torch at run time: the weights module (and the package) never import it.
    import subprocess
    import sys

    code = ("import sys, lambda_keras, lambda_keras.weights; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
