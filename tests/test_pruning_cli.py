"""Pruning settings from Kconfig to trainer: flags, their checks, the variant axis of the matrix."""

from __future__ import annotations

import pytest
import torch

from lib import config, matrix, pruning
from lenet5.model import LeNet5
from scripts import defconfig

from conftest import REPO
from pruning_loop import parse

BASE = ["--optimizer", "adamwprune", "--pruning-method", "state", "--target-sparsity", "0.7"]


@pytest.mark.parametrize("argv, message", [
    (BASE + ["--pruning-variant", "bitter5"],
     "--pruning-variant 'bitter5' is unknown; state pruning needs one of: bitter0, bitter1, bitter2, bitter3, bitter4, bitter7, bitter8, bitter9"),
    (BASE, "--pruning-variant is missing; state pruning needs one of: bitter0"),
    (["--optimizer", "sgd", "--pruning-method", "state", "--target-sparsity", "0.5", "--pruning-variant", "bitter7"],
     "'sgd' does not keep; valid optimizers: adam, adamw"),
    (["--optimizer", "adamw", "--pruning-method", "magnitude", "--target-sparsity", "1.0"],
     "--target-sparsity must be in [0, 1), got 1.0"),
    (["--optimizer", "adamw", "--pruning-method", "magnitude", "--target-sparsity", "-0.1"],
     "--target-sparsity must be in [0, 1), got -0.1"),
    (["--optimizer", "adamw", "--pruning-method", "magnitude", "--target-sparsity", "0.5", "--pruning-variant", "bitter7"],
     "--pruning-variant applies only to --pruning-method state"),
    (["--optimizer", "adamw", "--pruning-method", "lottery", "--target-sparsity", "0.5"],
     "valid: none, magnitude, movement, state"),
    (["--optimizer", "adamw", "--pruning-method", "magnitude", "--target-sparsity", "0.5", "--pruning-scope", "block"],
     "--pruning-scope: invalid choice: 'block'"),
    (BASE + ["--pruning-variant", "bitter4", "--ratio-preserve"], "cannot be combined with --pruning-variant bitter4"),
    (BASE + ["--pruning-variant", "bitter3", "--budget-extension", "-10"], "--budget-extension must be >= 0"),
    (BASE + ["--pruning-variant", "bitter8", "--structure-weight-mlp", "0"], "--structure-weight-mlp must be positive"),
])
def test_bad_input_is_one_clear_line_with_the_valid_choices(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code != 0
    assert message in capsys.readouterr().err


def test_flags_reach_the_pruner():
    args = parse(BASE + ["--pruning-variant", "bitter4", "--layer-adaptive-keep-levels", "--pruning-unit", "epoch",
                         "--pruning-frequency", "2", "--prune-biases", "--pruning-remask", "update"])
    model = LeNet5()
    opt = torch.optim.AdamW(model.parameters())
    pruner = pruning.from_args(args, model, opt, total_steps=100, steps_per_epoch=10)
    assert pruner.variant == "bitter4" and pruner.scope == "adaptive" and pruner.layer_adaptive.rescale is False
    assert pruner.remask == "update"
    assert pruner.schedule.quantum == 10 and pruner.frequency == 20
    assert "features.0.bias" in [n for n, _ in pruner.params]
    args = parse(["--optimizer", "adamw", "--pruning-method", "movement", "--target-sparsity", "0.5", "--pruning-scope", "layer"])
    assert pruning.from_args(args, model, opt, 100).scope == "layer"
    assert pruning.from_args(parse([]), model, opt, 100) is None



def test_movement_mode_bitter7_eps_and_gradual_schedule_reach_the_pruner_from_kconfig(tmp_path, monkeypatch):
    """The settings added to the pruning family travel .config -> argv -> flags -> pruner."""
    monkeypatch.chdir(REPO)
    values = values_of("""CONFIG_MODEL_LENET5=y
CONFIG_OPTIMIZER_ADAMW=y
CONFIG_OPTIMIZER_ADAMWPRUNE=y
CONFIG_PRUNING_MOVEMENT=y
CONFIG_PRUNING_STATE=y
CONFIG_PRUNING_STATE_BITTER7=y
CONFIG_PRUNING_SCHEDULE_GRADUAL=y
CONFIG_PRUNING_MOVEMENT_MODE_TOPK=y
CONFIG_PRUNING_BITTER7_EPS_OUTSIDE=y
CONFIG_SPARSITIES="0.5"
""", tmp_path)
    model = LeNet5()
    opt = torch.optim.AdamW(model.parameters())
    built = {}
    for spec in matrix.expand(values):
        argv = matrix.argv(spec, values, str(tmp_path / "run"))
        args = parse(argv[argv.index("-m") + 2:])
        built[spec.pruning] = pruning.from_args(args, model, opt, total_steps=100)
    assert built["movement"].mode == "topk"
    assert built["state"].bitter7_eps == "outside"
    assert built["state"].schedule.kind == "gradual" == built["movement"].schedule.kind


def values_of(text: str, tmp_path) -> dict:
    path = tmp_path / ".config"
    path.write_text(text)
    return config.load(path, REPO / "Kconfig")


STATE = """CONFIG_MODEL_LENET5=y
CONFIG_OPTIMIZER_ADAMW=y
CONFIG_OPTIMIZER_ADAMWPRUNE=y
CONFIG_PRUNING_NONE=y
CONFIG_PRUNING_MOVEMENT=y
CONFIG_PRUNING_STATE=y
CONFIG_PRUNING_STATE_BITTER2=y
CONFIG_PRUNING_STATE_BITTER7=y
CONFIG_SPARSITIES="0.7"
"""


def test_state_runs_expand_over_the_checked_variants(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    specs = matrix.expand(values_of(STATE, tmp_path))
    assert [matrix.run_id(s) for s in specs] == [
        "lenet5_adamw_none",
        "lenet5_adamw_movement_70",
        "lenet5_adamwprune_none",
        "lenet5_adamwprune_bitter2_state_70",
        "lenet5_adamwprune_bitter7_state_70",
    ]


def test_variant_and_budget_extension_reach_argv_and_parse(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    values = values_of(STATE, tmp_path)
    by_id = {matrix.run_id(s): matrix.argv(s, values, str(tmp_path / matrix.run_id(s))) for s in matrix.expand(values)}
    bitter2 = by_id["lenet5_adamwprune_bitter2_state_70"]
    assert bitter2[bitter2.index("--pruning-variant") + 1] == "bitter2"
    assert bitter2[bitter2.index("--budget-extension") + 1] == "21"
    assert "--budget-extension" not in by_id["lenet5_adamwprune_bitter7_state_70"]
    assert "--pruning-variant" not in by_id["lenet5_adamw_movement_70"]
    for argv in by_id.values():
        parse(argv[3:])  # everything after `python -m lenet5.train`


def test_state_without_a_variant_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    text = STATE.replace("CONFIG_PRUNING_STATE_BITTER2=y\n", "").replace("CONFIG_PRUNING_STATE_BITTER7=y\n", "")
    with pytest.raises(config.ConfigError, match="no variant.*CONFIG_PRUNING_STATE_BITTER0"):
        matrix.expand(values_of(text, tmp_path))


def test_state_needs_adamwprune_in_kconfig(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    path = tmp_path / "defconfig"
    path.write_text(STATE.replace("CONFIG_OPTIMIZER_ADAMWPRUNE=y\n", ""))
    kconf = config.kconfig(REPO / "Kconfig")
    config.load_strict(kconf, path)
    with pytest.raises(config.ConfigError, match="CONFIG_PRUNING_STATE=y cannot be applied: it depends on OPTIMIZER_ADAMWPRUNE"):
        defconfig.check_assignments(kconf, path)


def test_the_pruning_compare_defconfig_runs_every_method_and_variant(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    values = config.load(REPO / "lenet5/defconfigs/lenet5-pruning-compare", REPO / "Kconfig")
    ids = [matrix.run_id(s) for s in matrix.expand(values)]
    assert ids == [
        "lenet5_adamw_none",
        "lenet5_adamw_magnitude_70",
        "lenet5_adamw_movement_70",
        "lenet5_adamwprune_none",
        *[f"lenet5_adamwprune_{v}_state_70" for v in ("bitter1", "bitter3", "bitter4", "bitter7", "bitter8", "bitter9")],
    ]
    for spec in matrix.expand(values):
        parse(matrix.argv(spec, values, str(tmp_path / "x"))[3:])


def test_the_default_mask_update_interval_is_50_steps():
    args = parse(["--optimizer", "adamw", "--pruning-method", "magnitude", "--target-sparsity", "0.5"])
    model = LeNet5()
    assert pruning.from_args(args, model, torch.optim.AdamW(model.parameters()), 1000).frequency == 50


def test_a_layer_adaptive_target_at_its_cap_is_refused_when_planned(capsys):
    with pytest.raises(SystemExit):
        parse(BASE[:-1] + ["0.95", "--pruning-variant", "bitter4"])
    err = capsys.readouterr().err
    assert "--target-sparsity 0.95 with --pruning-variant bitter4" in err and "cap 0.95" in err
    parse(BASE[:-1] + ["0.95", "--pruning-variant", "bitter4", "--layer-adaptive-keep-levels"])  # clipped levels: accepted
