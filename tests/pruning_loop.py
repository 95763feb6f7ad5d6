"""What the pruning tests share: a trainer's step order around a pruner, and the LeNet-5 trainer's flag check."""

from __future__ import annotations

from typing import Callable

import pytest

from lenet5 import train as lenet5_train

MAGNITUDE = ["--optimizer", "adamw", "--pruning-method", "magnitude", "--target-sparsity", "0.5"]


def state(variant: str) -> list[str]:
    """The flags of state pruning with `variant` to half of the weights."""
    return ["--optimizer", "adamwprune", "--pruning-method", "state", "--pruning-variant", variant, "--target-sparsity", "0.5"]


STAGES = ("backward", "masked", "optimizer", "pruner")  # what `check` is told after each part of a step


def train_steps(pruner, opt, loss: Callable, steps: int, check: Callable | None = None, after_step: Callable | None = None):
    """`steps` steps in a trainer's order: backward of `loss()`, mask the gradients, optimizer step, pruner step.

    `check(stage)` runs after each part (STAGES); `after_step()` after each
    whole step, its answers returned as a list.
    """
    answers = []
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        for stage, call in zip(STAGES, (None, pruner.mask_gradients, opt.step, pruner.step)):
            if call:
                call()
            if check:
                check(stage)
        if after_step:
            answers.append(after_step())
    return answers


def parse(argv: list[str]):
    """The LeNet-5 trainer's flags, parsed and checked as `python -m lenet5.train` does."""
    parser = lenet5_train.get_args_parser()
    return lenet5_train.cli.check(parser, parser.parse_args(argv))


def refusal(argv: list[str], capsys) -> str:
    """The one line a refused set of flags ends with (after argparse's usage); fails when they are accepted."""
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code != 0
    return capsys.readouterr().err.strip().splitlines()[-1]
