"""GPT-2 training throughput: gpt2/train.py's loop against a minimal hand-written loop.

    python -m benchmarks.gpt2_throughput                      # gpt2-tiny on the CPU (the defconfig's batch)
    python -m benchmarks.gpt2_throughput --device cuda --model-size gpt2 --block-size 1024 --batch-size 8 --amp bf16

Both loops train the same model (same size, same initial weights) on the same
batch shape from the same train.bin (CPython's docs, prepared offline), with
AdamW, weight decay and gradient clipping at 1.0. The hand-written loop is the
least a PyTorch user would write: random windows, forward, backward, clip,
step, zero the gradients.

gpt2/train.py runs for real (`main()`: its own data order, learning rate
schedule, loss bookkeeping, logging and limit checks). The two loops are
interleaved one iteration at a time in this one process: right after each of
the harness's optimizer steps, one hand-written iteration runs and is timed.
The harness's cost of an iteration is the time from the end of that
hand-written step to the start of the next one, so both loops see the same
machine at the same moments, which matters on a shared machine. Tokens/s come from the median
(and the fastest) iteration of each, after --warmup iterations. Prints both
and the ratio (target: the harness within 5 % of the hand-written loop).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from gpt2 import train
from gpt2.data import ensure_prepared
from gpt2.model import GPT, config_for
from lib import checkpoint
from lib.run import resolve_device

AMP = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def hand_written_step(a, tokens: np.ndarray, device: torch.device):
    """One iteration of the minimal loop, as a function (its state lives in the closure)."""
    checkpoint.seed_everything(1)
    model = GPT(config_for(a.model_size, block_size=a.block_size)).to(device)
    net = torch.compile(model) if a.compile else model
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=a.lr)
    amp = torch.autocast("cuda", dtype=AMP[a.amp]) if device.type == "cuda" and AMP[a.amp] else nullcontext()
    rng = np.random.default_rng(1)
    T, B = a.block_size, a.batch_size

    def step():
        starts = rng.integers(0, len(tokens) - T - 1, B)
        both = torch.from_numpy(np.stack([tokens[s : s + T + 1] for s in starts]).astype(np.int64)).to(device)
        with amp:
            _, loss = net(both[:, :-1], both[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


class Interleaved:
    """Wraps gpt2/train.py's optimizer_step: a timed hand-written step runs after each harness iteration's step."""

    def __init__(self, hand_step, sync):
        self.hand_step, self.sync = hand_step, sync
        self.hand: list[float] = []
        self.harness: list[float] = []
        self._hand_done = None

    def wrap(self, real):
        def optimizer_step(*args, **kwargs):
            real(*args, **kwargs)
            self.sync()
            start = time.perf_counter()
            if self._hand_done is not None:  # the harness's iteration since the last hand-written one, loop body included
                self.harness.append(start - self._hand_done)
            self.hand_step()
            self.sync()
            self._hand_done = time.perf_counter()
            self.hand.append(self._hand_done - start)

        return optimizer_step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--model-size", default="tiny")
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--iters", type=int, default=60, help="iterations of each loop")
    p.add_argument("--warmup", type=int, default=5, help="first iterations left out of the figures")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--amp", default="off", choices=tuple(AMP))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--data-dir", default=None, help="where the offline corpus is prepared (default: a temporary directory)")
    a = p.parse_args(argv)
    device = resolve_device(a.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = a.data_dir or str(Path(tmp) / "data")
        tokens = np.memmap(ensure_prepared("pydoc", data_dir) / "train.bin", dtype=np.uint16, mode="r")
        args = train.parse_args([
            "--device", a.device, "--data-dir", data_dir, "--output-dir", str(Path(tmp) / "run"), "--monitor", "off",
            "--optimizer", "adamw", "--model-size", a.model_size, "--block-size", str(a.block_size),
            "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--max-iters", str(a.iters + 1),
            "--eval-interval", str(a.iters + 1), "--eval-iters", "1", "--log-interval", "10", "--amp", a.amp,
            *(["--compile"] if a.compile else []),
        ])
        timer = Interleaved(hand_written_step(a, tokens, device), sync)
        real = train.optimizer_step
        train.optimizer_step = timer.wrap(real)
        try:
            train.main(args)
        finally:
            train.optimizer_step = real
    tokens_per_iter = a.batch_size * a.block_size
    hand, harness = timer.hand[a.warmup : a.iters], timer.harness[a.warmup : a.iters]
    rate = lambda seconds: tokens_per_iter / seconds  # noqa: E731
    h_med, t_med = rate(statistics.median(hand)), rate(statistics.median(harness))
    h_best, t_best = rate(min(hand)), rate(min(harness))
    what = f"{a.model_size}, {a.batch_size} x {a.block_size} tokens per step, {a.device}, amp {a.amp}{', compiled' if a.compile else ''}"
    print(f"GPT-2 training throughput ({what}; {len(hand)} interleaved iterations of each loop)")
    print("                       median    fastest")
    print(f"  hand-written loop : {h_med:9,.0f}  {h_best:9,.0f}  tokens/s")
    print(f"  gpt2/train.py     : {t_med:9,.0f}  {t_best:9,.0f}  tokens/s")
    print(f"  ratio             : {t_med / h_med:9.3f}  {t_best / h_best:9.3f}  (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
