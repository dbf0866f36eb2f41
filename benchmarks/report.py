"""Turns suite results into the summary: the targets of issue 9 with measured ratios, and tables.

Each target compares numbers of one run (never numbers from different runs) and says `met`
(True/False), or None when a number it needs was not measured (suite not run, configuration
skipped). Ratios are of medians. Memory slopes are least-squares fits of log(peak bytes) against
log(positions) over maps of at least `SLOPE_MIN_POSITIONS` positions (all maps when fewer than
two qualify, as in --quick).
"""

import math

from benchmarks import common, layer
from lambda_keras.architectures import ARCHITECTURES

SLOPE_MIN_POSITIONS = 28 * 28
LINEAR_SLOPE_MAX = 1.2  # "linear in positions": fitted exponent at most this
MEMORY_TARGET_SIZES = (56, 112)
MEMORY_TARGET_RATIO = 10.0
THROUGHPUT_TARGET_RATIO = 0.7
PARAMS_TARGET_REDUCTION = 0.4
INT8_TARGET_SPEEDUP = 2.0
BASELINE_MODEL = "resnet50"
LAMBDA_MODELS = ("lambda_resnet50", "lambda_resnet50_plain", "lambda_resnet50_ccll_plain")


def _ok(suite):
    return {r["id"]: r for r in (suite or {}).get("results", []) if r.get("status") == "ok"}


def _all(suite):
    return {r["id"]: r for r in (suite or {}).get("results", [])}


def _layer_id(variant, size, suite="layer"):
    return f"{suite}/{variant}/{size}x{size}"


def _median(result, phase):
    return None if result is None else result[phase]["median_s"]


def _ratio(numerator, denominator):
    if numerator is None or denominator in (None, 0):
        return None
    return numerator / denominator


def fit_slope(points):
    """Least-squares slope of log(y) vs log(x) over (x, y) pairs with y > 0; None if < 2 points."""
    points = [(x, y) for x, y in points if y and y > 0]
    if len(points) < 2:
        return None
    big = [(x, y) for x, y in points if x >= SLOPE_MIN_POSITIONS]
    points = big if len(big) >= 2 else points
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return None if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den


def memory_points(suite, variant, phase="train", key="peak_bytes"):
    ok = _ok(suite)
    return [(r["positions"], r[phase].get(key)) for r in ok.values()
            if r.get("variant") == variant and r[phase].get(key)]


def memory_slopes(layer_suite, phase="train"):
    variants = sorted({r["variant"] for r in _ok(layer_suite).values()})
    return {v: fit_slope(memory_points(layer_suite, v, phase)) for v in variants}


# ---------------------------------------------------------------------------- targets
def _memory_target(layer_suite):
    ok, everything = _ok(layer_suite), _all(layer_suite)
    sizes = layer_suite["settings"]["sizes"] if layer_suite else ()
    # --quick has no 56/112 maps: use its largest two instead, so that the code path is exercised.
    target_sizes = [s for s in MEMORY_TARGET_SIZES if s in sizes] or list(sizes[-2:])
    rows = []
    for size in target_sizes:
        lam = ok.get(_layer_id(layer.DEFAULT_LAMBDA, size))
        att = ok.get(_layer_id("attention", size))
        lam_peak = lam["train"]["peak_bytes"] if lam else None
        if att:
            att_peak, source = att["train"]["peak_bytes"], "measured"
        else:
            skipped = everything.get(_layer_id("attention", size), {})
            att_peak = layer.estimate_bytes("attention", size * size,
                                            layer_suite["settings"]["batch"])
            source = f"estimated lower bound (not run: {skipped.get('reason', 'not planned')})"
        rows.append({"size": f"{size}x{size}", "positions": size * size,
                     "lambda_peak_bytes": lam_peak, "attention_peak_bytes": att_peak,
                     "attention_source": source, "ratio": _ratio(att_peak, lam_peak)})
    slope = fit_slope(memory_points(layer_suite, layer.DEFAULT_LAMBDA))
    ratios = [r["ratio"] for r in rows]
    met = None if not rows or None in ratios or slope is None else (
        min(ratios) >= MEMORY_TARGET_RATIO and slope <= LINEAR_SLOPE_MAX)
    return {"target": f"lambda ({layer.DEFAULT_LAMBDA}) fwd+bwd peak memory >= "
                      f"{MEMORY_TARGET_RATIO:g}x below global self-attention at 56^2 and 112^2, "
                      f"linear in positions (fitted slope <= {LINEAR_SLOPE_MAX})",
            "rows": rows, "lambda_slope": slope,
            "attention_slope": fit_slope(memory_points(layer_suite, "attention")), "met": met}


def _timm_target(layer_suite, peer_suite=None):
    """Speed ratios from the layer suite, where timm's layer is timed round-robin with ours, and
    against timm alone in its process (peer suite) when that ran: the target needs both."""
    ok, alone = _ok(layer_suite), _ok(peer_suite)
    rows = []
    for size in layer_suite["settings"].get("peer_sizes", ()):
        lam = ok.get(_layer_id(layer.DEFAULT_LAMBDA, size))
        timm = ok.get(_layer_id("timm_lambda", size))
        timm_alone = alone.get(_layer_id("timm_lambda", size, "peer"))
        row = {"size": f"{size}x{size}", "formulation": lam and lam.get("formulation")}
        for phase in ("fwd", "train"):
            row[f"{phase}_ours_s"] = _median(lam, phase)
            row[f"{phase}_timm_s"] = _median(timm, phase)
            row[f"{phase}_speedup"] = _ratio(_median(timm, phase), _median(lam, phase))
            row[f"{phase}_timm_alone_s"] = _median(timm_alone, phase)
            row[f"{phase}_speedup_vs_timm_alone"] = _ratio(_median(timm_alone, phase),
                                                           _median(lam, phase))
        rows.append(row)
    speedups = [r["train_speedup"] for r in rows]
    speedups += [r["train_speedup_vs_timm_alone"] for r in rows if peer_suite]
    met = None if not rows or None in speedups else min(speedups) >= 1.0
    return {"target": "lambda fwd+bwd at least as fast as timm's LambdaLayer (speedup = timm "
                      "time / ours, >= 1 at every size, against timm timed round-robin with ours "
                      "and against timm alone in its process)", "rows": rows, "met": met}


def model_params(model_suite):
    """{model: parameter count} from the timed jobs and the parameter-count job."""
    ok = _ok(model_suite)
    params = {r["model"]: r["params"] for r in ok.values() if "params" in r and "model" in r}
    params.update(ok.get("model/params", {}).get("params", {}))
    return params


def _model_target(model_suite):
    ok = _ok(model_suite)
    params = model_params(model_suite)
    batches = (model_suite or {}).get("settings", {}).get("batches", ())
    base_params = params.get(BASELINE_MODEL)
    rows, met_any = [], None
    for name in LAMBDA_MODELS:
        if not any(r.get("tag") == name for r in ok.values()):
            continue
        ratios = {}
        for batch in batches:
            ours = ok.get(f"model/{name}/infer/b{batch}")
            base = ok.get(f"model/{BASELINE_MODEL}/infer/b{batch}")
            ratios[f"b{batch}"] = _ratio(ours and ours["infer"]["images_per_s"],
                                         base and base["infer"]["images_per_s"])
        reduction = (None if not params.get(name) or not base_params
                     else 1.0 - params[name] / base_params)
        values = list(ratios.values())
        met = None if not values or None in values or reduction is None else (
            min(values) >= THROUGHPUT_TARGET_RATIO and reduction >= PARAMS_TARGET_REDUCTION)
        met_any = met if met_any is None else (met_any or bool(met))
        rows.append({"model": name, "params": params.get(name), "params_reduction": reduction,
                     "inference_ratio": ratios, "met": met})
    return {"target": f"LambdaResNet-50 inference >= {THROUGHPUT_TARGET_RATIO}x keras ResNet50 "
                      f"images/s at every batch with >= {PARAMS_TARGET_REDUCTION:.0%} fewer "
                      "parameters (met if any variant meets both)",
            "baseline_params": base_params, "rows": rows, "met": met_any}


def _xla_target(layer_suite, model_suite):
    ok_model, ok_layer = _ok(model_suite), _ok(layer_suite)
    rows = []
    for job in ok_model.values():
        if job.get("tag") != "lambda_resnet50_xla":
            continue
        off = ok_model.get(job["id"].replace("lambda_resnet50_xla", "lambda_resnet50"))
        mode = job["mode"]
        rows.append({"what": f"LambdaResNet-50 {mode} b{job['batch']}",
                     "xla_s": job[mode]["median_s"], "no_xla_s": _median(off, mode),
                     "speedup": _ratio(_median(off, mode), job[mode]["median_s"])})
    for job in ok_layer.values():
        if job.get("variant") != "lambda_local_xla":
            continue
        off = ok_layer.get(_layer_id(layer.DEFAULT_LAMBDA, job["size"]))
        for phase in ("fwd", "train"):
            rows.append({"what": f"LambdaLayer {phase} {job['size']}x{job['size']}",
                         "xla_s": job[phase]["median_s"], "no_xla_s": _median(off, phase),
                         "speedup": _ratio(_median(off, phase), job[phase]["median_s"])})
    speedups = [r["speedup"] for r in rows]
    xla_faster = None if not rows or None in speedups else min(speedups) >= 1.0
    return {"target": "XLA on at least as fast as off, or the default switched to the faster one",
            "rows": rows, "xla_at_least_as_fast": xla_faster,
            "default": "jit_compile='auto' (Keras' default) resolves to XLA off on CPU-only "
                       "machines, and the LambdaLayer does not force XLA",
            # Met when XLA is at least as fast, or when the default already is XLA off (CPU).
            "met": None if xla_faster is None else True}


def _export_target(export_suite):
    job = next(iter(_ok(export_suite).values()), None)
    formats = job["formats"] if job else {}
    fp32, int8 = formats.get("tflite_float32", {}), formats.get("tflite_int8", {})
    speedup = _ratio(fp32.get("latency", {}).get("median_s"),
                     int8.get("latency", {}).get("median_s"))
    return {"target": f"TFLite int8 >= {INT8_TARGET_SPEEDUP:g}x faster than float32 per image",
            "float32_s": fp32.get("latency", {}).get("median_s"),
            "int8_s": int8.get("latency", {}).get("median_s"), "speedup": speedup,
            "met": None if speedup is None else speedup >= INT8_TARGET_SPEEDUP}


def summarize(suites, machine, quick, duration_s, options):
    layer_suite, peer_suite = suites.get("layer"), suites.get("peer")
    model_suite, export_suite = suites.get("model"), suites.get("export")
    return {
        "quick": quick,
        "machine": machine,
        "options": options,
        "duration_s": duration_s,
        "suite_durations_s": {k: v["duration_s"] for k, v in suites.items()},
        "load_average": {k: [v["load_average_before"], v["load_average_after"]]
                         for k, v in suites.items()},
        "memory_slopes_train": memory_slopes(layer_suite) if layer_suite else {},
        "memory_slopes_fwd": memory_slopes(layer_suite, "fwd") if layer_suite else {},
        "targets": {
            "lambda_memory_vs_attention": _memory_target(layer_suite) if layer_suite else None,
            "lambda_vs_timm": _timm_target(layer_suite, peer_suite) if layer_suite else None,
            "lambda_resnet50_vs_resnet50": _model_target(model_suite) if model_suite else None,
            "xla": _xla_target(layer_suite, model_suite) if layer_suite or model_suite else None,
            "tflite_int8_vs_float32": _export_target(export_suite) if export_suite else None,
        },
        "tables": {
            "layer": layer_table(layer_suite, peer_suite) if layer_suite else None,
            "model": model_table(model_suite) if model_suite else None,
            "export": export_table(export_suite) if export_suite else None,
            "backends": backends_table(suites["backends"]) if suites.get("backends") else None,
        },
    }


# ----------------------------------------------------------------------------- tables
def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _mib(n_bytes):
    return "-" if n_bytes is None else f"{n_bytes / common.MIB:.0f}"


def _fmt(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


def layer_table(layer_suite, peer_suite):
    """{"sizes": [...], "rows": [{variant, per size: fwd/train median, spread, peak}]}.

    timm's times come from the layer suite (round-robin with ours), its memory from the peer
    suite (alone in its process, RSS ruler).
    """
    sizes = layer_suite["settings"]["sizes"]
    everything, isolated = _all(layer_suite), _ok(peer_suite)
    variants = list(layer.VARIANTS) + ["timm_lambda"]
    rows = []
    for variant in variants:
        cells = {}
        for size in sizes:
            result = everything.get(_layer_id(variant, size))
            if result is None:
                continue
            if result["status"] != "ok":
                cells[str(size)] = {"status": result["status"], "reason": result.get("reason")}
                continue
            alone = isolated.get(_layer_id(variant, size, "peer"), {})
            cell = {}
            for phase in ("fwd", "train"):
                stats = result[phase]
                memory = alone.get(phase, stats) if variant == "timm_lambda" else stats
                cell[phase] = {"median_s": stats["median_s"], "min_s": stats["min_s"],
                               "max_s": stats["max_s"], "cpu_median_s": stats.get("cpu_median_s"),
                               "peak_bytes": memory.get("peak_bytes"),
                               "memory_method": memory.get("memory_method")}
            cell["formulation"] = result.get("formulation")
            cells[str(size)] = cell
        if cells:
            rows.append({"variant": variant, "cells": cells})
    return {"sizes": sizes, "batch": layer_suite["settings"]["batch"],
            "width": layer_suite["settings"]["width"], "rows": rows}


def model_table(model_suite):
    ok = _ok(model_suite)
    params = model_params(model_suite)
    batches = model_suite["settings"]["batches"]
    tags = []
    for result in model_suite["results"]:
        if result.get("tag") and result["tag"] not in tags:
            tags.append(result["tag"])
    rows = []
    for tag in tags:
        row = {"model": tag, "params": params.get(tag.replace("_xla", ""))}
        for mode in ("infer", "train"):
            for batch in batches:
                result = ok.get(f"model/{tag}/{mode}/b{batch}")
                row[f"{mode}_b{batch}_images_per_s"] = result and result[mode]["images_per_s"]
                row[f"{mode}_b{batch}_peak_bytes"] = result and result[mode]["peak_bytes"]
                base = ok.get(f"model/{BASELINE_MODEL}/{mode}/b{batch}")
                row[f"{mode}_b{batch}_vs_resnet50"] = _ratio(
                    result and result[mode]["images_per_s"], base and base[mode]["images_per_s"])
        rows.append(row)
    return {"batches": batches, "image_size": model_suite["settings"]["image_size"],
            "params": params, "rows": rows}


def backends_table(backends_suite):
    """Per Keras backend and model: images/s (inference, training) and the ratio to ResNet50 on
    the same backend (same process, round-robin)."""
    ok = _ok(backends_suite)
    settings = backends_suite["settings"]
    rows = []
    for result in backends_suite["results"]:
        if result.get("mode") != "infer":
            continue  # one row per (backend, model), from its inference record's identity
        backend, tag, batch = result["backend"], result["tag"], result["batch"]
        row = {"backend": backend, "model": tag, "jit_compile": result["jit_compile"]}
        for mode in ("infer", "train"):
            ours = ok.get(f"backends/{backend}/{tag}/{mode}/b{batch}")
            base = ok.get(f"backends/{backend}/{BASELINE_MODEL}/{mode}/b{batch}")
            row[f"{mode}_images_per_s"] = ours and ours[mode]["images_per_s"]
            row[f"{mode}_vs_resnet50"] = _ratio(ours and ours[mode]["images_per_s"],
                                                base and base[mode]["images_per_s"])
        rows.append(row)
    return {"batch": settings["batch"], "image_size": settings["image_size"], "rows": rows}


def export_table(export_suite):
    job = next(iter(_ok(export_suite).values()), None)
    if job is None:
        return {"rows": []}
    formats = job["formats"]
    fp32 = formats.get("tflite_float32", {}).get("latency", {}).get("median_s")
    rows = []
    for name, entry in formats.items():
        if entry.get("status") == "error":
            rows.append({"format": name, "error": entry["reason"]})
            continue
        latency = entry["latency"]
        rows.append({"format": name, "median_s": latency["median_s"], "min_s": latency["min_s"],
                     "max_s": latency["max_s"], "file_bytes": entry.get("file_bytes"),
                     "speedup_vs_tflite_float32": _ratio(fp32, latency["median_s"]),
                     "max_abs_diff": entry.get("max_abs_diff"),
                     "top1_agrees": entry.get("top1_agrees")})
    # The builder's name (results before the model was a setting were LambdaResNet-50's).
    model = ARCHITECTURES[job.get("model", "lambda_resnet50")].builder
    return {"model": model, "image_size": job["image_size"], "rows": rows}


# --------------------------------------------------------------------------- markdown
def _met(value):
    return {True: "met", False: "NOT met", None: "not measured"}[value]


def _targets_markdown(targets):
    lines = ["| target | measured | status |", "|---|---|---|"]
    memory = targets.get("lambda_memory_vs_attention")
    if memory:
        parts = [f"{r['size']}: {_fmt(r['ratio'], '.1f')}x"
                 + ("" if r["attention_source"] == "measured" else " (attention estimated, >=)")
                 for r in memory["rows"]]
        parts.append(f"slope lambda {_fmt(memory['lambda_slope'])}, attention "
                     f"{_fmt(memory['attention_slope'])}")
        lines.append(f"| lambda peak memory vs global attention (>= 10x, linear) | "
                     f"{'; '.join(parts)} | {_met(memory['met'])} |")
    timm = targets.get("lambda_vs_timm")
    if timm:
        parts = [f"{r['size']}: {_fmt(r['train_speedup'])}x"
                 + (f" ({_fmt(r['train_speedup_vs_timm_alone'])}x vs timm alone)"
                    if r.get("train_speedup_vs_timm_alone") else "") for r in timm["rows"]]
        lines.append(f"| lambda fwd+bwd vs timm (speedup >= 1) | {'; '.join(parts)} | "
                     f"{_met(timm['met'])} |")
    resnet = targets.get("lambda_resnet50_vs_resnet50")
    if resnet:
        for row in resnet["rows"]:
            ratios = ", ".join(f"{k} {_fmt(v)}x" for k, v in row["inference_ratio"].items())
            lines.append(f"| {row['model']} inference vs ResNet50 (>= 0.7x, >= 40% fewer params) | "
                         f"{ratios}; params {_fmt(row['params'] and row['params'] / 1e6, '.1f')}M ("
                         f"{_fmt(row['params_reduction'] and 100 * row['params_reduction'], '.0f')}"
                         f"% fewer) | {_met(row['met'])} |")
    xla = targets.get("xla")
    if xla and xla["rows"]:
        parts = [f"{r['what']}: {_fmt(r['speedup'])}x" for r in xla["rows"]]
        status = ("met" if xla["xla_at_least_as_fast"] else
                  "met by default (XLA off on CPU)" if xla["met"] else _met(None))
        lines.append(f"| XLA on vs off (speedup) | {'; '.join(parts)} | {status} |")
    tflite = targets.get("tflite_int8_vs_float32")
    if tflite:
        lines.append(f"| TFLite int8 vs float32 (>= 2x) | {_fmt(tflite['speedup'])}x "
                     f"({_ms(tflite['float32_s'])} -> {_ms(tflite['int8_s'])} ms) | "
                     f"{_met(tflite['met'])} |")
    return lines


def _layer_markdown(table):
    sizes = table["sizes"]
    head = "| variant | " + " | ".join(f"{s}x{s}" for s in sizes) + " |"
    sep = "|---|" + "---|" * len(sizes)
    out = []
    for title, phase, key in (("fwd+bwd time, ms (median [min-max])", "train", "time"),
                              ("forward time, ms (median)", "fwd", "time"),
                              ("fwd+bwd peak memory, MiB", "train", "memory")):
        out += ["", f"**Layer {title}**, batch {table['batch']}, d={table['width']}:", "",
                head, sep]
        for row in table["rows"]:
            cells = []
            for size in sizes:
                cell = row["cells"].get(str(size))
                if cell is None:
                    cells.append("")
                elif "status" in cell:
                    cells.append(cell["status"])
                elif key == "time" and phase == "train":
                    c = cell[phase]
                    cells.append(f"{_ms(c['median_s'])} [{_ms(c['min_s'])}-{_ms(c['max_s'])}]")
                elif key == "time":
                    cells.append(_ms(cell[phase]["median_s"]))
                else:
                    rss = " (rss)" if cell[phase]["memory_method"] == "rss" else ""
                    cells.append(_mib(cell[phase]["peak_bytes"]) + rss)
            out.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    return out


def backends_markdown(table):
    out = ["", f"**Models per Keras backend** ({table['image_size']} px, batch {table['batch']}, "
               "images/s, median; ratios to ResNet50 on the same backend):", "",
           "| backend | jit_compile | model | infer img/s | train img/s | infer vs ResNet50 | "
           "train vs ResNet50 |", "|---|---|---|---|---|---|---|"]
    for row in table["rows"]:
        out.append(f"| {row['backend']} | {row['jit_compile']} | {row['model']} | "
                   f"{_fmt(row['infer_images_per_s'], '.1f')} | "
                   f"{_fmt(row['train_images_per_s'], '.1f')} | "
                   f"{_fmt(row['infer_vs_resnet50'])} | {_fmt(row['train_vs_resnet50'])} |")
    return out


def _model_markdown(table):
    batches = table["batches"]
    head = ("| model | params (M) | " + " | ".join(f"infer b{b} img/s" for b in batches) + " | "
            + " | ".join(f"train b{b} img/s" for b in batches)
            + f" | train b{batches[-1]} peak (GiB) | infer b{batches[-1]} vs ResNet50 |")
    out = ["", f"**Models at {table['image_size']} px** (images/s, median):", "", head,
           "|---|" + "---|" * (2 * len(batches) + 3)]
    for row in table["rows"]:
        infer = " | ".join(_fmt(row[f"infer_b{b}_images_per_s"], ".1f") for b in batches)
        train = " | ".join(_fmt(row[f"train_b{b}_images_per_s"], ".1f") for b in batches)
        peak = row[f"train_b{batches[-1]}_peak_bytes"]
        out.append(f"| {row['model']} | {_fmt(row['params'] and row['params'] / 1e6, '.1f')} | "
                   f"{infer} | {train} | {_fmt(peak and peak / common.GIB)} | "
                   f"{_fmt(row[f'infer_b{batches[-1]}_vs_resnet50'])} |")
    extra = {k: v for k, v in table["params"].items()
             if k not in {r["model"] for r in table["rows"]}}
    if extra:
        out += ["", "Parameters of other layouts: " + ", ".join(
            f"{k} {v / 1e6:.2f}M" for k, v in sorted(extra.items()))]
    return out


def _export_markdown(table):
    out = ["", f"**Export** ({table.get('model')}, {table.get('image_size')} px, batch 1):", "",
           "| format | latency ms (median [min-max]) | size MB | speedup vs TFLite fp32 | "
           "max abs diff vs Keras | top-1 agrees |", "|---|---|---|---|---|---|"]
    for row in table["rows"]:
        if "error" in row:
            out.append(f"| {row['format']} | error: {row['error'][:120]} | | | | |")
            continue
        size = row["file_bytes"]
        out.append(f"| {row['format']} | {_ms(row['median_s'])} [{_ms(row['min_s'])}-"
                   f"{_ms(row['max_s'])}] | {_fmt(size and size / 1e6, '.1f')} | "
                   f"{_fmt(row['speedup_vs_tflite_float32'])} | "
                   f"{_fmt(row['max_abs_diff'], '.2g')} | "
                   f"{_fmt(row['top1_agrees'], '')} |")
    return out


def describe_onednn(machine):
    """"oneDNN on (TF_ENABLE_ONEDNN_OPTS unset: TensorFlow's default)", as TF reported it."""
    info = machine.get("tensorflow_runtime") or {}
    if "onednn_active" not in info:
        return f"oneDNN state unknown ({info.get('error', 'not recorded')})"
    setting = info.get("tf_enable_onednn_opts")
    origin = ("TF_ENABLE_ONEDNN_OPTS unset: TensorFlow's default for this CPU" if setting is None
              else f"TF_ENABLE_ONEDNN_OPTS={setting}")
    return f"oneDNN {'on' if info['onednn_active'] else 'off'} ({origin})"


def markdown(summary):
    machine = summary["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    loads = "; ".join(f"{k} {v[0][0]:.1f}->{v[1][0]:.1f}"
                      for k, v in summary["load_average"].items())
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores "
        f"({machine['threads_used']} threads), {machine['memory_gib']} GiB, GPUs: "
        f"{', '.join(machine['gpus']) or 'none'}; {packages}.",
        f"CPU flags: {', '.join(machine.get('cpu_flags', [])) or 'none recorded'}; "
        f"{describe_onednn(machine)}.",
        f"Run: {'QUICK (smoke test, not speed)' if summary['quick'] else 'full'}, "
        f"{summary['duration_s'] / 60:.1f} min; 1-min load average per suite (before->after): "
        f"{loads}.", "", "**Targets**", ""]
    earlier = summary.get("options", {}).get("suites_from_earlier_runs")
    if earlier:
        lines[-3:-3] = [f"Suites kept from an earlier run (their own machine record and load in "
                        f"<suite>.json): {', '.join(earlier)}."]
    lines += _targets_markdown(summary["targets"])
    tables = summary["tables"]
    if tables.get("layer"):
        lines += _layer_markdown(tables["layer"])
        slopes = summary["memory_slopes_train"]
        lines += ["", "Fitted log-log slopes of fwd+bwd peak memory vs positions: " + ", ".join(
            f"{k} {_fmt(v)}" for k, v in slopes.items())]
    if tables.get("model"):
        lines += _model_markdown(tables["model"])
    if tables.get("export"):
        lines += _export_markdown(tables["export"])
    if tables.get("backends"):
        lines += backends_markdown(tables["backends"])
    if summary.get("plots"):
        lines += ["", "Plots: " + ", ".join(summary["plots"])]
    return "\n".join(lines) + "\n"
