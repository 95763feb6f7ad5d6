"""The shared classifier training loop: train, evaluate, checkpoint, record.

`fit()` is what an image classifier's train.py calls once it has parsed its
flags and knows how to build its model and data. It owns the run directory:
run.json (status, heartbeat), metrics.json (history and final block),
checkpoint.pt after every epoch and best.pt on the best validation accuracy.
`run()` wraps a trainer's main so that any failure marks the run failed with
one clear line on stderr.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lib import checkpoint, monitor, optim, pruning, tracking
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


def _observe(args, out: Path, device, record, model_name: str, dataset: str):
    """Start the memory monitor and open the trackers (rank 0); their problems become run.json warnings."""
    mon = monitor.for_run(args, device, out)
    trackers = tracking.for_run(args, model=model_name, dataset=dataset, run_dir=out)
    mon.on_sample = trackers.log_memory if trackers.trackers else None
    _observers.update(mon=mon, trackers=trackers, out=out, record=record)
    _note_warnings()
    return mon, trackers


def _note_warnings() -> None:
    found = _observers["mon"].warnings + _observers["trackers"].warnings
    record = _observers["record"]
    if found and record.data.get("warnings") != found:
        record.update(warnings=found)


def _close_observers(exit_code: int) -> None:
    """Final memory.json and tracker finish; on failure too, so nothing is left half-written."""
    if not _observers:
        return
    mon, trackers = _observers["mon"], _observers["trackers"]
    mon.stop()
    mon.write(_observers["out"] / monitor.FILENAME)
    trackers.finish(exit_code=exit_code)
    _note_warnings()
    _observers.clear()


def train_one_epoch(model, loader, optimizer, pruner, device, epoch: int, *, scheduler=None) -> float:
    model.train()
    total, count = 0.0, 0
    for step, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if pruner is not None:
            pruner.mask_gradients()
        optimizer.step()
        if pruner is not None:
            pruner.step()
        if scheduler is not None:
            scheduler.step()  # once per optimizer step
        total += loss.item() * len(y)
        count += len(y)
    return total / count


@torch.no_grad()
def evaluate(model, loader, device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) over the loader."""
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
        count += len(y)
    return loss / count, 100.0 * correct / count


def fit(args, build_model, train_set, val_set, *, model_name: str, dataset: str) -> dict:
    """Train a classifier as `args` says; returns the metrics.json content."""
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    generator = checkpoint.seed_everything(args.seed)
    model = build_model().to(device)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, generator=generator, num_workers=args.workers)
    val_loader = DataLoader(val_set, batch_size=max(args.batch_size, 256), shuffle=False, num_workers=args.workers)
    opt = optim.from_args(args, model)
    # An explicit training-budget extension (bitter2/3/4 in the matrix) lengthens the run; run.json records it.
    budget = pruning.budget_record(args.epochs, getattr(args, "budget_extension", 0.0), "epochs")
    if budget["trained"] != args.epochs:
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
        checkpoint.set_rng_state(state["rng"], generator)
        history, best, start_epoch, elapsed_before = state["history"], state["best"], state["epoch"], state["elapsed_s"]
        print(f"resumed from {ckpt_path} at epoch {start_epoch}", flush=True)

    record = RunRecord(out)
    record.start(out.name, sys.argv, args.seed)
    if budget["extension_percent"]:
        record.update(budget=budget)
    mon, trackers = _observe(args, out, device, record, model_name, dataset)
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
        mon.set_phase("train")
        train_loss = train_one_epoch(model, train_loader, opt, pruner, device, epoch, scheduler=scheduler)
        mon.set_phase("eval")
        val_loss, val_acc = evaluate(model, val_loader, device)
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
        print(
            f"epoch {epoch + 1}/{args.epochs} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
            f"val_acc {val_acc:.2f}% sparsity {report['sparsity_prunable']:.3f}",
            flush=True,
        )
        # A pruned run's best counts only once its masks are at the target: an
        # early dense epoch is not a result of the pruned model.
        at_target = pruner is None or pruner.sparsity >= pruner.schedule.target
        if at_target and val_acc > best["accuracy"]:
            best = {"accuracy": val_acc, "epoch": epoch + 1}
            checkpoint.save(out / "best.pt", {"model": model.state_dict(), "epoch": epoch + 1, "val_accuracy": val_acc})
        checkpoint.save(
            ckpt_path,
            {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": scheduler.state_dict(),
                "pruner": pruner.state_dict() if pruner else None,
                "rng": checkpoint.rng_state(generator),
                "history": history,
                "best": best,
                "elapsed_s": elapsed,
            },
        )
        write_json(out / "metrics.json", metrics)
        mon.write(out / monitor.FILENAME)
        trackers.log(history[-1], step=epoch + 1)
        _note_warnings()
        record.heartbeat()

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
    _close_observers(exit_code=0)
    record.finish("completed", exit_code=0)
    return metrics


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
    try:
        _close_observers(exit_code=code)
    except Exception as e:  # the failure being recorded matters more than the monitor's last write
        print(f"warning: could not close the memory monitor or trackers: {e}", file=sys.stderr)
    record = RunRecord(args.output_dir)
    if record.data.get("status") != "running":
        record.start(Path(args.output_dir).name, sys.argv, args.seed)
    record.finish(status, exit_code=code, error=message)
