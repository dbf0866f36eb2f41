"""Causal sequence layers: peak memory and time vs length, lambda layer vs multi-head attention.

    python -m benchmarks.sequence [--lengths 256,512,1024,2048,4096] [--out benchmarks/results]

Forward pass (`training=False`, TensorFlow graph mode, `tf.function`) of one layer on a batch of
1 sequence of depth 64, at each length n:

- "lambda_local": `SequenceLambdaLayer(64, key_dim=16, num_heads=4, causal=True,
  position="local", receptive_field=23)`: prefix-sum content lambda + causal local window;
- "lambda_content": the same with `position=None` (content lambda only);
- "mha": `keras.layers.MultiHeadAttention(num_heads=4, key_dim=16)` with `use_causal_mask=True`
  (softmax attention: an n x n map per head).

Peak memory is TensorFlow's CPU allocator peak above the memory in use before the call
(`common.TFAllocatorPeak`); TF_CPU_ALLOCATOR_USE_BFC=true is set before TensorFlow is imported so
the statistics exist with oneDNN on or off. The slope of log(peak) against log(n) (least squares
over the lengths) is reported per layer: 1 means linear memory, 2 quadratic. Time: median of
`common.measure` (one warm-up). The oneDNN state (asked of TensorFlow), CPU flags and versions
are recorded with the results in `sequence.json`.
"""

import argparse
import os
import pathlib
import time

# The package import asks for TensorFlow's pooled allocator (runtime.prefer_pooled_allocator),
# whose statistics give the peak memory; it imports no TensorFlow.
from benchmarks import common
from lambda_keras import runtime, utils
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

DEPTH, HEADS, KEY_DIM = 64, 4, 16


def _layers():
    import keras

    from lambda_keras import SequenceLambdaLayer

    lambda_kwargs = dict(key_dim=KEY_DIM, num_heads=HEADS, causal=True, receptive_field=23)
    mha = keras.layers.MultiHeadAttention(num_heads=HEADS, key_dim=KEY_DIM)
    return {
        "lambda_local": (SequenceLambdaLayer(DEPTH, position="local", **lambda_kwargs),
                         lambda layer, x: layer(x, training=False)),
        "lambda_content": (SequenceLambdaLayer(DEPTH, position=None, **lambda_kwargs),
                           lambda layer, x: layer(x, training=False)),
        "mha": (mha, lambda layer, x: layer(x, x, use_causal_mask=True, training=False)),
    }


def slope(lengths, values):
    """Least-squares slope of log(values) against log(lengths)."""
    return float(np.polyfit(np.log(lengths), np.log(values), 1)[0])


def run(lengths):
    import tensorflow as tf
    import keras

    from benchmarks.common import TFAllocatorPeak, measure

    results = {"machine": {**runtime.describe(),
                           "tensorflow": tf.__version__, "keras": keras.__version__,
                           "threads": os.cpu_count()},
               "settings": {"batch": 1, "depth": DEPTH, "num_heads": HEADS, "key_dim": KEY_DIM,
                            "lengths": list(lengths)},
               "layers": {}}
    for name, (layer, call) in _layers().items():
        fn = tf.function(lambda x, layer=layer, call=call: call(layer, x))
        rows = []
        for n in lengths:
            x = tf.random.normal((1, n, DEPTH))
            fn(x).numpy()  # trace and build
            with TFAllocatorPeak() as peak:
                fn(x).numpy()
            stats = measure(lambda: fn(x).numpy(), warmup=0, min_repeats=3, budget_s=2.0)
            rows.append({"length": n, "peak_bytes": peak.peak_bytes,
                         "median_s": stats["median_s"]})
            print(f"{name:15s} n={n:5d}  peak {peak.peak_bytes / 2**20:8.2f} MiB  "
                  f"{stats['median_s'] * 1e3:8.2f} ms", flush=True)
        peaks = [row["peak_bytes"] for row in rows]
        results["layers"][name] = {
            "rows": rows,
            "memory_slope": slope(lengths, peaks) if None not in peaks else None,
            "time_slope": slope(lengths, [row["median_s"] for row in rows]),
        }
        print(f"{name:15s} memory slope {results['layers'][name]['memory_slope']:.2f}, "
              f"time slope {results['layers'][name]['time_slope']:.2f}", flush=True)
    return results


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sequence",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=common.comma_list(kind=int),
                        default="256,512,1024,2048,4096",
                        help="comma-separated sequence lengths (default: %(default)s)")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"),
                        help="results directory; writes sequence.json there")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    results = run(args.lengths)
    results["wall_s"] = round(time.perf_counter() - start, 1)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    utils.write_json(out / "sequence.json", results)
    print(f"oneDNN active: {results['machine'].get('onednn_active')}; "
          f"wrote {out / 'sequence.json'}")


if __name__ == "__main__":
    main()
