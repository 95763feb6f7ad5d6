"""Train GPT-2 on GPT-2-tokenised text for a number of iterations.

    python -m gpt2.train --model-size tiny --dataset pydoc --optimizer adamw --output-dir runs/x
    python -m torch.distributed.run --standalone --nproc_per_node 4 -m gpt2.train ...   # DDP

Data: gpt2/prepare.py's train.bin/val.bin in <data-dir>/gpt2/<dataset>/; the
small corpora (pydoc, shakespeare, a text file) are prepared here when
missing, the web corpora must be prepared first. One iteration is one
optimizer step over --batch-size x --grad-accum sequences of --block-size
tokens: --grad-accum counts micro-batches over all processes, so the global
batch is the same on one process or many. The learning rate follows the
shared schedule (--lr-schedule, --lr-warmup-percent, --lr-min, ...), stepped once per
iteration over --max-iters. Writes
run.json, metrics.json (validation loss and perplexity every
--eval-interval iterations), checkpoint.pt and best.pt to --output-dir, from
process 0 only; --resume continues from checkpoint.pt exactly (every RNG
state and the data position). SIGUSR1 or SIGTERM stops the run after the
current iteration with a checkpoint of it (lib/run.py).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict

import torch

from gpt2 import data as gdata
from gpt2.model import ATTENTIONS, GPT, MAX_POSITIONS, SIZES, cache_bytes_per_token, config_for, mlp_hidden, parse_mlp_ratio
from gpt2.prepare import DATASETS
from lib import cli, distributed, optim, pruning
from lib.run import LOSS, Run, TrainingDiverged, execute, optimizer_step

# Checkpoint fields that fix the data order and the model's shape: a resume must not change them.
SHAPE_KEYS = ("model_size", "block_size", "batch_size", "grad_accum", "dataset", "text_file", "seed")
MLA_LATENT_DIM = {"tiny": 32}  # --mla-latent-dim's default per size (gpt2/Kconfig's), else the reference's 128


def ra_heads_value(text: str) -> int | str:
    """--ra-heads: a whole number of heads (0: off) or "all"; checked against the size's heads in `check`."""
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of heads (0, 1, 2, ...) or 'all'")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    p = cli.parser(__doc__.splitlines()[0], epochs=None, batch_size=4, lr=3e-3)  # iteration-based: no --epochs
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
    g.add_argument("--mlp-ratio", default="gpt2",
                   help="MLP:attention weight ratio sizing the MLP (hidden a multiple of 64): gpt2 (4 x width), golden (2.5) "
                        "or a number")
    g.add_argument("--attention", default="standard", choices=ATTENTIONS,
                   help="mla: keys and values from a shared latent of --mla-latent-dim (the cache holds the latent)")
    g.add_argument("--mla-latent-dim", type=int,
                   help="MLA's latent size (default: 32 for tiny, 128 otherwise); read only with --attention mla")
    g.add_argument("--ra-heads", type=ra_heads_value, default=0,
                   help="reciprocal attention on this many heads, or all (0: off)")
    g.add_argument("--rmlp", action="store_true", help="reciprocal MLP: a gated coupling from the attention output into the MLP")
    return p


def check(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """GPT-2's own checks, after `cli.check`: one line naming the flag."""
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
    try:
        parse_mlp_ratio(args.mlp_ratio)
    except ValueError as e:
        p.error(f"--mlp-ratio: {e}")
    if args.mla_latent_dim is None:
        args.mla_latent_dim = MLA_LATENT_DIM.get(args.model_size, 128)
    if args.mla_latent_dim < 1:
        p.error(f"--mla-latent-dim must be at least 1, got {args.mla_latent_dim}")
    n_head = SIZES[args.model_size].n_head
    if args.ra_heads == "all":
        args.ra_heads = n_head
    if args.ra_heads > n_head:
        p.error(f"--ra-heads {args.ra_heads} is more than the {n_head} heads of --model-size {args.model_size}; "
                f"valid: 0..{n_head} or all")
    variants = [f for f, on in (("--attention mla", args.attention == "mla"), ("--ra-heads", args.ra_heads),
                                ("--rmlp", args.rmlp)) if on]
    if variants and args.pruning_method != "none" and str(args.pruning_granularity).strip().lower() == "channel":
        p.error(f"--pruning-granularity channel cannot take {', '.join(variants)}: channel units know GPT-2's own "
                "attention heads only (c_attn, c_proj); use element or N:M granularity")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.grad_accum % world:
        p.error(f"--grad-accum {args.grad_accum} is not divisible by the {world} processes: make it a multiple")
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # torchrun hands on the "--" that ended its options on some Python versions
        argv = argv[1:]
    p = get_args_parser()
    if any(a == "--epochs" or a.startswith("--epochs=") for a in argv):
        p.error("--epochs does not apply to gpt2: it trains for --max-iters iterations (CONFIG_GPT2_MAX_ITERS)")
    return check(p, cli.check(p, p.parse_args(argv)))


def get_batch(data: gdata.TokenWindows, order: gdata.ShuffledOrder, args, it: int, micro: int, device):
    """Micro-batch `micro` (0..grad_accum-1, counted over all processes) of iteration `it`."""
    start = (it * args.grad_accum + micro) * args.batch_size
    return data.get(order.windows(start, args.batch_size), device)


@torch.no_grad()
def estimate_loss(model, val_data: gdata.TokenWindows, args, n_eval: int, run: Run) -> float:
    """Mean validation loss over the same `n_eval` batches every time, shared over processes."""
    model.eval()
    total = torch.zeros((), device=run.device)
    for index in range(run.rank, n_eval, run.world_size):
        x, y = val_data.get(gdata.eval_windows(val_data, args.batch_size, index), run.device)
        with run.autocast():
            _, loss = model(x, y)
        total += loss.float()
    model.train()
    return distributed.all_reduce_sum(total).item() / n_eval


def build_model(args: argparse.Namespace) -> GPT:
    """The model this trainer trains for `args`, freshly initialised, on the CPU."""
    return GPT(config_for(args.model_size, block_size=args.block_size, dropout=args.dropout, mlp_ratio=args.mlp_ratio,
                          attention=args.attention, latent_dim=args.mla_latent_dim, ra_heads=args.ra_heads,
                          rmlp=args.rmlp))


def architecture_key(args: argparse.Namespace) -> dict | None:
    """The architecture flags a resume must keep: None for GPT-2's own (so checkpoints from before the flags resume)."""
    arch = {"mlp_ratio": args.mlp_ratio, "attention": args.attention, "ra_heads": args.ra_heads, "rmlp": args.rmlp}
    if args.attention == "mla":
        arch["latent_dim"] = args.mla_latent_dim
    return None if arch == {"mlp_ratio": "gpt2", "attention": "standard", "ra_heads": 0, "rmlp": False} else arch


@torch.no_grad()
def architecture(model: GPT, device) -> dict:
    """metrics.json's "architecture": the variant settings, the MLP's hidden size and ratio, the cache per token.

    kv_cache_bytes_per_token is measured from the cache of a one-sequence
    prompt of a block (or 16 tokens), in the weights' dtype.
    """
    cfg, was_training = model.config, model.training
    model.eval()
    _, cache = model.forward_cached(torch.zeros(1, min(16, cfg.block_size), dtype=torch.long, device=device))
    model.train(was_training)
    return {"mlp_ratio": cfg.mlp_ratio, "attention": cfg.attention,
            "latent_dim": cfg.latent_dim if cfg.attention == "mla" else None, "ra_heads": cfg.ra_heads, "rmlp": cfg.rmlp,
            "mlp_hidden": mlp_hidden(cfg), "mlp_attention_ratio": model.mlp_attention_ratio(),
            "param_classes": model.param_classes(), "kv_cache_bytes_per_token": cache_bytes_per_token(cache)}


def validation_windows(args: argparse.Namespace) -> gdata.TokenWindows:
    """The prepared validation split in windows of --block-size tokens (one process)."""
    return gdata.TokenWindows(gdata.ensure_prepared(args.dataset, args.data_dir, args.text_file) / "val.bin", args.block_size)


def example_inputs(args: argparse.Namespace, batch: int) -> torch.Tensor:
    """`batch` validation windows of --block-size tokens, as the model takes them (lib.inference)."""
    val_data = validation_windows(args)
    return val_data.get(gdata.eval_windows(val_data, batch, 0), torch.device("cpu"))[0]


@torch.no_grad()
def quality(model, args: argparse.Namespace, device) -> dict:
    """Validation loss and perplexity of `model` over the batches `estimate_loss` reads, on one process (lib.inference)."""
    val_data = validation_windows(args)
    n_eval = gdata.eval_batches(val_data, args.batch_size, args.eval_iters)
    model.eval()
    total = 0.0
    for index in range(n_eval):
        x, y = val_data.get(gdata.eval_windows(val_data, args.batch_size, index), device)
        total += model(x, y)[1].float().item()
    loss = total / n_eval
    return {"val_loss": loss, "perplexity": math.exp(min(loss, 700.0))}


def global_mean(loss_sum: torch.Tensor, iters: int, args) -> float:
    """Mean micro-batch loss over `iters` iterations and all processes."""
    return distributed.all_reduce_sum(loss_sum.detach().clone()).item() / (iters * args.grad_accum)


def stopped_part(state: dict, run: Run) -> dict:
    """This process's part of a checkpoint a signal stopped between evaluations ({} otherwise).

    Written by another number of processes, process 0 takes the whole sum:
    the next evaluation's training loss is the same mean.
    """
    parts = state.get("per_process")
    if parts is None:
        return {}
    if len(parts) == run.world_size:
        return parts[run.rank]
    return {"interval_loss": sum(p["interval_loss"] for p in parts) if run.is_main else 0.0}


def main(args: argparse.Namespace) -> dict:
    """Train GPT-2 as `args` says (under torchrun: one process of a DDP run); returns the metrics.json content."""
    with Run(args, model="gpt2", dataset=args.dataset, unit="iter", goal=LOSS) as run:
        device = run.device
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        data_dir = gdata.ensure_prepared(args.dataset, args.data_dir, args.text_file, device)
        train_data = gdata.TokenWindows(data_dir / "train.bin", args.block_size)
        val_data = gdata.TokenWindows(data_dir / "val.bin", args.block_size)
        order = gdata.ShuffledOrder(train_data.n_windows, args.seed)
        n_eval = gdata.eval_batches(val_data, args.batch_size, args.eval_iters)
        local_accum = args.grad_accum // run.world_size  # this process's micro-batches per iteration
        tokens_per_iter = args.batch_size * args.grad_accum * args.block_size

        run.seed()  # the same initial weights on every process
        model = build_model(args).to(device)
        model_config = model.config
        if run.world_size > 1:
            torch.manual_seed(args.seed + run.rank)  # each process its own dropout stream
        optimizer = optim.from_args(args, model)
        args.max_iters = run.extend_budget(args.max_iters)
        # The shared learning-rate schedule (lib.optim), one step per iteration, over the whole (extended) run.
        scheduler = optim.scheduler_from_args(args, optimizer, args.max_iters)
        steps_per_epoch = max(1, train_data.n_windows // (args.batch_size * args.grad_accum))  # --pruning-unit epoch
        pruner = pruning.from_args(args, model, optimizer, args.max_iters, steps_per_epoch=steps_per_epoch,
                                   include_tied_head=args.prune_tied_head,
                                   example_inputs=torch.zeros(1, args.block_size, dtype=torch.long, device=device))
        run.attach(model, optimizer, scheduler, pruner, include_tied_head=args.prune_tied_head,
                   best_extra={"config": asdict(model_config)})
        state = run.resume(fixed={**{k: getattr(args, k) for k in SHAPE_KEYS}, "architecture": architecture_key(args)})
        it = state.get("iter", 0)
        train_seconds = state.get("train_seconds", 0.0)  # in training iterations only (no evaluation or checkpointing)
        stopped_by = state.get("stopped_by", "max_iters")
        # Losses summed since the last evaluation: this process's own, from a checkpoint a signal stopped between two.
        interval_loss = torch.tensor(stopped_part(state, run).get("interval_loss", 0.0), device=device)
        interval_iters = state.get("interval_iters", 0)
        arch = architecture(model, device)
        run.start(model_size=args.model_size, block_size=args.block_size, tokens_per_iter=tokens_per_iter,
                  processes=run.world_size, architecture=arch)
        net, eval_net = run.wrap(model)
        if run.is_main:
            print(f"gpt2 {args.model_size}: {model.num_params() / 1e6:.2f}M parameters, {run.world_size} process(es), "
                  f"{tokens_per_iter} tokens per iteration, {train_data.n_windows} training windows", flush=True)
            print(f"architecture: MLP {arch['mlp_ratio']} (hidden {arch['mlp_hidden']}, MLP:attention "
                  f"{arch['mlp_attention_ratio']:.3f}), attention {arch['attention']}, RA heads {arch['ra_heads']}, "
                  f"R-MLP {'on' if arch['rmlp'] else 'off'}, cache {arch['kv_cache_bytes_per_token']:g} bytes/token", flush=True)

        def evaluate_and_save(train_loss: float | None) -> None:
            """Validation at iteration `it`: one history entry; the Run writes checkpoint.pt, best.pt and metrics.json."""
            if train_loss is not None and not math.isfinite(train_loss):
                raise TrainingDiverged(f"training loss became {train_loss} by iteration {it}")
            val_loss = estimate_loss(eval_net, val_data, args, n_eval, run)
            entry = {
                "iter": it,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_perplexity": math.exp(min(val_loss, 700.0)),
                "sparsity": run.sparsity()["sparsity_prunable"],
                "lr": optim.current_lr(optimizer),  # the one the next iteration uses
                "tokens": it * tokens_per_iter,
                "elapsed_s": run.elapsed(),
            }
            if run.is_main:
                print(f"eval iter {it}: train_loss {train_loss if train_loss is None else round(train_loss, 4)} "
                      f"val_loss {val_loss:.4f} val_ppl {entry['val_perplexity']:.2f} sparsity {entry['sparsity']:.3f}",
                      flush=True)
            run.evaluated(entry, **position())

        def position() -> dict:
            """checkpoint.pt's fields for iteration `it`: the data position and the training clock."""
            return {"data": {"sequences": it * args.grad_accum * args.batch_size, "order": "shuffled windows"},
                    "train_seconds": train_seconds, "stopped_by": stopped_by}

        net.train()
        run.monitor.set_phase("train")
        log_loss, log_iters = torch.zeros((), device=device), 0  # summed losses since the last progress line
        segment = log_start = time.monotonic()
        while it < args.max_iters:
            signum = run.stop_requested()
            if signum:  # SIGUSR1/SIGTERM: checkpoint this iteration and stop
                train_seconds += time.monotonic() - segment
                run.stop(signum, f"iteration {it} of {args.max_iters}", it, {**position(), "interval_iters": interval_iters},
                         per_process={"interval_loss": interval_loss.item()})
            # One iteration: this process's micro-batches (DDP averages the gradients on the last), one optimizer step.
            for j in range(local_accum):
                x, y = get_batch(train_data, order, args, it, run.rank * local_accum + j, device)
                with net.no_sync() if run.distributed and j < local_accum - 1 else nullcontext():
                    with run.autocast():
                        _, loss = net(x, y)
                    run.scaler.scale(loss / local_accum).backward()
                interval_loss += loss.detach()
                log_loss += loss.detach()
            optimizer_step(optimizer, run.scaler, pruner, scheduler, clip=args.grad_clip)
            it += 1
            interval_iters += 1
            log_iters += 1

            if it % args.log_interval == 0:
                mean = global_mean(log_loss, log_iters, args)
                if not math.isfinite(mean):
                    raise TrainingDiverged(f"training loss became {mean} by iteration {it}")
                now = time.monotonic()
                if run.is_main:
                    rate = log_iters * tokens_per_iter / max(now - log_start, 1e-9)
                    print(f"iter {it}/{args.max_iters} loss {mean:.4f} lr {optim.current_lr(optimizer):.2e} "
                          f"{rate:,.0f} tok/s", flush=True)
                log_loss.zero_()
                log_iters, log_start = 0, now
            # --max-minutes: process 0 decides, so that every process stops at the same iteration
            stop = bool(args.max_minutes) and distributed.broadcast_flag(run.elapsed() >= 60 * args.max_minutes, device)
            if stop:
                stopped_by = "max_minutes"
            if it % args.eval_interval == 0 or it == args.max_iters or stop:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                train_seconds += time.monotonic() - segment
                run.monitor.set_phase("eval")
                evaluate_and_save(global_mean(interval_loss, interval_iters, args))
                interval_loss.zero_()
                interval_iters = 0
                run.monitor.set_phase("train")
                segment = log_start = time.monotonic()
            if stop:
                break
        if not run.history:  # nothing left to train (resumed at the end) yet no evaluation on record
            evaluate_and_save(None)

        best = run.best["value"]
        metrics = run.finish({
            "perplexity": run.history[-1]["val_perplexity"],
            "best_perplexity": math.exp(best) if best is not None else None,
            "val_loss": run.history[-1]["val_loss"],
            "best_val_loss": best,
            "iters": it,
            "tokens": it * tokens_per_iter,
            "tokens_per_s": it * tokens_per_iter / train_seconds if train_seconds else None,
            "stopped_by": stopped_by,
        })
        if run.is_main:
            print(f"done: val_loss {metrics['final']['val_loss']:.4f} perplexity {metrics['final']['perplexity']:.2f} "
                  f"({it} iterations, {metrics['final']['tokens_per_s'] or 0:,.0f} tok/s)", flush=True)
        return metrics


if __name__ == "__main__":
    args = parse_args()
    if not args.dry_run:
        sys.exit(execute(main, args))
