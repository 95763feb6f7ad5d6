"""The optimizer family through Kconfig, the matrix and the trainer's flags."""

from __future__ import annotations

import pytest
import torch

from lenet5 import train
from lib import config, matrix, optim, pruning

from conftest import REPO

COMPARE = REPO / "lenet5" / "defconfigs" / "lenet5-compare"


@pytest.fixture(autouse=True)
def at_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def load(tmp_path, text: str) -> dict:
    path = tmp_path / ".config"
    path.write_text(text)
    return config.load(path)


def test_lenet5_compare_runs_all_six_optimizers_and_only_valid_pairs():
    runs = matrix.expand(config.load(COMPARE))
    ids = [matrix.run_id(r) for r in runs]
    assert {r.optimizer for r in runs} == set(optim.OPTIMIZERS)
    assert [i for i in ids if i.startswith("lenet5_adamwprune_")] == ["lenet5_adamwprune_none", "lenet5_adamwprune_bitter0_state_70"]
    for name in ("sgd", "adam", "adamw", "adamwadv", "adamwspam"):
        assert [i for i in ids if i.startswith(f"lenet5_{name}_")] == [
            f"lenet5_{name}_none", f"lenet5_{name}_magnitude_70", f"lenet5_{name}_movement_70"
        ]


def test_every_lenet5_compare_argv_parses_and_builds(tmp_path):
    values = config.load(COMPARE)
    for spec in matrix.expand(values):
        cmd = matrix.argv(spec, values, str(tmp_path / matrix.run_id(spec)))
        args = train.parse_args(cmd[3:])
        assert args.lr_schedule == "warmup_cosine"
        model = train.LeNet5()
        opt = optim.from_args(args, model)
        optim.scheduler_from_args(args, opt, 100)
        pruner = pruning.from_args(args, model, opt, 100)
        assert (pruner is None) == (spec.pruning == "none")


def test_kconfig_settings_reach_the_optimizer(tmp_path):
    values = load(tmp_path, "\n".join([
        "CONFIG_MODEL_LENET5=y",
        "CONFIG_OPTIMIZER_SGD=y",
        "CONFIG_OPTIMIZER_ADAMWPRUNE=y",
        "CONFIG_ADAMWPRUNE_BASE_ADAMWSPAM=y",
        "CONFIG_PRUNING_NONE=y",
        "CONFIG_SGD_NESTEROV=y",
        'CONFIG_ADAM_BETA1="0.8"',
        'CONFIG_ADAM_EPS="1e-6"',
        'CONFIG_ADAMWSPAM_THETA="50"',
        "CONFIG_ADAMWSPAM_INTERVAL=100",
        "CONFIG_ADAMWSPAM_WARMUP=10",
        "CONFIG_ADAMWSPAM_CLIP_DELAY=3",
        "CONFIG_LR_SCHEDULE_STEP=y",
        "CONFIG_LR_STEP_PERCENT=25",
        'CONFIG_LR_STEP_GAMMA="0.5"',
        "",
    ]))
    specs = {s.optimizer: s for s in matrix.expand(values)}
    args = train.parse_args(matrix.argv(specs["adamwprune"], values, str(tmp_path / "a"))[3:])
    opt = optim.from_args(args, train.LeNet5())
    assert isinstance(opt, optim.AdamWPrune) and isinstance(opt, optim.AdamWSpam)
    group = opt.param_groups[0]
    assert group["betas"] == (0.8, 0.999) and group["eps"] == 1e-6
    assert (group["theta"], group["interval"], group["warmup"], group["clip_delay"]) == (50.0, 100, 10, 3)
    sched = optim.scheduler_from_args(args, opt, 100)
    assert sched.lr_lambdas[0].kind == "step" and sched.lr_lambdas[0].every == 25 and sched.lr_lambdas[0].gamma == 0.5
    sgd = optim.from_args(train.parse_args(matrix.argv(specs["sgd"], values, str(tmp_path / "s"))[3:]), train.LeNet5())
    assert sgd.param_groups[0]["nesterov"] is True and sgd.param_groups[0]["momentum"] == 0.9


def test_adamwadv_settings_and_its_cosine_floor(tmp_path):
    values = load(tmp_path, 'CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_ADAMWADV=y\nCONFIG_PRUNING_NONE=y\n'
                            'CONFIG_ADAMWADV_CLIP_NORM="0.5"\nCONFIG_LR_MIN="0.0001"\n')
    assert values["LR_MIN"] == 1e-4  # used by AdamWAdv's own cosine even with the constant schedule
    (spec,) = matrix.expand(values)
    args = train.parse_args(matrix.argv(spec, values, str(tmp_path / "a"))[3:])
    opt = optim.from_args(args, train.LeNet5())
    assert opt.clip_norm == 0.5 and opt.schedule_override == "cosine"
    assert optim.scheduler_from_args(args, opt, 10).lr_lambdas[0].floor == pytest.approx(1e-4 / args.lr)
    shared = load(tmp_path, "CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_ADAMWADV=y\nCONFIG_PRUNING_NONE=y\n"
                            "CONFIG_ADAMWADV_SCHEDULE_SHARED=y\n")
    assert shared["LR_MIN"] is None
    args = train.parse_args(matrix.argv(matrix.expand(shared)[0], shared, str(tmp_path / "b"))[3:])
    assert optim.from_args(args, train.LeNet5()).schedule_override is None


def test_the_schedule_symbols_mean_the_same_for_lenet5_and_gpt2(tmp_path):
    from gpt2 import train as gpt2_train

    values = load(tmp_path, "CONFIG_MODEL_LENET5=y\nCONFIG_MODEL_GPT2=y\nCONFIG_OPTIMIZER_ADAMW=y\nCONFIG_PRUNING_NONE=y\n"
                            'CONFIG_LR_SCHEDULE_WARMUP_COSINE=y\nCONFIG_LR_WARMUP_PERCENT=10\nCONFIG_LR_MIN="0.0001"\n')
    trainers = {"lenet5": train, "gpt2": gpt2_train}
    factors = {}
    for spec in matrix.expand(values):
        args = trainers[spec.model].parse_args(matrix.argv(spec, values, str(tmp_path / spec.model))[3:])
        assert (args.lr_schedule, args.lr_warmup_percent, args.lr_min) == ("warmup_cosine", 10, 1e-4)
        opt = optim.from_args(args, torch.nn.Linear(2, 2))
        (f, *_) = optim.scheduler_from_args(args, opt, 1000).lr_lambdas  # the same 1000 steps for both
        factors[spec.model] = (f.kind, f.total, f.warmup, f.floor * args.lr)
    assert factors["lenet5"] == pytest.approx(factors["gpt2"]) and factors["gpt2"][2] == 100


def test_matrix_skips_adamwprune_with_other_pruning_methods(tmp_path):
    values = load(tmp_path, "CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_ADAMW=y\nCONFIG_OPTIMIZER_ADAMWPRUNE=y\n"
                            "CONFIG_PRUNING_NONE=y\nCONFIG_PRUNING_MAGNITUDE=y\nCONFIG_SPARSITIES=\"0.5\"\n")
    ids = [matrix.run_id(r) for r in matrix.expand(values)]
    assert ids == ["lenet5_adamw_none", "lenet5_adamw_magnitude_50", "lenet5_adamwprune_none"]


def test_a_matrix_of_only_invalid_pairs_is_an_error(tmp_path):
    values = load(tmp_path, "CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_ADAMWPRUNE=y\n"
                            "CONFIG_PRUNING_MAGNITUDE=y\nCONFIG_SPARSITIES=\"0.5\"\n")
    with pytest.raises(config.ConfigError, match="adamwprune runs only with pruning none or state"):
        matrix.expand(values)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--optimizer", "lion"], "--optimizer 'lion' is unknown; valid: sgd, adam, adamw, adamwadv, adamwspam, adamwprune"),
        (["--lr", "-0.1"], "--lr must be positive"),
        (["--optimizer", "adamwprune", "--adamwprune-base", "sgd"], "invalid choice: 'sgd' (choose from adam, adamw, adamwadv, adamwspam)"),
        (["--optimizer", "adamwprune", "--pruning-method", "magnitude", "--target-sparsity", "0.5"],
         "--optimizer adamwprune runs only with --pruning-method none or state"),
        (["--lr-schedule", "linear"], "invalid choice: 'linear'"),
        (["--lr-schedule", "cosine", "--lr", "1e-7"], "--lr-min must be within [0, --lr"),
        (["--optimizer", "sgd", "--sgd-momentum", "0", "--sgd-nesterov"], "--sgd-nesterov needs --sgd-momentum > 0"),
        (["--adam-beta2", "1.0"], "--adam-beta2 must be in [0, 1)"),
        (["--adamwspam-clip-delay", "0"], "--adamwspam-clip-delay must be at least 1"),
        (["--lr-warmup-percent", "0"], "--lr-warmup-percent must be within (0, 100) % of training steps"),
    ],
)
def test_bad_flags_name_the_flag_and_the_choices(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        train.parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.replace("'adam', 'adamw', 'adamwadv', 'adamwspam'", "adam, adamw, adamwadv, adamwspam")
    assert message in err
