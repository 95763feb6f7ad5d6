"""lib.config: typed values through kconfiglib, the flag table, strict loading."""

from __future__ import annotations

import pytest

from lib import config, matrix

from conftest import REPO


@pytest.fixture(autouse=True)
def at_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def prompted_symbols(kconf) -> set[str]:
    return {s.name for s in kconf.unique_defined_syms if any(node.prompt for node in s.nodes)}


def test_every_prompted_symbol_is_consumed():
    consumed = config.flag_symbols() | matrix.axis_symbols() | matrix.RUNNER_SYMBOLS
    unused = prompted_symbols(config.kconfig()) - consumed
    assert not unused, f"prompted Kconfig symbols that no code reads: {sorted(unused)}"


def test_flag_table_names_only_existing_symbols():
    defined = {s.name for s in config.kconfig().unique_defined_syms}
    stale = (config.flag_symbols() | matrix.axis_symbols() | matrix.RUNNER_SYMBOLS) - defined
    assert not stale, f"code reads symbols that Kconfig does not define: {sorted(stale)}"


def test_matrix_checkboxes_default_to_n():
    kconf = config.kconfig()
    values = config.values(kconf)  # nothing loaded: pure defaults
    on = [s for s in matrix.axis_symbols() if values.get(s)]
    assert on == [], f"matrix members that default to y: {on}"


def test_values_are_typed(tmp_path):
    cfg = tmp_path / ".config"
    cfg.write_text("CONFIG_MODEL_LENET5=y\nCONFIG_LENET5_EPOCHS=7\nCONFIG_LENET5_LEARNING_RATE=\"0.05\"\n")
    v = config.load(cfg)
    assert v["MODEL_LENET5"] is True and v["OPTIMIZER_SGD"] is False
    assert v["LENET5_EPOCHS"] == 7 and isinstance(v["LENET5_EPOCHS"], int)
    assert v["LENET5_LEARNING_RATE"] == 0.05
    assert v["DATA_DIR"] == "data"
    assert v["SGD_MOMENTUM"] is None  # depends on OPTIMIZER_SGD, which is off


def test_unknown_symbol_is_an_error_naming_it(tmp_path):
    cfg = tmp_path / "bad"
    cfg.write_text("CONFIG_MODEL_LENET5=y\nCONFIG_NO_SUCH_THING=y\n")
    with pytest.raises(config.ConfigError, match="NO_SUCH_THING"):
        config.load(cfg)


def test_malformed_value_is_an_error_naming_the_symbol(tmp_path):
    cfg = tmp_path / "bad"
    cfg.write_text("CONFIG_MODEL_LENET5=y\nCONFIG_LENET5_EPOCHS=many\n")
    with pytest.raises(config.ConfigError, match="LENET5_EPOCHS"):
        config.load(cfg)


def test_float_symbol_must_parse(tmp_path):
    cfg = tmp_path / "bad"
    cfg.write_text("CONFIG_MODEL_LENET5=y\nCONFIG_LENET5_LEARNING_RATE=\"fast\"\n")
    with pytest.raises(config.ConfigError, match="LENET5_LEARNING_RATE"):
        config.load(cfg)


def test_missing_config_says_what_to_run(tmp_path):
    with pytest.raises(config.ConfigError, match="make defconfig"):
        config.load(tmp_path / ".config")


def test_trainer_argv_follows_the_table(tmp_path):
    cfg = tmp_path / ".config"
    cfg.write_text("CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_SGD=y\nCONFIG_LENET5_DATASET_MNIST=y\nCONFIG_DEVICE_CPU=y\n")
    argv = config.trainer_argv(config.load(cfg), "lenet5")
    pairs = dict(zip(argv[::2], argv[1::2]))
    assert pairs["--dataset"] == "mnist"
    assert pairs["--device"] == "cpu"
    assert pairs["--epochs"] == "12"
    assert pairs["--momentum"] == "0.9"
    # Another model's settings never reach this one, even where they share a flag name.
    other = {f.symbol for f in config.FLAGS if isinstance(f, config.Flag) and f.model not in (None, "lenet5")}
    values = dict(config.load(cfg), **{s: 99 for s in other})
    argv = config.trainer_argv(values, "lenet5")
    assert argv.count("--epochs") == 1 and argv[argv.index("--epochs") + 1] == "12"


def test_diff_names_changed_symbols():
    old = {"A": 1, "B": True}
    new = {"A": 2, "B": True, "C": "x"}
    assert config.diff(old, new) == ["CONFIG_A: 1 -> 2", "CONFIG_C: None -> 'x'"]


def test_hash_ignores_file_layout(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_SGD=y\n")
    b.write_text("# comment\nCONFIG_OPTIMIZER_SGD=y\n\nCONFIG_MODEL_LENET5=y\n")
    assert config.config_hash(config.load(a)) == config.config_hash(config.load(b))
