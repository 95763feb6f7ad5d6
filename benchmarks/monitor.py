"""Training step time with the memory sampler on vs off, measured side by side in one process.

    python -m benchmarks.monitor [--device auto] [--interval 1.0] [--rounds 6] [--round-seconds S]

LeNet-5 trains on random 32x32 batches. Rounds alternate "off" (no sampler)
and "on" (the backend `--monitor auto` would pick, sampling every
`--interval` seconds, with the phase marked as the training loops do), in ABBA
order so drift on a shared machine hits both alike; each round trains for
`--round-seconds` (default five sampling intervals, at least 2 s) so an "on"
round really contains samples. Printed: the median step time of each, their
ratio (the target is below 1.01), and the sampler's own cost: the wall time
of one sample (per metric for the GPU backends) times the sampling rate.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lenet5.model import LeNet5
from lib import monitor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _steps(model, opt, batches, device, seconds: float) -> float:
    """Seconds per optimizer step, training on `batches` (cycled) for about `seconds`."""
    _sync(device)
    start, steps = time.perf_counter(), 0
    while True:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        steps += len(batches)
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--monitor", default="auto", choices=monitor.CHOICES[:-1])
    p.add_argument("--interval", type=float, default=1.0, help="sampling interval (s), as --monitor-interval")
    p.add_argument("--rounds", type=int, default=6, help="off/on pairs")
    p.add_argument("--round-seconds", type=float, default=None, help="training time per round (default: 5 intervals, >= 2 s)")
    p.add_argument("--steps", type=int, default=10, help="distinct batches cycled through")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu"))
    torch.manual_seed(0)
    model = LeNet5(num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [
        (torch.randn(args.batch_size, 1, 32, 32, device=device), torch.randint(0, 10, (args.batch_size,), device=device))
        for _ in range(args.steps)
    ]
    seconds = args.round_seconds or max(2.0, 5 * args.interval)
    _steps(model, opt, batches, device, 1.0)  # warm-up: allocator, kernels, caches

    off, on = [], []
    backend_name = None
    for r in range(args.rounds):
        order = ("off", "on") if r % 2 == 0 else ("on", "off")  # ABBA: neither always goes first
        for mode in order:
            if mode == "off":
                off.append(_steps(model, opt, batches, device, seconds))
                continue
            backend, _ = monitor.open_backend(args.monitor, device)
            allocator = monitor.AllocatorCounters(device) if device.type == "cuda" else None
            mon = monitor.Monitor(backend, args.interval, allocator=allocator).start()
            mon.set_phase("train")
            on.append(_steps(model, opt, batches, device, seconds))
            mon.set_phase(None)
            mon.stop()
            backend_name = backend.name

    # The sampler's own cost: time reads on a fresh backend (a stopped one is closed).
    backend, _ = monitor.open_backend(args.monitor, device)
    t0 = time.perf_counter()
    for _ in range(50):
        backend.read()
    read_s = (time.perf_counter() - t0) / 50
    parts = []
    for reader in getattr(backend, "readers", []):  # the GPU backends read metric by metric
        t0 = time.perf_counter()
        for _ in range(20):
            reader()
        parts.append(f"{reader.__name__.strip('_')} {(time.perf_counter() - t0) / 20 * 1e6:.0f} us")
    backend.close()

    m_off, m_on = statistics.median(off), statistics.median(on)
    print(f"device {device}, backend {backend_name}, interval {args.interval} s, {args.rounds} off/on pairs of {seconds:.1f} s")
    print(f"step time  off {m_off * 1e3:8.3f} ms   on {m_on * 1e3:8.3f} ms   ratio on/off {m_on / m_off:.4f}")
    print("per round (ms)  off " + " ".join(f"{t * 1e3:.3f}" for t in off) + "\n                on  " + " ".join(f"{t * 1e3:.3f}" for t in on))
    print(f"one sample {read_s * 1e6:.0f} us -> sampler busy {100 * read_s / args.interval:.4f} % of the time (one thread)")
    if parts:
        print("per metric: " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
