"""scripts/compare.py: joining two matrices by configuration, the regression rule, bad input, and make compare end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lib.results import write_json
from scripts import compare
from scripts.evidence import load
from test_runner_e2e import KILL_CONFIG

EPOCHS = 3


def fabricate(root: Path, matrix_id: str, finals: dict[str, list[float]], metric: str = "accuracy",
              defconfig: str = "custom", status: dict[str, str] | None = None) -> Path:
    """A matrix directory in the formats the runner and the trainers write: {configuration: final metric per seed}."""
    matrix_dir = root / matrix_id
    status = status or {}
    runs = []
    for config, values in finals.items():
        model, optimizer, pruning = config.split("_")[:3]
        for seed, value in enumerate(values, start=1):
            run_id = f"{config}_s{seed}" if len(values) > 1 else config
            spec = {"model": model, "optimizer": optimizer, "pruning": pruning, "sparsity": None, "seed": seed,
                    "variant": None, "multi_seed": len(values) > 1}
            runs.append({"run_id": run_id, "spec": spec, "argv": ["python", "-m", f"{model}.train"]})
            run_dir = matrix_dir / run_id
            x = "epoch" if metric == "accuracy" else "iter"
            history = [{x: e, "train_loss": 1.0 / e, "val_loss": 1.0 / e, f"val_{metric}": value * e / EPOCHS,
                        "sparsity": 0.0, "lr": 0.01, "elapsed_s": float(e)} for e in range(1, EPOCHS + 1)]
            write_json(run_dir / "metrics.json", {
                "schema": 1, "run_id": run_id, "model": model, "dataset": "digits", "optimizer": optimizer,
                "variant": None, "pruning": pruning, "target_sparsity": 0.0, "seed": seed, "history": history,
                "final": {metric: value, f"best_{metric}": value, "best_at": EPOCHS, "sparsity_prunable": 0.0,
                          "sparsity_global": 0.0, "train_time_s": 3.0, "peak_memory_mib": 100.0, "params": 10,
                          "nonzero_params": 10},
            })
            write_json(run_dir / "run.json", {"schema": 1, "run_id": run_id, "status": status.get(run_id, "completed"),
                                              "seed": seed})
    write_json(matrix_dir / "matrix.json", {
        "schema": 1, "id": matrix_id, "created": "2026-01-01T00:00:00+00:00", "defconfig": defconfig,
        "config": {"MODEL_LENET5": True, "LENET5_EPOCHS": 12}, "config_hash": "0" * 64, "overrides": {},
        "git": {"commit": "a" * 40, "dirty": False, "diff_file": None}, "host": "vm", "devices": ["cpu"],
        "torch": "2", "runs": runs,
    })
    return matrix_dir


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """An empty results directory, the one `results_dir()` finds (no .config here)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KCONFIG_CONFIG", raising=False)
    (tmp_path / "results").mkdir()
    return Path("results")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = compare.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_identical_matrices_pass_and_write_compare_md_and_figures(results, capsys):
    finals = {"lenet5_sgd_none": [97.2], "lenet5_adam_none": [98.6]}
    a = fabricate(results, "20260101-000000-custom", finals)
    b = fabricate(results, "20260101-000100-custom", finals)
    code, out, _ = run(capsys, str(a), str(b))
    assert code == 0
    assert "2 configurations, 0 regressed" in out
    dest = b / f"compare-{a.name}"
    text = (dest / "compare.md").read_text()
    assert "| lenet5_sgd_none | 97.20 (n=1) | 97.20 (n=1) | +0.00 | 0.50 | within |" in text
    assert "**0 of 2 configurations regressed**" in text
    for name in ("lenet5_curves.png", "lenet5_final.png"):
        assert (dest / name).stat().st_size > 0 and f"]({name})" in text


def test_one_seed_against_the_tolerance(results, capsys):
    a = fabricate(results, "20260101-000000-custom", {"lenet5_sgd_none": [97.0], "lenet5_adam_none": [98.0], "lenet5_adamw_none": [98.0]})
    b = fabricate(results, "20260101-000100-custom", {"lenet5_sgd_none": [96.0], "lenet5_adam_none": [97.7], "lenet5_adamw_none": [99.0]})
    code, out, err = run(capsys, str(a), str(b))
    assert code == 1
    verdicts = {ln.split()[0]: ln.split()[-1] for ln in out.splitlines()[:-1]}
    assert verdicts == {"lenet5_sgd_none": "regressed", "lenet5_adam_none": "within", "lenet5_adamw_none": "improved"}
    assert "lenet5_sgd_none" in one_error(err) and "regressed" in err
    assert "**1 of 3 configurations regressed: lenet5_sgd_none**" in (b / f"compare-{a.name}" / "compare.md").read_text()
    assert run(capsys, str(a), str(b), "--tolerance", "1.5")[0] == 0  # a 1-point drop is within 1.5 points


def test_perplexity_higher_is_worse_and_the_tolerance_is_relative(results, capsys):
    a = fabricate(results, "20260101-000000-custom", {"gpt2_adamw_none": [200.0], "gpt2_adamw_magnitude": [300.0]}, metric="perplexity")
    b = fabricate(results, "20260101-000100-custom", {"gpt2_adamw_none": [202.0], "gpt2_adamw_magnitude": [290.0]}, metric="perplexity")
    code, out, _ = run(capsys, str(a), str(b))
    assert code == 1  # +2 on 200 is 1 %, over 0.5 %
    rows, _ = compare.join(load(a), load(b), 0.5)
    by_config = {r.config: r for r in rows}
    assert by_config["gpt2_adamw_none"].threshold == pytest.approx(1.0)
    assert by_config["gpt2_adamw_none"].verdict == "regressed"
    assert by_config["gpt2_adamw_magnitude"].verdict == "improved"
    assert "gpt2: final validation perplexity" in (b / f"compare-{a.name}" / "compare.md").read_text()
    assert run(capsys, str(a), str(b), "--tolerance", "1")[0] == 0  # 1 % of 200 is exactly 2: not more


def test_seeds_the_spread_decides(results, capsys):
    a = fabricate(results, "20260101-000000-custom", {"lenet5_sgd_none": [90.0, 92.0, 94.0]})
    noise = fabricate(results, "20260101-000100-custom", {"lenet5_sgd_none": [89.0, 91.0, 93.0]})
    worse = fabricate(results, "20260101-000200-custom", {"lenet5_sgd_none": [84.0, 86.0, 88.0]})
    [row], _ = compare.join(load(a), load(noise), 0.5)
    assert row.change == pytest.approx(-1.0)
    assert row.pooled_std == pytest.approx(2.0)  # both sides' std is 2
    assert row.threshold == pytest.approx(4.0)  # 2 x pooled std, over the 0.5 tolerance
    assert row.verdict == "within" and row.cell("A") == "92.00 ± 2.00 (n=3)"
    assert run(capsys, str(a), str(noise))[0] == 0
    assert run(capsys, str(a), str(worse))[0] == 1  # -6 is beyond 4


def test_spread_with_one_seed_on_one_side_and_tolerance_as_floor(results):
    a = fabricate(results, "20260101-000000-custom", {"lenet5_sgd_none": [90.0]})
    b = fabricate(results, "20260101-000100-custom", {"lenet5_sgd_none": [88.0, 90.0]})
    same = fabricate(results, "20260101-000200-custom", {"lenet5_sgd_none": [89.9, 89.9]})
    [row], _ = compare.join(load(a), load(b), 0.5)
    assert row.pooled_std == pytest.approx(math.sqrt(2))  # B's two runs alone: one degree of freedom
    assert row.threshold == pytest.approx(2 * math.sqrt(2)) and row.verdict == "within"  # -1 is within the spread
    [row], _ = compare.join(load(a), load(same), 0.5)
    assert row.pooled_std == 0 and row.threshold == 0.5 and row.verdict == "within"


def test_runs_in_one_matrix_or_incomplete_are_listed_not_compared(results, capsys):
    a = fabricate(results, "20260101-000000-custom", {"lenet5_sgd_none": [97.0], "lenet5_adam_none": [98.0], "lenet5_adamw_none": [98.0]})
    b = fabricate(results, "20260101-000100-custom", {"lenet5_sgd_none": [97.0], "lenet5_adam_none": [90.0], "lenet5_sgd_magnitude": [95.0]},
                  status={"lenet5_adam_none": "failed"})
    code, out, _ = run(capsys, str(a), str(b))
    assert code == 0  # the failed run is not a regression: it is not compared
    assert "1 configurations, 0 regressed" in out
    text = (b / f"compare-{a.name}" / "compare.md").read_text()
    assert "| lenet5_adam_none | no completed run in B |" in text
    assert "| lenet5_adamw_none | only in A |" in text
    assert "| lenet5_sgd_magnitude | only in B |" in text


def test_defconfig_names_pick_the_newest_matrices(results, capsys):
    old = fabricate(results, "20260101-000000-quickstart", {"lenet5_sgd_none": [97.0]}, defconfig="quickstart")
    fabricate(results, "20260101-000100-custom", {"lenet5_sgd_none": [50.0]})
    new = fabricate(results, "20260101-000200-quickstart", {"lenet5_sgd_none": [90.0]}, defconfig="quickstart")
    assert compare.pair("quickstart", "custom", results) == (new, results / "20260101-000100-custom")
    assert compare.pair("quickstart", "quickstart", results) == (old, new)
    code, _, _ = run(capsys, "quickstart", "quickstart")
    assert code == 1 and (new / f"compare-{old.name}" / "compare.md").is_file()


def test_out_goes_anywhere_inside_the_results_directory_only(results, capsys):
    a = fabricate(results, "20260101-000000-custom", {"lenet5_sgd_none": [97.0]})
    b = fabricate(results, "20260101-000100-custom", {"lenet5_sgd_none": [97.0]})
    assert run(capsys, str(a), str(b), "--out", "results/comparisons/x")[0] == 0
    assert Path("results/comparisons/x/compare.md").is_file()
    code, _, err = run(capsys, str(a), str(b), "--out", "elsewhere")
    assert code == 2 and "outside the results directory" in one_error(err)
    assert not Path("elsewhere").exists()


@pytest.mark.parametrize("argv, message", [
    ([], "give two matrices"),
    (["results/20260101-000000-custom", "results/nope"], "results/nope: no such matrix directory"),
    (["results", "results/20260101-000000-custom"], "results has no matrix.json"),
    (["quickstart", "results/20260101-000000-custom"], "no matrix of defconfig 'quickstart' under results/; matrices there: custom"),
    (["custom", "custom"], "custom names one matrix under results/"),
    (["results/20260101-000000-custom", "custom"], "A and B are the same matrix"),
    (["results/20260101-000000-custom", "results/20260101-000000-custom", "--tolerance", "-1"], "--tolerance -1"),
])
def test_bad_input_is_one_line_and_exit_2(results, capsys, argv, message):
    fabricate(results, "20260101-000000-custom", {"lenet5_sgd_none": [97.0]})
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in one_error(err)


def test_no_configuration_in_common_is_bad_input(results, capsys):
    a = fabricate(results, "20260101-000000-custom", {"lenet5_sgd_none": [97.0]})
    b = fabricate(results, "20260101-000100-custom", {"lenet5_adam_none": [97.0]})
    code, _, err = run(capsys, str(a), str(b))
    assert code == 2 and "no configuration with completed runs in common" in one_error(err)
    assert not (b / f"compare-{a.name}").exists()


@pytest.mark.e2e
def test_make_compare_passes_identical_matrices_and_flags_fewer_epochs(make):
    root = make.root
    (root / ".config").write_text(KILL_CONFIG)  # two runs; every matrix here sets its EPOCHS
    matrices = []
    for epochs in ("4", "4", "1"):
        done = make("all", f"EPOCHS={epochs}")
        assert done.returncode == 0, done.stderr
        matrices.append(next(p.parent for p in (root / "results").glob("*/matrix.json") if p.parent not in matrices))
    first, twin, short = (f"results/{m.name}" for m in matrices)

    same = make("compare", f"A={first}", f"B={twin}")
    assert same.returncode == 0, same.stderr
    assert "2 configurations, 0 regressed" in same.stdout
    text = (matrices[1] / f"compare-{matrices[0].name}" / "compare.md").read_text()
    assert text.count("| +0.00 |") == 2  # one machine, one configuration: bit-identical metrics

    worse = make("compare", f"A={first}", f"B={short}")
    assert worse.returncode != 0
    assert "error: 2 configuration(s) regressed: lenet5_sgd_magnitude_50, lenet5_sgd_none" in worse.stderr
    text = (matrices[2] / f"compare-{matrices[0].name}" / "compare.md").read_text()
    assert "- `--epochs (override): 4 -> 1`" in text  # what differs, named
    for name in ("lenet5_curves.png", "lenet5_final.png"):
        assert (matrices[2] / f"compare-{matrices[0].name}" / name).stat().st_size > 0

    by_name = make("compare", "A=custom", "B=custom")  # the two newest of one defconfig: the twin, then the short one
    assert by_name.returncode != 0 and f"compare {matrices[1].name} -> {matrices[2].name}" in by_name.stdout
