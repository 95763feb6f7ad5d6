"""lib.cli: the shared parser is the run flags plus each family's, with no abbreviations and optional --epochs."""

from __future__ import annotations

import pytest

from lib import cli


def parser(**kw):
    return cli.parser("test", **{"batch_size": 4, "lr": 0.01, **kw})


def test_an_iteration_based_trainer_has_no_epochs_flag(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["--epochs", "3"])
    assert "unrecognized arguments: --epochs 3" in capsys.readouterr().err
    args = cli.check(parser(), parser().parse_args([]))
    assert "epochs" not in vars(args)
    assert parser(epochs=12).parse_args([]).epochs == 12


def test_an_abbreviated_flag_is_refused(capsys):
    with pytest.raises(SystemExit):
        parser(epochs=1).parse_args(["--pruning-freq", "10"])
    assert "unrecognized arguments: --pruning-freq 10" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--workers", "-1"], "--workers must be >= 0, got -1"),
        (["--monitor-interval", "0"], "--monitor-interval must be > 0 seconds"),
        (["--pruning-frequency", "0"], "--pruning-frequency must be at least 1, got 0"),
    ],
)
def test_checks_name_the_flag(argv, message, capsys):
    p = parser(epochs=1)
    with pytest.raises(SystemExit):
        cli.check(p, p.parse_args(argv))
    assert message in capsys.readouterr().err


def test_each_family_contributes_its_flags():
    dests = set(vars(parser(epochs=1).parse_args([])))
    assert {"optimizer", "adam_beta2", "lr_schedule"} <= dests  # lib.optim
    assert {"pruning_method", "pruning_frequency", "ratio_preserve"} <= dests  # lib.pruning
    assert {"monitor", "monitor_interval"} <= dests  # lib.monitor
    assert {"tracker", "tracking_dir"} <= dests  # lib.tracking
    assert {"amp", "compile", "workers", "device", "data_dir"} <= dests  # the run and training flags
