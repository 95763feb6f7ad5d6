"""A matrix's report: one table per model over its configurations, the figures, the provenance (results/<id>/report.md).

`table(matrix_dir)` is the end-of-matrix summary the runner prints and keeps
in summary.md: per model, each configuration's final metric as mean ± std
(n seeds), its difference to its baseline (with a 95 % interval from 3 seeds
on), best metric and when, achieved sparsity, peak memory, training time and
throughput; then the runs that did not complete. `write(...)` puts that
table, the inference benchmarks (`inference_section`: one row per run and
variant of the runs whose metrics.json has "inference", lib/inference.py),
the figures and matrix.json's provenance into report.md, with one row per
run at the end.
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


INFERENCE_HEADER = ("run", "variant", "params", "nonzeros", "size", "compressed", "latency b1 (ms, median ± IQR)",
                    "throughput (examples/s, batch)", "peak memory (MiB)", "{metric}", "speed-up b1 / bN", "size / compressed")


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _variant_label(name: str, v: dict, inference: dict) -> str:
    if name == "dense":
        source = inference.get("dense_source", "")
        return f"dense ({source.split(' ')[0] if not source.startswith('this run') else 'own weights'})"
    return v.get("label", name)


def inference_rows(run, q) -> list[str]:
    """One row per variant of a run's metrics.json "inference"."""
    inference = run.metrics.get("inference") or {}
    rows = []
    for name, v in (inference.get("variants") or {}).items():
        label = _variant_label(name, v, inference)
        if "unsupported" in v:
            rows.append(_row([run.run_id, f"{label}: {v['unsupported']}"] + ["-"] * (len(INFERENCE_HEADER) - 2)))
            continue
        lat, value = v["latency_ms"], (v.get("quality") or {}).get(q.final)
        speed = f"{v['speedup']:.2f}× / {v['throughput_ratio']:.2f}×" if "speedup" in v else "1 (reference)"
        size = f"{v['size_ratio']:.2f} / {v['compressed_ratio']:.2f}" if "size_ratio" in v else "1 / 1"
        if "vs_reference" in v:
            ref = v["vs_reference"]
            speed += f" ({ref['speedup']:.2f}× / {ref['throughput_ratio']:.2f}× vs {ref['variant']})"
        rows.append(_row([
            run.run_id, label, f"{v['params']:,}", f"{v['nonzeros']:,}", _bytes(v["size_bytes"]), _bytes(v["compressed_bytes"]),
            f"{lat['median']:.3f} ± {lat['iqr']:.3f}",
            f"{v['throughput_per_s']['median']:,.0f} ({inference['batch']['throughput']})",
            "-" if v.get("peak_memory_mib") is None else f"{v['peak_memory_mib']:.1f}",
            "-" if value is None else f"{value:.2f}", speed, size,
        ]))
    return rows


INFERENCE_NOTE = ("One row per variant of each benchmarked run (docs/inference.md): the dense baseline measured in the same "
                  "process, the pruned model as stored, its compact form (channel) and its 2:4 sparse form (N:M, GPU). "
                  "Latency: median ± interquartile range of the calls at batch 1; throughput: median at the run's batch; "
                  "speed-up: the dense model's median latency over the variant's (b1) and the variant's median throughput "
                  "over the dense model's (bN); size: torch.save bytes of the state dict, compressed with zlib; ratios "
                  "against the dense model. Peak memory: the large batch's peak above what was held before it.")


def inference_table(matrix: Matrix, model: str) -> str:
    """The inference benchmarks of one model's runs, one row per run and variant; empty when none has one."""
    runs = [r for c in matrix.configs(model) for r in c.runs if (r.metrics.get("inference") or {}).get("variants")]
    if not runs:
        return ""
    q = quality(runs)
    header = [h.format(metric=q.label) for h in INFERENCE_HEADER]
    lines = [f"### {model}: inference", "", _row(header), _row(["---", "---"] + ["---:"] * (len(header) - 2))]
    for run in runs:
        lines += inference_rows(run, q)
    settings = sorted({f"{i['device']}, {i['threads']} threads, {i['repetitions']} repetitions after {i['warmup']} warm-up calls"
                       for i in (r.metrics["inference"] for r in runs)})
    lines += ["", "Measured on " + "; ".join(settings) + "."]
    return "\n".join(lines)


def inference_section(matrix: Matrix) -> str:
    """report.md's inference tables (one per model with benchmarked runs) and how to read them; empty without any."""
    tables = [t for t in (inference_table(matrix, model) for model in matrix.models()) if t]
    return "\n\n".join(["## Inference", *tables, INFERENCE_NOTE]) if tables else ""


def write(matrix_dir: str | Path, matrix: Matrix, figures: list[Path]) -> Path:
    """report.md: provenance, then per model its table and its figures, then every run; the file written."""
    from scripts.figures import FIGURES  # here: the summary alone (the runner's) needs no matplotlib

    matrix_dir = Path(matrix_dir)
    parts = [f"# Report: {matrix_dir.name}", provenance(matrix.meta), "## Results", table(matrix_dir, matrix),
             inference_section(matrix)]
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
