"""scripts.defconfig: strict loading, close-name hints, savedefconfig round trip."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lib import config
from scripts import defconfig

from conftest import REPO


@pytest.fixture(autouse=True)
def at_repo(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("name", sorted(defconfig.available()))
def test_defconfig_then_savedefconfig_reproduces_it(name, tmp_path, monkeypatch):
    dot_config = tmp_path / ".config"
    monkeypatch.setenv("KCONFIG_CONFIG", str(dot_config))
    monkeypatch.setattr(defconfig, "DEFCONFIG_RECORD", tmp_path / "defconfig.json")
    assert defconfig.main([name]) == 0
    minimal = tmp_path / "defconfig"
    # kconfiglib's own savedefconfig, as `make savedefconfig` runs it
    subprocess.run(
        [sys.executable, "-m", "savedefconfig", "--kconfig", "Kconfig", "--out", str(minimal)],
        cwd=REPO,
        env={"KCONFIG_CONFIG": str(dot_config), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    assert minimal.read_text() == defconfig.available()[name].read_text()


def test_quickstart_is_the_default(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KCONFIG_CONFIG", str(tmp_path / ".config"))
    monkeypatch.setattr(defconfig, "DEFCONFIG_RECORD", tmp_path / "defconfig.json")
    assert defconfig.main([]) == 0
    assert "defconfigs/quickstart" in capsys.readouterr().out
    values = config.load(tmp_path / ".config")
    assert values["MODEL_LENET5"] and values["LENET5_DATASET_DIGITS"]


def test_unknown_name_lists_close_names(capsys):
    assert defconfig.main(["quikstart"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown defconfig 'quikstart'" in err and "quickstart" in err


@pytest.mark.parametrize(
    "body, symbol",
    [
        ("CONFIG_MODEL_LENET5=y\nCONFIG_BOGUS_SYMBOL=y\n", "BOGUS_SYMBOL"),
        ("CONFIG_MODEL_LENET5=y\nCONFIG_LENET5_EPOCHS=0\n", "LENET5_EPOCHS"),  # outside its range
        ("CONFIG_MODEL_LENET5=y\nCONFIG_LENET5_BATCH_SIZE=big\n", "LENET5_BATCH_SIZE"),
        ("CONFIG_MODEL_LENET5=y\nCONFIG_SPARSITIES=\"0.5\"\n", "SPARSITIES"),  # needs a pruning method
    ],
)
def test_bad_defconfig_names_the_symbol_and_writes_nothing(body, symbol, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad"
    bad.write_text(body)
    dot_config = tmp_path / ".config"
    dot_config.write_text("CONFIG_MODEL_LENET5=y\n")
    monkeypatch.setenv("KCONFIG_CONFIG", str(dot_config))
    monkeypatch.setattr(defconfig, "available", lambda: {"bad": bad})
    assert defconfig.main(["bad"]) == 2
    err = capsys.readouterr().err
    assert symbol in err and err.startswith("error: ") and err.count("\n") == 1
    assert dot_config.read_text() == "CONFIG_MODEL_LENET5=y\n"  # the existing .config is untouched
