"""Cost of each pruning method, side by side in one process, next to torch.nn.utils.prune.

    python -m benchmarks.pruning [--device auto] [--models gpt2-stack,lenet5] [--tokens 512]
                                 [--blocks 12] [--rounds 9] [--steps 1] [--frequencies 50]
                                 [--sparsity 0.5] [--threads 0] [--kernels fused]

Two models: a GPT-2-sized stack of linear layers (`--blocks` blocks of
768x2304 qkv, 768x768 attention output, 768x3072 and 3072x768 MLP: 85M
prunable weights at 12 blocks, trained on `--tokens` random token vectors
per step) and LeNet-5 (batch of 32 random 32x32 images, the harness's
default batch). For each model every method gets its own copy (same
initial weights) and the harness's AdamW (`lib.optim`, `--kernels` as
OPTIMIZER_KERNELS). All copies stay alive and take turns, round by round
in alternating order (LeNet-5: 10x the rounds, 5x the steps): in each round
a method makes `--steps` timed steps, then one timed mask update. So drift
on a shared machine hits every method, and the updates and the steps,
alike; medians over the rounds are printed.

Methods: none (dense), magnitude, movement, state (bitter7), each as the
harness runs it (torch operations on every device), with the mask-update
interval of the first of `--frequencies` (the default interval, 50 steps);
"/step" rows re-mask weights and moments after every step
(PRUNING_REMASK_STEP); torch.nn.utils.prune for comparison.

Per method and model:
  step ms        a training step with the method's per-step hooks (mask
                 the gradients, step, and for "/step" rows re-mask weights
                 and moments), masks at the target sparsity, no mask update
                 in the step
  hooks ms       what the hooks (mask_gradients() and pruner.step()) add
                 to a step: the time from the end of backward to the end
                 of the step, less the dense model's (CUDA events on a
                 GPU). Not the time inside the hooks alone: whatever runs
                 first after backward pays for caches that backward
                 evicted, and without pruning the optimizer step pays it.
                 Not whole steps either: their difference drowns in the
                 noise of a shared machine
  in-hook ms     the time inside the hooks alone, for comparison
  update ms      a mask update from half the target to the target (exact
                 global threshold, then zeroing weights and moments; the
                 weights and moments the previous round's update zeroed
                 get their values back first, untimed, as kept weights
                 are in training: not exactly zero); for
                 torch.nn.utils.prune, one global_unstructured L1 call
                 (timed once: it is slow on the GPT-2 stack)
  @N             (hooks + update / N) / dense step: the overhead per step
                 with a mask update every N steps, for each N of
                 `--frequencies` (PRUNING_FREQUENCY, default 50); torch.nn.utils.prune
                 works inside forward and backward, so its row uses the
                 step difference in place of the hooks
  bytes/param    pruning state kept between steps per prunable parameter
                 (masks, scores; for torch.nn.utils.prune the float mask
                 buffer plus the materialised masked weight)

Targets: state and magnitude pruning at most 1 byte of state per prunable
parameter and, on the GPT-2-sized stack, at most 5 % step-time overhead at
the default interval including mask updates. Figures: benchmarks/RESULTS.md.
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
from lib import optim, pruning
from lib.pruning import SparsitySchedule

# name -> (method, remask); "/step" rows also zero weights and moments after every step (--pruning-remask step)
METHODS = {
    "none": (None, None),
    "magnitude": ("magnitude", "update"),
    "magnitude/step": ("magnitude", "step"),
    "movement": ("movement", "update"),
    "state(b7)": ("state", "update"),
    "state(b7)/step": ("state", "step"),
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

    def __init__(self, label: str, model: nn.Module, loss_fn, batch, sparsity: float, device, kernels: str, interval: int):
        method, remask = METHODS[label]
        self.label, self.model, self.loss_fn, self.batch, self.device = label, model, loss_fn, batch, device
        self.sparsity = sparsity
        self.opt = optim.build("adamw", model, lr=1e-4, weight_decay=0.01, kernels=kernels)
        self.pruner = None
        self.step_times: list[float] = []
        self.tail_times: list[float] = []  # end of backward to end of step, per step of each timed round
        self.hook_times: list[float] = []  # the pruning hooks alone inside each timed round, per step
        self.update_times: list[float] = []  # one mask update per timed round
        self.marks: list = []
        self.step()  # the optimizer state exists before any mask update (state pruning reads it)
        self.bytes_per_param = 0.0
        weights = pruning.prunable_parameters(model)
        n = sum(p.numel() for _, p in weights)
        if method in ("magnitude", "movement", "state"):
            kw = {"variant": "bitter7"} if method == "state" else {}
            never = SparsitySchedule(sparsity, 10**9, 10**9 + 1)  # steps apply the hooks, never a mask update
            # the interval (PRUNING_FREQUENCY): pruner.step() asks the schedule on one step in `interval`, as in training
            self.pruner = pruning.build(method, model, never, interval, self.opt, remask=remask, **kw)
            self.step()  # movement: one step of scores
            self.pruner.update_masks(sparsity / 2)  # an earlier level, untimed (also warms up)
            self.pruner.apply_masks()
            self.step()
            self.half = [m.clone() for m in self.pruner.mask_list()]  # each round updates from these masks
            before = [t.clone() for t, _ in self._masked_tensors()]
            self.revived, self.revived_values = [], []  # nothing to restore before this first update
            self.update()  # to the target, untimed
            # what that update zeroed, restored before each timed update (see update())
            self.revived = [h & ~m for h, m in zip(self.half, self.pruner.mask_list())]
            self.revived_values = [b[self.revived[i]] for b, (_, i) in zip(before, self._masked_tensors())]
            del before
            self.bytes_per_param = self.pruner.state_bytes() / n
        elif method == "torch-prune":  # one global L1 call (tens of seconds on the GPT-2 stack): timed once
            modules = [m for m in model.modules() if isinstance(m, pruning.base.PRUNABLE_TYPES)]
            _sync(device)
            t = time.perf_counter()
            prune.global_unstructured([(m, "weight") for m in modules], pruning_method=prune.L1Unstructured, amount=sparsity)
            _sync(device)
            self.update_times.append(time.perf_counter() - t)
            extra = sum(m.weight_mask.numel() * m.weight_mask.element_size() + m.weight.numel() * m.weight.element_size()
                        for m in modules)  # weight_orig is the old parameter: not extra
            self.bytes_per_param = extra / n

    def _masked_tensors(self) -> list[tuple[torch.Tensor, int]]:
        """Each prunable weight and each of its optimizer moments, with the index of its mask."""
        out = []
        for i, (_, p) in enumerate(self.pruner.params):
            out.append((p, i))
            state = self.opt.state.get(p, {})
            out += [(state[k], i) for k in pruning.base.MOMENT_KEYS if torch.is_tensor(state.get(k)) and state[k].shape == p.shape]
        return out

    @torch.no_grad()
    def update(self) -> float:
        """One timed mask update from the earlier level's masks to the target (threshold, then zeroing).

        The weights and moments the previous update zeroed are first given
        back their values from before it: left at zero, a quarter of the
        weights would tie at score 0 below every other kept weight, which
        training never produces (kept weights are not exactly zero) and
        which sends the selection down its path for many equal scores.
        """
        for m, h in zip(self.pruner.mask_list(), self.half):
            m.copy_(h)
        for (t, i), values in zip(self._masked_tensors(), self.revived_values):
            t.masked_scatter_(self.revived[i], values)
        self.pruner.sparsity = self.sparsity / 2
        _sync(self.device)
        t = time.perf_counter()
        self.pruner.update_masks(self.sparsity)
        self.pruner.apply_masks()
        _sync(self.device)
        return time.perf_counter() - t

    def step(self):
        """One training step with the method's hooks, marked at the end of backward, around the step, and at the end."""
        x, y = self.batch
        loss = self.loss_fn(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        marks = [self._mark()]
        if self.pruner is not None:
            self.pruner.mask_gradients()
        marks.append(self._mark())
        self.opt.step()
        marks.append(self._mark())
        if self.pruner is not None:
            self.pruner.step()
        marks.append(self._mark())
        self.marks.append(marks)

    def _mark(self):
        """A point in time: a recorded CUDA event (GPU time, no sync), or the CPU clock."""
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    @staticmethod
    def _seconds(a, b) -> float:
        return a.elapsed_time(b) / 1e3 if isinstance(a, torch.cuda.Event) else b - a

    def timed(self, steps: int):
        """One round: `steps` timed steps at the target sparsity, then (pruners) a timed mask update.

        The update follows the method's own steps, as in training, where it
        runs right after an optimizer step: updates timed back to back run
        from warm caches and look faster than they are (LeNet-5 on the CPU:
        0.7-1.0 ms back to back, 1.0-1.4 ms after steps).
        """
        self.marks = []
        _sync(self.device)
        t = time.perf_counter()
        for _ in range(steps):
            self.step()
        _sync(self.device)
        self.step_times.append((time.perf_counter() - t) / steps)
        # from the end of backward to the end of the step, and the hooks alone (mask_gradients() plus pruner.step())
        self.tail_times.append(sum(self._seconds(m[0], m[3]) for m in self.marks) / steps)
        self.hook_times.append(sum(self._seconds(m[0], m[1]) + self._seconds(m[2], m[3]) for m in self.marks) / steps)
        if self.pruner is not None:
            self.update_times.append(self.update())  # leaves the masks at the target for the next round


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
    interval = int(args.frequencies.split(",")[0])
    return [Case(label, copy.deepcopy(base), loss_fn, batch, args.sparsity, device, args.kernels, interval) for label in METHODS]


def row(cells: list[str], widths: list[int]) -> str:
    """One table line: the first cell left-aligned, the others right-aligned, always a space apart (any number fits)."""
    first, *rest = cells
    return " ".join([f"{first:<{widths[0]}}"] + [f"{c:>{w}}" for c, w in zip(rest, widths[1:])])


def report(name: str, cases: list[Case], frequencies: list[int], n_params: int) -> None:
    dense, dense_tail = statistics.median(cases[0].step_times), statistics.median(cases[0].tail_times)
    widths = [16, 9, 9, 9, 11, 10] + [7] * len(frequencies) + [12]
    print(f"\n{name}: {n_params / 1e6:.2f}M prunable weights")
    print(row(["method", "step ms", "vs dense", "hooks ms", "in-hook ms", "update ms"] + [f"@{f}" for f in frequencies]
              + ["bytes/param"], widths))
    for c in cases:
        step = statistics.median(c.step_times)
        if c.pruner is not None:  # what the hooks add to the end of the step, and the time spent inside them
            extra, inside = statistics.median(c.tail_times) - dense_tail, f"{statistics.median(c.hook_times) * 1e3:.2f}"
        else:  # dense; torch.nn.utils.prune works inside forward and backward: the whole-step difference
            extra, inside = step - dense, ""
        hooks = f"{extra * 1e3:.2f}" if c is not cases[0] else ""
        update = statistics.median(c.update_times) if c.update_times else 0.0
        overheads = [f"{(extra + update / f) / dense:+.1%}" for f in frequencies]
        print(row([c.label, f"{step * 1e3:.2f}", f"{step / dense:.3f}", hooks, inside, f"{update * 1e3:.1f}"] + overheads
                  + [f"{c.bytes_per_param:.2f}"], widths))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--models", default="gpt2-stack,lenet5")
    p.add_argument("--tokens", type=int, default=512, help="token vectors per step for the GPT-2 stack")
    p.add_argument("--blocks", type=int, default=12)
    p.add_argument("--rounds", type=int, default=9, help="rounds per method (LeNet-5: 10x as many); medians over rounds are used")
    p.add_argument("--steps", type=int, default=1, help="timed steps per method per round (LeNet-5: 5x as many)")
    p.add_argument("--frequencies", default="50",
                   help="mask update intervals (optimizer steps) to show the overhead at; the first is the pruners' own (default 50)")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--kernels", default="fused", choices=optim.KERNELS, help="the optimizer's kernels (OPTIMIZER_KERNELS)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                f" ({torch.get_num_threads()} threads)") + f", torch {torch.__version__}, sparsity {args.sparsity}, {args.kernels} AdamW")
    for name in args.models.split(","):
        cases = build_cases(name, args, device)
        small = name == "lenet5"  # milliseconds per step: many short rounds, so drift hits every method alike
        steps, rounds = args.steps * (5 if small else 1), args.rounds * (10 if small else 1)
        for case in cases:  # warm-up round, not recorded
            case.timed(1)
            for times in (case.step_times, case.tail_times, case.hook_times) + ((case.update_times,) if case.pruner else ()):
                times.clear()
        for r in range(rounds):
            order = cases if r % 2 == 0 else cases[::-1]  # ABBA: drift hits every method alike
            for case in order:
                case.timed(steps)
        n = sum(p.numel() for _, p in pruning.prunable_parameters(cases[0].model))
        report(f"{name} ({args.tokens} tokens/step)" if name == "gpt2-stack" else f"{name} (batch 32)", cases, [int(f) for f in args.frequencies.split(",")], n)


if __name__ == "__main__":
    main()
