"""Pruned LeNet-5 runs on digits: masks survive an interruption and resume unchanged (end to end)."""

from __future__ import annotations

import json

import pytest
import torch

from lib import checkpoint, classifier
from lenet5 import train as lenet5_train

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_thread")]

METHODS = {
    "state-bitter7": ["--optimizer", "adamwprune", "--pruning-method", "state", "--pruning-variant", "bitter7"],
    "movement": ["--optimizer", "adamw", "--pruning-method", "movement"],
}


def args_for(out, method, *extra):
    parser = lenet5_train.get_args_parser()
    argv = METHODS[method] + ["--target-sparsity", "0.7", "--epochs", "3", "--device", "cpu", "--monitor", "off",
                              "--pruning-warmup-percent", "0", "--pruning-ramp-end-percent", "60", "--pruning-frequency", "10",
                              "--output-dir", str(out), *extra]  # masks change within the first epoch (45 steps)
    return lenet5_train.cli.check(parser, parser.parse_args(argv))


@pytest.mark.parametrize("method", list(METHODS))
def test_masks_survive_resume_and_the_run_ends_as_if_never_stopped(method, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    lenet5_train.main(args_for(whole, method))

    # The same run, stopped as the second epoch starts, then resumed.
    cut = tmp_path / "cut"
    real = classifier.train_one_epoch
    calls = {"n": 0}

    def stop_at_second_epoch(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(classifier, "train_one_epoch", stop_at_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        lenet5_train.main(args_for(cut, method))
    saved = checkpoint.load(cut / "checkpoint.pt")["pruner"]
    assert saved["step_count"] > 0 and saved["sparsity"] > 0  # pruning had started

    seen = {}

    def record_masks(model, loader, opt, pruner, *a, **kw):
        seen.setdefault("masks", [m.clone() for m in pruner.mask_list()])
        return real(model, loader, opt, pruner, *a, **kw)

    monkeypatch.setattr(classifier, "train_one_epoch", record_masks)
    lenet5_train.main(args_for(cut, method, "--resume"))
    assert all(torch.equal(a, b) for a, b in zip(seen["masks"], saved["masks"].values()))

    a, b = checkpoint.load(whole / "checkpoint.pt"), checkpoint.load(cut / "checkpoint.pt")
    for name in a["pruner"]["masks"]:
        assert torch.equal(a["pruner"]["masks"][name], b["pruner"]["masks"][name])
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    final = json.loads((cut / "metrics.json").read_text())["final"]
    assert abs(final["sparsity_prunable"] - 0.7) < 1e-3
    assert final["pruning"]["achieved_sparsity"] == pytest.approx(final["sparsity_prunable"])
