"""make trackio-test / wandb-test: the self-test logs a synthetic run and passes only on evidence read back."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PATIENCE_S
from lib.tracking import selftest
from tests.test_tracking_runs import tracker_env

REPO = Path(__file__).resolve().parent.parent


def run_selftest(tmp_path: Path, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lib.tracking.selftest", *args],
        cwd=REPO, env={**tracker_env(tmp_path), **env}, capture_output=True, text=True, timeout=PATIENCE_S,
    )


def test_trackio_selftest_reads_its_steps_back(tmp_path):
    proc = run_selftest(tmp_path, "trackio", "--tracking-dir", str(tmp_path / "t"))
    assert proc.returncode == 0, proc.stderr
    assert "trackio OK: 5 steps" in proc.stdout


def test_offline_wandb_selftest_reads_the_run_back_from_wandb_and_its_files(tmp_path):
    proc = run_selftest(tmp_path, "wandb", "--tracking-dir", str(tmp_path / "t"))
    assert proc.returncode == 0, proc.stderr
    assert "wandb OK (offline)" in proc.stdout and "epoch 5, train_loss 0.2, final/accuracy 50" in proc.stdout
    [run_dir] = (tmp_path / "t" / "wandb").glob("offline-run-*")
    assert f"wandb sync {run_dir}" in proc.stdout


def test_wandb_selftest_without_evidence_fails_and_says_what_is_missing(tmp_path):
    """WANDB_MODE=disabled: wandb accepts every call and writes nothing; that is no evidence, not OK."""
    proc = run_selftest(tmp_path, "wandb", "--tracking-dir", str(tmp_path / "t"), WANDB_MODE="disabled")
    assert proc.returncode == 1 and "OK" not in proc.stdout
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: wandb self-test: wandb (mode disabled) left no evidence of run selftest-")
    assert "no run directory" in line


def test_file_evidence_names_each_missing_piece(tmp_path):
    run_dir, run_file = tmp_path / "offline-run-x", tmp_path / "offline-run-x" / "run-x.wandb"
    assert selftest.file_gaps(run_dir, run_file, "r") == [f"no run directory {run_dir}"]
    run_dir.mkdir()
    assert selftest.file_gaps(run_dir, run_file, "r") == [f"no run file {run_file}"]
    run_file.write_bytes(b":W&B header only, the run r and epoch")
    gaps = selftest.file_gaps(run_dir, run_file, "r")
    assert gaps == [f"{run_file} does not name {k!r}" for k in ("train_loss", "val_accuracy", "memory/rss_mib", "final/accuracy")]
    run_file.write_bytes(b"r " + " ".join(selftest.WANDB_KEYS).encode())
    assert selftest.file_gaps(run_dir, run_file, "r") == []
    (run_dir / "files").mkdir()
    (run_dir / "files" / "wandb-summary.json").write_text(json.dumps({**selftest.WANDB_SUMMARY, "final/accuracy": 10.0}))
    assert selftest.file_gaps(run_dir, run_file, "r") == [f"{run_dir / 'files' / 'wandb-summary.json'}: final/accuracy: expected 50.0, found 10.0"]


@pytest.mark.parametrize("summary, gaps", [
    (dict(selftest.WANDB_SUMMARY), []),
    ({}, ["epoch: expected 5, found None", "train_loss: expected 0.2, found None", "final/accuracy: expected 50.0, found None"]),
    ({**selftest.WANDB_SUMMARY, "epoch": 4}, ["epoch: expected 5, found 4"]),
])
def test_summary_evidence(summary, gaps):
    assert selftest.summary_gaps(summary) == gaps


def test_selftest_reports_an_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_selftest(tmp_path, "trackio", "--tracking-dir", str(blocker / "t"))
    assert proc.returncode == 1 and "is not writable" in proc.stderr


def test_view_without_projects_says_what_to_run(tmp_path):
    proc = run_selftest(tmp_path, "view", "--tracking-dir", str(tmp_path / "t"))
    assert proc.returncode == 1 and "make trackio-test" in proc.stderr


def test_make_targets_are_listed():
    text = (REPO / "make" / "tracking.mk").read_text()
    for target in ("trackio-test", "wandb-test", "trackio-view"):
        assert f"## {target}:" in text and f"\n{target}: $(DEPS)\n\t$(Q)$(PYTHON) -m lib.tracking.selftest" in text
