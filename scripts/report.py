"""A matrix's report: one table per model over its configurations, the figures, the provenance (results/<id>/report.md).

`table(matrix_dir)` is the end-of-matrix summary the runner prints and keeps
in summary.md: per model, each configuration's final metric as mean ± std
(n seeds), its difference to its baseline (with a 95 % interval from 3 seeds
on), best metric and when, achieved sparsity, peak memory, training time and
throughput; then the runs that did not complete. `write(...)` puts that
table, the figures and matrix.json's provenance into report.md, with one row
per run at the end.
"""

from __future__ import annotations

from pathlib import Path

from lib.results import describe
from scripts.evidence import Config, Matrix, delta, load, quality, stat

CONFIG_HEADER = ("configuration", "final {metric}", "Δ vs baseline [95 % CI]", "baseline", "best (at)",
                 "sparsity (%)", "peak memory (MiB)", "train time (s)", "{throughput}")


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _spread(values: list[float], digits: int) -> str:
    s = stat(values)
    if s is None:
        return "-"
    return f"{s.mean:.{digits}f}" + (f" ± {s.std:.{digits}f}" if s.std is not None else "")


def _best(c: Config, metric: str, unit: str) -> str:
    best = stat(c.values(f"best_{metric}"))
    at = sorted({r.final["best_at"] for r in c.completed if r.final.get("best_at") is not None})
    if best is None:
        return "-"
    when = "" if not at else f" ({unit} {at[0]})" if len(at) == 1 else f" ({unit} {at[0]}-{at[-1]})"
    return f"{best.mean:.2f}{when}"


def model_table(matrix: Matrix, model: str) -> str:
    """The configurations of one model, one row each."""
    configs = matrix.configs(model)
    q = quality([r for c in configs for r in c.runs])
    unit = "epoch" if q.unit == "epoch" else "iter"
    header = [h.format(metric=q.label, throughput=q.throughput_label) for h in CONFIG_HEADER]
    lines = [f"### {model}: {q.label}, {'higher' if q.higher_is_better else 'lower'} is better", "",
             _row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    for c in configs:
        final = stat(c.values(q.final))
        base = matrix.baseline(c)
        diff = delta(c.values(q.final), base.values(q.final)) if base else None
        lines.append(_row([
            c.key,
            final.text(2) if final else f"({', '.join(sorted({r.status for r in c.runs}))})",
            diff.text(2) if diff else "-",
            base.key if base else "-",
            _best(c, q.final, unit),
            _spread(c.values("sparsity_prunable", 100), 1),
            _spread(c.values("peak_memory_mib"), 0),
            _spread(c.values("train_time_s"), 1),
            _spread(c.values(q.throughput), 0),
        ]))
    return "\n".join(lines)


def unfinished(matrix_dir: Path, meta: dict) -> str:
    """The planned runs that did not complete, with their status and error; empty when all did."""
    rows = []
    for run in meta.get("runs", []):
        info = describe(matrix_dir / run["run_id"])
        if info["status"] != "completed":
            rows.append(_row([run["run_id"], info["status"], (info.get("error") or "").replace("|", "/")]))
    if not rows:
        return ""
    return "\n".join([f"### runs that did not complete ({len(rows)})", "", _row(["run", "status", "error"]),
                      _row(["---"] * 3), *rows])


NOTE = ("Final: mean ± sample standard deviation over the seeds (n runs). Δ: difference of the means to the "
        "baseline (the dense configuration of the same optimizer, or CONFIG_MATRIX_BASELINE), with Welch's 95 % "
        "t interval when both have at least 3 seeds. Best: the best validation value (mean) and the evaluation(s) "
        "it came at. Sparsity: achieved, of the prunable weights.")


def table(matrix_dir: str | Path, matrix: Matrix | None = None) -> str:
    """The summary: a table per model over its configurations, then the runs that did not complete."""
    matrix = matrix or load(matrix_dir)
    parts = [model_table(matrix, model) for model in matrix.models()]
    if parts:
        parts.append(NOTE)
    left = unfinished(Path(matrix_dir), matrix.meta)
    if left:
        parts.append(left)
    return "\n\n".join(parts) or "no run has metrics yet"


def provenance(meta: dict) -> str:
    git = meta.get("git") or {}
    dirty = "dirty" + (f" (diff in {git['diff_file']})" if git.get("diff_file") else "") if git.get("dirty") else "clean"
    items = [
        ("defconfig", meta.get("defconfig")),
        ("created", meta.get("created")),
        ("config hash", meta.get("config_hash")),
        ("commit", f"{git.get('commit')} ({dirty})" if git else None),
        ("versions", ", ".join(f"{k} {meta[k]}" for k in ("python", "torch", "torchvision") if meta.get(k))),
        ("host", f"{meta.get('host')}, {meta.get('platform')}, {meta.get('cpus')} CPUs" if meta.get("host") else None),
        ("devices", ", ".join(meta.get("devices") or [])),
        ("overrides", " ".join(f"{k} {v}" for k, v in (meta.get("overrides") or {}).items())),
    ]
    return "\n".join(f"- {name}: {value}" for name, value in items if value)


def runs_table(matrix: Matrix) -> str:
    """Every run with metrics, one row each (the seeds behind the means)."""
    lines = [_row(["run", "status", "seed", "final", "best (at)", "sparsity (%)", "peak memory (MiB)", "train time (s)"]),
             _row(["---", "---", "---:", "---:", "---:", "---:", "---:", "---:"])]
    for c in matrix.configs():
        q = quality(c.runs)
        for r in c.runs:
            f = r.final
            if not f:
                lines.append(_row([r.run_id, r.status, str(r.seed), "(incomplete)", "", "", "", ""]))
                continue
            best = f.get(f"best_{q.final}")
            lines.append(_row([
                r.run_id, r.status, str(r.seed), f"{f[q.final]:.2f}",
                "-" if best is None else f"{best:.2f} ({f.get('best_at')})",
                f"{100 * f['sparsity_prunable']:.1f}", f"{f.get('peak_memory_mib') or 0:.0f}", f"{f['train_time_s']:.1f}",
            ]))
    return "\n".join(lines)


def write(matrix_dir: str | Path, matrix: Matrix, figures: list[Path]) -> Path:
    """report.md: provenance, then per model its table and its figures, then every run; the file written."""
    from scripts.figures import FIGURES  # here: the summary alone (the runner's) needs no matplotlib

    matrix_dir = Path(matrix_dir)
    parts = [f"# Report: {matrix_dir.name}", provenance(matrix.meta), "## Results", table(matrix_dir, matrix)]
    for model in matrix.models():
        shown = [p for p in figures if p.name.startswith(f"{model}_")]
        if shown:
            parts.append(f"## Figures: {model}")
            for path in shown:
                name = path.stem[len(model) + 1:]
                parts.append(f"{FIGURES[name][1].capitalize()}.\n\n![{path.stem}](graphs/{path.name})")
    parts += ["## Runs", runs_table(matrix)]
    out = matrix_dir / "report.md"
    out.write_text("\n\n".join(p for p in parts if p) + "\n")
    return out
