"""lib.matrix: the one expansion, the one run id, and argv every trainer accepts."""

from __future__ import annotations

import importlib

import pytest

from lib import config, matrix
from scripts import defconfig

from conftest import REPO


@pytest.fixture(autouse=True)
def at_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def values_of(text: str, tmp_path) -> dict:
    path = tmp_path / ".config"
    path.write_text(text)
    return config.load(path)


QUICK = """CONFIG_MODEL_LENET5=y
CONFIG_OPTIMIZER_SGD=y
CONFIG_OPTIMIZER_ADAMW=y
CONFIG_PRUNING_NONE=y
CONFIG_PRUNING_MAGNITUDE=y
CONFIG_SPARSITIES="0.5 0.9"
"""


def test_expansion_order_and_ids(tmp_path):
    ids = [matrix.run_id(s) for s in matrix.expand(values_of(QUICK, tmp_path))]
    assert ids == [
        "lenet5_sgd_none",
        "lenet5_sgd_magnitude_50",
        "lenet5_sgd_magnitude_90",
        "lenet5_adamw_none",
        "lenet5_adamw_magnitude_50",
        "lenet5_adamw_magnitude_90",
    ]


def test_seed_suffix_only_with_several_seeds(tmp_path):
    one = matrix.expand(values_of(QUICK, tmp_path))
    assert not any(matrix.run_id(s).endswith("_s1") for s in one)
    many = matrix.expand(values_of(QUICK + 'CONFIG_SEEDS="1 2 3"\n', tmp_path))
    assert len(many) == 3 * len(one)
    assert matrix.run_id(many[0]) == "lenet5_sgd_none_s1"
    assert matrix.run_id(many[2]) == "lenet5_sgd_none_s3"


def test_run_id_with_variant():
    spec = matrix.RunSpec("lenet5", "adamwprune", "state", 0.7, 1, variant="bitter7")
    assert matrix.run_id(spec) == "lenet5_adamwprune_bitter7_state_70"


BASES = """CONFIG_MODEL_LENET5=y
CONFIG_OPTIMIZER_ADAMWSPAM=y
CONFIG_OPTIMIZER_ADAMWPRUNE=y
CONFIG_ADAMWPRUNE_BASE_ADAMWSPAM=y
CONFIG_PRUNING_NONE=y
CONFIG_PRUNING_STATE=y
CONFIG_SPARSITIES="0.5"
CONFIG_PRUNING_STATE_BITTER7=y
"""


def test_each_checked_adamwprune_base_gives_its_own_runs(tmp_path):
    """AdamW, AdamWPrune's own base, is checked by default and keeps the plain name; other bases are named."""
    values = values_of(BASES, tmp_path)
    specs = matrix.expand(values)
    assert [matrix.run_id(s) for s in specs] == [
        "lenet5_adamwspam_none",
        "lenet5_adamwprune_none",
        "lenet5_adamwprune_bitter7_state_50",
        "lenet5_adamwprune-adamwspam_none",
        "lenet5_adamwprune-adamwspam_bitter7_state_50",
    ]
    assert [s.base for s in specs] == [None, "adamw", "adamw", "adamwspam", "adamwspam"]
    train = importlib.import_module("lenet5.train")
    for spec in specs:
        args = train.parse_args(trainer_args(matrix.argv(spec, values, str(tmp_path / matrix.run_id(spec))), spec))
        assert args.optimizer == spec.optimizer
        if spec.base:
            assert args.adamwprune_base == spec.base
    only_spam = values_of(BASES + "# CONFIG_ADAMWPRUNE_BASE_ADAMW is not set\n", tmp_path)
    assert [s.base for s in matrix.expand(only_spam) if s.optimizer == "adamwprune"] == ["adamwspam", "adamwspam"]


def test_adamwprune_without_a_base_is_an_error(tmp_path):
    text = BASES.replace("CONFIG_ADAMWPRUNE_BASE_ADAMWSPAM=y\n", "# CONFIG_ADAMWPRUNE_BASE_ADAMW is not set\n")
    with pytest.raises(config.ConfigError, match="AdamWPrune is selected but no base optimizer: check at least one of CONFIG_ADAMWPRUNE_BASE_ADAMW"):
        matrix.expand(values_of(text, tmp_path))


def test_the_base_axis_is_every_base_adamwprune_has():
    from lib.optim.settings import BASES as OPTIM_BASES, DEFAULTS

    assert sorted(matrix.ADAMWPRUNE_BASES.values()) == sorted(OPTIM_BASES)
    assert matrix.DEFAULT_ADAMWPRUNE_BASE == DEFAULTS["base"]
    spec = matrix.RunSpec("resnet50", "adamwprune", "state", 0.7, 1, variant="bitter0", base="adamwspam")
    assert matrix.run_id(spec) == "resnet50_adamwprune-adamwspam_bitter0_state_70"
    assert matrix.optimizer_label("adamw") == "adamw"
    assert matrix.optimizer_label("adamwprune", "adamw") == "adamwprune"
    assert matrix.optimizer_label("adamwprune", "adam") == "adamwprune-adam"


def test_dense_runs_have_no_sparsity_axis(tmp_path):
    specs = matrix.expand(values_of(QUICK, tmp_path))
    assert [s.sparsity for s in specs if s.pruning == "none"] == [None, None]


@pytest.mark.parametrize(
    "text, message",
    [
        ("CONFIG_OPTIMIZER_SGD=y\nCONFIG_PRUNING_NONE=y\n", "no model"),
        ("CONFIG_MODEL_LENET5=y\nCONFIG_PRUNING_NONE=y\n", "no optimizer"),
        ("CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_SGD=y\n", "no pruning method"),
        ("CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_SGD=y\nCONFIG_PRUNING_MAGNITUDE=y\n", "no sparsity level: set CONFIG_SPARSITIES"),
        (QUICK + 'CONFIG_SEEDS="1 x"\n', "SEEDS"),
        (QUICK.replace('"0.5 0.9"', '"50 70"'), "50 is not a fraction in \\(0, 1\\) \\(for 50 %, write 0.5\\)"),
        (QUICK.replace('"0.5 0.9"', '"0.5 1"'), "1 is not a fraction in \\(0, 1\\)"),
        (QUICK.replace('"0.5 0.9"', '"0.5 half"'), "'half' is not a number"),
        (QUICK.replace('"0.5 0.9"', '"0.5 0.501"'), "0.5 and 0.501 are both named 50 in run ids"),
        (QUICK.replace('"0.5 0.9"', '"0.999"'), "0.999 would be named 100 % in run ids"),
    ],
)
def test_empty_or_bad_axes_are_errors(tmp_path, text, message):
    with pytest.raises(config.ConfigError, match=message):
        matrix.expand(values_of(text, tmp_path))


def test_sparsity_levels_are_a_list_in_the_given_order(tmp_path):
    specs = matrix.expand(values_of(QUICK.replace('"0.5 0.9"', '"0.9, 0.333 0.05"'), tmp_path))
    assert [matrix.run_id(s) for s in specs if s.optimizer == "sgd"] == [
        "lenet5_sgd_none", "lenet5_sgd_magnitude_90", "lenet5_sgd_magnitude_33", "lenet5_sgd_magnitude_5",
    ]
    argv = matrix.argv(specs[2], values_of(QUICK, tmp_path), "out/x")
    assert argv[argv.index("--target-sparsity") + 1] == "0.333"


def test_variants_come_from_the_state_registry():
    from lib.pruning import state

    assert matrix.variants() == {f"PRUNING_STATE_{name.upper()}": name for name in state.VARIANTS}
    assert matrix.budget_symbol("bitter2") == "PRUNING_BITTER2_BUDGET_PERCENT"


def test_every_state_variant_has_its_kconfig_checkbox_and_budget_symbols_name_variants():
    kconf = config.kconfig()
    defined = {s.name for s in kconf.unique_defined_syms}
    assert set(matrix.variants()) <= defined
    budgets = {s for s in defined if s.endswith("_BUDGET_PERCENT")}
    assert budgets and budgets <= {matrix.budget_symbol(v) for v in matrix.variants().values()}


def test_epochs_override_replaces_the_configured_value(tmp_path):
    spec = matrix.expand(values_of(QUICK, tmp_path))[0]
    argv = matrix.argv(spec, values_of(QUICK, tmp_path), "out/x", {"--epochs": 2})
    assert argv[argv.index("--epochs") + 1] == "2"
    assert argv.count("--epochs") == 1


def trainer_args(argv: list[str], spec) -> list[str]:
    """The arguments after '-m <model>.train' (also behind a torchrun prefix)."""
    return argv[argv.index(f"{spec.model}.train") + 1 :]


@pytest.mark.parametrize("name", sorted(defconfig.available()))
def test_every_defconfig_argv_is_accepted_by_its_trainer(name, tmp_path):
    kconf = config.kconfig()
    config.load_strict(kconf, defconfig.available()[name])
    values = config.values(kconf)
    specs = matrix.expand(values)
    assert specs, f"{name} expands to no run"
    ids = [matrix.run_id(s) for s in specs]
    assert len(set(ids)) == len(ids), f"{name}: duplicate run ids"
    for spec in specs:
        argv = matrix.argv(spec, values, str(tmp_path / matrix.run_id(spec)), {"--epochs": 1})
        train = importlib.import_module(f"{spec.model}.train")
        train.parse_args(trainer_args(argv, spec))  # SystemExit on a flag it does not know or a bad value
