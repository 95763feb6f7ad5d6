"""The tiny RATIO ablation through make: every step runs and learns, the ratio step keeps MLP:attention at 2.5, and a
SIGKILLed step continues exactly."""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from conftest import kill_group, wait_until
from gpt2 import ablation
from lib.results import is_done, read_json
from test_runner_e2e import comparable

pytestmark = pytest.mark.e2e

STEP_IDS = ["gpt2_baseline_adamwprune_none", "gpt2_golden_adamwprune_none", "gpt2_mla_adamwprune_none",
            "gpt2_ra_adamwprune_none", "gpt2_rmlp_adamwprune_none", "gpt2_ratio_adamwprune_bitter9_state_50"]
RATIO_ID = STEP_IDS[-1]
def test_tiny_ratio_ablation_runs_every_step_and_continues_exactly(make):
    assert make("defconfig-gpt2-tiny-ratio-ablation").returncode == 0
    done = make("all", "JOBS=2")  # two runs at once, one thread each, on the two cores
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [whole] = [p.parent for p in make.root.glob("results/*/matrix.json")]
    planned = read_json(whole / "matrix.json")["runs"]
    assert [r["run_id"] for r in planned] == STEP_IDS
    assert [r["spec"]["step"] for r in planned] == list(ablation.NAMES)

    for run_id in STEP_IDS:
        assert is_done(whole / run_id), run_id
        m = read_json(whole / run_id / "metrics.json")
        first, last = m["history"][0], m["history"][-1]
        assert last["iter"] == 40 and last["val_loss"] < first["val_loss"], run_id  # every step learns
        print(f"{run_id}: val_loss {first['val_loss']:.3f} (iter {first['iter']}) -> {last['val_loss']:.3f}, "
              f"perplexity {m['final']['perplexity']:.1f}, {m['final']['train_time_s']:.0f} s")

    ratio = read_json(whole / RATIO_ID / "metrics.json")
    pruning = ratio["final"]["pruning"]
    record = pruning["ratio"]
    assert (pruning["method"], pruning["variant"]) == ("state", "bitter9")
    assert pruning["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert (record["target_ratio"], record["tolerance"]) == (2.5, 0.2)
    assert record["achieved_ratio"] == pytest.approx(2.5, abs=record["tolerance"])
    print(f"{RATIO_ID}: achieved MLP:attention {record['achieved_ratio']:.4f}, sparsity {pruning['achieved_sparsity']:.4f}")
    summary = (whole / "summary.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in summary.splitlines() if line.startswith("| gpt2_")}
    assert list(rows) == STEP_IDS and rows[RATIO_ID][3] == STEP_IDS[0]  # each step against the baseline step

    # The ratio step again in a new matrix, killed (make, runner and trainer at once) once its masks exist, then continued.
    first_id = whole.name[:15]  # a new matrix needs a new id, and ids have one-second resolution
    wait_until(lambda: f"{datetime.now():%Y%m%d-%H%M%S}" != first_id, "the next second for a new matrix id")
    only = f"ONLY={RATIO_ID}"
    proc = make.popen("all", only, "JOBS=2", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def second() -> Path | None:
        found = [p for p in make.root.glob(f"results/*/{RATIO_ID}") if p.parent != whole]
        return found[0] if found else None

    def pruned_evaluations() -> list[dict]:
        history = (read_json(second() / "metrics.json") or {}).get("history", []) if second() else []
        return [h for h in history if h["sparsity"] > 0]

    try:
        wait_until(pruned_evaluations, "an evaluation of the second ratio run with masks", proc)
    finally:
        kill_group(proc)
    killed = second()
    assert not is_done(killed) and read_json(killed / "run.json")["status"] == "running"
    assert not any((killed.parent / run_id).exists() for run_id in STEP_IDS[:-1])  # ONLY ran the ratio step alone

    resumed = make("continue", only, "JOBS=2")  # one thread, as the run it is compared with
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert is_done(killed) and read_json(killed / "run.json")["attempt"] == 2 and (killed / "train.log.1").exists()
    assert comparable(read_json(killed / "metrics.json")) == comparable(ratio)
