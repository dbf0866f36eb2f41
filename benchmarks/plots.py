"""PNG plots of one run's results (matplotlib, Agg backend); each returns the file names written.

- layer_memory.png: fwd+bwd peak memory vs number of positions, log-log, one line per layer
  variant with its fitted slope (lambda ~1: linear; attention ~2: quadratic); timm dashed (RSS).
- layer_time.png: fwd+bwd median time vs positions, log-log, timm included.
- model_throughput.png: inference and training images/s per model and batch size.
- backends_throughput.png: the same per Keras backend (TensorFlow, JAX, PyTorch), one batch size.
- export_latency.png: per-image latency of each export format.
- formulations_versus_timm.png (`python -m benchmarks.formulations --plot`, not a `make bench`
  suite): the lambda layer's speed-up over timm's per engine and map size, a panel per CPU's
  formulation table and phase, with the paired runs' medians and the 2x target.
"""

import os
import statistics

from benchmarks import report

LAYER_STYLE = {
    "lambda_local": dict(color="tab:blue", marker="o", linewidth=2.5),
    "lambda_local_xla": dict(color="tab:cyan", marker="o", linestyle=":"),
    "lambda_local_row_windows": dict(color="tab:green", marker="o", linestyle="--"),
    "lambda_local_conv": dict(color="tab:purple", marker="o", linestyle="--"),
    "lambda_relative": dict(color="tab:brown", marker="D"),
    "lambda_global": dict(color="tab:pink", marker="D"),
    "lambda_content": dict(color="tab:olive", marker="v"),
    "attention": dict(color="tab:red", marker="s", linewidth=2.5),
    "conv3x3": dict(color="tab:gray", marker="^"),
    "timm_lambda": dict(color="black", marker="x", linestyle="--"),
}
# The engines of the formulation suite (benchmarks/formulations.py).
ENGINE_STYLE = {"tf_onednn": dict(color="tab:blue"), "tf": dict(color="tab:green"),
                "tf_malloc": dict(color="tab:olive", linestyle=":"),
                "xla": dict(color="tab:cyan", linestyle="--"),
                "jax": dict(color="tab:red", linestyle="--"), "torch": dict(color="tab:purple")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(suite, variant, phase, value):
    points = sorted((r["positions"], value(r[phase]))
                    for r in report._ok(suite).values()  # noqa: SLF001
                    if r.get("variant") == variant and value(r[phase]))
    return [p[0] for p in points], [p[1] for p in points]


def _layer_plot(plt, layer_suite, peer_suite, value, ylabel, title, path, slopes):
    """One line per variant; timm's from `peer_suite` when given (its isolated RSS peaks)."""
    figure, axis = plt.subplots(figsize=(8, 5.5))
    variants = sorted({r["variant"] for r in report._ok(layer_suite).values()  # noqa: SLF001
                       if not (peer_suite and r["variant"] == "timm_lambda")})
    for suite, names in ((layer_suite, variants), (peer_suite, ["timm_lambda"])):
        for variant in names:
            xs, ys = _series(suite, variant, "train", value) if suite else ([], [])
            if not xs:
                continue
            label = variant
            if slopes:
                slope = report.fit_slope(list(zip(xs, ys)))
                label += f" (slope {slope:.2f})" if slope is not None else ""
            axis.plot(xs, ys, label=label, **LAYER_STYLE.get(variant, dict(marker="o")))
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("positions n = height x width")
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _throughput_plot(plt, groups, series, images_per_s, title, path):
    """Inference and training panels of grouped bars: images/s of every series in every group.

    groups: [(label, key)]; series: names; images_per_s(mode, key, name) -> float or None."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    width = 0.8 / max(1, len(series))
    for axis, mode in zip(axes, ("infer", "train")):
        for i, name in enumerate(series):
            values = [images_per_s(mode, key, name) or 0 for _, key in groups]
            axis.bar([j + i * width for j in range(len(groups))], values, width, label=name)
        axis.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
        axis.set_xticklabels([label for label, _ in groups])
        axis.set_ylabel("images / s")
        axis.set_title(f"{'inference' if mode == 'infer' else 'training'}{title}", fontsize=10)
        axis.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _model_plot(plt, model_suite, path):
    table = report.model_table(model_suite)
    rows = {row["model"]: row for row in table["rows"]}
    _throughput_plot(plt, [(f"batch {b}", b) for b in table["batches"]], list(rows),
                     lambda mode, batch, name: rows[name][f"{mode}_b{batch}_images_per_s"],
                     f" at {table['image_size']} px", path)


def _backends_plot(plt, backends_suite, path):
    table = report.backends_table(backends_suite)
    rows = {(r["backend"], r["model"]): r for r in table["rows"]}
    backends = list(dict.fromkeys(backend for backend, _ in rows))
    models = list(dict.fromkeys(model for _, model in rows))
    _throughput_plot(plt, [(b, b) for b in backends], models,
                     lambda mode, backend, name: rows.get((backend, name), {}).get(
                         f"{mode}_images_per_s"),
                     f", batch {table['batch']} at {table['image_size']} px", path)


def _export_plot(plt, export_suite, path):
    rows = [r for r in report.export_table(export_suite)["rows"] if "median_s" in r]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.bar([r["format"] for r in rows], [r["median_s"] * 1000 for r in rows], color="tab:blue")
    for i, row in enumerate(rows):
        if row["file_bytes"]:
            axis.text(i, row["median_s"] * 1000, f"{row['file_bytes'] / 1e6:.0f} MB",
                      ha="center", va="bottom", fontsize=7)
    axis.set_ylabel("latency per image, ms (median)")
    axis.tick_params(axis="x", labelrotation=30, labelsize=8)
    axis.set_title("LambdaResNet-50 exports, batch 1 (labels: file size)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def make_all(suites, out_dir):
    plt = _pyplot()
    written = []
    layer_suite, peer_suite = suites.get("layer"), suites.get("peer")
    if layer_suite:
        settings = layer_suite["settings"]
        shape = f"batch {settings['batch']}, d={settings['width']}"
        _layer_plot(plt, layer_suite, peer_suite, lambda s: s.get("peak_bytes"),
                    "fwd+bwd peak memory, bytes",
                    f"Peak memory vs positions ({shape}; TF: allocator peak, timm: RSS growth)",
                    os.path.join(out_dir, "layer_memory.png"), slopes=True)
        _layer_plot(plt, layer_suite, None, lambda s: s.get("median_s"),
                    "fwd+bwd time, s (median)", f"Forward+backward time vs positions ({shape})",
                    os.path.join(out_dir, "layer_time.png"), slopes=False)
        written += ["layer_memory.png", "layer_time.png"]
    if suites.get("model"):
        _model_plot(plt, suites["model"], os.path.join(out_dir, "model_throughput.png"))
        written.append("model_throughput.png")
    if suites.get("backends"):
        _backends_plot(plt, suites["backends"], os.path.join(out_dir, "backends_throughput.png"))
        written.append("backends_throughput.png")
    if suites.get("export"):
        _export_plot(plt, suites["export"], os.path.join(out_dir, "export_latency.png"))
        written.append("export_latency.png")
    return written



def formulations_versus_timm(tables, paired_medians, path):
    """timm's time over the lambda layer's ("auto", r 23), log-log against the map side: a row
    of panels (inference, fwd+bwd) per CPU's formulation table ({tag: {(engine, phase): {size:
    ratio}}}, `formulation_tables.versus_timm`), one line per engine; the paired runs' medians
    ({tag: {(engine, phase): {size: [the runs' medians]}}}) as points with their range."""
    from matplotlib import ticker

    plt = _pyplot()
    phases = ("fwd", "train")
    figure, axes = plt.subplots(len(tables), 2, figsize=(11, 3.6 * len(tables)), squeeze=False)
    for row, (tag, ratios) in enumerate(tables.items()):
        for column, phase in enumerate(phases):
            axis = axes[row][column]
            for engine, style in ENGINE_STYLE.items():
                by_size = ratios.get((engine, phase), {})
                if by_size:
                    sizes = sorted(by_size)
                    axis.plot(sizes, [by_size[s] for s in sizes], marker="o", label=engine,
                              **style)
                runs = paired_medians.get(tag, {}).get((engine, phase), {})
                for size, medians in runs.items():
                    middle = statistics.median(medians)
                    axis.errorbar([size * 1.04], [middle], yerr=[[middle - min(medians)],
                                  [max(medians) - middle]], fmt="s", markersize=5, capsize=3,
                                  color=style["color"], markeredgecolor="black")
            axis.axhline(2.0, color="black", linewidth=1, linestyle="--")
            axis.axhline(1.0, color="gray", linewidth=0.8)
            axis.set_xscale("log", base=2)
            axis.set_yscale("log", base=2)
            axis.set_xticks([7, 14, 28, 56, 112], ["7²", "14²", "28²", "56²", "112²"])
            axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}x"))
            axis.set_xlabel("feature map (batch 8, d 256, r 23)")
            axis.set_ylabel("timm / lambda layer")
            axis.set_title(f"{tag}, {'inference' if phase == 'fwd' else 'forward + backward'}",
                           fontsize=10)
            axis.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    figure.suptitle("The lambda layer's speed-up over timm's (lines: formulation suite, auto's "
                    "pick; squares: paired runs, median and range; dashed: the 2x target)",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
