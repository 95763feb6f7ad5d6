"""Checkpoint mid-training, resume, and get exactly the uninterrupted run.

Optimizer state, step counters, AdamWSpam's reset phase and the learning-rate
scheduler all travel through `state_dict()`; the run's checkpoint bundle saves and restores them.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lenet5 import train as lenet5_train
from lib import classifier, optim, run as lifecycle
from lib.results import read_json

SPAM = dict(spam_interval=10, spam_warmup=6, spam_clip_delay=2, spam_theta=50.0)

pytestmark = pytest.mark.usefixtures("one_thread")


def variants():
    out = [(name, {}) for name in optim.OPTIMIZERS if name != "adamwprune"]
    return out + [("adamwprune", {"base": base}) for base in optim.BASES]


def model_and_opt(name, settings, schedule="warmup_cosine", total=30):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 3))
    opt = optim.build(name, model, lr=1e-2, weight_decay=0.01, **{**SPAM, **settings})
    return model, opt, optim.build_scheduler(schedule, opt, total, min_lr=1e-4, warmup_percent=20)


def run_steps(model, opt, sched, first: int, last: int):
    for t in range(first, last):
        g = torch.Generator().manual_seed(t)  # batch t is the same whenever it runs
        x, y = torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize("name, settings", variants(), ids=str)
def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(name, settings):
    straight = model_and_opt(name, settings)
    run_steps(*straight, 0, 30)

    first = model_and_opt(name, settings)
    run_steps(*first, 0, 13)  # AdamWSpam: reset at step 10, mid-warmup at 13
    buf = io.BytesIO()
    torch.save({"model": first[0].state_dict(), "opt": first[1].state_dict(), "sched": first[2].state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)

    resumed = model_and_opt(name, settings)
    resumed[0].load_state_dict(saved["model"])
    resumed[1].load_state_dict(saved["opt"])
    resumed[2].load_state_dict(saved["sched"])
    run_steps(*resumed, 13, 30)

    for a, b in zip(straight[0].parameters(), resumed[0].parameters()):
        assert torch.equal(a, b)
    assert straight[1].param_groups[0]["lr"] == resumed[1].param_groups[0]["lr"]
    if "global_step" in straight[1].param_groups[0]:
        assert resumed[1].param_groups[0]["global_step"] == 30


def tiny_task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, :3].argmax(1)).long()
    return TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:])


def fit_tiny(tmp_path, name, *flags):
    args = lenet5_train.parse_args([
        "--output-dir", str(tmp_path / name), "--epochs", "3", "--batch-size", "8", "--device", "cpu",
        "--monitor", "off", "--lr", "0.01", *flags,
    ])
    train_set, val_set = tiny_task()

    def main(a):
        torch.manual_seed(a.seed)
        classifier.fit(a, lambda: nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)), train_set, val_set,
                   model_name="tiny", dataset="synthetic")

    code = lifecycle.execute(main, args)
    return code, read_json(tmp_path / name / "metrics.json")


@pytest.mark.parametrize("optimizer", ["adamwspam", "adamwadv"])
def test_classifier_resume_restores_optimizer_and_scheduler(tmp_path, monkeypatch, optimizer):
    flags = ("--optimizer", optimizer, "--lr-schedule", "warmup_cosine", "--lr-warmup-percent", "20",
             "--adamwspam-interval", "5", "--adamwspam-warmup", "3", "--adamwspam-clip-delay", "2")
    code, straight = fit_tiny(tmp_path, "a", *flags)
    assert code == 0
    real, calls = classifier.train_one_epoch, []

    def interrupted_in_epoch_two(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(classifier, "train_one_epoch", interrupted_in_epoch_two)
    assert fit_tiny(tmp_path, "b", *flags)[0] == 130
    monkeypatch.setattr(classifier, "train_one_epoch", real)
    code, resumed = fit_tiny(tmp_path, "b", *flags, "--resume")
    assert code == 0
    strip = lambda hist: [{k: v for k, v in h.items() if k != "elapsed_s"} for h in hist]  # noqa: E731
    assert strip(resumed["history"]) == strip(straight["history"])
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 24  # 3 epochs x 8 steps
    # warmup, then cosine down to --lr-min; AdamWSpam's next step (25) is a reset, warmup factor 0.01
    assert straight["history"][-1]["lr"] == pytest.approx(1e-6 * (0.01 if optimizer == "adamwspam" else 1.0))
