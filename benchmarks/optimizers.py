"""Per-step time of each optimizer relative to torch.optim.AdamW, side by side.

    python -m benchmarks.optimizers [--steps 200] [--repeats 5] [--device cpu]

For each model (LeNet-5 on 32x32 inputs, and a stack of wide linear layers)
every optimizer of lib.optim and the reference torch.optim.AdamW get their own
copy of the same weights. Only `optimizer.step()` is timed: the gradients are
computed once and reused, so the numbers compare the optimizers, not the
network. The optimizers take turns inside each repeat, in a fresh random
order every repeat (so machine load and position effects hit them all alike),
and the median over repeats is reported as a ratio to AdamW's median: 1.00 =
as fast as torch's AdamW. The optimizers are built as the harness builds
them: torch's SGD, Adam and AdamW (and AdamWPrune on them) with fused kernels
(OPTIMIZER_KERNELS_FUSED); `adamw[torch]` is the same optimizer with torch's
own kernels (OPTIMIZER_KERNELS_TORCH), the same class and kernels as the
reference, so its distance from 1.00 shows the noise of the measurement.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time

import torch
from torch import nn

from lenet5.model import LeNet5
from lib import optim

REFERENCE = "torch.AdamW"


def mlp_stack(width: int = 512, depth: int = 6) -> nn.Module:
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.LayerNorm(width), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


MODELS = {
    "lenet5": (lambda: LeNet5(num_classes=10), (64, 1, 32, 32)),
    "mlp-stack": (mlp_stack, (64, 512)),
}


def contenders() -> list[tuple[str, str, dict]]:
    """(label, optimizer name, settings); AdamWSpam with its paper settings, resets included."""
    out = [(REFERENCE, "", {})]
    out += [(n, n, {}) for n in optim.OPTIMIZERS if n != "adamwprune"]
    out += [(f"adamwprune[{b}]", "adamwprune", {"base": b}) for b in optim.BASES]
    out += [("adamw[torch]", "adamw", {"kernels": "torch"})]
    return out


def build(label: str, name: str, settings: dict, model: nn.Module, lr: float, wd: float):
    if label == REFERENCE:
        return torch.optim.AdamW(optim.param_groups(model, wd), lr=lr)
    return optim.build(name, model, lr, wd, **settings)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(model_name: str, steps: int, repeats: int, device: torch.device) -> dict[str, float]:
    make, shape = MODELS[model_name]
    torch.manual_seed(0)
    base = make().to(device)
    x = torch.randn(*shape, device=device)
    y = torch.randint(0, 10, (shape[0],), device=device)
    nn.functional.cross_entropy(base(x), y).backward()
    grads = [p.grad.detach().clone() for p in base.parameters()]
    runs = []
    for label, name, settings in contenders():
        model = copy.deepcopy(base)
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        runs.append((label, model, build(label, name, settings, model, 1e-4, 1e-4)))
    for _, _, opt in runs:  # warm-up: allocate the optimizer state
        for _ in range(3):
            opt.step()
    times = {label: [] for label, _, _ in runs}
    order = random.Random(0)
    for _ in range(repeats):
        order.shuffle(runs)
        for label, _, opt in runs:
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                opt.step()
            sync(device)
            times[label].append((time.perf_counter() - start) / steps)
    return {label: statistics.median(ts) for label, ts in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per timing")
    p.add_argument("--repeats", type=int, default=9, help="timings per optimizer (median reported)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {args.steps} steps x {args.repeats} repeats, "
          f"{torch.get_num_threads()} thread(s)")
    for model_name in MODELS:
        medians = bench_model(model_name, args.steps, args.repeats, device)
        ref = medians[REFERENCE]
        n_params = sum(p.numel() for p in MODELS[model_name][0]().parameters())
        print(f"\n{model_name} ({n_params:,} parameters): torch.optim.AdamW step = {ref * 1e6:.1f} us")
        print(f"  {'optimizer':<22} {'us/step':>10} {'x AdamW':>8}")
        for label, t in medians.items():
            print(f"  {label:<22} {t * 1e6:>10.1f} {t / ref:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
