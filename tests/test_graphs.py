"""scripts.graphs: graphs and report drawn from metrics.json files alone."""

from __future__ import annotations

from pathlib import Path

from lib.results import write_json
from scripts import graphs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(mdir: Path, run_id: str, optimizer: str, pruning: str, target: float, acc: float, lm: bool = False) -> None:
    x, metric = ("iter", "val_perplexity") if lm else ("epoch", "val_accuracy")
    history = [
        {x: i, "train_loss": 2.0 / i, "val_loss": 2.0 / i, metric: acc * i / 4, "sparsity": target * min(1, i / 3), "lr": 0.01, "elapsed_s": i}
        for i in range(1, 5)
    ]
    final_key = "perplexity" if lm else "accuracy"
    final = {final_key: acc, f"best_{final_key}": acc, "best_at": 4, "sparsity_prunable": target, "sparsity_global": target * 0.99, "train_time_s": 4.0, "peak_memory_mib": 100.0, "params": 10, "nonzero_params": 5}
    write_json(
        mdir / run_id / "metrics.json",
        {"schema": 1, "run_id": run_id, "model": "gpt2" if lm else "lenet5", "dataset": "d", "optimizer": optimizer, "variant": None, "pruning": pruning, "target_sparsity": target, "seed": 1, "history": history, "final": final},
    )


def test_draws_three_graphs_per_model_and_a_report(tmp_path):
    mdir = tmp_path / "20260101-000000-x"
    for opt, base in (("sgd", 97.0), ("adamw", 98.0)):
        fake_run(mdir, f"lenet5_{opt}_none", opt, "none", 0.0, base)
        fake_run(mdir, f"lenet5_{opt}_magnitude_50", opt, "magnitude", 0.5, base - 0.5)
        fake_run(mdir, f"lenet5_{opt}_magnitude_90", opt, "magnitude", 0.9, base - 3)
    (mdir / "lenet5_sgd_magnitude_99").mkdir()  # started, no metrics yet: not drawn, no crash
    fake_run(mdir, "gpt2_adamw_none", "adamw", "none", 0.0, 40.0, lm=True)
    images = tmp_path / "images"
    drawn = graphs.draw(mdir, images)
    assert {p.name for p in drawn} == {
        f"{m}_{g}.png" for m in ("lenet5", "gpt2") for g in ("curves", "metric_vs_sparsity", "sparsity")
    }
    for p in drawn:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000
    assert (images / "lenet5" / "curves.png").read_bytes() == (mdir / "graphs" / "lenet5_curves.png").read_bytes()
    report = (mdir / "report.md").read_text()
    assert "| lenet5_adamw_magnitude_90 | adamw | magnitude | 90% | 95.00 | 95.00 (4) | 90.0% / 89.1% | 4.0 |" in report
    assert "lenet5_sgd_magnitude_99" not in report


def test_incomplete_runs_are_drawn_and_marked(tmp_path):
    mdir = tmp_path / "m"
    fake_run(mdir, "lenet5_sgd_none", "sgd", "none", 0.0, 97.0)
    data = (mdir / "lenet5_sgd_none" / "metrics.json").read_text().replace('"final"', '"unfinished"')
    (mdir / "lenet5_sgd_none" / "metrics.json").write_text(data)
    graphs.draw(mdir, None)
    assert "(incomplete)" in (mdir / "report.md").read_text()
