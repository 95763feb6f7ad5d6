"""The figures of one model of a matrix, from its runs' metrics.json and memory.json (through scripts.evidence).

Each figure function draws into a file and returns True, or returns False
and writes nothing when the matrix has nothing for it to show (no pruned run,
no memory.json, no recorded figure, no inference benchmark). `FIGURES`
lists them in report order with what each shows. Seeds are aggregated: a
line is the mean with a band of one standard deviation, a bar or point the
mean with a one-standard-deviation error bar, and every label says how many
runs (n) it holds; the inference figure alone shows every run's own
measurement (speed-ups are side by side within a run, not across runs).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from scripts.evidence import Config, Matrix, Quality, curve, resampled, stat  # noqa: E402

DPI = 110
BAND_ALPHA = 0.18
PHASE_COLOURS = {"train": "#dbe9f6", "eval": "#fbe3cf"}
MIB_PER_GIB = 1024.0


def _save(fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # "tight": a legend beside the axes is kept
    plt.close(fig)
    return True


def _n(counts) -> str:
    lo, hi = int(min(counts)), int(max(counts))
    return f"n={lo}" if lo == hi else f"n={lo}-{hi}"


def _legend(ax, **kw) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, **kw)


def _line(ax, c: Config, matrix: Matrix, x, mean, std, counts, label: str | None = None) -> None:
    style = matrix.styles.of(c)
    ax.plot(x, mean, markersize=4, label=f"{label or c.label} ({_n(counts)})", **style)
    if np.any(std > 0):
        ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=BAND_ALPHA, linewidth=0)


def _thinner(line, i: int, n: int) -> None:
    """The i-th of n lines on one axes a little thinner than the one before, so that lines that coincide all show."""
    line.set(linewidth=1 + 2.5 * (1 - i / n), markersize=3 + 4 * (1 - i / n))


def _x_label(q: Quality) -> str:
    return "epoch" if q.unit == "epoch" else "iteration"


def _hbars(ax, matrix: Matrix, rows: list[tuple[Config, list[float]]], xlabel: str, digits: int = 1,
           group=lambda c: c.method, label=lambda c: c.label) -> bool:
    """Horizontal bars, one per configuration with values, grouped (a gap between groups); mean, std error bar, n."""
    rows = [(c, stat(v)) for c, v in rows if v]
    if not rows:
        return False
    order = {m: i for i, m in enumerate(matrix.styles.methods)}
    rows.sort(key=lambda r: (order.get(group(r[0]), 0) if group is not None else 0))
    y, ys, last = 0.0, [], None
    for c, _ in rows:
        key = group(c) if group is not None else None
        y += 1.6 if last is not None and key != last else 1.0
        ys.append(y)
        last = key
    for yy, (c, s) in zip(ys, rows):
        style = matrix.styles.of(c)
        ax.barh(yy, s.mean, xerr=s.std or 0, color=style["color"], edgecolor="black", linewidth=0.5,
                hatch=_hatch(matrix, c), capsize=3, height=0.8)
        ax.text(s.mean + (s.std or 0), yy, f"  {s.mean:.{digits}f} (n={s.n})", va="center", fontsize=7)
    ax.set_yticks(ys, [label(c) for c, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.margins(x=0.25)
    ax.grid(axis="x", alpha=0.3)
    return True


HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "--", "++", "**", "||")


def _hatch(matrix: Matrix, c: Config) -> str:
    """Bars carry the marker dimension as a hatch, so that two bars of one colour still differ."""
    styles = matrix.styles
    other = styles.methods.index(c.method) if styles.colour_by == "optimizer" else styles.optimizers.index(c.optimizer)
    return HATCHES[other % len(HATCHES)]


def _bar_height(n: int) -> float:
    return 1.6 + 0.32 * n


# -- quality ------------------------------------------------------------------------------
def curves(matrix: Matrix, model: str, q: Quality, path: Path) -> bool:
    """Validation quality over training: a panel per target sparsity, each with the dense runs for reference."""
    configs = matrix.configs(model)
    levels = sorted({c.sparsity for c in configs if not c.dense}) or [0.0]
    cols = min(3, len(levels))
    rows = -(-len(levels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.9 * rows), squeeze=False, sharey=True)
    legend = {}  # one legend for the figure: a series (optimizer, method) is the same line in every panel
    for ax, level in zip(axes.flat, levels):
        shown = [c for c in configs if c.dense or c.sparsity == level]
        for i, c in enumerate(shown):
            _line(ax, c, matrix, *curve(c.runs, q.unit, q.history), label=c.series)
            _thinner(ax.lines[-1], i, len(shown))
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
        ax.set_title("dense" if level == 0 else f"target sparsity {level:.0f}% (with the dense runs)", fontsize=9)
        ax.set_xlabel(_x_label(q))
        ax.grid(alpha=0.3)
        if not q.higher_is_better:
            ax.set_yscale("log")
    fig.legend(legend.values(), legend.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for ax in axes[:, 0]:
        ax.set_ylabel(q.label)
    for ax in list(axes.flat)[len(levels):]:
        ax.axis("off")
    fig.suptitle(f"{model}: {q.label} during training (mean ± std over seeds)")
    return _save(fig, path)


def metric_vs_sparsity(matrix: Matrix, model: str, q: Quality, path: Path) -> bool:
    """Final quality against target sparsity, a line per optimizer and method starting at its dense run."""
    configs = matrix.configs(model)
    if all(c.dense for c in configs):
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    names = list(dict.fromkeys(c.series for c in configs))
    step = 0.008 * max(c.sparsity for c in configs)  # series side by side at one level, so error bars do not cover each other
    for i, series in enumerate(names):
        members = sorted((c for c in configs if c.series == series), key=lambda c: c.sparsity)
        if not members[0].dense:
            base = next((c for c in configs if c.dense and c.optimizer == members[0].optimizer), None)
            members = ([base] if base else []) + members
        points = [(c.sparsity, stat(c.values(q.final))) for c in members]
        points = [(x, s) for x, s in points if s]
        if not points:
            continue
        style = matrix.styles.of(members[-1])
        dodge = (i - (len(names) - 1) / 2) * step
        ax.errorbar([x + dodge for x, _ in points], [s.mean for _, s in points], yerr=[s.std or 0 for _, s in points],
                    capsize=3, markersize=5, label=f"{series} ({_n([s.n for _, s in points])})", **style)
    ax.set_xlabel("target sparsity (%)  (0 = the dense run; series side by side)")
    ax.set_ylabel(f"final {q.label}")
    ax.set_title(f"{model}: final {q.label} against sparsity (mean ± std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def final(matrix: Matrix, model: str, q: Quality, path: Path) -> bool:
    """Final quality of every configuration: perplexity as bars, accuracy as points (a bar's zero would hide it)."""
    configs = matrix.configs(model)
    rows = [(c, stat(c.values(q.final))) for c in configs]
    rows = [(c, s) for c, s in rows if s]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(8, _bar_height(len(rows))))
    if q.higher_is_better:
        for y, (c, s) in enumerate(rows):
            style = matrix.styles.of(c)
            ax.errorbar(s.mean, y, xerr=s.std or 0, color=style["color"], marker=style["marker"], capsize=3, markersize=6)
            ax.text(s.mean + (s.std or 0), y, f"  {s.mean:.2f} (n={s.n})", va="center", fontsize=7)
        ax.set_yticks(range(len(rows)), [c.label for c, _ in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"final {q.label}")
        ax.margins(x=0.3)
        ax.grid(axis="x", alpha=0.3)
    else:
        _hbars(ax, matrix, [(c, c.values(q.final)) for c, _ in rows], f"final {q.label} (lower is better)", digits=2)
    ax.set_title(f"{model}: final {q.label} per configuration (mean ± std over seeds)", fontsize=10)
    return _save(fig, path)


# -- sparsity -----------------------------------------------------------------------------------
def sparsity(matrix: Matrix, model: str, q: Quality, path: Path) -> bool:
    """Sparsity of the prunable weights over training (the schedule as it happened)."""
    pruned = [c for c in matrix.configs(model) if not c.dense]
    if not pruned:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, c in enumerate(pruned):
        _line(ax, c, matrix, *curve(c.runs, q.unit, "sparsity", scale=100))
        _thinner(ax.lines[-1], i, len(pruned))  # the schedules of one target coincide
    ax.set_xlabel(_x_label(q))
    ax.set_ylabel("sparsity of the prunable weights (%)")
    ax.set_title(f"{model}: sparsity during training (mean ± std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def layer_sparsity(matrix: Matrix, model: str, q: Quality, path: Path) -> bool:
    """Final sparsity of each prunable layer per pruned configuration (mean over seeds), as a heat map."""
    pruned = [c for c in matrix.configs(model) if not c.dense and any(r.final.get("layers") for r in c.completed)]
    if not pruned:
        return False
    layers = list(dict.fromkeys(n for c in pruned for r in c.completed for n in r.final.get("layers", {})))
    grid = np.full((len(pruned), len(layers)), np.nan)
    for i, c in enumerate(pruned):
        for j, name in enumerate(layers):
            values = [100 * r.final["layers"][name]["sparsity"] for r in c.completed if name in r.final.get("layers", {})]
            if values:
                grid[i, j] = np.mean(values)
    sizes = {n: r.final["layers"][n]["params"] for c in pruned for r in c.completed for n in r.final.get("layers", {})}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 + 0.55 * len(layers)), 1.8 + 0.4 * len(pruned) + 0.08 * max(map(len, layers))))
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    if grid.size <= 400:
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=6, color="white" if value < 60 else "black")
    ax.set_xticks(range(len(layers)), [f"{n} ({sizes[n]:,})" for n in layers], rotation=90, fontsize=7)
    ax.set_yticks(range(len(pruned)), [f"{c.label} (n={len(c.completed)})" for c in pruned], fontsize=8)
    fig.colorbar(image, ax=ax, label="final sparsity of the layer (%)")
    ax.set_title(f"{model}: per-layer final sparsity (layer, its weights)", fontsize=10)
    return _save(fig, path)


# -- memory -------------------------------------------------------------------------------------------
def _memory_source(matrix: Matrix, model: str) -> str:
    for c in matrix.configs(model):
        for r in c.runs:
            if r.memory:
                return r.memory["summary"].get("peak_memory_source") or ""
    return ""


def memory_peak(matrix: Matrix, model: str, q: Quality, path: Path) -> bool:
    """Peak memory of every configuration, grouped by method."""
    rows = [(c, c.values("peak_memory_mib")) for c in matrix.configs(model)]
    if not any(v for _, v in rows):
        return False
    fig, ax = plt.subplots(figsize=(8, _bar_height(len(rows))))
    _hbars(ax, matrix, rows, "peak memory (MiB)", digits=0)
    source = _memory_source(matrix, model)
    ax.set_title(f"{model}: peak memory per configuration" + (f"\n({source})" if source else ""), fontsize=10)
    return _save(fig, path)


def _memory_series(run) -> tuple[np.ndarray, np.ndarray] | None:
    field = run.memory and run.memory["summary"].get("memory_field")
    samples = [s for s in (run.memory or {}).get("samples", []) if field and s.get(field) is not None]
    if len(samples) < 2:
        return None
    return np.array([s["t"] for s in samples]), np.array([s[field] for s in samples])


def _phase_spans(run) -> list[tuple[str, float, float]]:
    """(phase, start, end) of the train and eval stretches of a run's memory samples."""
    spans, current, start, last = [], None, 0.0, 0.0
    for s in run.memory.get("samples", []):
        if s.get("phase") != current:
            if current in PHASE_COLOURS:
                spans.append((current, start, s["t"]))
            current, start = s.get("phase"), s["t"]
        last = s["t"]
    if current in PHASE_COLOURS:
        spans.append((current, start, last))
    return spans


def memory_time(matrix: Matrix, model: str, q: Quality, path: Path) -> bool:
    """Memory over time from memory.json, a panel per configuration, the train and eval phases shaded."""
    panels = []
    for c in matrix.configs(model):
        series = [(r, s) for r in c.runs if (s := _memory_series(r))]
        if series:
            panels.append((c, series))
    if not panels:
        return False
    first = panels[0][1][0][0].memory
    field = first["summary"]["memory_field"]
    ylabel = first["header"].get("fields", {}).get(field, f"{field} (MiB)")
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.1 * rows), squeeze=False, sharey=True)
    for ax, (c, series) in zip(axes.flat, panels):
        for phase, start, end in _phase_spans(series[0][0]):
            ax.axvspan(start, end, color=PHASE_COLOURS[phase], linewidth=0)
        t, mean, std = resampled([s for _, s in series])
        style = matrix.styles.of(c)
        ax.plot(t, mean, color=style["color"], linestyle=style["linestyle"], label=f"mean (n={len(series)})")
        if len(series) > 1:
            ax.fill_between(t, mean - std, mean + std, color=style["color"], alpha=BAND_ALPHA, linewidth=0)
        ax.set_title(f"{c.label} (n={len(series)})", fontsize=9)
        ax.set_xlabel("time since the run started (s)")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(handles=[Patch(color=v, label=f"{k} phase (first seed)") for k, v in PHASE_COLOURS.items()],
                        fontsize=7, loc="lower right")
    fig.suptitle(f"{model}: memory over time (mean ± std over seeds)")
    return _save(fig, path)


def _scatter(ax, matrix: Matrix, configs: list[Config], x_of, y_of) -> bool:
    drawn = False
    for c in configs:
        sx, sy = stat(x_of(c)), stat(y_of(c))
        if sx and sy:
            style = matrix.styles.of(c)
            ax.errorbar(sx.mean, sy.mean, xerr=sx.std or 0, yerr=sy.std or 0, color=style["color"], marker=style["marker"],
                        markersize=7, capsize=3, linestyle="none", label=f"{c.label} (n={min(sx.n, sy.n)})")
            drawn = True
    return drawn


def memory_vs_quality(matrix: Matrix, model: str, q: Quality, path: Path) -> bool:
    """Final quality against peak memory, a point per configuration."""
    fig, ax = plt.subplots(figsize=(8.5, 5))
    if not _scatter(ax, matrix, matrix.configs(model), lambda c: c.values("peak_memory_mib"), lambda c: c.values(q.final)):
        plt.close(fig)
        return False
    ax.set_xlabel("peak memory (MiB)")
    ax.set_ylabel(f"final {q.label}")
    ax.set_title(f"{model}: final {q.label} against peak memory (mean ± std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def _optimizer_bytes(c: Config) -> list[float]:
    return [r.final["optimizer_state_bytes"] / r.final["params"] for r in c.completed
            if r.final.get("optimizer_state_bytes") is not None and r.final.get("params")]


def _pruning_bytes(c: Config) -> list[float]:
    if c.dense:  # no pruner: nothing kept (when the run recorded its state bytes at all)
        return [0.0 for r in c.completed if r.final.get("optimizer_state_bytes") is not None]
    return [r.final["pruning"]["state_bytes"] / r.final["pruning"]["prunable_params"] for r in c.completed
            if (r.final.get("pruning") or {}).get("state_bytes") is not None and r.final["pruning"].get("prunable_params")]


def state_bytes(matrix: Matrix, model: str, q: Quality, path: Path) -> bool:
    """Bytes kept between steps per parameter: the optimizer's state, and the pruning method's (masks, scores)."""
    series = {}
    for c in matrix.configs(model):
        series.setdefault(c.series, c)  # bytes per parameter do not depend on the sparsity level
    rows = list(series.values())
    optimizer_rows = [(c, _optimizer_bytes(c)) for c in rows]
    pruning_rows = [(c, _pruning_bytes(c)) for c in rows]
    if not any(v for _, v in optimizer_rows + pruning_rows):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, _bar_height(len(rows))))
    for ax, data, xlabel in ((axes[0], optimizer_rows, "optimizer state (bytes per model parameter)"),
                             (axes[1], pruning_rows, "pruning state (bytes per prunable weight)")):
        if not _hbars(ax, matrix, data, xlabel, digits=2, label=lambda c: c.series):
            ax.axis("off")
    fig.suptitle(f"{model}: state kept between steps, per parameter")
    return _save(fig, path)


# -- time -------------------------------------------------------------------------------------------------------
def training_time(matrix: Matrix, model: str, q: Quality, path: Path) -> bool:
    """Training time and training throughput of every configuration."""
    configs = matrix.configs(model)
    timing = [(c, c.values("train_time_s")) for c in configs]
    throughput = [(c, c.values(q.throughput)) for c in configs]
    panels = [p for p in ((timing, "training time (s; the run's own clock, evaluation included)", 1),
                          (throughput, q.throughput_label, 0)) if any(v for _, v in p[0])]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), _bar_height(len(configs))), squeeze=False)
    for ax, (rows, xlabel, digits) in zip(axes.flat, panels):
        _hbars(ax, matrix, rows, xlabel, digits=digits)
    fig.suptitle(f"{model}: time (mean ± std over seeds)")
    return _save(fig, path)


def _ratio(c: Config, q: Quality, resource: str, scale: float) -> list[float]:
    """Per completed run: quality per unit of the resource (accuracy), or quality times it (perplexity: lower is better)."""
    out = []
    for r in c.completed:
        value, amount = r.final.get(q.final), r.final.get(resource)
        if value is not None and amount:
            out.append(value / (amount / scale) if q.higher_is_better else value * amount / scale)
    return out


def efficiency(matrix: Matrix, model: str, q: Quality, path: Path) -> bool:
    """Quality per unit of memory and of time: accuracy per GiB and per minute; perplexity times GiB and minutes."""
    configs = matrix.configs(model)
    memory = [(c, _ratio(c, q, "peak_memory_mib", MIB_PER_GIB)) for c in configs]
    minutes = [(c, _ratio(c, q, "train_time_s", 60.0)) for c in configs]
    name = "accuracy (%)" if q.higher_is_better else "perplexity"
    how = "per" if q.higher_is_better else "x"
    better = "higher" if q.higher_is_better else "lower"
    panels = [p for p in ((memory, f"{name} {how} GiB of peak memory ({better} is better)"),
                          (minutes, f"{name} {how} minute of training ({better} is better)")) if any(v for _, v in p[0])]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), _bar_height(len(configs))), squeeze=False)
    for ax, (rows, xlabel) in zip(axes.flat, panels):
        _hbars(ax, matrix, rows, xlabel, digits=1)
    fig.suptitle(f"{model}: efficiency (mean ± std over seeds)")
    return _save(fig, path)


# -- inference ---------------------------------------------------------------------------------------------------
VARIANT_MARKERS = {"dense": "o", "pruned": "s", "compact": "^", "pruned_fp16": "v", "sparse_2:4": "D"}


def _inference_points(matrix: Matrix, model: str, q: Quality) -> list[tuple[Config, str, dict, float]]:
    """(configuration, variant, its record, speed-up over the run's dense model at batch 1) of every measured variant."""
    points = []
    for c in matrix.configs(model):
        for r in c.runs:
            for name, v in ((r.metrics.get("inference") or {}).get("variants") or {}).items():
                speed = 1.0 if name == "dense" else v.get("speedup")
                if "unsupported" not in v and speed is not None and (v.get("quality") or {}).get(q.final) is not None:
                    points.append((c, name, v, speed))
    return points


def inference(matrix: Matrix, model: str, q: Quality, path: Path) -> bool:
    """Speed-up at batch 1 and size on disk against quality, a point per benchmarked run and variant (lib/inference.py)."""
    points = _inference_points(matrix, model, q)
    if not points:
        return False
    fig, (speed_ax, size_ax) = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    points.sort(key=lambda p: p[1] != "dense")  # the dense models first, each a little smaller: every run's shows
    dense = sum(p[1] == "dense" for p in points)
    for i, (c, name, v, speed) in enumerate(points):
        colour, marker, y = matrix.styles.of(c)["color"], VARIANT_MARKERS.get(name, "o"), v["quality"][q.final]
        size = 11 - 5 * i / dense if name == "dense" else 8
        speed_ax.plot(speed, y, linestyle="none", marker=marker, color=colour, markersize=size, markeredgecolor="black",
                      markeredgewidth=0.5)
        stored, packed = v["size_bytes"] / 2**20, v["compressed_bytes"] / 2**20
        size_ax.plot([packed, stored], [y, y], color=colour, linewidth=0.8, alpha=0.6)
        size_ax.plot(stored, y, linestyle="none", marker=marker, color=colour, markersize=size, markeredgecolor="black",
                     markeredgewidth=0.5)
        size_ax.plot(packed, y, linestyle="none", marker=marker, markerfacecolor="none", markeredgecolor=colour, markersize=size)
    speed_ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    speed_ax.set_xlabel("speed-up over the dense model at batch 1 (its median latency / the variant's)")
    size_ax.set_xlabel("size on disk (MiB; filled: torch.save, hollow: zlib-compressed)")
    speed_ax.set_ylabel(f"{q.label} at inference")
    for ax in (speed_ax, size_ax):
        ax.grid(alpha=0.3)
    configs = list({c.key: c for c, *_ in points}.values())
    runs = [Line2D([], [], color=matrix.styles.of(c)["color"], marker="s", linestyle="none", label=c.label) for c in configs]
    shown = list(dict.fromkeys(name for _, name, *_ in points))
    kinds = [Line2D([], [], color="grey", marker=VARIANT_MARKERS.get(n, "o"), linestyle="none", label=n) for n in shown]
    fig.legend(handles=runs, fontsize=7, title="the run's configuration", title_fontsize=7, loc="upper left",
               bbox_to_anchor=(1.0, 0.95))
    fig.legend(handles=kinds, fontsize=7, title="variant", title_fontsize=7, loc="lower left", bbox_to_anchor=(1.0, 0.05))
    fig.suptitle(f"{model}: what pruning buys at inference (one point per run and variant)")
    return _save(fig, path)


# name -> (function, what it shows); the report embeds them in this order
FIGURES = {
    "curves": (curves, "validation quality over training, a panel per target sparsity"),
    "metric_vs_sparsity": (metric_vs_sparsity, "final quality against sparsity, a line per optimizer and method"),
    "final": (final, "final quality per configuration (perplexity: bars; accuracy: points)"),
    "sparsity": (sparsity, "sparsity of the prunable weights over training"),
    "layer_sparsity": (layer_sparsity, "final sparsity per layer and configuration (heat map)"),
    "memory_peak": (memory_peak, "peak memory per configuration, grouped by method"),
    "memory_time": (memory_time, "memory over time from memory.json, train and eval phases shaded"),
    "memory_vs_quality": (memory_vs_quality, "final quality against peak memory"),
    "state_bytes": (state_bytes, "optimizer and pruning state bytes per parameter, per method"),
    "time": (training_time, "training time and throughput per configuration"),
    "efficiency": (efficiency, "quality per unit of memory and of training time"),
    "inference": (inference, "speed-up at batch 1 and size on disk against quality at inference, a point per run and variant"),
}


def draw_model(matrix: Matrix, model: str, q: Quality, out: Path) -> list[Path]:
    """Every figure of `model` that has something to show, as out/<model>_<name>.png; the files written."""
    drawn = []
    for name, (function, _) in FIGURES.items():
        path = out / f"{model}_{name}.png"
        if function(matrix, model, q, path):
            drawn.append(path)
        else:
            path.unlink(missing_ok=True)  # a figure of an earlier drawing that no longer has data
    return drawn
