"""scripts.report: the per-model configuration tables (the end-of-matrix summary), report.md with figures and provenance."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fake_matrix import fake_run, matrix_json, seeded_matrix

from lib.results import write_json
from scripts import evidence, figures, graphs, report

REPO = Path(__file__).resolve().parent.parent


def row(text: str, key: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {key} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_table_has_mean_std_n_delta_with_interval_memory_time_and_throughput(tmp_path):
    text = report.table(seeded_matrix(tmp_path / "m"))
    assert "### lenet5: validation accuracy (%), higher is better" in text
    assert "### gpt2: validation perplexity, lower is better" in text
    header = row(text, "configuration")
    assert header[1:] == ["final validation accuracy (%)", "Δ vs baseline [95 % CI]", "baseline", "best (at)", "sparsity (%)",
                          "peak memory (MiB)", "train time (s)", "training throughput (samples/s)"]
    cells = row(text, "lenet5_sgd_magnitude_90")
    assert cells[1] == "80.20 ± 0.10 (n=3)"
    assert cells[2].startswith("-10.00 [") and cells[3] == "lenet5_sgd_none"  # the same optimizer's dense run
    assert cells[4] == "80.20 (epoch 4)" and cells[5] == "90.0 ± 0.0"
    assert cells[6] == "420 ± 10" and cells[7] == "4.2 ± 0.1" and cells[8] == "1002 ± 1"
    assert row(text, "lenet5_adamwprune_bitter7_state_90")[2:4] == ["-", "-"]  # no adamwprune dense run
    assert row(text, "gpt2_adamw_movement_50")[1] == "50.00 ± 1.00 (n=3)"


def test_two_seeds_give_no_interval(tmp_path):
    text = report.table(seeded_matrix(tmp_path / "m", seeds=(1, 2)))
    assert row(text, "lenet5_sgd_magnitude_90")[2] == "-10.00"


def test_a_configured_baseline(tmp_path):
    text = report.table(seeded_matrix(tmp_path / "m", config={"MATRIX_BASELINE": "lenet5_adamw_none"}))
    cells = row(text, "lenet5_sgd_magnitude_90")
    assert cells[2].startswith("-15.00 [") and cells[3] == "lenet5_adamw_none"


def test_runs_that_did_not_complete_are_listed_with_their_error(tmp_path):
    mdir = tmp_path / "m"
    fake_run(mdir, "lenet5_sgd_none", "sgd", "none", 0.0, 97.0)
    write_json(mdir / "lenet5_adam_none" / "run.json", {"status": "failed", "error": "loss became nan | at step 3"})
    matrix_json(mdir, [("lenet5_sgd_none", "lenet5", 1), ("lenet5_adam_none", "lenet5", 1), ("lenet5_adamw_none", "lenet5", 1)])
    text = report.table(mdir)
    assert "### runs that did not complete (2)" in text
    assert "| lenet5_adam_none | failed | loss became nan / at step 3 |" in text
    assert "| lenet5_adamw_none | pending |  |" in text


def test_the_report_has_provenance_figures_and_every_run(tmp_path):
    mdir = seeded_matrix(tmp_path / "m", seeds=(1, 2))
    drawn = graphs.draw(mdir)
    text = (mdir / "report.md").read_text()
    for line in ("- config hash: abc123", "- commit: deadbeef (dirty (diff in git.diff))",
                 "- versions: python 3.11.7, torch 2.9.0, torchvision 0.24.0", "- devices: cpu", "- overrides: --epochs 2"):
        assert line in text
    for path in drawn:
        assert f"![{path.stem}](graphs/{path.name})" in text
    assert f"{figures.FIGURES['memory_time'][1].capitalize()}." in text
    assert "| lenet5_adamw_magnitude_90_s2 | completed | 2 | 90.20 |" in text


def test_the_summary_loads_neither_matplotlib_nor_the_figures(tmp_path):
    mdir = seeded_matrix(tmp_path / "m", seeds=(1,))
    code = (f"import sys; from scripts import report; t = report.table({str(mdir)!r}); "
            "assert 'lenet5_sgd_none' in t; assert 'matplotlib' not in sys.modules, 'matplotlib'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_empty_matrix_says_so(tmp_path):
    mdir = tmp_path / "m"
    matrix_json(mdir, [])
    assert report.table(mdir) == "no run has metrics yet"
    assert evidence.load(mdir).models() == []


E2E_CONFIG = """CONFIG_MODEL_LENET5=y
CONFIG_LENET5_EPOCHS=2
CONFIG_OPTIMIZER_ADAMW=y
CONFIG_OPTIMIZER_ADAMWPRUNE=y
CONFIG_PRUNING_NONE=y
CONFIG_PRUNING_MAGNITUDE=y
CONFIG_PRUNING_STATE=y
CONFIG_PRUNING_STATE_BITTER7=y
CONFIG_SPARSITIES="0.7"
CONFIG_SEEDS="1 2"
CONFIG_MONITOR_CPU=y
CONFIG_MONITOR_INTERVAL="0.1"
"""


@pytest.mark.e2e
def test_a_two_seed_matrix_with_memory_monitoring_gets_every_figure_and_the_full_report(make, monkeypatch):
    """LeNet-5 digits, 2 epochs, dense + magnitude + bitter7, seeds 1 and 2, the CPU memory monitor: through make."""
    (make.root / ".config").write_text(E2E_CONFIG)
    result = make("all")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    mdir = next((make.root / "results").glob("*/matrix.json")).parent
    assert "| lenet5_adamwprune_bitter7_state_70 | " in result.stdout  # the summary is the report's table
    assert all((mdir / r["run_id"] / "memory.json").exists() for r in evidence.load(mdir).meta["runs"])

    seen = {}
    save = figures._save

    def check(fig, path):
        visible = [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]
        seen[path.stem] = bool(visible) and all(ax.lines or ax.patches or ax.collections or ax.images for ax in visible)
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", check)
    drawn = graphs.draw(mdir)  # again, in this process, to look at each figure's axes
    assert {p.stem for p in drawn} == {f"lenet5_{name}" for name in figures.FIGURES if name != "inference"}  # no benchmark
    assert all(seen.values()), seen

    text = (mdir / "report.md").read_text()
    for key in ("lenet5_adamw_none", "lenet5_adamw_magnitude_70", "lenet5_adamwprune_none", "lenet5_adamwprune_bitter7_state_70"):
        cells = row(text, key)
        assert " ± " in cells[1] and cells[1].endswith("(n=2)"), cells
        assert " ± " in cells[6] and " ± " in cells[7] and float(cells[8].split(" ± ")[0]) > 0, cells  # memory, time, throughput
    assert row(text, "lenet5_adamwprune_bitter7_state_70")[3] == "lenet5_adamwprune_none"
