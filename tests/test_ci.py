"""CI entry point and `make test`: system packages only in .ci/run, exactly the README's test command, no empty pass."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PATIENCE_S, REPO


def stub(directory: Path, name: str, log: Path) -> None:
    """An executable `name` that appends its name and arguments to `log` and succeeds."""
    path = directory / name
    path.write_text(f'#!/bin/bash\necho "{name} $*" >> {log}\n')
    path.chmod(0o755)


def ci_run(tmp_path: Path, *, tools: tuple[str, ...], ci: bool) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run .ci/run with only the stubbed `tools` on PATH; (result, the stubs' calls in order)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for name in tools:
        stub(bin_dir, name, log)
    env = {"PATH": str(bin_dir), **({"CI": "true"} if ci else {})}
    result = subprocess.run(["/bin/bash", str(REPO / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=PATIENCE_S)
    return result, log.read_text().splitlines() if log.exists() else []


def readme_test_command() -> str:
    block = re.search(r"## Two commands.*?```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    [line] = [ln for ln in block.splitlines() if "test" in ln]
    return line.split("#")[0].strip()


SLURM = ("sbatch", "slurmctld", "munged")  # what slurm-wlm and munge bring for tests/slurm_cluster.py


def test_ci_installs_tmux_and_slurm_when_missing_then_runs_the_readme_test_command(tmp_path):
    result, calls = ci_run(tmp_path, tools=("apt-get", "make"), ci=True)
    assert result.returncode == 0, result.stderr
    assert readme_test_command() == "make test"
    assert calls == ["apt-get update -qq", "apt-get install -y -qq tmux slurm-wlm munge", "make test"]


def test_ci_installs_only_what_is_missing(tmp_path):
    result, calls = ci_run(tmp_path, tools=("apt-get", "make", "tmux"), ci=True)
    assert result.returncode == 0 and calls == ["apt-get update -qq", "apt-get install -y -qq slurm-wlm munge", "make test"]


def test_ci_with_the_packages_installs_nothing(tmp_path):
    result, calls = ci_run(tmp_path, tools=("apt-get", "make", "tmux", *SLURM), ci=True)
    assert result.returncode == 0 and calls == ["make test"]


def test_outside_ci_missing_tmux_is_an_error_not_an_install(tmp_path):
    result, calls = ci_run(tmp_path, tools=("apt-get", "make"), ci=False)
    assert result.returncode == 1 and calls == []
    assert result.stderr.startswith("error: missing system packages: tmux") and "apt-get install tmux" in result.stderr


def test_no_make_target_installs_system_packages():
    recipes = [(REPO / "Makefile").read_text(), *(p.read_text() for p in sorted((REPO / "make").glob("*.mk")))]
    for text in recipes:
        for word in ("apt-get", "apt ", "yum", "dnf", "sudo"):
            assert word not in text, word


@pytest.mark.e2e
def test_make_test_fails_when_no_test_is_collected():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "PYTEST_"))}
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), f"PYTHON={sys.executable}", "test",
         "PYTEST_ARGS=tests/test_results.py -k no_test_is_called_this -p no:cacheprovider"],
        capture_output=True, text=True, env=env, timeout=PATIENCE_S,
    )
    assert result.returncode != 0
    assert "Error 1" in result.stderr  # pytest's "no tests collected" (5) is turned into a failure (1)
