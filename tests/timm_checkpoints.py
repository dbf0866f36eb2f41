"""timm checkpoints for the weights tests, made by timm itself (torch, CPU) in a subprocess.

torch runs in a subprocess (`make_timm_reference`): importing torch after TensorFlow in one
process crashes (triton's LLVM clashes with TensorFlow's), and the package itself must not need
torch. The subprocess writes, for each requested architecture, a checkpoint whose batch-norm
affine parameters are randomised and whose running statistics come from a random calibration
batch (so every BN tensor is non-trivial and activations stay O(1)), its float32 and float64
logits and features on one random batch, the presets' timm pretrained configs, timm's ImageNet
labels, and always `small.safetensors`: a lambda_resnet26t with `CLASSES` classes, the checkpoint
of the loading and download tests (`randomised_state` gives it random BN tensors). The fixtures
over it (`timm_state`, `checkpoint`, `loaded`) are in conftest.py.
"""

import inspect
import json
import os
import subprocess
import sys

import numpy as np
import safetensors.numpy

import lambda_keras

SIZE = 64  # input size of the small models
CLASSES = 10


def _make_timm_reference(out_dir, archs, presets, size, classes):
    """Writes timm checkpoints, reference outputs and metadata to out_dir (runs with torch)."""
    import json
    import os

    import numpy as np
    import timm
    import timm.data
    import torch
    from safetensors.torch import save_file

    def randomised(arch, seed=0):
        # Fixed seed; random BN affine; running stats = statistics of a random calibration batch.
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False)
        generator = torch.Generator().manual_seed(seed + 1)
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        with torch.no_grad():
            for norm in norms:
                norm.weight.copy_(torch.rand(norm.num_features, generator=generator) * 0.5 + 0.5)
                norm.bias.copy_(torch.randn(norm.num_features, generator=generator) * 0.1)
                norm.reset_running_stats()
                norm.momentum = None  # cumulative average over the one calibration batch
            model.train()
            model(torch.randn(4, 3, size, size, generator=generator))
        return model.eval()

    def save(model, name):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  os.path.join(out_dir, name))

    x = np.random.default_rng(1).standard_normal((2, size, size, 3)).astype("float32")
    np.save(os.path.join(out_dir, "x.npy"), x)
    meta = {"params": {}, "keys": {}, "cfg": {}}
    for arch in archs:
        model = randomised(arch)
        save(model, f"{arch}.safetensors")
        meta["params"][arch] = sum(p.numel() for p in model.parameters())
        meta["keys"][arch] = list(model.state_dict())
        nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
        # float32 (the reference) and float64 (to measure timm's own float32 round-off).
        for dtype, tag in ((torch.float32, ""), (torch.float64, "64")):
            model = model.to(dtype)
            with torch.no_grad():
                features = model.forward_features(nchw.to(dtype))
                logits = model.forward_head(features)
            np.save(os.path.join(out_dir, f"{arch}_logits{tag}.npy"), logits.numpy())
            np.save(os.path.join(out_dir, f"{arch}_features{tag}.npy"),
                    features.permute(0, 2, 3, 1).numpy())  # NHWC
    for name in presets:
        meta["cfg"][name] = timm.models.get_pretrained_cfg(name).to_dict()
    torch.manual_seed(0)
    save(timm.create_model("lambda_resnet26t", pretrained=False, num_classes=classes),
         "small.safetensors")
    info = timm.data.ImageNetInfo()
    meta["labels"] = [info.index_to_label_name(i) for i in range(1000)]
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f)


def make_timm_reference(out_dir, archs=(), presets=(), size=256):
    """Runs `_make_timm_reference` in a subprocess; returns (out_dir, its meta.json)."""
    args = (str(out_dir), tuple(archs), tuple(presets), size, CLASSES)
    code = inspect.getsource(_make_timm_reference) + f"\n_make_timm_reference(*{args!r})\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out_dir, "meta.json")) as f:
        return str(out_dir), json.load(f)


def randomised_state(out_dir):
    """The small lambda_resnet26t state dict of `out_dir` with random BN tensors (NumPy)."""
    state = safetensors.numpy.load_file(os.path.join(out_dir, "small.safetensors"))
    rng = np.random.default_rng(0)
    norms = [k[: -len("running_mean")] for k in state if k.endswith("running_mean")]
    for prefix in norms:
        shape = state[f"{prefix}running_mean"].shape
        for name, draw in (("weight", rng.uniform(0.5, 1.5, shape)),
                           ("bias", rng.normal(0.0, 0.1, shape)),
                           ("running_mean", rng.normal(0.0, 0.1, shape)),
                           ("running_var", rng.uniform(0.5, 1.5, shape))):
            state[f"{prefix}{name}"] = draw.astype("float32")
    return state


def save_state(state, path):
    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    return str(path)


def small_26t(**kwargs):
    kwargs = {"weights": None, "input_shape": (SIZE, SIZE, 3), "classes": CLASSES, **kwargs}
    return lambda_keras.LambdaResNet26T(**kwargs)
