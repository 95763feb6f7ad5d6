"""make trackio-test / wandb-test: the self-test logs a synthetic run and reads it back."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_tracking_runs import tracker_env

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("what", ["trackio", "wandb"])
def test_selftest_logs_and_reads_back(tmp_path, what):
    proc = subprocess.run(
        [sys.executable, "-m", "lib.tracking.selftest", what, "--tracking-dir", str(tmp_path / "t")],
        cwd=REPO, env=tracker_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{what} OK" in proc.stdout and "5 steps" in proc.stdout


def test_selftest_reports_an_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "lib.tracking.selftest", "trackio", "--tracking-dir", str(blocker / "t")],
        cwd=REPO, env=tracker_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1 and "is not writable" in proc.stderr


def test_view_without_projects_says_what_to_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lib.tracking.selftest", "view", "--tracking-dir", str(tmp_path / "t")],
        cwd=REPO, env=tracker_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1 and "make trackio-test" in proc.stderr


def test_make_targets_are_listed():
    text = (REPO / "make" / "tracking.mk").read_text()
    for target in ("trackio-test", "wandb-test", "trackio-view"):
        assert f"## {target}:" in text and f"\n{target}: $(DEPS)\n\t$(Q)$(PYTHON) -m lib.tracking.selftest" in text
