"""Draw a matrix's comparison graphs and its report, from metrics.json files only.

usage: python -m scripts.graphs [--results DIR] [--images DIR]

For each model in the matrix (default: the newest under results/):
  <model>_curves.png            validation accuracy (or perplexity) over training, one panel per pruning setting
  <model>_metric_vs_sparsity.png final accuracy (or perplexity) against sparsity, a line per optimizer and method
  <model>_sparsity.png          achieved sparsity over training for the pruned runs
into results/<id>/graphs/, copied to images/<model>/, and results/<id>/report.md
with the run table and the graphs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lib.results import read_json  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def load_runs(matrix_dir: Path) -> list[dict]:
    """Every run's metrics.json that has at least one history entry."""
    runs = []
    for path in sorted(matrix_dir.glob("*/metrics.json")):
        m = read_json(path)
        if m and m.get("history"):
            runs.append(m)
    return runs


def kind(runs: list[dict]) -> tuple[str, str, str, str]:
    """(x key, history metric, final metric, label) for classifiers or language models."""
    if "val_accuracy" in runs[0]["history"][0]:
        return "epoch", "val_accuracy", "accuracy", "validation accuracy (%)"
    return "iter", "val_perplexity", "perplexity", "validation perplexity"


def method(m: dict) -> str:
    return f"{m['variant']} {m['pruning']}" if m.get("variant") else m["pruning"]


def setting(m: dict) -> str:
    return "dense" if m["pruning"] == "none" else f"{method(m)} {round(100 * m['target_sparsity'])}%"


def color_of(optimizers: list[str], opt: str) -> str:
    return COLORS[optimizers.index(opt) % len(COLORS)]


def plot_curves(runs, path: Path, model: str) -> None:
    x, metric, _, label = kind(runs)
    optimizers = sorted({m["optimizer"] for m in runs})
    panels = sorted({setting(m) for m in runs}, key=lambda s: (s != "dense", s))
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False, sharey=True)
    for ax, panel in zip(axes.flat, panels):
        for m in (m for m in runs if setting(m) == panel):
            h = m["history"]
            suffix = f" s{m['seed']}" if sum(1 for r in runs if setting(r) == panel and r["optimizer"] == m["optimizer"]) > 1 else ""
            ax.plot([e[x] for e in h], [e[metric] for e in h], marker=".", color=color_of(optimizers, m["optimizer"]), label=m["optimizer"] + suffix)
        ax.set_title(panel)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(label)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{model}: {label} during training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_metric_vs_sparsity(runs, path: Path, model: str) -> None:
    _, _, final, label = kind(runs)
    finished = [m for m in runs if m.get("final")]
    optimizers = sorted({m["optimizer"] for m in finished})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["-", "--", ":", "-."]
    methods = sorted({method(m) for m in finished if m["pruning"] != "none"})
    for opt in optimizers:
        dense = [m["final"][final] for m in finished if m["optimizer"] == opt and m["pruning"] == "none"]
        for i, meth in enumerate(methods):
            pts = defaultdict(list)
            for m in finished:
                if m["optimizer"] == opt and method(m) == meth:
                    pts[100 * m["target_sparsity"]].append(m["final"][final])
            if not pts:
                continue
            xs = ([0.0] if dense else []) + sorted(pts)
            ys = ([sum(dense) / len(dense)] if dense else []) + [sum(pts[s]) / len(pts[s]) for s in sorted(pts)]
            ax.plot(xs, ys, styles[i % len(styles)], marker="o", color=color_of(optimizers, opt), label=f"{opt} {meth}")
        if dense and not methods:
            ax.plot([0.0], [sum(dense) / len(dense)], "o", color=color_of(optimizers, opt), label=f"{opt} dense")
    ax.set_xlabel("target sparsity (%)  (0 = dense baseline)")
    ax.set_ylabel(f"final {label}")
    ax.set_title(f"{model}: final {label} vs sparsity")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sparsity(runs, path: Path, model: str) -> None:
    x = kind(runs)[0]
    pruned = [m for m in runs if m["pruning"] != "none"]
    optimizers = sorted({m["optimizer"] for m in runs})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in pruned:
        h = m["history"]
        ax.plot([e[x] for e in h], [100 * e["sparsity"] for e in h], marker=".", color=color_of(optimizers, m["optimizer"]), label=m["run_id"])
    ax.set_xlabel(x)
    ax.set_ylabel("sparsity of prunable weights (%)")
    ax.set_title(f"{model}: sparsity during training")
    ax.grid(alpha=0.3)
    if pruned:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(matrix_dir: Path, runs: list[dict], graphs: list[Path]) -> str:
    lines = [f"# Report: {matrix_dir.name}", "", "| run | optimizer | pruning | target | final | best (at) | sparsity (prunable / all) | time (s) |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for m in runs:
        f = m.get("final")
        _, _, final, _ = kind([m])
        if not f:
            lines.append(f"| {m['run_id']} | {m['optimizer']} | {method(m)} | {100 * m['target_sparsity']:.0f}% | (incomplete) | | | |")
            continue
        best = f.get(f"best_{final}")
        best_text = "-" if best is None else f"{best:.2f} ({f.get('best_at')})"
        lines.append(
            f"| {m['run_id']} | {m['optimizer']} | {method(m)} | {100 * m['target_sparsity']:.0f}% | {f[final]:.2f} | "
            f"{best_text} | "
            f"{100 * f['sparsity_prunable']:.1f}% / {100 * f['sparsity_global']:.1f}% | {f['train_time_s']:.1f} |"
        )
    lines += ["", *[f"![{g.stem}](graphs/{g.name})" for g in graphs], ""]
    return "\n".join(lines)


def draw(matrix_dir: Path, images_dir: Path | None = Path("images")) -> list[Path]:
    runs = load_runs(matrix_dir)
    out = matrix_dir / "graphs"
    out.mkdir(exist_ok=True)
    drawn = []
    by_model = defaultdict(list)
    for m in runs:
        by_model[m["model"]].append(m)
    for model, model_runs in by_model.items():
        paths = [out / f"{model}_curves.png", out / f"{model}_metric_vs_sparsity.png", out / f"{model}_sparsity.png"]
        plot_curves(model_runs, paths[0], model)
        plot_metric_vs_sparsity(model_runs, paths[1], model)
        plot_sparsity(model_runs, paths[2], model)
        drawn += paths
        if images_dir is not None:
            (images_dir / model).mkdir(parents=True, exist_ok=True)
            for p in paths:
                shutil.copyfile(p, images_dir / model / p.name.removeprefix(f"{model}_"))
    (matrix_dir / "report.md").write_text(report(matrix_dir, runs, drawn))
    print(f"graphs: {len(drawn)} in {out}; report: {matrix_dir / 'report.md'}")
    return drawn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", help="matrix directory (default: the newest under results/)")
    p.add_argument("--images", default="images", help="where published graphs go ('' to skip)")
    args = p.parse_args(argv)
    from lib.config import ConfigError
    from scripts.matrix import MatrixError, open_matrix

    try:
        matrix_dir, _ = open_matrix(args.results)
    except (MatrixError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not load_runs(matrix_dir):
        print(f"error: {matrix_dir} has no run with metrics yet; nothing to draw", file=sys.stderr)
        return 2
    draw(matrix_dir, Path(args.images) if args.images else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
