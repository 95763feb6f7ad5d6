"""lib.config: typed values through kconfiglib, the naming rule from symbols to flags, strict loading."""

from __future__ import annotations

import importlib

import kconfiglib
import pytest

from lib import config, matrix

from conftest import REPO

# Trainer defaults that differ from the shared Kconfig default on purpose: the matrix always passes the
# flag, so they matter only to a trainer started by hand.
TRAINER_OWN_DEFAULTS = {
    ("gpt2", "--weight-decay"): "nanoGPT's 0.1 for hand-started GPT-2 runs",
    ("gpt2", "--block-size"): "None: the model size's own context length, as Kconfig's two defaults",
    ("gpt2", "--mla-latent-dim"): "None: the model size's own latent size (32 for tiny, else 128), as Kconfig's two defaults",
    ("resnet50", "--image-size"): "0: the dataset's own size (224 for an image folder, else 32), as Kconfig's two defaults",
}


@pytest.fixture(autouse=True)
def at_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def prompted_symbols(kconf) -> set[str]:
    return {s.name for s in kconf.unique_defined_syms if any(node.prompt for node in s.nodes)}


def parser_of(model: str):
    return importlib.import_module(f"{model}.train").get_args_parser()


def dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def kconfig_default(kconf, setting: config.Setting):
    """The setting's Kconfig default as the flag's value, with only its model checked (None: no default).

    The defaults as written (`orig_defaults`): a default counts even where the menu it sits in is hidden.
    """
    kconf.unset_values()
    if setting.model:
        kconf.syms[f"MODEL_{setting.model.upper()}"].set_value("y")
    if setting.kind in ("choice", "group"):
        if setting.kind == "group":
            return None
        choice = kconf.syms[setting.symbols[0]].choice
        member = next(m for m, cond in choice.orig_defaults if kconfiglib.expr_value(cond))
        return setting.values[setting.symbols.index(member.name)]
    sym = kconf.syms[setting.symbols[0]]
    text = next((v.str_value for v, cond in sym.orig_defaults if kconfiglib.expr_value(cond)), None)
    if setting.kind == "switch":
        return text == "y"
    if text is None:
        return None
    if sym.orig_type == kconfiglib.INT:
        return int(text)
    return float(text) if config.is_real(sym) else (text or None)  # an empty string: no value, as the flag's None


def test_every_prompted_symbol_is_consumed():
    consumed = config.flag_symbols() | matrix.matrix_symbols()
    unused = prompted_symbols(config.kconfig()) - consumed
    assert not unused, f"prompted Kconfig symbols that no code reads: {sorted(unused)}"


def test_the_matrix_reads_only_existing_symbols():
    defined = {s.name for s in config.kconfig().unique_defined_syms}
    stale = (matrix.axis_symbols() | matrix.RUNNER_SYMBOLS) - defined
    assert not stale, f"lib.matrix reads symbols that Kconfig does not define: {sorted(stale)}"


@pytest.mark.parametrize("model", sorted(matrix.MODELS.values()))
def test_every_setting_is_a_flag_of_its_trainer_with_the_kconfig_type(model):
    """The naming rule's flag exists in the trainer's parser (no abbreviation) and parses the symbol's type."""
    parser, kconf = parser_of(model), config.kconfig()
    for setting in config.settings():
        if setting.model not in (None, model):
            continue
        sym = kconf.syms[setting.symbols[0]]
        if setting.kind == "switch":
            argv, want = [setting.flag], True
        elif setting.kind in ("choice", "group"):
            argv, want = [setting.flag, setting.values[-1]], setting.values[-1]
        elif sym.orig_type == kconfiglib.INT:
            argv, want = [setting.flag, "3"], 3
        elif config.is_real(sym):
            argv, want = [setting.flag, "0.25"], 0.25
        else:
            argv, want = [setting.flag, "some/text"], "some/text"
        try:
            parsed = vars(parser.parse_args(argv))
        except SystemExit:
            pytest.fail(f"{model}.train does not accept {' '.join(argv)} (CONFIG_{sym.name} by the naming rule)")
        got = parsed[dest(setting.flag)]
        types = (int, float) if type(want) is int else (type(want),)  # an int symbol may feed a float flag
        assert got == want and type(got) in types, (
            f"{setting.flag} of {model}.train parses {argv[-1]!r} as {got!r}, "
            f"not as CONFIG_{sym.name}'s {type(want).__name__}"
        )


@pytest.mark.parametrize("model", sorted(matrix.MODELS.values()))
def test_flag_defaults_are_the_kconfig_defaults(model):
    parser, kconf = parser_of(model), config.kconfig()
    differ = []
    for setting in config.settings():
        if setting.model not in (None, model) or (model, setting.flag) in TRAINER_OWN_DEFAULTS:
            continue
        want = kconfig_default(kconf, setting)
        if want is not None and parser.get_default(dest(setting.flag)) != want:
            differ.append(f"{setting.flag}: flag {parser.get_default(dest(setting.flag))!r}, Kconfig {want!r}")
    assert not differ, f"{model}.train's defaults differ from Kconfig's: {differ}"


def test_reals_are_the_string_settings_with_numeric_defaults():
    kconf = config.kconfig()
    reals = {s.name for s in kconf.unique_defined_syms if config.is_real(s)}
    assert {"WEIGHT_DECAY", "LR_MIN", "LENET5_LR", "RATIO", "MONITOR_INTERVAL"} <= reals
    assert not reals & {"DATA_DIR", "SEEDS", "SPARSITIES", "TRACKING_DIR", "GPT2_TEXT_FILE", "RESNET50_IMAGE_FOLDER"}


def test_the_naming_rule():
    models = tuple(matrix.MODELS.values())
    assert config.flag_of("PRUNING_WARMUP_PERCENT", models) == ("--pruning-warmup-percent", None)
    assert config.flag_of("LENET5_EPOCHS", models) == ("--epochs", "lenet5")
    table = {s.flag + (f"@{s.model}" if s.model else ""): s for s in config.settings()}
    schedule = table["--pruning-schedule"]
    assert schedule.kind == "choice" and dict(zip(schedule.symbols, schedule.values))["PRUNING_SCHEDULE_CUBIC"] == "cubic"
    assert dict(zip(table["--model-size@gpt2"].symbols, table["--model-size@gpt2"].values)) == {
        "GPT2_MODEL_SIZE_TINY": "tiny", "GPT2_MODEL_SIZE_GPT2": "gpt2", "GPT2_MODEL_SIZE_GPT2_MEDIUM": "gpt2-medium",
        "GPT2_MODEL_SIZE_GPT2_LARGE": "gpt2-large", "GPT2_MODEL_SIZE_GPT2_XL": "gpt2-xl",
    }
    assert table["--compile"].kind == "switch" and table["--compile"].model is None


def test_every_exception_is_needed():
    """An exception the rule would produce anyway, or one naming a missing symbol, is stale."""
    defined = {s.name for s in config.kconfig().unique_defined_syms}
    for symbol, value in config.CHOICE_VALUES.items():
        choice = config.kconfig().syms[symbol].choice
        assert choice is not None and config._dashed(symbol[len(choice.name) + 1:]) != value, symbol
    for members in config.CHECKBOX_GROUPS.values():
        assert set(members) <= defined


@pytest.mark.parametrize(
    "body, message",
    [
        ('choice\n\tprompt "x"\nconfig A_ONE\n\tbool "one"\nconfig A_TWO\n\tbool "two"\nendchoice\n', "a choice needs a name"),
        ('choice A\n\tprompt "x"\nconfig A_ONE\n\tbool "one"\nconfig B_TWO\n\tbool "two"\nendchoice\n',
         "member B_TWO of choice A must be named A_<VALUE>"),
    ],
)
def test_a_choice_off_the_rule_is_an_error_naming_it(tmp_path, body, message):
    kconfig_file = tmp_path / "Kconfig"
    kconfig_file.write_text(body)
    with pytest.raises(config.ConfigError, match=message):
        config.settings(kconfig_file)


def test_matrix_checkboxes_default_to_n():
    kconf = config.kconfig()
    values = config.values(kconf)  # nothing loaded: pure defaults
    on = [s for s in matrix.axis_symbols() if values.get(s)]
    assert on == [], f"matrix members that default to y: {on}"


def test_values_are_typed(tmp_path):
    cfg = tmp_path / ".config"
    cfg.write_text("CONFIG_MODEL_LENET5=y\nCONFIG_LENET5_EPOCHS=7\nCONFIG_LENET5_LR=\"0.05\"\n")
    v = config.load(cfg)
    assert v["MODEL_LENET5"] is True and v["OPTIMIZER_SGD"] is False
    assert v["LENET5_EPOCHS"] == 7 and isinstance(v["LENET5_EPOCHS"], int)
    assert v["LENET5_LR"] == 0.05
    assert v["DATA_DIR"] == "data" and v["SEEDS"] == "1"
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
    cfg.write_text("CONFIG_MODEL_LENET5=y\nCONFIG_LENET5_LR=\"fast\"\n")
    with pytest.raises(config.ConfigError, match="LENET5_LR"):
        config.load(cfg)


def test_missing_config_says_what_to_run(tmp_path):
    with pytest.raises(config.ConfigError, match="make defconfig"):
        config.load(tmp_path / ".config")


def test_trainer_argv_follows_the_rule(tmp_path):
    cfg = tmp_path / ".config"
    cfg.write_text("CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_SGD=y\nCONFIG_LENET5_DATASET_MNIST=y\nCONFIG_DEVICE_CPU=y\n"
                   "CONFIG_COMPILE=y\nCONFIG_WORKERS=2\n")
    argv = config.trainer_argv(config.load(cfg), "lenet5")
    pairs = {flag: value for flag, value in zip(argv, argv[1:] + [""]) if flag.startswith("--") and not value.startswith("--")}
    assert pairs["--dataset"] == "mnist" and pairs["--device"] == "cpu" and pairs["--amp"] == "off"
    assert pairs["--epochs"] == "12" and pairs["--sgd-momentum"] == "0.9" and pairs["--workers"] == "2"
    assert "--compile" in argv and "--sgd-nesterov" not in argv  # switches: the bare flag when y
    # Another model's settings never reach this one, even where they share a flag name.
    other = {s for setting in config.settings() if setting.model not in (None, "lenet5") for s in setting.symbols}
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


def test_a_new_setting_is_its_kconfig_entry_and_its_flag(tmp_path):
    """The docs' "Adding a setting": a real and a choice reach the trainer with no edit in lib/config or lib/matrix."""
    kconfig_file = tmp_path / "Kconfig"
    kconfig_file.write_text((REPO / "Kconfig").read_text() + """
menu "Demo"
config PRUNING_DEMO_RATE
	string "demo rate"
	default "0.25"
choice PRUNING_DEMO_MODE
	prompt "demo mode"
	default PRUNING_DEMO_MODE_SLOW_START
config PRUNING_DEMO_MODE_FAST
	bool "fast"
config PRUNING_DEMO_MODE_SLOW_START
	bool "slow start"
endchoice
endmenu
""")
    values = config.values(config.kconfig(kconfig_file))
    assert values["PRUNING_DEMO_RATE"] == 0.25
    argv = config.trainer_argv(values, "lenet5", kconfig_file)
    parser = parser_of("lenet5")
    parser.add_argument("--pruning-demo-rate", type=float, default=0.25)  # the family's one new flag each
    parser.add_argument("--pruning-demo-mode", choices=("fast", "slow-start"), default="slow-start")
    args = parser.parse_args(argv)
    assert (args.pruning_demo_rate, args.pruning_demo_mode) == (0.25, "slow-start")
