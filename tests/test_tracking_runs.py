"""Training runs with trackers: local trackio and offline wandb files read back, warnings, no secrets.

The fast tests train LeNet-5 on 64 random images for 2 epochs in a child
process (trackio reads its directory when first imported, so each run gets a
fresh interpreter); the e2e test goes through `make defconfig-X
TRACKER=trackio,wandb` and `make` in a copy of the repository. wandb's
offline run is checked through its public files (the run directory and the
run file `wandb sync` uploads, searched for names), never by decoding
wandb's record format; the values wandb is handed are checked in
tests/test_tracking.py.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lib import classifier, monitor, run as lifecycle, tracking
from conftest import PATIENCE_S
from lib.results import read_json

REPO = Path(__file__).resolve().parent.parent
SECRET = "wandb-test-secret-0123456789abcdef0123456789"

TINY_FIT = """
import sys, torch
from torch.utils.data import TensorDataset
from lenet5 import train
from lenet5.model import LeNet5
from lib import classifier, run
g = torch.Generator().manual_seed(0)
data = TensorDataset(torch.randn(64, 1, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
args = train.parse_args(sys.argv[1:])
fit = lambda a: classifier.fit(a, lambda: LeNet5(num_classes=10), data, data, model_name="lenet5", dataset="synthetic")
sys.exit(run.execute(fit, args))
"""


def tracker_env(tmp_path: Path) -> dict:
    """No network, every tool's files under tmp_path, and a secret that must not leak."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "TRACKIO_"))}
    env.update(
        WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wandb-env"), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"), WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
        WANDB_API_KEY=SECRET, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO),
    )
    return env


def tiny_run(tmp_path: Path, *flags: str) -> tuple[subprocess.CompletedProcess, Path]:
    run_dir = tmp_path / "results" / "20260101-000000-test" / "lenet5_sgd_none"
    argv = [sys.executable, "-c", TINY_FIT, "--epochs", "2", "--batch-size", "16", "--output-dir", str(run_dir),
            "--tracking-dir", str(tmp_path / "tracking"), "--monitor-interval", "0.05", *flags]
    proc = subprocess.run(argv, cwd=REPO, env=tracker_env(tmp_path), capture_output=True, text=True, timeout=PATIENCE_S)
    return proc, run_dir


def wandb_offline_run(tracking_dir: Path) -> tuple[Path, bytes]:
    """(directory, run file bytes) of the one offline wandb run under a tracking directory."""
    [run_dir] = (tracking_dir / "wandb").glob("offline-run-*")
    [run_file] = run_dir.glob("run-*.wandb")
    return run_dir, run_file.read_bytes()


def trackio_rows(db: Path, run_name: str) -> tuple[list[dict], dict, list[dict]]:
    """(metric rows, config, system rows) of one run, read from trackio's SQLite file with sqlite3."""
    import json

    con = sqlite3.connect(db)
    try:
        metrics = [json.loads(m) | {"step": s} for s, m in con.execute(
            "SELECT step, metrics FROM metrics WHERE run_name = ? ORDER BY step", (run_name,))]
        cfg = con.execute("SELECT config FROM configs WHERE run_name = ?", (run_name,)).fetchone()
        system = [json.loads(m) for (m,) in con.execute("SELECT metrics FROM system_metrics WHERE run_name = ?", (run_name,))]
    finally:
        con.close()
    return metrics, json.loads(cfg[0]) if cfg else {}, system


def all_text(*roots: Path) -> str:
    out = []
    for root in roots:
        for p in root.rglob("*") if root.exists() else []:
            if p.is_file():
                out.append(p.read_bytes().decode("latin-1"))
    return "\n".join(out)


def test_trackio_and_offline_wandb_record_the_runs_metrics_config_and_memory(tmp_path):
    proc, run_dir = tiny_run(tmp_path, "--tracker", "trackio,wandb")
    assert proc.returncode == 0, proc.stderr
    metrics = read_json(run_dir / "metrics.json")
    run_json = read_json(run_dir / "run.json")
    assert run_json["status"] == "completed" and not run_json.get("warnings"), run_json
    history = metrics["history"]
    project = tracking.project_name("lenet5")

    # trackio: a SQLite database per project under <tracking-dir>/trackio
    db = tmp_path / "tracking" / "trackio" / f"{project}.db"
    assert db.is_file()
    rows, cfg, system = trackio_rows(db, "lenet5_sgd_none")
    epochs = [r for r in rows if "val_accuracy" in r]
    assert [r["step"] for r in epochs] == [1, 2]
    assert [r["val_accuracy"] for r in epochs] == [h["val_accuracy"] for h in history]
    assert [r["train_loss"] for r in epochs] == pytest.approx([h["train_loss"] for h in history])
    assert any(r.get("final/peak_memory_mib") == metrics["final"]["peak_memory_mib"] for r in rows)
    assert cfg["run_id"] == "lenet5_sgd_none" and cfg["model"] == "lenet5" and cfg["lr"] == 0.003
    assert system and all("memory/rss_mib" in s for s in system)

    # wandb: one offline run under <tracking-dir>/wandb whose run file names the run, its project, group,
    # config and every kind of value the trainer logged
    _, data = wandb_offline_run(tmp_path / "tracking")
    for name in ("lenet5_sgd_none", project, "20260101-000000-test", "run_id", "optimizer",
                 "epoch", "val_accuracy", "train_loss", "memory/rss_mib", "final/accuracy", "final/peak_memory_mib"):
        assert name.encode() in data, name

    # memory.json sits beside them and its peak is metrics.json's
    doc = read_json(run_dir / "memory.json")
    assert monitor.validate(doc) == []
    assert doc["summary"]["peak_memory_mib"] <= metrics["final"]["peak_memory_mib"] + 1
    assert set(doc["summary"]["phases"]) == {"train", "eval"}

    # the API key in the environment appears in no output: run dir, trackio db, wandb files, logs
    assert SECRET not in all_text(tmp_path / "results", tmp_path / "tracking", tmp_path / "wandb-env") + proc.stdout + proc.stderr


def fit_in_process(tmp_path: Path, *flags: str) -> tuple[int, Path]:
    """A 1-epoch LeNet-5 run on 32 random images in this process; (exit code, run dir)."""
    import torch
    from torch.utils.data import TensorDataset

    from lenet5 import train
    from lenet5.model import LeNet5

    data = TensorDataset(torch.randn(32, 1, 32, 32), torch.randint(0, 10, (32,)))
    run_dir = tmp_path / "lenet5_sgd_none"
    args = train.parse_args(["--epochs", "1", "--batch-size", "16", "--output-dir", str(run_dir), "--monitor", "cpu",
                             "--monitor-interval", "0.05", *flags])
    code = lifecycle.execute(lambda a: classifier.fit(a, LeNet5, data, data, model_name="lenet5", dataset="synthetic"), args)
    return code, run_dir


def test_bad_tracker_input_warns_in_run_json_and_training_completes(tmp_path, capsys):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    code, run_dir = fit_in_process(tmp_path, "--tracker", "trackio,bogus", "--tracking-dir", str(blocked / "sub"))
    assert code == 0
    run_json = read_json(run_dir / "run.json")
    assert run_json["status"] == "completed" and read_json(run_dir / "metrics.json")["final"]
    warnings = run_json["warnings"]
    assert len(warnings) == 2
    assert "unknown tracker 'bogus'" in warnings[0]
    assert "trackio disabled" in warnings[1] and "is not writable" in warnings[1]
    err = capsys.readouterr().err
    for w in warnings:  # each said once on stderr, for the train.log
        assert err.count(w) == 1


def test_wandb_not_installed_warns_and_training_continues(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails as if it were not installed
    code, run_dir = fit_in_process(tmp_path, "--tracker", "wandb", "--tracking-dir", str(tmp_path / "tracking"))
    assert code == 0
    run_json = read_json(run_dir / "run.json")
    assert run_json["status"] == "completed"
    [warning] = run_json["warnings"]
    assert warning.startswith("tracking: wandb disabled: wandb selected but not importable")
    assert warning.endswith("pip install wandb; continuing without it")
    assert monitor.validate(read_json(run_dir / "memory.json")) == []


def test_a_failed_run_still_closes_its_monitor(tmp_path, monkeypatch):
    def diverge(*a, **k):
        raise lifecycle.TrainingDiverged("loss became nan at epoch 1, step 1")

    monkeypatch.setattr(classifier, "train_one_epoch", diverge)
    code, run_dir = fit_in_process(tmp_path)
    assert code == 1 and read_json(run_dir / "run.json")["status"] == "failed"
    doc = read_json(run_dir / "memory.json")
    assert monitor.validate(doc) == [] and "train" in doc["summary"]["phases"]


TRACKED_DEFCONFIG = """CONFIG_MODEL_LENET5=y
CONFIG_LENET5_EPOCHS=1
CONFIG_LENET5_BATCH_SIZE=64
CONFIG_OPTIMIZER_SGD=y
CONFIG_PRUNING_NONE=y
CONFIG_MATRIX_AUTO_GRAPHS=n
"""


@pytest.mark.e2e
def test_matrix_with_tracker_override_records_to_trackio_and_wandb(make, tmp_path):
    (make.root / "defconfigs" / "tracked").write_text(TRACKED_DEFCONFIG)
    make.env.update({k: v for k, v in tracker_env(tmp_path).items() if k.startswith(("WANDB_", "HF_"))})
    loaded = make("defconfig-tracked", "TRACKER=wandb,trackio")
    assert loaded.returncode == 0, loaded.stderr
    dot_config = (make.root / ".config").read_text()
    assert "CONFIG_TRACKER_TRACKIO=y" in dot_config and "CONFIG_TRACKER_WANDB=y" in dot_config
    result = make("all")
    assert result.returncode == 0, result.stdout + result.stderr
    matrix_dir = next((make.root / "results").glob("*/matrix.json")).parent
    run_dir = matrix_dir / "lenet5_sgd_none"
    history = read_json(run_dir / "metrics.json")["history"]
    project = tracking.project_name("lenet5", make.root)
    rows, cfg, _ = trackio_rows(make.root / "tracking" / "trackio" / f"{project}.db", "lenet5_sgd_none")
    assert [r["val_accuracy"] for r in rows if "val_accuracy" in r] == [h["val_accuracy"] for h in history]
    _, data = wandb_offline_run(make.root / "tracking")
    assert b"lenet5_sgd_none" in data and b"val_accuracy" in data and matrix_dir.name.encode() in data
    assert SECRET not in all_text(make.root / "results", make.root / "tracking")  # matrix.json included
    bad = make("defconfig-tracked", "TRACKER=tensorboard")
    assert bad.returncode != 0 and "unknown tracker tensorboard" in bad.stderr and "valid: trackio, wandb, none" in bad.stderr
