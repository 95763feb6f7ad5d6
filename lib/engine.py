"""The shared classifier training loop: train, evaluate, checkpoint, record.

`fit()` is what an image classifier's train.py calls once it has parsed its
flags and knows how to build its model and data. It owns the run directory:
run.json (status, heartbeat), metrics.json (history and final block),
checkpoint.pt after every epoch and best.pt on the best validation accuracy.
`run()` wraps a trainer's main so that any failure marks the run failed with
one clear line on stderr.

Settings every classifier shares: `--amp bf16|fp16` (torch.autocast, plus a
GradScaler for fp16; CUDA only, ignored with a note on the CPU), `--compile`
(torch.compile), and DDP when started by torchrun (`lib.distributed`): the
global `--batch-size` is split over the processes, each rank samples its share
through a DistributedSampler, and rank 0 alone writes run.json, metrics.json
and the checkpoints, which hold every rank's RNG states.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Subset

from lib import checkpoint, distributed, monitor, optim, pruning, tracking
from lib.data import DatasetMissing
from lib.results import SCHEMA, RunRecord, write_json


class TrainingDiverged(Exception):
    pass


# Errors whose message already says what is wrong and what to do.
EXPLAINED = (TrainingDiverged, DatasetMissing, checkpoint.CorruptCheckpoint, ValueError)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no GPU is visible; pick CPU or auto (CONFIG_DEVICE_*)")
    return torch.device(name)


# The memory monitor and trackers of the run in progress, closed by `run()` if it fails.
_observers: dict = {}


def observe(args, out: Path, device, record, model_name: str, dataset: str):
    """Start the memory monitor and open the trackers (rank 0); their problems become run.json warnings."""
    mon = monitor.for_run(args, device, out)
    trackers = tracking.for_run(args, model=model_name, dataset=dataset, run_dir=out)
    mon.on_sample = trackers.log_memory if trackers.trackers else None
    _observers.update(mon=mon, trackers=trackers, out=out, record=record)
    note_warnings()
    return mon, trackers


def note_warnings() -> None:
    """Copy the monitor's and trackers' warnings into run.json when they changed."""
    found = _observers["mon"].warnings + _observers["trackers"].warnings
    record = _observers["record"]
    if found and record.data.get("warnings") != found:
        record.update(warnings=found)


def close_observers(exit_code: int) -> None:
    """Final memory.json and tracker finish; on failure too, so nothing is left half-written."""
    if not _observers:
        return
    mon, trackers = _observers["mon"], _observers["trackers"]
    mon.stop()
    mon.write(_observers["out"] / monitor.FILENAME)
    trackers.finish(exit_code=exit_code)
    note_warnings()
    _observers.clear()


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str):
    """The mixed-precision context for `amp` ("off", "bf16", "fp16"); a no-op off CUDA or when off."""
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def train_one_epoch(model, loader, optimizer, pruner, device, epoch: int, *, amp: str = "off", scaler=None, scheduler=None) -> float:
    """One pass over `loader`; returns the mean training loss (over every process under DDP)."""
    model.train()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, example count
    for step, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp):
            loss = F.cross_entropy(model(x), y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if pruner is not None:
            pruner.mask_gradients()
        if scaler is not None:
            scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            scaler.update()
        else:
            optimizer.step()
        if pruner is not None:
            pruner.step()
        if scheduler is not None:
            scheduler.step()  # once per optimizer step
        total += torch.stack([loss.detach().double() * len(y), torch.tensor(float(len(y)), device=device, dtype=torch.float64)])
    distributed.all_reduce_sum(total)
    return (total[0] / total[1]).item()


@torch.no_grad()
def evaluate(model, loader, device, *, amp: str = "off") -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) over the loader (summed over every process under DDP)."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, count
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp):
            out = model(x)
        sums[0] += F.cross_entropy(out.float(), y, reduction="sum").double()
        sums[1] += (out.argmax(1) == y).sum()
        sums[2] += len(y)
    distributed.all_reduce_sum(sums)
    loss, correct, count = sums.tolist()
    return loss / count, 100.0 * correct / count


def _sync_buffers(model: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics) before evaluating or saving."""
    if distributed.world_size() > 1:
        for b in model.buffers():
            torch.distributed.broadcast(b, src=0)


def fit(args, build_model, train_set, val_set, *, model_name: str, dataset: str) -> dict:
    """Train a classifier as `args` says; returns the metrics.json content.

    Started by torchrun, this is one process of a DDP run (see the module
    docstring); otherwise a single process.
    """
    device = resolve_device(args.device)
    ctx = distributed.setup(device.type)
    try:
        if ctx.distributed:
            device = distributed.device_for(ctx, device.type)
        return _fit(args, ctx, device, build_model, train_set, val_set, model_name=model_name, dataset=dataset)
    finally:
        distributed.teardown(ctx)


def precision(args, device: torch.device) -> str:
    """The mixed precision a run uses: `--amp`, or "off" (with a note) off CUDA; bf16 needs GPU support."""
    amp = getattr(args, "amp", "off")
    if amp != "off" and device.type != "cuda":
        print(f"note: --amp {amp} is ignored on {device.type} (mixed precision is used on CUDA only)", flush=True)
        return "off"
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("--amp bf16: this GPU has no bfloat16 support; use --amp fp16")
    return amp


def _loaders(args, ctx, train_set, val_set, generator, device):
    """Training and validation loaders; under DDP each rank gets its share of both."""
    batch, sampler, pin = args.batch_size, None, device.type == "cuda"
    if ctx.distributed:
        if args.batch_size % ctx.world_size:
            raise ValueError(f"--batch-size {args.batch_size} is the global batch: it must divide by the {ctx.world_size} processes")
        batch = args.batch_size // ctx.world_size
        sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=args.seed)
        val_set = Subset(val_set, range(ctx.rank, len(val_set), ctx.world_size))  # disjoint shares, no padding
    train_loader = DataLoader(
        train_set, batch_size=batch, shuffle=sampler is None, sampler=sampler, generator=generator,
        num_workers=args.workers, pin_memory=pin,
    )
    val_loader = DataLoader(val_set, batch_size=max(batch, 256), shuffle=False, num_workers=args.workers, pin_memory=pin)
    return train_loader, val_loader


def _fit(args, ctx, device, build_model, train_set, val_set, *, model_name: str, dataset: str) -> dict:
    out = Path(args.output_dir)
    main_process = ctx.is_main
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
    amp = precision(args, device)
    # Each rank its own RNG streams (augmentation); DDP gives every rank rank 0's initial weights.
    generator = checkpoint.seed_everything(args.seed + ctx.rank)
    model = build_model().to(device)
    train_loader, val_loader = _loaders(args, ctx, train_set, val_set, generator, device)
    opt = optim.from_args(args, model)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    # An explicit training-budget extension (bitter2/3/4 in the matrix) lengthens the run; run.json records it.
    budget = pruning.budget_record(args.epochs, getattr(args, "budget_extension", 0.0), "epochs")
    if budget["trained"] != args.epochs:
        if main_process:
            print(f"training budget extended by {budget['extension_percent']:g}%: {args.epochs} -> {budget['trained']} epochs", flush=True)
        args.epochs = budget["trained"]
    total_steps = args.epochs * len(train_loader)
    scheduler = optim.scheduler_from_args(args, opt, total_steps)
    pruner = pruning.from_args(args, model, opt, total_steps, steps_per_epoch=len(train_loader))

    history, best, start_epoch, elapsed_before = [], {"accuracy": -1.0, "epoch": None}, 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    if args.resume and ckpt_path.exists():
        state = checkpoint.load(ckpt_path, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if pruner is not None:
            pruner.load_state_dict(state["pruner"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(_own_rng(state, ctx), generator)
        history, best, start_epoch, elapsed_before = state["history"], state["best"], state["epoch"], state["elapsed_s"]
        if main_process:
            print(f"resumed from {ckpt_path} at epoch {start_epoch}", flush=True)

    # The module that runs forward passes: DDP-wrapped and/or compiled. `model`
    # itself stays the owner of the weights (state_dict, pruner, best.pt).
    train_net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if ctx.distributed else model
    eval_net = model
    if getattr(args, "compile", False):
        train_net = torch.compile(train_net)
        eval_net = torch.compile(model) if ctx.distributed else train_net

    record = RunRecord(out) if main_process else None
    if record is not None:
        record.start(out.name, sys.argv, args.seed)
        if budget["extension_percent"]:
            record.update(budget=budget)
        mon, trackers = observe(args, out, device, record, model_name, dataset)
    else:
        mon, trackers = monitor.Monitor(None), tracking.Trackers()
    metrics = {
        "schema": SCHEMA,
        "run_id": out.name,
        "model": model_name,
        "dataset": dataset,
        "optimizer": args.optimizer,
        "variant": getattr(args, "pruning_variant", None) if pruner else None,
        "pruning": args.pruning_method,
        "target_sparsity": args.target_sparsity if pruner else 0.0,
        "seed": args.seed,
        "history": history,
    }
    started = time.monotonic()
    for epoch in range(start_epoch, args.epochs):
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        mon.set_phase("train")
        train_loss = train_one_epoch(train_net, train_loader, opt, pruner, device, epoch, amp=amp, scaler=scaler, scheduler=scheduler)
        _sync_buffers(model)
        mon.set_phase("eval")
        val_loss, val_acc = evaluate(eval_net, val_loader, device, amp=amp)
        mon.set_phase(None)
        report = pruning.sparsity_report(model, params=pruner.params if pruner else None)
        elapsed = elapsed_before + time.monotonic() - started
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "sparsity": report["sparsity_prunable"],
                "lr": optim.current_lr(opt),
                "elapsed_s": elapsed,
            }
        )
        # A pruned run's best counts only once its masks are at the target: an
        # early dense epoch is not a result of the pruned model.
        at_target = pruner is None or pruner.sparsity >= pruner.schedule.target
        improved = at_target and val_acc > best["accuracy"]
        if improved:
            best = {"accuracy": val_acc, "epoch": epoch + 1}
        rng_ranks = distributed.gather_objects(checkpoint.rng_state(generator)) if ctx.distributed else None
        if not main_process:
            continue
        print(
            f"epoch {epoch + 1}/{args.epochs} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
            f"val_acc {val_acc:.2f}% sparsity {report['sparsity_prunable']:.3f}",
            flush=True,
        )
        if improved:
            checkpoint.save(out / "best.pt", {"model": model.state_dict(), "epoch": epoch + 1, "val_accuracy": val_acc})
        checkpoint.save(
            ckpt_path,
            {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": scheduler.state_dict(),
                "pruner": pruner.state_dict() if pruner else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": checkpoint.rng_state(generator),
                "rng_ranks": rng_ranks,
                "history": history,
                "best": best,
                "elapsed_s": elapsed,
            },
        )
        write_json(out / "metrics.json", metrics)
        mon.write(out / monitor.FILENAME)
        trackers.log(history[-1], step=epoch + 1)
        note_warnings()
        record.heartbeat()

    if not main_process:
        return metrics
    report = pruning.sparsity_report(model, params=pruner.params if pruner else None)
    metrics["final"] = {
        "accuracy": history[-1]["val_accuracy"],
        "best_accuracy": best["accuracy"] if best["epoch"] else None,
        "best_at": best["epoch"],
        "sparsity_prunable": report["sparsity_prunable"],
        "sparsity_global": report["sparsity_global"],
        "train_time_s": history[-1]["elapsed_s"],
        "peak_memory_mib": mon.peak_memory_mib(),
        "params": report["params"],
        "nonzero_params": report["nonzero_params"],
        "layers": report["layers"],
    }
    if pruner is not None:
        metrics["final"]["pruning"] = pruner.summary()  # scheduled vs achieved sparsity, layer levels, RATIO check
    write_json(out / "metrics.json", metrics)
    trackers.summary(metrics["final"])
    close_observers(exit_code=0)
    record.finish("completed", exit_code=0)
    return metrics


def _own_rng(state: dict, ctx) -> dict:
    """This process's RNG states from a checkpoint (rank 0's when the process count changed)."""
    ranks = state.get("rng_ranks")
    if ctx.distributed and ranks and len(ranks) == ctx.world_size:
        return ranks[ctx.rank]
    if ctx.distributed and ctx.is_main:
        print("note: the checkpoint was written by another number of processes; every rank restarts from rank 0's RNG state", flush=True)
    return state["rng"]


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(main, args) -> int:
    """Call a trainer's main(args); turn failures into a marked run and one stderr line."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main(args)
        return 0
    except KeyboardInterrupt:
        _mark(args, "interrupted", 130, "interrupted")
        print(f"error: {Path(args.output_dir).name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every failure is recorded, then reported in one line
        message = str(e) if isinstance(e, EXPLAINED) else f"{type(e).__name__}: {e}"
        _mark(args, "failed", 1, message)
        print(f"error: {message}", file=sys.stderr)
        return 1


def _mark(args, status: str, code: int, message: str) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 writes run.json
        return
    try:
        close_observers(exit_code=code)
    except Exception as e:  # the failure being recorded matters more than the monitor's last write
        print(f"warning: could not close the memory monitor or trackers: {e}", file=sys.stderr)
    record = RunRecord(args.output_dir)
    if record.data.get("status") != "running":
        record.start(Path(args.output_dir).name, sys.argv, args.seed)
    record.finish(status, exit_code=code, error=message)
