"""scripts.graphs: graphs and report drawn from metrics.json files alone, into the matrix directory; publishing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lib.results import MatrixError, write_json
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
    drawn = graphs.draw(mdir)
    assert {p.name for p in drawn} == {
        f"{m}_{g}.png" for m in ("lenet5", "gpt2") for g in ("curves", "metric_vs_sparsity", "sparsity")
    }
    for p in drawn:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000
    report = (mdir / "report.md").read_text()
    assert "| lenet5_adamw_magnitude_90 | adamw | magnitude | 90% | 95.00 | 95.00 (4) | 90.0% / 89.1% | 4.0 |" in report
    assert "lenet5_sgd_magnitude_99" not in report


def test_incomplete_runs_are_drawn_and_marked(tmp_path):
    mdir = tmp_path / "m"
    fake_run(mdir, "lenet5_sgd_none", "sgd", "none", 0.0, 97.0)
    data = (mdir / "lenet5_sgd_none" / "metrics.json").read_text().replace('"final"', '"unfinished"')
    (mdir / "lenet5_sgd_none" / "metrics.json").write_text(data)
    graphs.draw(mdir)
    assert "(incomplete)" in (mdir / "report.md").read_text()


def two_model_matrix(root: Path) -> Path:
    mdir = root / "results" / "20260101-000000-x"
    write_json(mdir / "matrix.json", {"id": mdir.name, "runs": []})
    fake_run(mdir, "lenet5_sgd_none", "sgd", "none", 0.0, 97.0)
    fake_run(mdir, "lenet5_sgd_magnitude_50", "sgd", "magnitude", 0.5, 96.0)
    fake_run(mdir, "gpt2_adamw_none", "adamw", "none", 0.0, 40.0, lm=True)
    return mdir


def test_drawing_writes_inside_the_matrix_directory_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mdir = two_model_matrix(tmp_path)
    before = {p for p in tmp_path.rglob("*")}
    assert graphs.main(["--results", str(mdir)]) == 0
    written = {p for p in tmp_path.rglob("*")} - before
    assert written and all(mdir in p.parents for p in written), sorted(written)
    assert not (tmp_path / "images").exists()


def test_publish_copies_a_chosen_matrix_graphs_to_images(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mdir = two_model_matrix(tmp_path)
    assert graphs.main(["--publish"]) == 2  # which matrix to publish is never a default
    assert "make publish-graphs RESULTS=results/<id>" in capsys.readouterr().err
    assert graphs.main(["--publish", "--results", str(mdir)]) == 2  # nothing drawn yet: says how to draw
    assert f"make update-graphs RESULTS={mdir}" in capsys.readouterr().err
    assert not (tmp_path / "images").exists()

    graphs.draw(mdir)
    assert graphs.main(["--publish", "--results", str(mdir)]) == 0
    for model in ("lenet5", "gpt2"):
        for name in graphs.GRAPHS:
            published = tmp_path / "images" / model / f"{name}.png"
            assert published.read_bytes() == (mdir / "graphs" / f"{model}_{name}.png").read_bytes()
    assert "published 6 graphs" in capsys.readouterr().out


def test_publish_needs_a_matrix_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert graphs.main(["--publish", "--results", str(tmp_path / "nowhere")]) == 2
    assert "matrix.json is missing" in capsys.readouterr().err
    with pytest.raises(MatrixError):
        graphs.publish(two_model_matrix(tmp_path), tmp_path / "images")


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_graphs_does_not_import_the_matrix_runner():
    """The runner draws graphs; graphs find matrices through lib.results, so the two never import each other."""
    assert "scripts.matrix" not in imported_modules(Path(graphs.__file__))
