"""Train GPT-2 on GPT-2-tokenised text for a number of iterations.

    python -m gpt2.train --model-size tiny --dataset pydoc --optimizer adamw --output-dir runs/x
    python -m torch.distributed.run --standalone --nproc_per_node 4 -m gpt2.train ...   # DDP

Data: gpt2/prepare.py's train.bin/val.bin in <data-dir>/gpt2/<dataset>/; the
small corpora (pydoc, shakespeare, a text file) are prepared here when
missing, the web corpora must be prepared first. One iteration is one
optimizer step over --batch-size x --grad-accum sequences of --block-size
tokens: --grad-accum counts micro-batches over all processes, so the global
batch is the same on one process or many. The learning rate follows the
shared schedule (--lr-schedule, --lr-warmup, --lr-min, ...), stepped once per
iteration over --max-iters. Writes
run.json, metrics.json (validation loss and perplexity every
--eval-interval iterations), checkpoint.pt and best.pt to --output-dir, from
process 0 only; --resume continues from checkpoint.pt exactly (every RNG
state and the data position).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from gpt2 import data as gdata
from gpt2.model import GPT, MAX_POSITIONS, SIZES, config_for
from gpt2.prepare import DATASETS
from lib import checkpoint, cli, distributed, engine, monitor, optim, pruning, tracking
from lib.results import SCHEMA, RunRecord, write_json

# Checkpoint fields that fix the data order and the model's shape: a resume must not change them.
SHAPE_KEYS = ("model_size", "block_size", "batch_size", "grad_accum", "dataset", "text_file", "seed")


def get_args_parser() -> argparse.ArgumentParser:
    p = cli.parser(__doc__.splitlines()[0], epochs=1, batch_size=4, lr=3e-3)
    for action in p._actions:
        if action.dest == "epochs":  # iteration-based: --epochs does not apply (rejected in check())
            action.help = argparse.SUPPRESS
    p.set_defaults(weight_decay=0.1)  # the defaults are gpt2/Kconfig's for the tiny size
    g = p.add_argument_group("gpt2")
    g.add_argument("--model-size", default="tiny", choices=tuple(SIZES), help="tiny is for CPU smoke runs; gpt2 is 124M")
    g.add_argument("--dataset", default="pydoc", choices=DATASETS, help="pydoc: CPython's documentation, offline")
    g.add_argument("--text-file", help="the text to train on, for --dataset file")
    g.add_argument("--block-size", type=int, help="context length in tokens (default: 64 for tiny, 1024 otherwise)")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step, over all processes")
    g.add_argument("--max-iters", type=int, default=150, help="optimizer steps")
    g.add_argument("--max-minutes", type=float, default=0, help="wall-clock limit of the whole run (0: none)")
    g.add_argument("--eval-interval", type=int, default=50, help="iterations between validation runs and checkpoints")
    g.add_argument("--eval-iters", type=int, default=10, help="validation batches per evaluation")
    g.add_argument("--log-interval", type=int, default=10, help="iterations between progress lines")
    g.add_argument("--grad-clip", type=float, default=1.0, help="clip the global gradient norm (0: off)")
    g.add_argument("--dropout", type=float, default=0.0)
    g.add_argument("--prune-tied-head", action="store_true",
                   help="also prune the token embedding / output head (tied; left dense by default)")
    return p


def check(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """GPT-2's own checks, after `cli.check`: one line naming the flag."""
    if any(a == "--epochs" or a.startswith("--epochs=") for a in argv):
        p.error("--epochs does not apply to gpt2: it trains for --max-iters iterations (CONFIG_GPT2_MAX_ITERS)")
    if args.block_size is None:
        args.block_size = SIZES[args.model_size].block_size
    if not 1 <= args.block_size <= MAX_POSITIONS:
        p.error(f"--block-size must be in 1..{MAX_POSITIONS}, got {args.block_size}")
    for flag in ("grad_accum", "max_iters", "eval_interval", "eval_iters", "log_interval"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.max_minutes < 0 or args.grad_clip < 0:
        p.error("--max-minutes and --grad-clip must be >= 0")
    if not 0 <= args.dropout < 1:
        p.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.dataset == "file" and not args.text_file:
        p.error("--dataset file needs --text-file PATH (CONFIG_GPT2_TEXT_FILE)")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.grad_accum % world:
        p.error(f"--grad-accum {args.grad_accum} is not divisible by the {world} processes: make it a multiple")
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # torchrun hands on the "--" that ended its options on some Python versions
        argv = argv[1:]
    p = get_args_parser()
    return check(p, cli.check(p, p.parse_args(argv)), argv)


class Trainer:
    """Everything one GPT-2 run holds: model, optimizer, pruner, data, history."""

    def __init__(self, args: argparse.Namespace, ctx: distributed.Context):
        self.args, self.ctx = args, ctx
        device = engine.resolve_device(args.device)
        self.device = distributed.device_for(ctx, device.type)
        self.out = Path(args.output_dir)
        self.main = ctx.is_main
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)

        data_dir = gdata.ensure_prepared(args.dataset, args.data_dir, args.text_file, self.device)
        self.train_data = gdata.TokenWindows(data_dir / "train.bin", args.block_size)
        self.val_data = gdata.TokenWindows(data_dir / "val.bin", args.block_size)
        self.order = gdata.ShuffledOrder(self.train_data.n_windows, args.seed)
        self.n_eval = gdata.eval_batches(self.val_data, args.batch_size, args.eval_iters)
        self.local_accum = args.grad_accum // ctx.world_size
        self.tokens_per_iter = args.batch_size * args.grad_accum * args.block_size

        checkpoint.seed_everything(args.seed)  # the same initial weights on every process
        self.model_config = config_for(args.model_size, block_size=args.block_size, dropout=args.dropout)
        self.raw = GPT(self.model_config).to(self.device)
        if ctx.world_size > 1:
            torch.manual_seed(args.seed + ctx.rank)  # each process its own dropout stream
        self.opt = optim.from_args(args, self.raw)
        # An explicit training-budget extension (bitter2/3/4 in the matrix) lengthens the run; run.json records it.
        self.budget = pruning.budget_record(args.max_iters, getattr(args, "budget_extension", 0.0), "iters")
        if self.budget["trained"] != args.max_iters:
            if self.main:
                print(f"training budget extended by {self.budget['extension_percent']:g}%: "
                      f"{args.max_iters} -> {self.budget['trained']} iterations", flush=True)
            args.max_iters = self.budget["trained"]
        # The shared learning-rate schedule (lib.optim), one step per iteration, over the whole (extended) run.
        self.scheduler = optim.scheduler_from_args(args, self.opt, args.max_iters)
        # --pruning-unit epoch: one epoch is one pass over train.bin
        steps_per_epoch = max(1, self.train_data.n_windows // (args.batch_size * args.grad_accum))
        self.pruner = pruning.from_args(args, self.raw, self.opt, args.max_iters, steps_per_epoch=steps_per_epoch,
                                        include_tied_head=args.prune_tied_head)
        self.amp = engine.precision(args, self.device) if self.main else ("off" if self.device.type != "cuda" else args.amp)
        self.autocast = engine.autocast(self.device, self.amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        model = torch.compile(self.raw) if args.compile else self.raw
        if ctx.distributed:
            model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.model = model

        self.iter = 0
        self.history: list[dict] = []
        self.best = {"val_loss": math.inf, "iter": None}
        self.elapsed_before = 0.0  # wall-clock seconds of earlier attempts
        self.train_seconds = 0.0  # time in training iterations only (no evaluation or checkpointing)
        self.interval_loss = torch.zeros((), device=self.device)  # since the last evaluation
        self.interval_iters = 0
        self.log_loss = torch.zeros((), device=self.device)
        self.log_iters = 0
        self.stopped_by = "max_iters"
        self.record = RunRecord(self.out) if self.main else None
        self.monitor, self.trackers = monitor.Monitor(None), tracking.Trackers()  # rank 0 opens real ones in fit()

    # -- data -------------------------------------------------------------------
    def shape(self) -> dict:
        return {k: getattr(self.args, k) for k in SHAPE_KEYS}

    def train_batch(self, it: int, micro: int):
        """Micro-batch `micro` (0..grad_accum-1, counted over all processes) of iteration `it`."""
        b = self.args.batch_size
        start = (it * self.args.grad_accum + micro) * b
        return self.train_data.get(self.order.windows(start, b), self.device)

    # -- one optimizer step --------------------------------------------------------
    def train_iteration(self, it: int) -> None:
        total = torch.zeros((), device=self.device)
        for j in range(self.local_accum):
            x, y = self.train_batch(it, self.ctx.rank * self.local_accum + j)
            last = j == self.local_accum - 1
            with self.model.no_sync() if self.ctx.distributed and not last else nullcontext():
                with self.autocast:
                    _, loss = self.model(x, y)
                scaled = loss / self.local_accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += loss.detach()
        if self.scaler:
            self.scaler.unscale_(self.opt)
        if self.pruner is not None:
            self.pruner.mask_gradients()
        if self.args.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.raw.parameters(), self.args.grad_clip)
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.pruner is not None:
            self.pruner.step()
        self.scheduler.step()  # once per optimizer step
        self.interval_loss += total
        self.log_loss += total
        self.interval_iters += 1
        self.log_iters += 1

    def _global_mean(self, local_sum: torch.Tensor, iters: int) -> float:
        """Mean micro-batch loss over all processes."""
        t = distributed.all_reduce_sum(local_sum.detach().clone())
        return t.item() / (iters * self.args.grad_accum)

    # -- evaluation ------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean validation loss over the same `n_eval` batches every time, shared over processes."""
        self.raw.eval()
        total = torch.zeros((), device=self.device)
        for index in range(self.ctx.rank, self.n_eval, self.ctx.world_size):
            x, y = self.val_data.get(gdata.eval_windows(self.val_data, self.args.batch_size, index), self.device)
            with self.autocast:
                _, loss = self.raw(x, y)
            total += loss.float()
        self.raw.train()
        return distributed.all_reduce_sum(total).item() / self.n_eval

    # -- checkpoints -----------------------------------------------------------------
    def save_checkpoint(self) -> None:
        rng = distributed.gather_objects(checkpoint.rng_state())  # every process's, in rank order
        if not self.main:
            return
        checkpoint.save(
            self.out / "checkpoint.pt",
            {
                "iter": self.iter,
                "model": self.raw.state_dict(),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "pruner": self.pruner.state_dict() if self.pruner else None,
                "rng": rng,
                "data": {"sequences": self.iter * self.args.grad_accum * self.args.batch_size, "order": "shuffled windows"},
                "shape": self.shape(),
                "history": self.history,
                "best": self.best,
                "elapsed_s": self.elapsed(),
                "train_seconds": self.train_seconds,
                "stopped_by": self.stopped_by,
            },
        )

    def resume(self) -> None:
        path = self.out / "checkpoint.pt"
        if not (self.args.resume and path.exists()):
            return
        state = checkpoint.load(path, map_location=self.device)
        changed = [f"{k}: {state['shape'].get(k)!r} -> {v!r}" for k, v in self.shape().items() if state["shape"].get(k) != v]
        if changed:
            raise ValueError(f"{path} was made with other settings ({'; '.join(changed)}); it was kept, "
                             "restore the settings or move it aside to start over")
        self.raw.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.pruner is not None:
            self.pruner.load_state_dict(state["pruner"])
        rng = state["rng"]
        if len(rng) == self.ctx.world_size:
            checkpoint.set_rng_state(rng[self.ctx.rank])
        elif self.ctx.rank == 0:  # another process count: only process 0's stream carries over
            checkpoint.set_rng_state(rng[0])
        self.iter = state["iter"]
        self.history, self.best = state["history"], state["best"]
        self.elapsed_before, self.train_seconds = state["elapsed_s"], state["train_seconds"]
        self.stopped_by = state.get("stopped_by", "max_iters")
        if self.main:
            print(f"resumed from {path} at iteration {self.iter}", flush=True)

    # -- the run -----------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._started

    def metrics(self) -> dict:
        a = self.args
        return {
            "schema": SCHEMA,
            "run_id": self.out.name,
            "model": "gpt2",
            "dataset": a.dataset,
            "optimizer": a.optimizer,
            "variant": getattr(a, "pruning_variant", None) if self.pruner else None,
            "pruning": a.pruning_method,
            "target_sparsity": a.target_sparsity if self.pruner else 0.0,
            "seed": a.seed,
            "model_size": a.model_size,
            "block_size": a.block_size,
            "tokens_per_iter": self.tokens_per_iter,
            "processes": self.ctx.world_size,
            "history": self.history,
        }

    def sparsity(self) -> dict:
        """Sparsity over what the pruner prunes (the default selection for a dense run)."""
        params = self.pruner.params if self.pruner is not None else None
        return pruning.sparsity_report(self.raw, self.args.prune_tied_head, params=params)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def evaluate_and_save(self) -> None:
        train_loss = self._global_mean(self.interval_loss, self.interval_iters) if self.interval_iters else None
        if train_loss is not None and not math.isfinite(train_loss):
            raise engine.TrainingDiverged(f"training loss became {train_loss} by iteration {self.iter}")
        self.interval_loss.zero_()
        self.interval_iters = 0
        val_loss = self.evaluate()
        report = self.sparsity()
        entry = {
            "iter": self.iter,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_perplexity": math.exp(min(val_loss, 700.0)),
            "sparsity": report["sparsity_prunable"],
            "lr": optim.current_lr(self.opt),  # the one the next iteration uses
            "tokens": self.iter * self.tokens_per_iter,
            "elapsed_s": self.elapsed(),
        }
        self.history.append(entry)
        at_target = self.pruner is None or self.pruner.sparsity >= self.pruner.schedule.target
        if self.main:
            print(f"eval iter {self.iter}: train_loss {train_loss if train_loss is None else round(train_loss, 4)} "
                  f"val_loss {val_loss:.4f} val_ppl {entry['val_perplexity']:.2f} sparsity {entry['sparsity']:.3f}", flush=True)
        if at_target and val_loss < self.best["val_loss"]:
            self.best = {"val_loss": val_loss, "iter": self.iter}
            if self.main:
                checkpoint.save(self.out / "best.pt", {"model": self.raw.state_dict(), "iter": self.iter, "val_loss": val_loss,
                                                       "config": asdict(self.model_config)})
        self.save_checkpoint()
        if self.main:
            write_json(self.out / "metrics.json", self.metrics())
            self.monitor.write(self.out / monitor.FILENAME)
            self.trackers.log(entry, step=self.iter)
            engine.note_warnings()
            self.record.heartbeat()

    def time_is_up(self) -> bool:
        if not self.args.max_minutes:
            return False
        return distributed.broadcast_flag(self.elapsed() >= 60 * self.args.max_minutes, self.device)

    def fit(self) -> dict:
        a = self.args
        self._started = time.monotonic()
        self.resume()
        if self.main:
            self.record.start(self.out.name, sys.argv, a.seed)
            if self.budget["extension_percent"]:
                self.record.update(budget=self.budget)
            self.monitor, self.trackers = engine.observe(a, self.out, self.device, self.record, "gpt2", a.dataset)
            print(f"gpt2 {a.model_size}: {self.raw.num_params() / 1e6:.2f}M parameters, {self.ctx.world_size} process(es), "
                  f"{self.tokens_per_iter} tokens per iteration, {self.train_data.n_windows} training windows", flush=True)
        self.raw.train()
        self.monitor.set_phase("train")
        segment = time.monotonic()
        log_start = segment
        while self.iter < a.max_iters:
            self.train_iteration(self.iter)
            self.iter += 1
            if self.iter % a.log_interval == 0:
                loss = self._global_mean(self.log_loss, self.log_iters)
                if not math.isfinite(loss):
                    raise engine.TrainingDiverged(f"training loss became {loss} by iteration {self.iter}")
                now = time.monotonic()
                if self.main:
                    rate = self.log_iters * self.tokens_per_iter / max(now - log_start, 1e-9)
                    print(f"iter {self.iter}/{a.max_iters} loss {loss:.4f} lr {optim.current_lr(self.opt):.2e} "
                          f"{rate:,.0f} tok/s", flush=True)
                self.log_loss.zero_()
                self.log_iters, log_start = 0, now
            stop = self.time_is_up()
            if stop:
                self.stopped_by = "max_minutes"
            if self.iter % a.eval_interval == 0 or self.iter == a.max_iters or stop:
                self._sync()
                self.train_seconds += time.monotonic() - segment
                self.monitor.set_phase("eval")
                self.evaluate_and_save()
                self.monitor.set_phase("train")
                segment = log_start = time.monotonic()
            if stop:
                break
        if not self.history:  # nothing left to train (resumed at the end) yet no evaluation on record
            self.evaluate_and_save()
        return self.finish()

    def finish(self) -> dict:
        metrics = self.metrics()
        last = self.history[-1]
        report = self.sparsity()
        metrics["final"] = {
            "perplexity": last["val_perplexity"],
            "best_perplexity": math.exp(self.best["val_loss"]) if self.best["iter"] else None,
            "best_at": self.best["iter"],
            "val_loss": last["val_loss"],
            "best_val_loss": self.best["val_loss"] if self.best["iter"] else None,
            "sparsity_prunable": report["sparsity_prunable"],
            "sparsity_global": report["sparsity_global"],
            "train_time_s": last["elapsed_s"],
            "peak_memory_mib": self.monitor.peak_memory_mib(),
            "params": report["params"],
            "nonzero_params": report["nonzero_params"],
            "iters": self.iter,
            "tokens": self.iter * self.tokens_per_iter,
            "tokens_per_s": self.iter * self.tokens_per_iter / self.train_seconds if self.train_seconds else None,
            "stopped_by": self.stopped_by,
            "layers": report["layers"],
        }
        if self.main:
            write_json(self.out / "metrics.json", metrics)
            self.trackers.summary(metrics["final"])
            engine.close_observers(exit_code=0)
            self.record.finish("completed", exit_code=0)
            print(f"done: val_loss {last['val_loss']:.4f} perplexity {last['val_perplexity']:.2f} "
                  f"({self.iter} iterations, {metrics['final']['tokens_per_s'] or 0:,.0f} tok/s)", flush=True)
        return metrics


def main(args: argparse.Namespace) -> dict:
    device = engine.resolve_device(args.device)
    ctx = distributed.setup(device.type)
    try:
        return Trainer(args, ctx).fit()
    finally:
        distributed.teardown(ctx)


if __name__ == "__main__":
    args = parse_args()
    if not args.dry_run:
        if int(os.environ.get("RANK", "0")) == 0:
            sys.exit(engine.run(main, args))  # process 0 records failures in run.json
        main(args)
