"""Every optimizer trains the real LeNet-5 trainer end to end (subprocess, digits, one epoch)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lib import optim
from lib.results import read_json

from conftest import PATIENCE_S, REPO


@pytest.mark.e2e
@pytest.mark.parametrize("optimizer", optim.OPTIMIZERS)
def test_lenet5_trains_with_each_optimizer(optimizer, tmp_path):
    out = tmp_path / f"lenet5_{optimizer}_none"
    cmd = [sys.executable, "-m", "lenet5.train", "--optimizer", optimizer, "--epochs", "1", "--batch-size", "64",
           "--device", "cpu", "--monitor", "off", "--lr-schedule", "warmup_cosine", "--output-dir", str(out)]
    if optimizer == "sgd":
        cmd += ["--lr", "0.1"]  # LeNet-5's default 0.003 is an Adam-family rate
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=PATIENCE_S)
    assert done.returncode == 0, done.stderr
    assert read_json(out / "run.json")["status"] == "completed"
    metrics = read_json(out / "metrics.json")
    assert metrics["optimizer"] == optimizer
    assert metrics["optimizer_base"] == ("adamw" if optimizer == "adamwprune" else None)  # AdamWPrune's default base
    history = metrics["history"]
    assert history[-1]["train_loss"] < 2.2 and metrics["final"]["accuracy"] > 30.0  # 10 classes: chance is 10 %
    assert history[-1]["lr"] < 1e-3  # the schedule reached the trainer: cosine down to --lr-min
