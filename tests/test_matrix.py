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


# -- GPT-2 ablation steps (gpt2/Kconfig.ablation, gpt2.ablation) ----------------------------------
ABLATION = """CONFIG_MODEL_LENET5=y
CONFIG_MODEL_GPT2=y
CONFIG_OPTIMIZER_ADAMW=y
CONFIG_OPTIMIZER_ADAMWPRUNE=y
CONFIG_PRUNING_NONE=y
CONFIG_PRUNING_MAGNITUDE=y
CONFIG_SPARSITIES="0.7"
CONFIG_GPT2_ABLATION_STEPS="baseline golden mla ra rmlp ratio"
"""


def test_ablation_steps_replace_gpt2s_pruning_axis(tmp_path):
    specs = matrix.expand(values_of(ABLATION, tmp_path))
    ids = [matrix.run_id(s) for s in specs]
    assert ids == [
        # LeNet-5 of the same matrix: the pruning axis as before
        "lenet5_adamw_none", "lenet5_adamw_magnitude_70", "lenet5_adamwprune_none",
        # GPT-2: the steps (the pruned one with AdamWPrune only), no magnitude 70 %
        "gpt2_baseline_adamw_none", "gpt2_golden_adamw_none", "gpt2_mla_adamw_none", "gpt2_ra_adamw_none",
        "gpt2_rmlp_adamw_none",
        "gpt2_baseline_adamwprune_none", "gpt2_golden_adamwprune_none", "gpt2_mla_adamwprune_none",
        "gpt2_ra_adamwprune_none", "gpt2_rmlp_adamwprune_none", "gpt2_ratio_adamwprune_bitter9_state_50",
    ]
    assert len(set(ids)) == len(ids)
    assert all(s.step is None for s in specs if s.model == "lenet5")
    ratio = specs[-1]
    assert (ratio.step, ratio.pruning, ratio.variant, ratio.sparsity, ratio.base) == ("ratio", "state", "bitter9", 0.5, "adamw")
    assert all(s.pruning == "none" and s.sparsity is None for s in specs if s.step not in (None, "ratio"))
    assert matrix.RunSpec("gpt2", "adamwprune", "none", None, 1, step="mla").to_dict()["step"] == "mla"


def test_without_steps_gpt2_keeps_its_pruning_axis(tmp_path):
    text = ABLATION.replace('CONFIG_GPT2_ABLATION_STEPS="baseline golden mla ra rmlp ratio"\n', "")
    values = values_of(text, tmp_path)
    assert values["GPT2_ABLATION_STEPS"] == "" and values["GPT2_ABLATION_SPARSITY"] is None
    assert [matrix.run_id(s) for s in matrix.expand(values) if s.model == "gpt2"] == [
        "gpt2_adamw_none", "gpt2_adamw_magnitude_70", "gpt2_adamwprune_none"]


def test_ablation_ids_carry_step_base_and_seed(tmp_path):
    text = ABLATION.replace("baseline golden mla ra rmlp ratio", "ratio mla") + \
        'CONFIG_SEEDS="1 2"\nCONFIG_ADAMWPRUNE_BASE_ADAM=y\nCONFIG_GPT2_ABLATION_SPARSITY="0.7"\n'
    ids = [matrix.run_id(s) for s in matrix.expand(values_of(text, tmp_path)) if s.model == "gpt2"]
    assert ids == [
        "gpt2_mla_adamw_none_s1", "gpt2_mla_adamw_none_s2",
        "gpt2_mla_adamwprune_none_s1", "gpt2_mla_adamwprune_none_s2",
        "gpt2_ratio_adamwprune_bitter9_state_70_s1", "gpt2_ratio_adamwprune_bitter9_state_70_s2",
        "gpt2_mla_adamwprune-adam_none_s1", "gpt2_mla_adamwprune-adam_none_s2",
        "gpt2_ratio_adamwprune-adam_bitter9_state_70_s1", "gpt2_ratio_adamwprune-adam_bitter9_state_70_s2",
    ]
    from scripts.evidence import config_key

    assert config_key(ids[-1], 2) == "gpt2_ratio_adamwprune-adam_bitter9_state_70"  # seeds group by step too


def test_ablation_argv_sets_the_steps_architecture_and_ratio_budgets(tmp_path):
    values = values_of(ABLATION, tmp_path)
    specs = {matrix.run_id(s): s for s in matrix.expand(values)}

    def args(run_id):
        return trainer_args(matrix.argv(specs[run_id], values, "out/x"), specs[run_id])

    base = args("gpt2_baseline_adamwprune_none")
    assert base[base.index("--mlp-ratio"):base.index("--mlp-ratio") + 6] == \
        ["--mlp-ratio", "gpt2", "--attention", "standard", "--ra-heads", "0"]
    assert "--rmlp" not in base and "--ratio-preserve" not in base and base[base.index("--pruning-method") + 1] == "none"
    ratio = args("gpt2_ratio_adamwprune_bitter9_state_50")
    for flag, value in (("--mlp-ratio", "golden"), ("--attention", "mla"), ("--ra-heads", "all"),
                        ("--pruning-method", "state"), ("--pruning-variant", "bitter9"), ("--target-sparsity", "0.5"),
                        ("--optimizer", "adamwprune")):
        assert ratio.count(flag) == 1 and ratio[ratio.index(flag) + 1] == value, flag
    assert "--rmlp" in ratio and "--ratio-preserve" in ratio
    lenet = args("lenet5_adamw_magnitude_70")
    assert not {"--mlp-ratio", "--attention", "--ra-heads", "--rmlp", "--ratio-preserve"} & set(lenet)


def test_ablation_symbols_are_the_matrix_s_never_trainer_flags():
    assert {"GPT2_ABLATION_STEPS", "GPT2_ABLATION_SPARSITY"} <= matrix.matrix_symbols()
    assert not {"GPT2_ABLATION_STEPS", "GPT2_ABLATION_SPARSITY"} & config.flag_symbols()


@pytest.mark.parametrize("steps, extra, message", [
    ("baseline gloden", "",
     "CONFIG_GPT2_ABLATION_STEPS='baseline gloden': unknown ablation step 'gloden'; valid steps: baseline, golden, "
     "mla, ra, rmlp, ratio"),
    ("mla ra mla", "", "ablation step 'mla' is listed twice"),
    ("baseline ratio", 'CONFIG_GPT2_ABLATION_SPARSITY="50"\n', "CONFIG_GPT2_ABLATION_SPARSITY='50.0': 50.0 is not a fraction in"),
    ("baseline ratio", 'CONFIG_GPT2_ABLATION_SPARSITY="0.999"\n',
     "CONFIG_GPT2_ABLATION_SPARSITY='0.999': 0.999 would be named 100 %"),
])
def test_bad_ablation_settings_are_errors(steps, extra, message, tmp_path):
    text = ABLATION.replace("baseline golden mla ra rmlp ratio", steps) + extra
    with pytest.raises(config.ConfigError, match=message.replace("(", "\\(")):
        matrix.expand(values_of(text, tmp_path))


def test_the_ratio_step_needs_adamwprune(tmp_path):
    no_prune = ABLATION.replace("CONFIG_OPTIMIZER_ADAMWPRUNE=y\n", "")
    with pytest.raises(config.ConfigError, match="lists 'ratio', which prunes by the optimizer's state: check "
                                                 "CONFIG_OPTIMIZER_ADAMWPRUNE or drop 'ratio'"):
        matrix.expand(values_of(no_prune, tmp_path))
    dense = values_of(no_prune.replace("baseline golden mla ra rmlp ratio", "baseline rmlp"), tmp_path)
    assert [matrix.run_id(s) for s in matrix.expand(dense) if s.model == "gpt2"] == [
        "gpt2_baseline_adamw_none", "gpt2_rmlp_adamw_none"]


def test_ablation_steps_have_no_fine_tuning_runs(tmp_path):
    values = values_of(ABLATION + "CONFIG_FINETUNE=y\n", tmp_path)
    children = [s for s in matrix.expand(values) if s.parent is not None]
    assert children and {s.model for s in children} == {"lenet5"}
