"""`make menuconfig` driven in tmux like a person would: change a value, save, find it in .config."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import uuid

import pytest

from conftest import wait_until
from lib import config

pytestmark = pytest.mark.e2e


class Screen:
    def __init__(self, command: str, cwd):
        assert shutil.which("tmux"), "tmux is needed for this test (apt-get install tmux; CI's .ci/run installs it)"
        self.name = f"menuconfig-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "110", "-y", "40", "-c", str(cwd), command], check=True)

    def text(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True).stdout

    def wait(self, needle: str) -> None:
        """Until the screen shows `needle` (bounded by conftest.PATIENCE_S against a hang)."""
        screens = []

        def shown() -> bool:
            screens[:] = [self.text()]
            return needle in screens[0]

        try:
            wait_until(shown, f"'{needle}' on the screen")
        except pytest.fail.Exception:
            pytest.fail(f"'{needle}' never appeared; screen was:\n{screens[0] if screens else ''}")

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def test_menuconfig_changes_a_value_and_saves_it(make, monkeypatch):
    assert make("defconfig").returncode == 0
    command = " ".join(shlex.quote(a) for a in make.argv("menuconfig")) + "; echo MENUCONFIG-EXITED; sleep infinity"
    screen = Screen(command, make.root)
    try:
        screen.wait("Pruning experiment harness")
        screen.keys("/")
        screen.wait("Jump to symbol")
        screen.keys("LENET5_EPOCHS")
        screen.wait('LENET5_EPOCHS(=12) "Epochs"')
        screen.keys("Enter")  # jump to it
        screen.wait("(12) Epochs")
        screen.keys("Enter")  # edit it
        screen.wait("Range: 1-10000")
        screen.keys("BSpace", "BSpace", "7", "Enter")
        screen.wait("(7) Epochs")
        screen.keys("S")
        screen.wait("Filename to save configuration to")
        screen.keys("Enter")
        screen.wait("Configuration saved to '.config'")
        screen.keys("Enter", "Q")
        screen.wait("MENUCONFIG-EXITED")
    finally:
        screen.close()
    monkeypatch.chdir(make.root)  # Kconfig's source paths are relative to the tree
    assert config.load(".config")["LENET5_EPOCHS"] == 7
    assert "CONFIG_LENET5_EPOCHS=7" in (make.root / ".config").read_text()
