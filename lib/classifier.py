"""The image classifiers' epoch loop, on top of `lib.run.Run`.

`fit()` is what an image classifier's train.py calls once it has parsed its
flags and knows how to build its model and data; `train_one_epoch()` and
`evaluate()` are one pass each (torchvision's reference scripts have the same
shape). The Run owns the run directory, the checkpoint bundle and the
records; here are the epochs: train, evaluate, one history entry, and
checkpoint.pt after every epoch.

A run stopped by a signal (`Run.stop`) part-way through an epoch records the
steps done in that epoch, each process's running loss sums and its data
loader generator's state at the start of the epoch. On --resume the epoch is
drawn again from that state, so the sampler yields the same order, and
`rest_of_epoch` skips the batches already trained without loading them: the
resumed run is the uninterrupted one, step for step. (With --workers > 0 and
random augmentation, the rest of that one epoch gets other augmentation
draws: each worker's random stream depends on the batches it has loaded.)

Under DDP (started by torchrun) the global `--batch-size` is split over the
processes, each rank samples its share of the training set through a
DistributedSampler (seeded with --seed, reshuffled per epoch) and evaluates
a disjoint share of the validation set; losses and counts are summed over
ranks, so reported metrics cover the whole set. Each rank has its own RNG
streams (seed + rank, for augmentation). BatchNorm statistics are per rank
and rank 0's are broadcast before evaluating and saving.

The final block's `samples_per_s` is the training examples of every epoch
over the seconds spent in training passes (no evaluation or checkpoints),
kept across a resume in checkpoint.pt's "train_seconds".
"""

from __future__ import annotations

import itertools
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

from lib import distributed, optim, pruning
from lib.run import ACCURACY, Run, TrainingDiverged, autocast, optimizer_step


def train_one_epoch(model, loader, optimizer, pruner, device, epoch: int, *, amp: str = "off", scaler=None, scheduler=None,
                    done: int = 0, sums: torch.Tensor | None = None, after_step=None) -> float:
    """One pass over `loader`; returns the mean training loss (over every process under DDP).

    A resumed epoch passes the steps already `done` (`loader` holds the rest)
    and this process's loss `sums` so far; `after_step(steps_done, sums)` runs
    after every optimizer step (the run's stop check).
    """
    model.train()
    total = torch.zeros(2, dtype=torch.float64, device=device) if sums is None else sums  # loss sum, example count
    for step, (x, y) in enumerate(loader, start=done):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp):
            loss = F.cross_entropy(model(x), y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
        (scaler.scale(loss) if scaler is not None else loss).backward()
        optimizer_step(optimizer, scaler, pruner, scheduler)
        total += torch.stack([loss.detach().double() * len(y), torch.tensor(float(len(y)), device=device, dtype=torch.float64)])
        if after_step is not None:
            after_step(step + 1, total)
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


def sync_buffers(model: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics) before evaluating or saving."""
    if distributed.world_size() > 1:
        for b in model.buffers():
            torch.distributed.broadcast(b, src=0)


def loaders(args, run: Run, train_set, val_set, generator):
    """Training and validation loaders; under DDP each rank gets its share of both."""
    batch, sampler, pin = args.batch_size, None, run.device.type == "cuda"
    if run.distributed:
        if args.batch_size % run.world_size:
            raise ValueError(f"--batch-size {args.batch_size} is the global batch: it must divide by the {run.world_size} processes")
        batch = args.batch_size // run.world_size
        sampler = DistributedSampler(train_set, num_replicas=run.world_size, rank=run.rank, shuffle=True, seed=args.seed)
        val_set = Subset(val_set, range(run.rank, len(val_set), run.world_size))  # disjoint shares, no padding
    train_loader = DataLoader(
        train_set, batch_size=batch, shuffle=sampler is None, sampler=sampler, generator=generator,
        num_workers=args.workers, pin_memory=pin,
    )
    val_loader = DataLoader(val_set, batch_size=max(batch, 256), shuffle=False, num_workers=args.workers, pin_memory=pin)
    return train_loader, val_loader


class SkipSampler(Sampler):
    """`sampler`'s order without its first `skip` indices (never loaded): the rest of an epoch stopped part-way."""

    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def rest_of_epoch(loader: DataLoader, done: int) -> DataLoader:
    """The batches of `loader`'s epoch after the first `done`, in the order its sampler and generator draw now."""
    return DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=SkipSampler(loader.sampler, done * loader.batch_size),
        generator=loader.generator, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
    )


def stopped_part(position: dict, run: Run) -> dict | None:
    """This process's part of a checkpoint written part-way through an epoch (None at an epoch's end)."""
    parts = position.get("per_process")
    if parts is None:
        return None
    if len(parts) != run.world_size:
        raise ValueError(f"checkpoint.pt stopped part-way through an epoch with {len(parts)} process(es) and can only "
                         f"continue with as many, not {run.world_size} (CONFIG_DDP_PROCS); it was kept")
    return parts[run.rank]


def stop_check(run: Run, epoch: int, steps: int, loader_state: torch.Tensor, trained: Callable[[], float]):
    """`train_one_epoch`'s `after_step`: on a stop request, checkpoint the position in the epoch and stop.

    `trained()` is the training seconds so far (the clock of the throughput).
    """
    def check(done: int, sums: torch.Tensor) -> None:
        signum = run.stop_requested()
        if signum:
            run.stop(signum, f"epoch {epoch + 1}, step {done} of {steps}", epoch,
                     {"epoch_steps": done, "train_seconds": trained()},
                     per_process={"loader": loader_state, "loss_sums": sums.tolist()})
    return check


def fit(args, build_model, train_set, val_set, *, model_name: str, dataset: str) -> dict:
    """Train a classifier as `args` says; returns the metrics.json content."""
    with Run(args, model=model_name, dataset=dataset, unit="epoch", goal=ACCURACY) as run:
        # Each rank its own RNG streams (augmentation); DDP gives every rank rank 0's initial weights.
        generator = run.seed(run.rank)
        model = build_model().to(run.device)
        train_loader, val_loader = loaders(args, run, train_set, val_set, generator)
        optimizer = optim.from_args(args, model)
        args.epochs = run.extend_budget(args.epochs)
        total_steps = args.epochs * len(train_loader)
        scheduler = optim.scheduler_from_args(args, optimizer, total_steps)
        with torch.random.fork_rng(devices=[]):  # drawing the example (augmentation) leaves the training RNG alone
            example = train_set[0][0].unsqueeze(0).to(run.device)
        pruner = pruning.from_args(args, model, optimizer, total_steps, steps_per_epoch=len(train_loader),
                                   example_inputs=example)
        run.attach(model, optimizer, scheduler, pruner)
        position = run.resume()
        start_epoch, part = position.get("epoch", 0), stopped_part(position, run)
        train_seconds = position.get("train_seconds", 0.0)  # in training passes only (no evaluation or checkpointing)
        run.start()
        train_net, eval_net = run.wrap(model)  # `model` keeps owning the weights (state_dict, pruner, best.pt)
        run.before_training(lambda: dict(zip(("val_loss", "val_accuracy"), evaluate(eval_net, val_loader, run.device, amp=run.amp))))

        for epoch in range(start_epoch, args.epochs):
            if isinstance(train_loader.sampler, DistributedSampler):
                train_loader.sampler.set_epoch(epoch)
            loader, done, sums = train_loader, 0, None
            if part is not None and epoch == start_epoch:  # the rest of the epoch a signal stopped
                generator.set_state(part["loader"].cpu())  # a generator's state lives on the CPU
                done = position["epoch_steps"]
                loader = rest_of_epoch(train_loader, done)
                sums = torch.tensor(part["loss_sums"], dtype=torch.float64, device=run.device)
            segment = time.monotonic()
            check = stop_check(run, epoch, len(train_loader), generator.get_state(),
                               lambda: train_seconds + time.monotonic() - segment)
            run.monitor.set_phase("train")
            train_loss = train_one_epoch(train_net, loader, optimizer, pruner, run.device, epoch, amp=run.amp,
                                         scaler=run.scaler, scheduler=scheduler, done=done, sums=sums, after_step=check)
            train_seconds += time.monotonic() - segment  # the mean loss is on the host: the epoch's work is done
            sync_buffers(model)
            run.monitor.set_phase("eval")
            val_loss, val_acc = evaluate(eval_net, val_loader, run.device, amp=run.amp)
            run.monitor.set_phase(None)
            sparsity = run.sparsity()["sparsity_prunable"]
            if run.is_main:
                print(f"epoch {epoch + 1}/{args.epochs} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
                      f"val_acc {val_acc:.2f}% sparsity {sparsity:.3f}", flush=True)
            run.evaluated({
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "sparsity": sparsity,
                "lr": optim.current_lr(optimizer),
                "elapsed_s": run.elapsed(),
            }, train_seconds=train_seconds)
        samples = args.epochs * len(train_set)  # every process's share together
        return run.finish({"accuracy": run.history[-1]["val_accuracy"], "best_accuracy": run.best["value"],
                           "samples_per_s": samples / train_seconds if train_seconds else None})
