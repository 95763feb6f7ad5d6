"""The pruning comparison matrix through make: every method and variant runs, survives SIGKILL + continue."""

from __future__ import annotations

import subprocess

import pytest
import torch

from conftest import kill_group, wait_until
from lib.results import read_json

pytestmark = pytest.mark.e2e

RUNS = [
    "lenet5_adamw_none",
    "lenet5_adamw_magnitude_70",
    "lenet5_adamw_movement_70",
    "lenet5_adamwprune_none",
    *[f"lenet5_adamwprune_{v}_state_70" for v in ("bitter1", "bitter3", "bitter4", "bitter7", "bitter8", "bitter9")],
]
KILLED = "lenet5_adamwprune_bitter4_state_70"


def masks(run_dir):
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["pruner"]["masks"]


def test_pruning_compare_runs_through_make_and_continue(make):
    assert make("defconfig-lenet5-pruning-compare").returncode == 0
    proc = make.popen("EPOCHS=2", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = make.root / "results"

    def first_epoch_done() -> bool:
        return any((read_json(p) or {}).get("history") for p in results.glob(f"*/{KILLED}/metrics.json"))

    try:
        wait_until(first_epoch_done, "the first epoch of the bitter4 run", proc)
    finally:
        kill_group(proc)
    killed_dir = next(results.glob(f"*/{KILLED}"))
    matrix_dir = killed_dir.parent
    before = {name: (matrix_dir / name / "metrics.json").read_bytes() for name in RUNS[: RUNS.index(KILLED)]}
    masks_at_kill = masks(killed_dir)

    result = make("continue")
    assert result.returncode == 0, result.stderr[-2000:]
    for name, data in before.items():  # completed runs untouched
        assert (matrix_dir / name / "metrics.json").read_bytes() == data, name
    for name in RUNS:
        run, metrics = read_json(matrix_dir / name / "run.json"), read_json(matrix_dir / name / "metrics.json")
        assert run["status"] == "completed" and "final" in metrics, name
        target = 0.0 if name.endswith("_none") else 0.7
        assert abs(metrics["final"]["sparsity_prunable"] - target) <= 1e-3, name
    resumed = read_json(killed_dir / "run.json")
    assert resumed["attempt"] == 2 and resumed["budget"] == {"extension_percent": 30.0, "unit": "epochs", "base": 2, "trained": 3}
    assert "resumed from" in (killed_dir / "train.log").read_text()
    final = masks(killed_dir)
    for name, kept_at_kill in masks_at_kill.items():
        assert not (final[name] & ~kept_at_kill).any(), f"{name}: an entry pruned before the kill came back"
    assert read_json(killed_dir / "metrics.json")["variant"] == "bitter4"
