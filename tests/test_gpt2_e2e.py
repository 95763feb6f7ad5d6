"""GPT-2 end to end in subprocesses: DDP on CPU (gloo, 2 processes) = 1 process, SIGKILL then resume, gpt2-tiny through make."""

import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch

from conftest import PATIENCE_S, kill_group, wait_until
from lib import checkpoint, optim
from lib.results import is_done, read_json
from test_runner_e2e import comparable

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parent.parent


def _common(data_dir) -> list[str]:
    # 6 optimizer steps of 2 x 2 sequences of 16 tokens, weight decay 0.1 on: the same global batch whatever the processes;
    # the shared warmup_cosine schedule (2 warmup steps), so the learning rate changes every step.
    return [
        "--device", "cpu", "--monitor", "off", "--optimizer", "adamw", "--data-dir", str(data_dir),
        "--block-size", "16", "--batch-size", "2", "--grad-accum", "2", "--max-iters", "6",
        "--eval-interval", "2", "--eval-iters", "3", "--log-interval", "2",
        "--lr-schedule", "warmup_cosine", "--lr-warmup-percent", "34", "--lr-min", "1e-4",
    ]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _train(args, procs=1):
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)] if procs > 1 else []
    cmd = [sys.executable, *launch, "-m", "gpt2.train", *(["--"] if procs > 1 else []), *args]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=PATIENCE_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt2e2e")
    out = root / "single"
    _train([*_common(root / "data"), "--output-dir", str(out)])
    return root, out


def _curve(out):
    return [(h["iter"], h["train_loss"], h["val_loss"], h["lr"]) for h in read_json(out / "metrics.json")["history"]]


def test_ddp_on_two_cpu_processes_gives_the_single_process_curve(single):
    root, one = single
    two = root / "ddp"
    _train([*_common(root / "data"), "--output-dir", str(two)], procs=2)
    a, b = _curve(one), _curve(two)
    assert [x[0] for x in a] == [x[0] for x in b] == [2, 4, 6]
    for (_, ta, va, la), (_, tb, vb, lb) in zip(a, b):
        assert tb == pytest.approx(ta, rel=1e-4) and vb == pytest.approx(va, rel=1e-4) and lb == la
    assert a[-1][2] < a[0][2]  # and it learns
    # Rank 0 alone wrote the run directory, with both processes' RNG states; the weights agree.
    assert read_json(two / "metrics.json")["processes"] == 2 and is_done(two)
    wa, wb = checkpoint.load(one / "checkpoint.pt"), checkpoint.load(two / "checkpoint.pt")
    assert len(wb["rng"]) == 2 and wb["data"] == wa["data"]
    for name, tensor in wa["model"].items():
        torch.testing.assert_close(wb["model"][name], tensor, rtol=1e-4, atol=1e-5)


def test_resume_after_sigkill_gives_the_uninterrupted_result(single):
    root, one = single
    out = root / "killed"
    cmd = [sys.executable, "-m", "gpt2.train", *_common(root / "data"), "--output-dir", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (read_json(out / "metrics.json") or {}).get("history"), "the first evaluation", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_json(out / "run.json")["status"] == "running"  # killed mid-run, nothing recorded it
    assert len(read_json(out / "metrics.json")["history"]) < 3
    _train([*_common(root / "data"), "--output-dir", str(out), "--resume"])
    assert is_done(out) and read_json(out / "run.json")["attempt"] == 2
    assert _curve(out) == _curve(one)
    fa, fb = read_json(one / "metrics.json")["final"], read_json(out / "metrics.json")["final"]
    for key in ("perplexity", "best_perplexity", "best_at", "val_loss", "sparsity_prunable", "params", "iters", "tokens"):
        assert fb[key] == fa[key], key


def test_gpt2_tiny_defconfig_learns_and_resumes_through_make(make):
    assert make("defconfig-gpt2-tiny").returncode == 0
    done = make("all")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    whole = next(make.root.glob("results/*/gpt2_adamw_none"))
    assert is_done(whole)
    m = read_json(whole / "metrics.json")
    first, last = m["history"][0], m["history"][-1]
    assert last["iter"] == 150 and m["final"]["stopped_by"] == "max_iters"
    # The loss falls well below the uniform guess (ln 50257 = 10.8) and keeps falling.
    assert last["train_loss"] < first["train_loss"] - 1.0 and last["val_loss"] < first["val_loss"]
    assert m["final"]["perplexity"] < 400
    # The defconfig's shared schedule: 7 % of 150 steps (10) of linear warmup, then the cosine to LR_MIN 3e-4.
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=3e-3)
    sched = optim.build_scheduler("warmup_cosine", opt, 150, min_lr=3e-4, warmup_percent=7)
    expected = {}
    for t in range(1, 151):
        opt.step()
        sched.step()
        expected[t] = optim.current_lr(opt)
    assert sched.lr_lambdas[0].warmup == 10 and expected[150] == pytest.approx(3e-4)
    assert [(h["iter"], h["lr"]) for h in m["history"]] == [(t, expected[t]) for t in (50, 100, 150)]
    print(f"gpt2-tiny: train_loss {first['train_loss']:.3f} -> {last['train_loss']:.3f}, "
          f"val_loss {first['val_loss']:.3f} -> {last['val_loss']:.3f}, perplexity {m['final']['perplexity']:.1f}, "
          f"{m['final']['train_time_s']:.0f} s")

    # The same matrix again, killed (make, runner and trainer at once) after its first evaluation, then continued.
    first_id = whole.parent.name[:15]  # a new matrix needs a new id, and ids have one-second resolution
    wait_until(lambda: f"{datetime.now():%Y%m%d-%H%M%S}" != first_id, "the next second for a new matrix id")
    proc = make.popen("all", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def second_run() -> list[Path]:
        return [r for r in make.root.glob("results/*/gpt2_adamw_none") if r != whole]

    try:
        wait_until(lambda: second_run() and (read_json(second_run()[0] / "metrics.json") or {}).get("history"),
                   "the second matrix's first evaluation", proc)
    finally:
        kill_group(proc)
    killed = second_run()[0]
    assert not is_done(killed) and read_json(killed / "run.json")["status"] == "running"
    resumed = make("continue")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert is_done(killed) and read_json(killed / "run.json")["attempt"] == 2 and (killed / "train.log.1").exists()
    assert comparable(read_json(killed / "metrics.json")) == comparable(m)
