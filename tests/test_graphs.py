"""scripts.graphs and scripts.figures: every figure with something to show, none empty, drawn into the matrix directory only; publishing."""

from __future__ import annotations

import ast
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from fake_matrix import fake_run, matrix_json, seeded_matrix

from lib.results import MatrixError
from scripts import figures, graphs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL = set(figures.FIGURES) - {"inference"}  # drawn for benchmarked runs only: tests/test_bench_inference.py
NEEDS_PRUNING = {"metric_vs_sparsity", "sparsity", "layer_sparsity"}


@pytest.fixture
def inspected(monkeypatch) -> dict:
    """name of each saved figure -> whether every visible axes of it holds drawn data (lines, bars, images, ...)."""
    seen, save = {}, figures._save

    def check(fig, path: Path) -> bool:
        visible = [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]
        seen[path.stem] = bool(visible) and all(ax.lines or ax.patches or ax.collections or ax.images for ax in visible)
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", check)
    return seen


def names(drawn: list[Path], model: str) -> set[str]:
    return {p.stem[len(model) + 1:] for p in drawn if p.name.startswith(f"{model}_")}


def not_uniform(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC and float(np.std(matplotlib.image.imread(path)[..., :3])) > 0.01


def test_every_figure_is_drawn_for_a_seeded_pruning_matrix_and_none_is_empty(tmp_path, inspected):
    mdir = seeded_matrix(tmp_path / "m")
    drawn = graphs.draw(mdir)
    assert names(drawn, "lenet5") == ALL and names(drawn, "gpt2") == ALL
    assert all(inspected.values()) and set(inspected) == {p.stem for p in drawn}, inspected
    assert all(not_uniform(p) for p in drawn)
    assert {p.parent for p in drawn} == {mdir / "graphs"}


def test_a_dense_matrix_has_no_sparsity_figures_and_no_memory_json_no_memory_over_time(tmp_path, inspected):
    mdir = tmp_path / "m"
    for opt in ("sgd", "adamw"):
        for seed in (1, 2):
            fake_run(mdir, f"lenet5_{opt}_none_s{seed}", opt, "none", 0.0, 95.0 + seed, seed=seed, memory=False)
    drawn = graphs.draw(mdir)
    assert names(drawn, "lenet5") == ALL - NEEDS_PRUNING - {"memory_time"}
    assert all(inspected.values()), inspected


def test_a_figure_left_without_data_is_removed_on_redrawing(tmp_path):
    mdir = tmp_path / "m"
    fake_run(mdir, "lenet5_sgd_none", "sgd", "none", 0.0, 95.0)
    fake_run(mdir, "lenet5_sgd_magnitude_50", "sgd", "magnitude", 0.5, 94.0)
    graphs.draw(mdir)
    assert (mdir / "graphs" / "lenet5_sparsity.png").exists()
    (mdir / "lenet5_sgd_magnitude_50" / "metrics.json").unlink()
    graphs.draw(mdir)
    assert not (mdir / "graphs" / "lenet5_sparsity.png").exists()


def test_incomplete_runs_are_drawn_and_marked(tmp_path):
    mdir = tmp_path / "m"
    fake_run(mdir, "lenet5_sgd_none", "sgd", "none", 0.0, 97.0)
    fake_run(mdir, "lenet5_sgd_magnitude_50", "sgd", "magnitude", 0.5, 96.0, done=False)
    drawn = graphs.draw(mdir)
    assert mdir / "graphs" / "lenet5_sparsity.png" in drawn  # the history of the running run
    report = (mdir / "report.md").read_text()
    assert "| lenet5_sgd_magnitude_50 | running | 1 | (incomplete) |" in report


def two_model_matrix(root: Path) -> Path:
    mdir = root / "results" / "20260101-000000-x"
    fake_run(mdir, "lenet5_sgd_none", "sgd", "none", 0.0, 97.0)
    fake_run(mdir, "lenet5_sgd_magnitude_50", "sgd", "magnitude", 0.5, 96.0)
    fake_run(mdir, "gpt2_adamw_none", "adamw", "none", 0.0, 40.0, lm=True)
    matrix_json(mdir, [("lenet5_sgd_none", "lenet5", 1), ("lenet5_sgd_magnitude_50", "lenet5", 1), ("gpt2_adamw_none", "gpt2", 1)])
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

    drawn = graphs.draw(mdir)
    assert graphs.main(["--publish", "--results", str(mdir)]) == 0
    for path in drawn:
        model, name = path.stem.split("_", 1)
        assert (tmp_path / "images" / model / f"{name}.png").read_bytes() == path.read_bytes()
    assert f"published {len(drawn)} graphs" in capsys.readouterr().out


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
    for module in ("graphs", "figures", "report", "evidence"):
        assert "scripts.matrix" not in imported_modules(Path(graphs.__file__).parent / f"{module}.py"), module
