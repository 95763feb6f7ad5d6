"""LeNet-5: the network, the digits data, and the trainer's run-directory contract."""

from __future__ import annotations

import pytest
import torch

from lenet5 import train
from lenet5.model import LeNet5
from lib import classifier, data, run as lifecycle
from lib.results import read_json


def test_classic_shape_and_size():
    model = LeNet5()
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == 61706


def test_digits_split_is_fixed_and_disjoint():
    (tr1, va1), (tr2, va2) = data.digits(), data.digits()
    assert len(tr1) == 1438 and len(va1) == 359
    assert tr1.tensors[0].shape[1:] == (1, 32, 32)
    assert torch.equal(va1.tensors[0], va2.tensors[0])
    assert set(tr1.tensors[1].tolist()) == set(range(10))
    assert abs(float(tr1.tensors[0].mean())) < 1e-5  # normalised on the train split


def run(tmp_path, name, *extra):
    args = train.parse_args(["--output-dir", str(tmp_path / name), "--epochs", "3", "--batch-size", "64", *extra])
    code = lifecycle.execute(train.main, args)
    return code, read_json(tmp_path / name / "run.json"), read_json(tmp_path / name / "metrics.json")


def test_run_directory_contract(tmp_path):
    code, run_json, metrics = run(tmp_path, "lenet5_sgd_magnitude_50", "--pruning-method", "magnitude", "--target-sparsity", "0.5")
    assert code == 0 and run_json["status"] == "completed" and run_json["exit_code"] == 0
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert set(metrics["history"][0]) == {"epoch", "train_loss", "val_loss", "val_accuracy", "sparsity", "lr", "elapsed_s"}
    final = metrics["final"]
    for key in ("accuracy", "best_accuracy", "best_at", "sparsity_prunable", "sparsity_global", "train_time_s", "peak_memory_mib", "params", "nonzero_params"):
        assert key in final
    assert abs(final["sparsity_prunable"] - 0.5) < 1e-3
    assert final["params"] == 61706 and final["nonzero_params"] < 61706
    assert (tmp_path / "lenet5_sgd_magnitude_50" / "checkpoint.pt").exists()
    assert (tmp_path / "lenet5_sgd_magnitude_50" / "best.pt").exists()


def test_resume_continues_exactly(tmp_path, monkeypatch):
    flags = ("--pruning-method", "magnitude", "--target-sparsity", "0.7", "--optimizer", "adam")
    _, _, straight = run(tmp_path, "a", *flags)
    real, calls = classifier.train_one_epoch, []

    def interrupted_in_epoch_two(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if stopped during epoch 2
        return real(*a, **kw)

    monkeypatch.setattr(classifier, "train_one_epoch", interrupted_in_epoch_two)
    code, run_json, _ = run(tmp_path, "b", *flags)
    assert code == 130 and run_json["status"] == "interrupted"
    monkeypatch.setattr(classifier, "train_one_epoch", real)
    code, run_json, resumed = run(tmp_path, "b", *flags, "--resume")
    assert code == 0 and run_json["attempt"] == 2 and run_json["status"] == "completed"
    strip = lambda hist: [{k: v for k, v in h.items() if k != "elapsed_s"} for h in hist]  # noqa: E731
    assert strip(resumed["history"]) == strip(straight["history"])
    assert resumed["final"]["accuracy"] == straight["final"]["accuracy"]


def test_diverging_loss_fails_the_run_with_its_step(tmp_path, capsys):
    code, run_json, _ = run(tmp_path, "nan", "--lr", "1e30", "--optimizer", "sgd")
    assert code == 1 and run_json["status"] == "failed"
    assert "loss became" in run_json["error"] and "step" in run_json["error"]
    assert capsys.readouterr().err.startswith("error: loss became")


def test_missing_mnist_offline_says_where_to_put_files(tmp_path, monkeypatch, capsys):
    from torchvision import datasets

    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # no network, deterministically
    code, run_json, _ = run(tmp_path, "m", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"))
    err = capsys.readouterr().err
    assert code == 1 and run_json["status"] == "failed"
    assert err.count("\n") == 1 and "MNIST/raw" in err and "digits" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--optimizer", "adagrad"], "valid: sgd"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--pruning-method", "magnitude", "--target-sparsity", "1.5"], "[0, 1)"),
        (["--pruning-method", "snip", "--target-sparsity", "0.5"], "valid: none"),
    ],
)
def test_bad_flags_are_rejected_with_the_valid_choices(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        train.parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
