"""Reading the formulation suite's result tables (benchmarks/formulations.py,
`results/formulations/<cpu kind>.json`): the rule's pick for a recorded cell, the Markdown table of
one machine, and the lambda layer's speed-up over timm's PyTorch layer across machines.

    python -m benchmarks.formulations --table [--machine TAG]   # markdown_tables
    python -m benchmarks.formulations --versus-timm             # versus_timm_markdown
    python -m benchmarks.formulations --plot                    # plot_versus_timm
"""

from benchmarks import common
from benchmarks.formulations import ENGINES, PHASES, PROBE_ORDER

PHASE_NAMES = {"fwd": "inference", "train": "fwd+bwd"}  # column names of PHASES


def load_tables(folder):
    """Every machine's table in `folder`: {tag: data} from `<tag>.json`, in name order."""
    return common.read_json_folder(folder)


def recorded_runtime(data, engine):
    """The `formulations.Runtime` a table's engine ran in (as its worker recorded it; a what-if
    run's `rows`, `python -m benchmarks.formulations --rows`, as its kind of CPU)."""
    from lambda_keras import runtime
    from lambda_keras.layers import formulations

    record = data["engines"][engine]
    return formulations.Runtime(record["backend"], xla=record["jit_compile"],
                                onednn=bool(record.get("onednn")),
                                pooled_allocator=record.get("pooled_allocator", True),
                                device=record.get("device", "cpu"),
                                cpu=record.get("rows") or runtime.cpu_kind(
                                    data["machine"]["cpu_model"], data["machine"]["cpu_flags"]))


def rule_pick(data, cell):
    """What `formulations.choose` picks for a table's cell, from its recorded runtime (a table's
    "position": "conv", the former name of "local", read as "local")."""
    from lambda_keras.layers import formulations

    shape, layer = data["shapes"][cell["shape"]], data["layer"]
    return formulations.choose(
        common.position_mode(layer["position"]), cell["size"], cell["size"],
        cell["phase"] == "train",
        num_heads=layer["num_heads"], key_dim=layer["key_dim"],
        value_dim=data["settings"]["width"] // layer["num_heads"],
        intra_depth=shape["intra_depth"], receptive_field=shape["receptive_field"],
        runtime=recorded_runtime(data, cell["engine"]), strides=shape.get("strides", 1))


def _ms(result):
    if result.get("status") in ("ok", "hopeless"):
        ms = 1e3 * result["median_s"]  # a GPU's cells take a few ms: one decimal below 10
        return f"{ms:.{1 if ms < 10 else 0}f}" + ("!" if result["status"] == "hopeless" else "")
    return "-"


def markdown_tables(data):
    """Per engine: each formulation's median (ms), auto's pick and its ratio to the fastest,
    and the ratio of auto's time to timm's PyTorch layer (r 23 shape)."""
    speedups = versus_timm(data)
    lines = ["| engine | shape | map | phase | " + " | ".join(PROBE_ORDER)
             + " | auto picks | auto / fastest | timm / auto |",
             "|---" * (len(PROBE_ORDER) + 7) + "|"]
    order = {name: i for i, name in enumerate(ENGINES)}
    cells = sorted((c for c in data["cells"] if c["engine"] in ENGINES),
                   key=lambda c: (order[c["engine"]], c["shape"], c["size"], c["phase"]))
    for cell in cells:
        results = cell["results"]
        ratio = cell.get("auto_vs_fastest")
        speedup = speedups.get((cell["engine"], cell["phase"]), {}).get(cell["size"])
        speedup = f"{speedup:.1f}x" if speedup and cell["shape"] == "r23" else ""
        lines.append(
            f"| {cell['engine']} | {cell['shape']} | {cell['size']}² | {cell['phase']} | "
            + " | ".join(_ms(results.get(f, {})) for f in PROBE_ORDER)
            + f" | {cell['auto']} | {f'{ratio:.2f}x' if ratio else '-'} | {speedup} |")
    return "\n".join(lines)


def versus_timm(data):
    """timm's time over auto's in a table's r 23 cells: {(engine, phase): {size: ratio}}, where
    auto's time is its pick's median and timm's the cell of the same size and phase (timed in
    the "torch" process)."""
    timm = {(c["size"], c["phase"]): c["results"]["timm"]["median_s"]
            for c in data["cells"] if c["engine"] == "timm" and c["shape"] == "r23"}
    ratios = {}
    for cell in data["cells"]:
        auto = cell["results"].get(cell.get("auto"), {})
        peer = timm.get((cell["size"], cell["phase"]))
        if cell["engine"] in ENGINES and cell["shape"] == "r23" and peer and (
                auto.get("status") == "ok"):
            ratios.setdefault((cell["engine"], cell["phase"]), {})[cell["size"]] = (
                peer / auto["median_s"])
    return ratios


def versus_timm_markdown(tables):
    """One Markdown table of `versus_timm` for several machines' tables ({tag: data}): a row per
    engine, inference and fwd+bwd columns per machine, each "14² / 28² / ..." ratios ("-": not
    measured); the machines' timm runs are named under it."""
    ratios = {tag: versus_timm(data) for tag, data in tables.items()}
    sizes = sorted({size for by_key in ratios.values() for by_size in by_key.values()
                    for size in by_size})
    maps = " / ".join(f"{size}²" for size in sizes)
    lines = [f"| engine (timm / auto at {maps}) | "
             + " | ".join(f"{tag} {PHASE_NAMES[phase]}" for tag in tables
                          for phase in PHASES) + " |",
             "|---" * (1 + 2 * len(tables)) + "|"]
    for engine in ENGINES:
        row = [" / ".join(f"{by_size[size]:.1f}" if size in by_size else "-" for size in sizes)
               if (by_size := ratios[tag].get((engine, phase))) else "-"
               for tag in tables for phase in PHASES]
        if any(value != "-" for value in row):
            lines.append(f"| {engine} | " + " | ".join(row) + " |")
    timed = [f"{tag} ({machine_name(data)}) {_timm_timed(data)}" for tag, data in tables.items()]
    return "\n".join(lines) + "\n\ntimm's r 23 cells timed: " + "; ".join(timed) + "."


def machine_name(data):
    """What a table's engines ran on: the CPU's model, or the GPU's name and its host's CPU."""
    machine = data["machine"]
    gpus = {e["device_name"] for e in data["engines"].values() if e.get("device") == "gpu"}
    return (f"{', '.join(sorted(gpus))}; host {machine['cpu_model']}" if gpus
            else machine["cpu_model"])


def _timm_timed(data):
    """When the "torch" engine's runs timed timm's r 23 cells: the run of every size, then the
    runs of some sizes ("r23,r7u4@7") with theirs; the engine's record without a run of r 23."""
    torch_runs = data["engines"].get("torch", {})
    times = []
    for key, run in torch_runs.get("runs", {}).items():
        shapes, _, sizes = key.partition("@")
        if "r23" not in shapes.split(","):
            continue
        if sizes:
            where = " / ".join(f"{size}²" for size in sizes.split(","))
            times.append((True, f"{run['finished']} ({where})"))
        else:
            times.append((False, run["finished"]))
    return ", ".join(text for _, text in sorted(times)) or torch_runs.get("finished", "?")


def plot_versus_timm(tables, path):
    """`plots.formulations_versus_timm` of every table ({tag: data}, tags are CPU kinds) with the
    stored paired runs of each CPU kind's latest warm-up."""
    from benchmarks import paired, plots

    runs = paired.latest_warmup_runs(paired.load_runs(paired.RESULTS))
    return plots.formulations_versus_timm(
        {tag: versus_timm(data) for tag, data in tables.items()},
        paired.run_medians(runs, group=lambda data: data["cpu_kind"]), path)
