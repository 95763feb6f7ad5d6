"""Compare two matrices configuration by configuration: a table, overlay figures, and a regression gate.

usage:
  python -m scripts.compare A B [--tolerance T] [--out DIR]
  make compare A=results/<id1> B=results/<id2> [TOLERANCE=T]

A and B are matrix directories or defconfig names. A name stands for the
newest matrix of that defconfig (matrix.json "defconfig") under the results
directory. If you give the same name twice, the comparison is between its
two newest matrices, with the older one as A.

Runs are joined by run id. A configuration is a run id without its _s<seed>
suffix, and its value is the mean final metric of its completed runs over
seeds. For accuracy (in %) higher is better; for perplexity lower is better.
A configuration regressed when B is worse than A by more than

  max(tolerance, 2 x the pooled standard deviation of the final metric over seeds)

The spread counts only when A and B hold at least three runs of that
configuration together. The tolerance is in accuracy points, or in percent of
A's perplexity; the default is 0.5. A configuration that is better by more
than the threshold is reported as improved, never as a failure. A
configuration that is only in one matrix, or that has no completed run on one
side, is listed but not compared.

Writes to B/compare-<A id>/ (or to --out, which must be inside the results
directory that holds B):
  compare.md            the table, both matrices' provenance and the settings that differ
  <model>_curves.png    A and B over training, one panel per configuration (mean, band of +-1 std over seeds)
  <model>_final.png     final metric per configuration, A beside B (+-1 std over seeds)

Exit status: 0 when nothing regressed, 1 when a configuration regressed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from lib import fs_errors  # noqa: E402
from lib.results import MATRIX_FILE, MatrixError, read_json, results_dir  # noqa: E402
from scripts import evidence  # noqa: E402

SPREAD = 2.0  # how many pooled standard deviations of the seeds a change must exceed
TOLERANCE = 0.5  # accuracy points, or percent of A's perplexity
COLORS = {"A": "tab:blue", "B": "tab:orange"}
VERDICT_COLORS = {"regressed": "tab:red", "improved": "tab:green", "within": "black"}


# -- which matrices --------------------------------------------------------------
def matrices_of(root: Path, name: str) -> list[Path]:
    """The matrix directories under `root` whose matrix.json names defconfig `name`, oldest first."""
    return [p.parent for p in sorted(root.glob(f"*/{MATRIX_FILE}")) if (read_json(p) or {}).get("defconfig") == name]


def resolve(arg: str, root: Path, nth_newest: int = 1) -> Path:
    """A matrix directory, or the `nth_newest` matrix of a defconfig name under `root`."""
    path = Path(arg)
    if (path / MATRIX_FILE).is_file():
        return path
    if path.is_dir():
        raise MatrixError(f"{arg} has no {MATRIX_FILE}; give a matrix directory (results/<id>) or a defconfig name")
    if "/" in arg:
        raise MatrixError(f"{arg}: no such matrix directory")
    found = matrices_of(root, arg)
    if not found:
        names = sorted({(read_json(p) or {}).get("defconfig", "?") for p in root.glob(f"*/{MATRIX_FILE}")})
        raise MatrixError(f"no matrix of defconfig {arg!r} under {root}/; matrices there: {', '.join(names) or 'none'}")
    if len(found) < nth_newest:
        raise MatrixError(f"{arg} names one matrix under {root}/ ({found[-1].name}); comparing it with itself needs two")
    return found[-nth_newest]


def pair(a: str, b: str, root: Path) -> tuple[Path, Path]:
    """(A, B) as directories; the same defconfig name twice is its two newest matrices."""
    first, second = (resolve(a, root, 2), resolve(b, root)) if a == b else (resolve(a, root), resolve(b, root))
    if first.resolve() == second.resolve():
        raise MatrixError(f"A and B are the same matrix ({first}); give two")
    return first, second


# -- configurations in both matrices ---------------------------------------------
def done(matrix: evidence.Matrix) -> dict[str, evidence.Config]:
    """Each configuration with its done runs only (run.json "completed" and a final block)."""
    configs = {c.key: evidence.Config(c.key, [r for r in c.completed if r.status == "completed"]) for c in matrix.configs()}
    return {key: c for key, c in configs.items() if c.runs}


@dataclass
class Row:
    """One configuration in both matrices: its final metric per seed on each side, and the verdict."""

    a: evidence.Config
    b: evidence.Config
    quality: evidence.Quality
    tolerance: float

    @property
    def config(self) -> str:
        return self.a.key

    @property
    def model(self) -> str:
        return self.a.model

    @property
    def metric(self) -> str:
        return self.quality.final

    def side(self, side: str) -> evidence.Config:
        return self.a if side == "A" else self.b

    def values(self, side: str) -> np.ndarray:
        return np.array(self.side(side).values(self.metric), dtype=float)

    @property
    def change(self) -> float:
        return float(self.values("B").mean() - self.values("A").mean())

    @property
    def pooled_std(self) -> float | None:
        a, b = self.values("A"), self.values("B")
        dof = len(a) + len(b) - 2
        if dof < 1:
            return None
        return float(np.sqrt((((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / dof))

    @property
    def threshold(self) -> float:
        floor = self.tolerance if self.quality.higher_is_better else self.tolerance / 100 * float(self.values("A").mean())
        spread = self.pooled_std
        return floor if spread is None else max(floor, SPREAD * spread)

    @property
    def verdict(self) -> str:
        worse = -self.change if self.quality.higher_is_better else self.change
        if worse > self.threshold:
            return "regressed"
        return "improved" if -worse > self.threshold else "within"

    @property
    def counts(self) -> str:
        return f"n={len(self.a.runs)}/{len(self.b.runs)}"

    def cell(self, side: str) -> str:
        return evidence.stat(list(self.values(side))).text()


def join(a: evidence.Matrix, b: evidence.Matrix, tolerance: float) -> tuple[list[Row], list[tuple[str, str]]]:
    """(the configurations compared, the ones not compared with the reason)."""
    done_a, done_b = done(a), done(b)
    planned_a, planned_b = set(a.planned_configs()) | set(done_a), set(b.planned_configs()) | set(done_b)
    rows, skipped = [], []
    for key in sorted(planned_a | planned_b):
        if key not in planned_b or key not in planned_a:
            skipped.append((key, "only in A" if key in planned_a else "only in B"))
        elif key not in done_a or key not in done_b:
            missing = " and ".join(side for side, found in (("A", done_a), ("B", done_b)) if key not in found)
            skipped.append((key, f"no completed run in {missing}"))
        else:
            rows.append(Row(done_a[key], done_b[key], evidence.quality(done_a[key].runs), tolerance))
    return rows, skipped


# -- figures ---------------------------------------------------------------------
def plot_curves(rows: list[Row], names: dict[str, str], path: Path) -> None:
    cols = min(4, len(rows))
    n_rows = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.2 * cols, 3.2 * n_rows + 0.6), squeeze=False)
    for ax, row in zip(axes.flat, rows):
        for side, style in (("A", "-"), ("B", "--")):
            xs, mean, std, _ = evidence.curve(row.side(side).runs, row.quality.unit, row.quality.history)
            ax.plot(xs, mean, style, marker=".", color=COLORS[side], label=f"{side}: {names[side]}")
            if len(row.side(side).runs) > 1:
                ax.fill_between(xs, mean - std, mean + std, color=COLORS[side], alpha=0.2)
        ax.set_title(f"{row.config} ({row.counts}): {row.verdict}", fontsize=9, color=VERDICT_COLORS[row.verdict])
        ax.set_xlabel("epoch" if row.quality.unit == "epoch" else "iteration")
        ax.set_ylabel(row.quality.label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_final(rows: list[Row], names: dict[str, str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.8))
    ys = np.arange(len(rows))[::-1]
    for side, offset, marker in (("A", 0.15, "o"), ("B", -0.15, "s")):
        values = [row.values(side) for row in rows]
        ax.errorbar([v.mean() for v in values], ys + offset, xerr=[v.std(ddof=1) if len(v) > 1 else 0 for v in values],
                    fmt=marker, color=COLORS[side], capsize=3, label=f"{side}: {names[side]}")
    ax.set_yticks(ys, [f"{row.config} ({row.counts})" for row in rows], fontsize=8)
    for label, row in zip(ax.get_yticklabels(), rows):
        label.set_color(VERDICT_COLORS[row.verdict])
    ax.set_xlabel(f"final {rows[0].quality.label}")
    ax.set_title("final metric per configuration (red: regressed, green: improved)", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- report ----------------------------------------------------------------------
def provenance(side: str, m: evidence.Matrix) -> str:
    meta = m.meta
    git = meta.get("git") or {}
    commit = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    overrides = ", ".join(f"{k} {v}" for k, v in (meta.get("overrides") or {}).items()) or "none"
    return (f"- {side}: `{m.path}`: defconfig {meta.get('defconfig')}, created {meta.get('created')}, "
            f"commit {commit}, config hash {str(meta.get('config_hash'))[:12]}, overrides {overrides}, "
            f"host {meta.get('host')}, devices {', '.join(meta.get('devices') or [])}, torch {meta.get('torch')}")


def differences(meta_a: dict, meta_b: dict) -> list[str]:
    from lib import config  # kconfiglib's diff format, as make continue prints it

    lines = config.diff(meta_a.get("config") or {}, meta_b.get("config") or {})
    overrides_a, overrides_b = meta_a.get("overrides") or {}, meta_b.get("overrides") or {}
    lines += [f"{k} (override): {overrides_a.get(k)!r} -> {overrides_b.get(k)!r}"
              for k in sorted(set(overrides_a) | set(overrides_b)) if overrides_a.get(k) != overrides_b.get(k)]
    return lines


def report(a: evidence.Matrix, b: evidence.Matrix, rows: list[Row], skipped, figures: list[Path], tolerance: float) -> str:
    lines = [f"# Compare: {a.path.name} (A) -> {b.path.name} (B)", "", provenance("A", a), provenance("B", b), ""]
    diff = differences(a.meta, b.meta)
    lines += ["Settings that differ: none" if not diff else "Settings that differ:", *[f"- `{d}`" for d in diff], ""]
    lines += [
        f"A configuration regressed when B is worse than A by more than max(tolerance, {SPREAD:g} x the pooled "
        f"standard deviation over seeds); tolerance {tolerance:g} accuracy points, or {tolerance:g} % of A's perplexity. "
        "Values are final metrics, mean ± std over seeds (n runs).",
        "",
    ]
    for model in sorted({r.model for r in rows}):
        model_rows = [r for r in rows if r.model == model]
        lines += [f"## {model}: final {model_rows[0].quality.label}", "",
                  "| configuration | A | B | change | threshold | verdict |", "|---|---:|---:|---:|---:|---|"]
        lines += [f"| {r.config} | {r.cell('A')} | {r.cell('B')} | {r.change:+.2f} | {r.threshold:.2f} | "
                  f"{'**regressed**' if r.verdict == 'regressed' else r.verdict} |" for r in model_rows]
        lines.append("")
    if skipped:
        lines += ["## Not compared", "", "| configuration | why |", "|---|---|", *[f"| {c} | {why} |" for c, why in skipped], ""]
    lines += [f"![{f.stem}]({f.name})" for f in figures]
    regressed = [r.config for r in rows if r.verdict == "regressed"]
    lines += ["", f"**{len(regressed)} of {len(rows)} configurations regressed" + (f": {', '.join(regressed)}**" if regressed else "**"), ""]
    return "\n".join(lines)


def output_dir(out: str | None, a_dir: Path, b_dir: Path) -> Path:
    """B/compare-<A id>/, or --out when it is inside the results directory that holds B."""
    if out is None:
        return b_dir / f"compare-{a_dir.name}"
    root = b_dir.resolve().parent
    if not Path(out).resolve().is_relative_to(root):
        raise MatrixError(f"--out {out} is outside the results directory {b_dir.parent}; comparisons stay beside the matrices")
    return Path(out)


def compare(a_dir: Path, b_dir: Path, tolerance: float = TOLERANCE, out: str | None = None) -> tuple[list[Row], Path]:
    """Join, judge, draw and write compare.md; (the rows compared, compare.md's path)."""
    a, b = evidence.load(a_dir), evidence.load(b_dir)
    rows, skipped = join(a, b, tolerance)
    if not rows:
        raise MatrixError(f"{a_dir} and {b_dir} have no configuration with completed runs in common "
                          f"({', '.join(f'{c}: {why}' for c, why in skipped[:6]) or 'no runs'})")
    dest = output_dir(out, a_dir, b_dir)
    dest.mkdir(parents=True, exist_ok=True)
    names = {"A": a_dir.name, "B": b_dir.name}
    figures = []
    for model in sorted({r.model for r in rows}):
        model_rows = [r for r in rows if r.model == model]
        for name, plot in (("curves", plot_curves), ("final", plot_final)):
            figures.append(dest / f"{model}_{name}.png")
            plot(model_rows, names, figures[-1])
    (dest / "compare.md").write_text(report(a, b, rows, skipped, figures, tolerance))
    return rows, dest / "compare.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", nargs="?", metavar="A", help="the baseline: a matrix directory or a defconfig name")
    p.add_argument("b", nargs="?", metavar="B", help="the matrix judged against A: a matrix directory or a defconfig name")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"smallest change that counts: accuracy points, or percent of A's perplexity (default {TOLERANCE})")
    p.add_argument("--out", help="where compare.md and the figures go (default: B/compare-<A id>/), inside the results directory")
    args = p.parse_args(argv)
    from lib.config import ConfigError

    try:
        if not (args.a and args.b):
            raise MatrixError("give two matrices: make compare A=results/<id1> B=results/<id2> (or defconfig names)")
        if args.tolerance < 0:
            raise MatrixError(f"--tolerance {args.tolerance:g}: give a change of 0 or more")
        a_dir, b_dir = pair(args.a, args.b, results_dir())
        rows, written = compare(a_dir, b_dir, args.tolerance, args.out)
    except (MatrixError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only or full matrix directory
        print(f"error: {fs_errors.explain(e)}", file=sys.stderr)
        return 2
    width = max(len(r.config) for r in rows)
    for r in rows:
        print(f"{r.config:<{width}}  {r.metric} {r.values('A').mean():.2f} -> {r.values('B').mean():.2f} "
              f"({r.change:+.2f}, threshold {r.threshold:.2f})  {r.verdict}")
    regressed = [r.config for r in rows if r.verdict == "regressed"]
    print(f"compare {a_dir.name} -> {b_dir.name}: {len(rows)} configurations, {len(regressed)} regressed, "
          f"{sum(r.verdict == 'improved' for r in rows)} improved; {written}")
    if regressed:
        print(f"error: {len(regressed)} configuration(s) regressed: {', '.join(regressed)} (see {written})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
