"""Cost of each pruning method, side by side in one process, next to torch.nn.utils.prune.

    python -m benchmarks.pruning [--device auto] [--models gpt2-stack,lenet5] [--tokens 512]
                                 [--blocks 12] [--rounds 5] [--steps 3] [--frequency 10] [--sparsity 0.5]

Two models: a GPT-2-sized stack of linear layers (`--blocks` blocks of
768x2304 qkv, 768x768 attention output, 768x3072 and 3072x768 MLP: 85M
prunable weights at 12 blocks, trained on `--tokens` random token vectors
per step) and LeNet-5 (batch of 32 random 32x32 images). For each model every
method gets its own copy (same initial weights) and AdamW; all copies stay
alive and are timed round-robin for `--rounds` rounds of `--steps` steps, so
drift on a shared machine hits them alike; medians are printed.

Per method and model:
  step ms        a training step with the method's per-step hooks (mask the
                 gradients, step, re-mask weights and moments; "/upd" rows
                 re-mask only at mask updates), masks at the target
                 sparsity, no mask update in the step
  update ms      one mask update from half the target to the target (exact
                 global threshold, then zeroing weights and moments); for
                 torch.nn.utils.prune, one global_unstructured L1 call
  overhead       (step + update / frequency) / dense step - 1: the per-step
                 cost with a mask update every `--frequency` steps
  bytes/param    pruning state kept between steps per prunable parameter
                 (masks, scores; for torch.nn.utils.prune the float mask
                 buffer plus the materialised masked weight)

Targets (issue 4): state and magnitude pruning at most 1 byte of state per
prunable parameter and at most 5 % step-time overhead including mask updates.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from lenet5.model import LeNet5
from lib import pruning
from lib.pruning import SparsitySchedule

# name -> (method, remask); "/upd" rows zero weights and moments only when masks change.
METHODS = {
    "none": (None, None),
    "magnitude": ("magnitude", "step"),
    "magnitude/upd": ("magnitude", "update"),
    "movement": ("movement", "step"),
    "state(b7)": ("state", "step"),
    "state(b7)/upd": ("state", "update"),
    "torch-prune": ("torch-prune", None),
}


class Block(nn.Module):
    """The linear layers of a GPT-2 block (attention itself replaced by a sum over q, k, v)."""

    def __init__(self, d: int = 768):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn_out(self.qkv(x).unflatten(-1, (3, -1)).sum(-2))
        return x + self.proj(F.gelu(self.fc(x)))


class LinearStack(nn.Module):
    """`blocks` Blocks with GPT-2's initialisation (std 0.02, residual projections scaled down), so training stays finite."""

    def __init__(self, blocks: int = 12, d: int = 768):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(d) for _ in range(blocks)])
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                std = 0.02 / (2 * blocks) ** 0.5 if name.endswith(("attn_out.weight", "proj.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, x):
        return self.blocks(x)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Case:
    """One method on one copy of a model: its optimizer, pruner and the timings."""

    def __init__(self, label: str, model: nn.Module, loss_fn, batch, sparsity: float, device):
        method, remask = METHODS[label]
        self.label, self.model, self.loss_fn, self.batch, self.device = label, model, loss_fn, batch, device
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        self.pruner = None
        self.step_times: list[float] = []
        self.step()  # the optimizer state exists before any mask update (state pruning reads it)
        self.update_s = 0.0
        self.bytes_per_param = 0.0
        weights = pruning.prunable_parameters(model)
        n = sum(p.numel() for _, p in weights)
        if method in ("magnitude", "movement", "state"):
            kw = {"variant": "bitter7"} if method == "state" else {}
            never = SparsitySchedule(sparsity, 10**9, 10**9 + 1)  # steps apply the hooks, never a mask update
            self.pruner = pruning.build(method, model, never, 1, self.opt, remask=remask, **kw)
            self.step()  # movement: one step of scores
            self.pruner.update_masks(sparsity / 2)  # an earlier level, untimed (also warms the kernels up)
            self.pruner.apply_masks()
            self.step()
            _sync(device)
            t = time.perf_counter()
            self.pruner.update_masks(sparsity)
            self.pruner.apply_masks()
            _sync(device)
            self.update_s = time.perf_counter() - t
            self.bytes_per_param = self.pruner.state_bytes() / n
        elif method == "torch-prune":
            modules = [m for m in model.modules() if isinstance(m, pruning.base.PRUNABLE_TYPES)]
            _sync(device)
            t = time.perf_counter()
            prune.global_unstructured([(m, "weight") for m in modules], pruning_method=prune.L1Unstructured, amount=sparsity)
            _sync(device)
            self.update_s = time.perf_counter() - t
            extra = sum(m.weight_mask.numel() * m.weight_mask.element_size() + m.weight.numel() * m.weight.element_size()
                        for m in modules)  # weight_orig is the old parameter: not extra
            self.bytes_per_param = extra / n

    def step(self):
        x, y = self.batch
        loss = self.loss_fn(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.pruner is not None:
            self.pruner.mask_gradients()
        self.opt.step()
        if self.pruner is not None:
            self.pruner.step()

    def timed(self, steps: int):
        _sync(self.device)
        t = time.perf_counter()
        for _ in range(steps):
            self.step()
        _sync(self.device)
        self.step_times.append((time.perf_counter() - t) / steps)


def build_cases(name: str, args, device) -> list[Case]:
    g = torch.Generator().manual_seed(0)
    if name == "gpt2-stack":
        torch.manual_seed(0)
        base = LinearStack(args.blocks).to(device)
        x = torch.randn(args.tokens, 768, generator=g).to(device)
        target = torch.randn(args.tokens, 768, generator=g).to(device)
        batch, loss_fn = (x, target), F.mse_loss
    else:
        torch.manual_seed(0)
        base = LeNet5().to(device)
        batch = (torch.randn(32, 1, 32, 32, generator=g).to(device), torch.randint(0, 10, (32,), generator=g).to(device))
        loss_fn = F.cross_entropy
    return [Case(label, copy.deepcopy(base), loss_fn, batch, args.sparsity, device) for label in METHODS]


def report(name: str, cases: list[Case], frequency: int, n_params: int) -> None:
    dense = statistics.median(cases[0].step_times)
    print(f"\n{name}: {n_params / 1e6:.2f}M prunable weights, mask update every {frequency} steps")
    print(f"{'method':<14} {'step ms':>9} {'vs dense':>9} {'update ms':>10} {'overhead':>9} {'bytes/param':>12}")
    for c in cases:
        step = statistics.median(c.step_times)
        overhead = (step + c.update_s / frequency) / dense - 1
        print(f"{c.label:<14} {step * 1e3:9.2f} {step / dense:9.3f} {c.update_s * 1e3:10.1f} {overhead:+9.1%} {c.bytes_per_param:12.2f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--models", default="gpt2-stack,lenet5")
    p.add_argument("--tokens", type=int, default=512, help="token vectors per step for the GPT-2 stack")
    p.add_argument("--blocks", type=int, default=12)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="steps per method per round (LeNet-5 uses 20x as many)")
    p.add_argument("--frequency", type=int, default=10, help="optimizer steps between mask updates")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                f" ({torch.get_num_threads()} threads)") + f", torch {torch.__version__}, sparsity {args.sparsity}")
    for name in args.models.split(","):
        cases = build_cases(name, args, device)
        steps = args.steps * (20 if name == "lenet5" else 1)
        for case in cases:  # warm-up round, not recorded
            case.timed(1)
            case.step_times.clear()
        for r in range(args.rounds):
            order = cases if r % 2 == 0 else cases[::-1]  # ABBA: drift hits every method alike
            for case in order:
                case.timed(steps)
        n = sum(p.numel() for _, p in pruning.prunable_parameters(cases[0].model))
        report(f"{name} ({args.tokens} tokens/step)" if name == "gpt2-stack" else f"{name} (batch 32)", cases, args.frequency, n)


if __name__ == "__main__":
    main()
