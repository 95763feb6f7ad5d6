"""lib.run: the lifecycle every trainer shares (best model, budget, checkpoint bundle, optimizer step)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lenet5 import train as lenet5_train
from lib import checkpoint, classifier, optim, pruning
from lib.results import read_json
from lib.run import ACCURACY, Run, execute, optimizer_step

pytestmark = pytest.mark.usefixtures("one_thread")


def parse(out, *flags):
    return lenet5_train.parse_args(["--output-dir", str(out), "--device", "cpu", "--monitor", "off", *flags])


def tiny_task(size: int = 48):
    """(train, val) of `size` random 6-feature points split 2:1, labelled by the largest of their first three."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(size, 6, generator=g)
    n = size * 2 // 3
    return TensorDataset(x[:n], x[:n, :3].argmax(1)), TensorDataset(x[n:], x[n:, :3].argmax(1))


def fit_tiny(args) -> int:
    train_set, val_set = tiny_task()
    return execute(lambda a: classifier.fit(a, lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)),
                                            train_set, val_set, model_name="tiny", dataset="synthetic"), args)


def test_the_best_model_counts_only_at_the_target_sparsity(tmp_path):
    args = parse(tmp_path / "r", "--optimizer", "adamw", "--pruning-method", "magnitude", "--target-sparsity", "0.5")
    with Run(args, model="tiny", dataset="synthetic", unit="epoch", goal=ACCURACY) as run:
        run.seed()
        model = nn.Linear(6, 3)
        opt = optim.from_args(args, model)
        pruner = pruning.from_args(args, model, opt, 10)
        run.attach(model, opt, optim.scheduler_from_args(args, opt, 10), pruner)
        run.resume()
        run.start()
        for epoch, accuracy in enumerate([90.0, 80.0, 70.0, 75.0], 1):
            if epoch == 3:
                pruner.update_masks(pruner.schedule.target)
            run.evaluated({"epoch": epoch, "val_accuracy": accuracy, "elapsed_s": run.elapsed()})
        metrics = run.finish({"accuracy": accuracy, "best_accuracy": run.best["value"]})
    final = metrics["final"]
    assert final["best_accuracy"] == 75.0 and final["best_at"] == 4  # 90 and 80 were dense
    assert torch.load(tmp_path / "r" / "best.pt", weights_only=False)["epoch"] == 4
    assert final["pruning"]["achieved_sparsity"] == pytest.approx(0.5, abs=0.1)
    assert read_json(tmp_path / "r" / "metrics.json") == metrics and read_json(tmp_path / "r" / "run.json")["status"] == "completed"


def test_a_budget_extension_lengthens_the_run_and_is_recorded(tmp_path):
    out = tmp_path / "ext"
    assert fit_tiny(parse(out, "--epochs", "2", "--batch-size", "8", "--budget-extension", "50")) == 0
    assert [h["epoch"] for h in read_json(out / "metrics.json")["history"]] == [1, 2, 3]
    assert read_json(out / "run.json")["budget"] == {"extension_percent": 50.0, "unit": "epochs", "base": 2, "trained": 3}


@pytest.mark.parametrize("content", ["old layout", "garbage"])
def test_a_checkpoint_that_cannot_be_resumed_is_set_aside_kept_and_explained(tmp_path, capsys, content):
    out = tmp_path / "old"
    out.mkdir()
    if content == "old layout":
        checkpoint.save(out / "checkpoint.pt", {"epoch": 1, "model": {}, "rng": {}, "rng_ranks": None})
    else:
        (out / "checkpoint.pt").write_bytes(b"\x80\x02 half a file")
    before = (out / "checkpoint.pt").read_bytes()
    assert fit_tiny(parse(out, "--epochs", "2", "--batch-size", "8", "--resume")) == 1
    err = capsys.readouterr().err
    reason = "older version of the harness" if content == "old layout" else "cannot be read (UnpicklingError"
    assert err.count("\n") == 1 and reason in err and "kept as checkpoint.pt.corrupt" in err and "RESTART_CORRUPT=1" in err
    assert (out / "checkpoint.pt.corrupt").read_bytes() == before and not (out / "checkpoint.pt").exists()
    assert read_json(out / "run.json")["status"] == "failed"


def test_clipping_under_a_scaler_limits_the_unscaled_gradients():
    def one_step(scaler):
        torch.manual_seed(0)
        model = nn.Linear(5, 4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = 100 * model(torch.randn(3, 5)).square().mean()  # gradient norm well above the clip
        (scaler.scale(loss) if scaler is not None else loss).backward()
        optimizer_step(opt, scaler, clip=1.0)
        assert all(p.grad is None for p in model.parameters())  # zeroed for the next step
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(one_step(None), one_step(torch.amp.GradScaler("cpu", init_scale=2.0**12))):
        torch.testing.assert_close(a, b)


def test_the_final_block_holds_throughput_and_state_bytes(tmp_path):
    args = parse(tmp_path / "r", "--optimizer", "adamw", "--pruning-method", "magnitude", "--target-sparsity", "0.5",
                 "--epochs", "2")
    assert fit_tiny(args) == 0
    final = read_json(tmp_path / "r" / "metrics.json")["final"]
    params = 6 * 8 + 8 + 8 * 3 + 3
    assert final["samples_per_s"] > 0
    assert final["optimizer_state_bytes"] >= 2 * 4 * params  # AdamW: two float32 moments per parameter
    assert final["pruning"]["state_bytes"] == final["pruning"]["prunable_params"]  # one boolean mask byte each


def test_a_completed_run_whose_metrics_lost_a_key_is_unreadable_until_resumed_from_its_checkpoint(tmp_path):
    from lib.results import describe, is_done, write_json

    out = tmp_path / "r"
    assert fit_tiny(parse(out, "--epochs", "2", "--batch-size", "8")) == 0
    whole = read_json(out / "metrics.json")
    broken = {**whole, "final": {k: v for k, v in whole["final"].items() if k != "sparsity_prunable"}}
    write_json(out / "metrics.json", broken)
    assert not is_done(out)
    info = describe(out)
    assert info["status"] == "unreadable" and "final block lacks sparsity_prunable" in info["error"]
    assert fit_tiny(parse(out, "--epochs", "2", "--batch-size", "8", "--resume")) == 0  # what make continue runs
    again = read_json(out / "metrics.json")
    assert is_done(out) and again["history"] == whole["history"]
    assert {k: v for k, v in again["final"].items() if "time" not in k and k != "elapsed_s"} == \
        {k: v for k, v in whole["final"].items() if "time" not in k and k != "elapsed_s"}


def test_a_full_disk_interrupts_the_run_in_one_line_and_continue_resumes_it_exactly(tmp_path, monkeypatch, capsys):
    import errno
    import os

    whole = tmp_path / "whole"
    assert fit_tiny(parse(whole, "--epochs", "3", "--batch-size", "8")) == 0
    out = tmp_path / "full"
    save, saves = checkpoint.save, []

    def fills_up(path, payload):  # the disk fills up at the second checkpoint
        saves.append(path)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        save(path, payload)

    monkeypatch.setattr(checkpoint, "save", fills_up)
    assert fit_tiny(parse(out, "--epochs", "3", "--batch-size", "8")) == 75
    err = capsys.readouterr().err
    assert err == f"error: full: {out / 'checkpoint.pt'}: No space left on device; the disk is full: free space, then 'make continue' resumes\n"
    assert read_json(out / "run.json")["status"] == "interrupted"
    monkeypatch.setattr(checkpoint, "save", save)  # space freed
    assert fit_tiny(parse(out, "--epochs", "3", "--batch-size", "8", "--resume")) == 0
    a, b = read_json(whole / "metrics.json"), read_json(out / "metrics.json")
    assert [h["val_accuracy"] for h in a["history"]] == [h["val_accuracy"] for h in b["history"]]
    assert a["final"]["accuracy"] == b["final"]["accuracy"]
