"""Prune -> fine-tune end to end through make: the lenet5-prune-finetune defconfig (a fine-tuning run killed and
continued), children of a failed parent, and children on Slurm waiting for their parent's task."""

from __future__ import annotations

import subprocess

import pytest

from conftest import kill_group, wait_until
from lib.results import read_json
from scripts import evidence, slurm
from slurm_cluster import slurm_cluster  # noqa: F401  (the session fixture)
from test_runner_e2e import comparable, epochs_done, error_lines, only_matrix, status_of, uninterrupted

pytestmark = pytest.mark.e2e

PARENT = "lenet5_sgd_none"
CHILDREN = ["lenet5_sgd_none_ft_magnitude_40", "lenet5_sgd_none_ft_magnitude_70",
            "lenet5_sgd_none_ft_magnitude_channel_40", "lenet5_sgd_none_ft_magnitude_channel_70"]


def status(run_dir) -> str | None:
    return (read_json(run_dir / "run.json") or {}).get("status")


def test_the_defconfig_prunes_and_fine_tunes_the_dense_run_and_a_killed_child_continues(make):
    root = make.root
    assert make("defconfig-lenet5-prune-finetune").returncode == 0
    dry = make("dry-run")
    assert dry.returncode == 0 and "9 runs" in dry.stdout
    listed = [ln.split()[0] for ln in dry.stdout.splitlines() if ln.startswith("lenet5_")]
    assert listed[-4:] == CHILDREN and f"{CHILDREN[0]}  (after {PARENT})" in dry.stdout

    proc = make.popen("all", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (root / "results").is_dir() and any((root / "results").glob("*/matrix.json")), "matrix.json", proc)
        mdir = only_matrix(root)
        victim = mdir / CHILDREN[0]
        wait_until(lambda: epochs_done(victim) >= 1 and status(victim) == "running", "an epoch of the first child", proc)
        assert status(mdir / PARENT) == "completed"
    finally:
        kill_group(proc)
    killed_at = epochs_done(victim)
    assert 1 <= killed_at < 6 and status(victim) == "running"
    assert status_of(make, victim.name) == "interrupted (runner gone)"
    parent_files = {p.name: p.read_bytes() for p in (mdir / PARENT).iterdir() if p.is_file()}

    resumed = make("continue")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"{victim.name}/checkpoint.pt at epoch {killed_at}\n" in (victim / "train.log").read_text()  # "resumed from ..."
    assert read_json(victim / "run.json")["attempt"] == 2 and (victim / "train.log.1").exists()
    assert {p.name: p.read_bytes() for p in (mdir / PARENT).iterdir() if p.is_file()} == parent_files

    dense = read_json(mdir / PARENT / "metrics.json")["final"]
    rows = []
    for child in CHILDREN:
        record, metrics = read_json(mdir / child / "run.json"), read_json(mdir / child / "metrics.json")
        assert record["status"] == "completed"
        assert record["parent"] == {"run_id": PARENT, "path": str((mdir / PARENT).relative_to(root)), "checkpoint": "best.pt"}
        assert record["finetune"]["base"] == 12 and record["finetune"]["trained"] == 6  # 50 % of the quick start's 12
        assert metrics["parent"] == PARENT and len(metrics["history"]) == 6
        target = metrics["target_sparsity"]
        assert all(h["sparsity"] == pytest.approx(target, abs=0.01) for h in metrics["history"])  # one-shot: from epoch 1
        before = metrics["final"]["pruned_before_finetune"]
        assert before["sparsity"] == pytest.approx(target, abs=0.01)
        rows.append((child, before["val_accuracy"], metrics["final"]["accuracy"], metrics["final"]["best_accuracy"]))
    print(f"\ndense parent {PARENT}: accuracy {dense['accuracy']:.2f} %, best {dense['best_accuracy']:.2f} %")
    for child, before, final, best in rows:
        print(f"{child}: after pruning {before:.2f} %, after fine-tuning {final:.2f} % (best {best:.2f} %)")
    # Channel pruning to 70 % costs accuracy at once; fine-tuning wins it back.
    child, before, final, _ = rows[3]
    assert final > before, rows

    # The killed child, continued, is the child run without interruption.
    assert comparable(read_json(victim / "metrics.json")) == uninterrupted(root, mdir, victim)

    # The graphs keep every granularity and the fine-tuned runs apart: one series each.
    series = {c.key: c.series for c in evidence.load(mdir).configs("lenet5")}
    assert series["lenet5_sgd_magnitude_40"] == "sgd magnitude"
    assert series["lenet5_sgd_magnitude_channel_40"] == "sgd magnitude channel"
    assert series[CHILDREN[0]] == "sgd magnitude fine-tuned" and series[CHILDREN[2]] == "sgd magnitude channel fine-tuned"
    assert (mdir / "report.md").exists() and (mdir / "graphs" / "lenet5_metric_vs_sparsity.png").exists()


FAILING_PARENT = """CONFIG_MODEL_LENET5=y
CONFIG_LENET5_DATASET_MNIST=y
CONFIG_OPTIMIZER_SGD=y
CONFIG_PRUNING_NONE=y
CONFIG_PRUNING_MAGNITUDE=y
CONFIG_SPARSITIES="0.5"
CONFIG_FINETUNE=y
CONFIG_MATRIX_AUTO_GRAPHS=n
"""


def test_children_of_a_failed_parent_are_not_run_and_wait_for_it(make):
    """MNIST without network: the parent fails; its child is skipped with one reason, and status says what it waits for."""
    root = make.root
    (root / ".config").write_text(FAILING_PARENT)
    make.env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
                    HTTPS_PROXY="http://127.0.0.1:9")
    result = make("all")
    assert result.returncode != 0
    mdir = only_matrix(root)
    child = "lenet5_sgd_none_ft_magnitude_50"
    assert status(mdir / PARENT) == "failed" and status(mdir / child) is None
    assert f"(skipped: parent {PARENT} failed)" in result.stdout
    assert any(f"did not complete" in ln and child in ln for ln in error_lines(result.stderr))
    assert status_of(make, child) == f"pending  waits for parent {PARENT} (failed)"
    again = make("continue")  # the parent is not retried without RETRY_FAILED=1, so its child still waits
    assert f"(skipped: parent {PARENT} failed)" in again.stdout and status(mdir / child) is None


SLURM_FINETUNE = """CONFIG_MODEL_LENET5=y
CONFIG_LENET5_EPOCHS=4
CONFIG_LENET5_BATCH_SIZE=64
CONFIG_OPTIMIZER_SGD=y
CONFIG_PRUNING_NONE=y
CONFIG_PRUNING_MAGNITUDE=y
CONFIG_PRUNING_GRANULARITY_CHANNEL=y
CONFIG_SPARSITIES="0.5"
CONFIG_FINETUNE=y
CONFIG_FINETUNE_LENGTH_PERCENT=50
CONFIG_MATRIX_AUTO_GRAPHS=n
"""


def test_on_slurm_children_wait_for_their_parent_s_task(slurm_cluster, make):  # noqa: F811
    root = make.root
    (root / ".config").write_text(SLURM_FINETUNE)
    submitted = make("all", "SCHEDULER=slurm", "JOBS=2")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    mdir = only_matrix(root)
    first, second = slurm.submissions(mdir)
    assert first["run_ids"] == [PARENT, "lenet5_sgd_magnitude_50", "lenet5_sgd_magnitude_channel_50"]
    assert second["run_ids"] == ["lenet5_sgd_none_ft_magnitude_50", "lenet5_sgd_none_ft_magnitude_channel_50"]
    assert second["after"] == f"{first['job_id']}_0" and f"--dependency=afterok:{first['job_id']}_0" in second["sbatch"]
    wait_until(lambda: not slurm.active(mdir), "the end of every task")
    parent = read_json(mdir / PARENT / "run.json")
    for child in second["run_ids"]:
        record = read_json(mdir / child / "run.json")
        assert record["status"] == "completed" and record["parent"]["run_id"] == PARENT
        assert record["started"] >= parent["finished"]
