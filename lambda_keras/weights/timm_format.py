"""timm's lambda-network checkpoints: reading safetensors files and mapping their tensors onto
Keras weight paths (the table is in the package docstring, lambda_keras/weights/__init__.py)."""

import re

import numpy as np

from lambda_keras.models import CLASSIFIER
from lambda_keras.presets import IMAGENET_PRESETS

SAFETENSORS_SUFFIX = ".safetensors"
CLASSIFIER_KERNEL = "head.fc.weight"  # timm's classifier kernel, [classes, features]


WEIGHTS_FILE_HINT = ("Pass the model.safetensors file of a timm checkpoint or a Keras "
                     ".weights.h5 file.")


def read_safetensors(path, hint=WEIGHTS_FILE_HINT):
    """{name: np.ndarray} of a safetensors file; ValueError naming the file if it is not one.

    `hint` ends the message: what the caller takes instead (by default, a weights file).
    """
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except Exception as error:  # SafetensorError, OSError, or a dtype NumPy lacks
        raise ValueError(
            f"Could not read {path!r} as a safetensors file ({type(error).__name__}: {error}). "
            f"{hint}") from error


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
    (r"stem\.conv(?P<i>\d+)\.conv\.weight", lambda m: f"stem_conv{m['i']}/kernel", _oihw_to_hwio),
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
    (re.escape(CLASSIFIER_KERNEL), lambda m: f"{CLASSIFIER}/kernel", np.transpose),
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

    Returns ({keras_path: (array, timm_key, timm_shape)}, [timm keys no rule converts, or
    that map onto a weight an earlier key already took]).
    """
    converted, unconverted = {}, []
    for key, tensor in state.items():
        if key.endswith(IGNORED_SUFFIX):
            continue
        qkv = _QKV.fullmatch(key)
        try:
            if qkv:
                layer = f"{_block(qkv)}lambda"
                parts = zip(("query", "key", "value"), _split_qkv(key, tensor, state))
                targets = {f"{layer}/{part}_kernel": array for part, array in parts}
            else:
                for pattern, path, convert in _RULES:
                    m = re.fullmatch(pattern, key)
                    if m:
                        targets = {path(m): tensor if convert is None else convert(tensor)}
                        break
                else:
                    unconverted.append(key)
                    continue
        except (ValueError, IndexError):  # wrong rank or size: reported as unexpected
            unconverted.append(f"{key} {tuple(tensor.shape)}")
            continue
        taken = [path for path in targets if path in converted]
        if taken:  # two tensors for one weight (pos_emb and conv_lambda): the second is unused
            unconverted.append(f"{key} (-> {taken[0]}, already taken by "
                               f"{converted[taken[0]][1]})")
            continue
        converted.update({path: (array, key, tuple(tensor.shape))
                          for path, array in targets.items()})
    return converted, unconverted


def infer_timm_arch(state, arg="arch_name"):
    """Architecture of a timm lambda-network state dict, from the tensors it holds; `arg` is
    the argument that names the architecture instead (the command line's `--model`)."""
    keys = set(state)
    if any(k.endswith("self_attn.pos_emb") for k in keys):
        return "lambda_resnet26rpt_256"
    if "stages.1.3.self_attn.qkv.weight" in keys:
        return "lambda_resnet50ts"
    if "stages.3.1.self_attn.qkv.weight" in keys:
        return "lambda_resnet26t"
    raise ValueError(f"Cannot tell which timm lambda network this checkpoint is; pass `{arg}` "
                     f"(one of {tuple(IMAGENET_PRESETS)}).")
