"""Shared fixtures: a throw-away copy of the repository to drive `make` in, and one torch thread."""

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


def kill_group(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGKILL the process group `proc` leads (started with start_new_session) and wait until all of it is gone.

    Waiting for the leader is not enough: its children (the matrix runner,
    the trainer) may still be exiting, holding the results lock, when a
    test's next `make continue` starts.
    """
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise TimeoutError(f"process group {proc.pid} still alive {timeout} s after SIGKILL")


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

    def __call__(self, *targets: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*targets), capture_output=True, text=True, env=self.env, timeout=timeout)

    def popen(self, *targets: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*targets), env=self.env, start_new_session=True, **kw)


@pytest.fixture
def make(repo_copy) -> Make:
    return Make(repo_copy)
