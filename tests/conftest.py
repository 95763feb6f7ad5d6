"""Shared fixtures: a throw-away copy of the repository to drive `make` in, one torch thread, and waiting.

Tests wait for conditions, never for a fixed time: `wait_until` polls a
condition, `Make` waits for make to exit, `kill_group` for a process group
to vanish. Each wait is bounded by PATIENCE_S only so that a hang ends; the
bound is far above what any wait needs on a loaded machine, and no test
passes or fails on how fast something happened.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PATIENCE_S = 1800  # the bound on any single wait: reaching it means a hang, not a slow machine


def wait_until(predicate, what: str, proc: subprocess.Popen | None = None, bound: float = PATIENCE_S) -> None:
    """Poll `predicate` until it holds; fail if `proc` ends first or `bound` seconds pass (a hang)."""
    deadline = time.monotonic() + bound
    while not predicate():
        if proc is not None and proc.poll() is not None:
            if predicate():
                return
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"still no {what} after {bound} s: something hangs")
        time.sleep(0.05)


def more_samples(mon, n: int = 2) -> None:
    """Until a memory monitor's sampler thread has taken `n` more samples than now."""
    start = mon.count
    wait_until(lambda: mon.count >= start + n, f"{n} more monitor samples")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group `proc` leads (started with start_new_session) and wait until all of it is gone.

    Waiting for the leader is not enough: its children (the matrix runner,
    the trainer) may still be exiting, holding the results lock, when a
    test's next `make continue` starts.
    """
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_until(lambda: not group_alive(proc.pid), f"end of process group {proc.pid} after SIGKILL")


def pytest_sessionfinish(session, exitstatus):
    # pytest exits 5 when it collected no test: for this project that is a failure.
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def source_files() -> list[str]:
    """Tracked files plus new files git does not ignore (what a clone would hold, and work in progress)."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


@pytest.fixture
def one_thread():
    """One intra-op torch thread: tiny tensors (LeNet-5, test models) only gain contention from a second one on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """A copy of the source tree, without .venv, results or .config."""
    dest = tmp_path / "repo"
    for rel in source_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    return dest


class Make:
    """Run make targets in a repository copy with this interpreter (no venv creation)."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KCONFIG_", "MAKE"))}

    def argv(self, *targets: str) -> list[str]:
        return ["make", "--no-print-directory", "-C", str(self.root), f"PYTHON={sys.executable}", *targets]

    def __call__(self, *targets: str) -> subprocess.CompletedProcess:
        """Run make to its end (bounded by PATIENCE_S against a hang)."""
        return subprocess.run(self.argv(*targets), capture_output=True, text=True, env=self.env, timeout=PATIENCE_S)

    def popen(self, *targets: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*targets), env=self.env, start_new_session=True, **kw)


@pytest.fixture
def make(repo_copy) -> Make:
    return Make(repo_copy)
