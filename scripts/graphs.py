"""Draw a matrix's comparison graphs and its report, from metrics.json files only; publish them.

usage:
  python -m scripts.graphs [--results DIR]                           draw (make update-graphs)
  python -m scripts.graphs --publish --results DIR [--images DIR]    publish (make publish-graphs)

Drawing writes, for each model in the matrix (default: the newest under the
results directory),
  <model>_curves.png             validation accuracy (or perplexity) over training, one panel per pruning setting
  <model>_metric_vs_sparsity.png final accuracy (or perplexity) against sparsity, a line per optimizer and method
  <model>_sparsity.png           achieved sparsity over training for the pruned runs
into DIR/graphs/, and DIR/report.md with the run table and the graphs.
Nothing outside DIR is written.

Publishing copies the graphs a person chose, DIR/graphs/<model>_<name>.png,
to images/<model>/<name>.png (the tracked images the README shows). It needs
an explicit --results: which matrix to show is a decision, not a default.
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

from lib.results import MatrixError, load_runs, open_matrix  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


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


GRAPHS = ("curves", "metric_vs_sparsity", "sparsity")


def draw(matrix_dir: Path) -> list[Path]:
    """Draw every model's graphs into matrix_dir/graphs/ and write matrix_dir/report.md; the graphs drawn."""
    runs = load_runs(matrix_dir)
    out = matrix_dir / "graphs"
    out.mkdir(exist_ok=True)
    drawn = []
    by_model = defaultdict(list)
    for m in runs:
        by_model[m["model"]].append(m)
    for model, model_runs in by_model.items():
        paths = [out / f"{model}_{name}.png" for name in GRAPHS]
        plot_curves(model_runs, paths[0], model)
        plot_metric_vs_sparsity(model_runs, paths[1], model)
        plot_sparsity(model_runs, paths[2], model)
        drawn += paths
    (matrix_dir / "report.md").write_text(report(matrix_dir, runs, drawn))
    print(f"graphs: {len(drawn)} in {out}; report: {matrix_dir / 'report.md'}")
    return drawn


def publish(matrix_dir: Path, images_dir: Path = Path("images")) -> list[Path]:
    """Copy matrix_dir/graphs/<model>_<name>.png to images_dir/<model>/<name>.png; the files written."""
    graphs_dir = matrix_dir / "graphs"
    models = sorted({m["model"] for m in load_runs(matrix_dir)})
    sources = [(model, name, graphs_dir / f"{model}_{name}.png") for model in models for name in GRAPHS]
    missing = [str(src) for _, _, src in sources if not src.is_file()]
    if not sources or missing:
        raise MatrixError(
            f"{graphs_dir} lacks {', '.join(missing) or 'graphs'}; draw them first: make update-graphs RESULTS={matrix_dir}"
        )
    written = []
    for model, name, src in sources:
        (images_dir / model).mkdir(parents=True, exist_ok=True)
        dest = images_dir / model / f"{name}.png"
        shutil.copyfile(src, dest)
        written.append(dest)
    print(f"published {len(written)} graphs of {matrix_dir.name} to {images_dir}/ ({', '.join(models)}); commit them to show them")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", help="matrix directory (default for drawing: the newest under the results directory)")
    p.add_argument("--publish", action="store_true", help="copy DIR/graphs/ to the images directory instead of drawing")
    p.add_argument("--images", default="images", help="--publish: where published graphs go (default: images)")
    args = p.parse_args(argv)
    from lib.config import ConfigError

    try:
        if args.publish and not args.results:
            raise MatrixError("publishing needs the matrix to publish: make publish-graphs RESULTS=results/<id>")
        matrix_dir, _ = open_matrix(args.results)
        if args.publish:
            publish(matrix_dir, Path(args.images))
        elif load_runs(matrix_dir):
            draw(matrix_dir)
        else:
            raise MatrixError(f"{matrix_dir} has no run with metrics yet; nothing to draw")
    except (MatrixError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
