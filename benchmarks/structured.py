"""What channel pruning buys at inference: the dense model next to its compact form, side by side in one process.

    python -m benchmarks.structured [--models lenet5,resnet18,gpt2] [--sparsity 0.4] [--rounds 15]
                                    [--batch 256,64,16] [--gpt2-size tiny] [--threads 1] [--device cpu]

For each model (LeNet-5 on 1x32x32 digits, ResNet-18 with the CIFAR stem on
3x32x32 images and 10 classes, GPT-2 of `--gpt2-size` on sequences of its
block size), randomly initialised with seed 0: the coupling groups of
`lib.pruning.channels` (conv channels, linear neurons, attention heads),
the lowest-L1 units at one common fraction of every group until
`--sparsity` of the prunable parameters (`channel_params`) are zero
(`select_units`), those units masked, and a copy compacted (`compact`:
every all-zero unit removed). The dense model is the one before masking
(masking alone changes no shape, so it runs as fast as the dense one).

Timing, in eval mode under torch.inference_mode(): latency is one forward
at batch 1, throughput one forward at the model's `--batch` (samples/s, for
GPT-2 sequences/s). Each round times the dense and the compact model one
after the other, in alternating order from round to round, so drift on a
shared machine hits both alike; each timing is the mean over enough calls
to last about `--min-ms` (at least one), after `--warmup` untimed calls.
One thread by default: on a shared machine more threads than free cores
make batch-1 timings mostly scheduler waits (both models alike). Medians
over `--rounds` rounds are printed with the spread (the 25th to
75th percentile), and the ratio dense / compact: above 1 the compact model
is faster. `max|diff|` is the largest difference between the masked and
the compact model's outputs on the batch (exactness of the compaction).
Figures: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch

from lib.pruning import channels
from lib.pruning.base import prunable_parameters

MODELS = ("lenet5", "resnet18", "gpt2")
DEFAULT_BATCH = {"lenet5": 256, "resnet18": 64, "gpt2": 16}


def build(name: str, gpt2_size: str):
    """(model, a function making a batch of n inputs, label), with seed 0."""
    torch.manual_seed(0)
    if name == "lenet5":
        from lenet5.model import LeNet5

        return LeNet5(), lambda n: torch.randn(n, 1, 32, 32), "LeNet-5, 1x32x32"
    if name == "resnet18":
        from resnet18.model import resnet18

        return resnet18(num_classes=10), lambda n: torch.randn(n, 3, 32, 32), "ResNet-18 (CIFAR stem), 3x32x32"
    if name == "gpt2":
        from gpt2.model import GPT, config_for

        cfg = config_for(gpt2_size)
        return GPT(cfg), lambda n: torch.randint(0, 50257, (n, cfg.block_size)), f"GPT-2-{gpt2_size}, {cfg.block_size} tokens"
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")


def prune_and_compact(model, x, sparsity: float):
    """Mask the lowest-L1 units to `sparsity` of the prunable parameters; return (masked model, compact copy, report)."""
    model.eval()
    params = channels.channel_params(model, prunable_parameters(model), x)
    groups = channels.channel_groups(model, params, x)
    keeps = channels.select_units(groups, channels.unit_scores(groups, [p.abs() for _, p in params]), params, sparsity)
    with torch.no_grad():
        for (_, p), m in zip(params, channels.unit_masks(groups, keeps, params)):
            p.mul_(m)
    compact = copy.deepcopy(model)
    report = channels.compact(compact, x)
    report["zeros"] = sum(int((p == 0).sum()) for _, p in params) / sum(p.numel() for _, p in params)
    return model, compact.eval(), report


def first(out):
    return out[0] if isinstance(out, tuple) else out


def timer(model, x, sync, min_s: float):
    """A function timing `model(x)`: seconds per call, the mean over enough calls to last `min_s`."""
    with torch.inference_mode():
        start = time.perf_counter()
        model(x)
        sync()
        once = time.perf_counter() - start
    calls = max(1, int(min_s / max(once, 1e-6)))

    def run() -> float:
        with torch.inference_mode():
            sync()
            start = time.perf_counter()
            for _ in range(calls):
                model(x)
            sync()
            return (time.perf_counter() - start) / calls

    return run


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def bench(name: str, a, device: torch.device, sync) -> None:
    model, make_input, label = build(name, a.gpt2_size)
    batch = a.batch[name]
    x1, xb = make_input(1).to(device), make_input(batch).to(device)
    model.to(device)
    dense = copy.deepcopy(model).eval()
    masked, compact, report = prune_and_compact(model, xb[: min(batch, 8)], a.sparsity)
    with torch.inference_mode():
        diff = float((first(masked(xb)) - first(compact(xb))).abs().max())
    models = {"dense": dense, "compact": compact}
    for m in models.values():
        with torch.inference_mode():
            for _ in range(a.warmup):
                m(x1), m(xb)
    timers = {(k, which): timer(m, x, sync, a.min_ms / 1000) for k, m in models.items() for which, x in (("lat", x1), ("thr", xb))}
    times = {key: [] for key in timers}
    for r in range(a.rounds):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for which in ("lat", "thr"):
            for k in order:
                times[(k, which)].append(timers[(k, which)]())
    units = "sequences/s" if name == "gpt2" else "samples/s"
    print(f"\n{label}: {a.sparsity:.0%} of the prunable parameters zero by channel units "
          f"(achieved {report['zeros']:.1%}), {a.rounds} rounds")
    print(f"  parameters        dense {report['params_before']:>12,}   compact {report['params_after']:>12,}   "
          f"prunable {report['prunable_before']:,} -> {report['prunable_after']:,} "
          f"({1 - report['prunable_after'] / report['prunable_before']:.1%} fewer)")
    units_line = ", ".join(f"{g['kind']}s {g['units_before']}->{g['units_after']}" for g in list(report["groups"].values())[:4])
    print(f"  units (first groups) {units_line}{', ...' if len(report['groups']) > 4 else ''}")
    for which, title in (("lat", "latency, batch 1"), ("thr", f"throughput, batch {batch}")):
        d, c = quartiles(times[("dense", which)]), quartiles(times[("compact", which)])
        if which == "lat":
            show = lambda q: f"{q[1] * 1e3:8.3f} ms [{q[0] * 1e3:.3f}-{q[2] * 1e3:.3f}]"  # noqa: E731
        else:
            show = lambda q: f"{batch / q[1]:10,.0f} {units} [{batch / q[2]:,.0f}-{batch / q[0]:,.0f}]"  # noqa: E731
        print(f"  {title:<22} dense {show(d)}   compact {show(c)}   dense/compact {d[1] / c[1]:.2f}x")
    print(f"  max|diff| masked vs compact outputs: {diff:.2e}")


def parse_batch(text: str) -> dict[str, int]:
    values = [int(v) for v in text.split(",")]
    if len(values) != len(MODELS) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--batch takes {len(MODELS)} positive sizes ({','.join(MODELS)}), got {text!r}")
    return dict(zip(MODELS, values))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--sparsity", type=float, default=0.4, help="fraction of the prunable parameters zeroed by units")
    p.add_argument("--rounds", type=int, default=15, help="timings of each model and batch (medians reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls of each model and batch first")
    p.add_argument("--min-ms", type=float, default=50.0, help="each timing repeats the call to last about this long")
    p.add_argument("--batch", type=parse_batch, default=dict(DEFAULT_BATCH),
                   help="throughput batch sizes of " + ",".join(MODELS) + " (default " + ",".join(map(str, DEFAULT_BATCH.values())) + ")")
    p.add_argument("--gpt2-size", default="tiny", help="GPT-2 size (gpt2/model.py SIZES)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU (0: torch's default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    a = p.parse_args(argv)
    names = [n.strip() for n in a.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        p.error(f"unknown model(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(MODELS)}")
    if not 0 < a.sparsity < 1:
        p.error(f"--sparsity must be in (0, 1), got {a.sparsity}")
    if a.rounds < 1:
        p.error(f"--rounds must be >= 1, got {a.rounds}")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} thread(s), dense and compact side by side")
    for name in names:
        bench(name, a, device, sync)
    return 0


if __name__ == "__main__":
    sys.exit(main())
