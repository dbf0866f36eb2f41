"""Peer suite: timm's PyTorch `LambdaLayer` on the layer suite's shapes (same thread count; on
the GPU where PyTorch sees one, as the PyTorch backend of Keras puts its layers there).

timm's layer (timm/layers/lambda_layer.py) computes the local position lambdas with a Conv3d of
kernel (r, r, 1) over the values, the paper's lambda convolution. It is built with the same
hyper-parameters as the layer suite's "lambda_local" (d -> d, |k| = 16, |h| = 4, r = 23; timm adds a
bias to the lambda convolution and always has |u| = 1). Inputs are channels-first [b, d, s, s].
"fwd" runs in eval mode under `torch.inference_mode()`; "train" is forward + backward of
mean(y^2) in train mode with the input requiring a gradient (no optimizer update), gradients
cleared before each step. Peak memory is the RSS method (PyTorch keeps no CPU allocator
statistics; see common.py), so each size runs alone in its process here; the layer suite also
times the same layer round-robin with ours, and the speed ratios come from there.
"""

import numpy as np

from benchmarks import common, layer

# Two warm-up calls: PyTorch's first calls at a new shape create oneDNN primitives.
FULL = dict(batch=layer.FULL["batch"], width=layer.FULL["width"], sizes=(14, 28, 56, 112),
            timing={**layer.FULL["timing"], "warmup": 2})
QUICK = dict(batch=layer.QUICK["batch"], width=layer.QUICK["width"], sizes=layer.QUICK["sizes"],
             timing=layer.QUICK["timing"])


def plan(settings, memory_budget_bytes):
    group = [dict(suite="peer", id=f"peer/timm_lambda/{s}x{s}", variant="timm_lambda", size=s,
                  positions=s * s, batch=settings["batch"], width=settings["width"],
                  timing=settings["timing"]) for s in settings["sizes"]]
    return [group]


def step_functions(size, width, batch, threads):
    """(forward, forward + backward) callables of timm's layer on a random [b, d, s, s] input."""
    from benchmarks.common import setup_torch

    torch = setup_torch(threads)
    from timm.layers.lambda_layer import LambdaLayer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = LambdaLayer(width, width, num_heads=layer.LAMBDA_DEFAULTS["num_heads"],
                         dim_head=layer.LAMBDA_DEFAULTS["key_dim"],
                         r=layer.LAMBDA_DEFAULTS["receptive_field"]).to(device)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(
        (batch, width, size, size)).astype("float32")).to(device)
    x_train = x.clone().requires_grad_(True)

    def forward():
        module.eval()
        with torch.inference_mode():
            module(x).sum().item()

    def forward_backward():
        module.train()
        module.zero_grad(set_to_none=True)
        x_train.grad = None
        loss = module(x_train).square().mean()
        loss.backward()
        loss.item()

    forward.module = module
    return forward, forward_backward


def run_job(job, threads, isolated):
    """timm alone in its process: time and the RSS peak (the layer suite times it round-robin)."""
    forward, forward_backward = step_functions(job["size"], job["width"], job["batch"], threads)
    rss_start = common.rss_bytes() if isolated else None
    result = {}
    for phase, fn in (("fwd", forward), ("train", forward_backward)):
        stats = common.measure(fn, **job["timing"])
        growth = None if rss_start is None else common.peak_rss_bytes() - rss_start
        stats.update(peak_bytes=growth, memory_method="rss", rss_peak_growth_bytes=growth)
        result[phase] = stats
    result["params"] = int(sum(p.numel() for p in forward.module.parameters()))
    return result
