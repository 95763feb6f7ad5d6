"""One run lifecycle for every model: everything a training run does besides its loop.

A trainer's loop (lib/classifier.py's epochs, gpt2/train.py's iterations)
sits on a `Run`, in this order:

    with Run(args, model="lenet5", dataset="digits", unit="epoch", goal=ACCURACY) as run:
        generator = run.seed(offset)          # --seed + offset; the generator's state is checkpointed
        ... model, optimizer ...
        length = run.extend_budget(length)    # --finetune-length-percent, --budget-extension; in run.json
        ... scheduler, pruner ...
        run.attach(model, optimizer, scheduler, pruner)   # --init-from: the parent's weights
        position = run.resume()               # {} or the checkpoint (the loop reads its own fields)
        run.start()                           # run.json "running", memory monitor, trackers; one-shot masks
        train_net, eval_net = run.wrap(model)
        run.before_training(evaluate)         # a fine-tuning run: one evaluation before its first step
        ... train: run.autocast(), run.scaler, optimizer_step() ...
        run.evaluated(entry, **fields)        # after every evaluation
        return run.finish(results)            # metrics.json's final block, run.json "completed"

What it owns:
- Device and precision: `--device`, `--amp` (autocast on CUDA; fp16 adds an
  enabled GradScaler, otherwise `scaler` is a disabled one whose calls do
  nothing), `--compile`, and DDP: started by torchrun, the Run joins the
  process group (lib.distributed) and leaves it when the `with` block ends;
  `wrap()` compiles the model and wraps it in DistributedDataParallel.
- Files, written by process 0 only: run.json (lib.results.RunRecord),
  memory.json (the monitor), checkpoint.pt and best.pt, metrics.json.
  metrics.json's header (`header()`) and final block (`final_block()`) are
  written here and nowhere else; a loop supplies its history entries and
  its own final figures (accuracy, perplexity, tokens, ...). The final block
  always has the sparsity report and, for a pruned run, `pruning` (the
  pruner's summary: scheduled vs achieved sparsity, layer levels, RATIO).
- The best model: counted only once the masks are at the target sparsity
  (an early dense evaluation is not a result of the pruned model).
- The checkpoint bundle (`BUNDLE` schema): model, optimizer, scheduler,
  pruner, scaler, every process's RNG states (Python, NumPy, torch, CUDA,
  the data loader's generator), history, best, elapsed time, the settings
  that fix the data order (`resume(fixed=...)` refuses others), and the
  loop's own position fields (epoch, or iteration and data position).
  A process without a saved RNG state (another process count) keeps its
  fresh one; process 0 always continues its own.
- Stopping on a signal: under `execute`, SIGUSR1 (Slurm's warning before a
  time limit) and SIGTERM (preemption, scancel) only set a flag. A loop asks
  `stop_requested()` after every optimizer step (under DDP one tiny
  all-reduce, so every process stops at the same step) and, when asked, calls
  `stop(...)`: checkpoint.pt for that exact position (the loop's fields, and
  each process's own part such as its running loss sums), then `Stopped`.
  The run ends "interrupted" with `stop_exit_code(signum)`, 128 + the
  signal's number, and --resume continues it as if it had never stopped.
- Failure: leaving the `with` block by an exception still writes memory.json
  and closes the trackers; `execute(main, args)` marks run.json
  "interrupted" (a stop, or KeyboardInterrupt: SIGINT, exit 130) or
  "failed" and prints one line on stderr. A NaN loss is `TrainingDiverged`,
  naming the step.
- run.json also records the torch threads and CUDA_VISIBLE_DEVICES the run
  had (`threads`, `visible_devices`: None when unset), as the runner set them.
- Fine-tuning (`--init-from PATH`, a best.pt or checkpoint.pt of a completed
  run: its run.json says "completed", else one line and nothing is written):
  the run is that run's child. `attach` loads the parent's weights (not on
  --resume with a checkpoint of its own: a resumed child never reads its
  parent again); `--finetune-lr-percent` scales --lr as the Run is made,
  `--finetune-length-percent` the length in `extend_budget`; run.json
  records `parent` {run_id, path} and `finetune` (the shares, the lengths and
  learning rates before and after); metrics.json's header `parent`.
- A schedule at its target from step 0 (`--pruning-schedule oneshot`):
  `start` sets the masks at the target and zeroes the pruned weights before
  the first optimizer step, from the weights it starts with. A fine-tuning
  run's loop then calls `before_training(evaluate)` once: the model right
  after pruning, before any fine-tuning, is the final block's
  `pruned_before_finetune` (kept in checkpoint.pt across a resume).

`optimizer_step()` is the one order of the hooks after backward, for every
loop: unscale (fp16) -> pruner.mask_gradients -> clip -> optimizer step ->
zero gradients -> pruner.step -> scheduler.step. Pruners that learn from
gradients (movement) therefore read unscaled gradients, and none on a step
whose gradients are not finite (the step the scaler skips).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from lib import checkpoint, distributed, fs_errors, monitor, pruning, tracking
from lib.data import DatasetMissing
from lib.results import RUNNER_ENV, SCHEMA, RunRecord, read_json, write_json

BUNDLE = 2  # checkpoint.pt layout; a checkpoint without it was written before the one lifecycle
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
STOP_CHECK_STEPS = 20  # under DDP, optimizer steps between the processes' agreements on a stop signal
UNIT_WORDS = {"epoch": ("epoch", "epochs"), "iter": ("iteration", "iterations")}  # a history key: how it is said


STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)  # stop at the next optimizer step, with a checkpoint of it
_stop_signal = 0  # the last stop signal received (0: none); set by the handler `execute` installs
# The runner names itself to its trainers (RUNNER_ENV); a trainer whose runner died (SIGKILL, a lost terminal)
# stops as on SIGTERM, with a checkpoint, rather than training on unwatched. Watched when the runner is the
# parent, or the grandparent of a torchrun worker (whose parent is torchrun's agent).
_runner: RunnerWatch | None = None  # the runner this process watches


class TrainingDiverged(Exception):
    pass


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors an optimizer keeps between steps (moments, momentum buffers, step counts)."""
    return sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values()
               if isinstance(t, torch.Tensor))


def stop_exit_code(signum: int) -> int:
    """The exit status of a run stopped by `signum`: 128 + its number, the shell's convention (SIGUSR1 138, SIGTERM 143)."""
    return 128 + signum


class Stopped(Exception):
    """The run stopped on a signal after writing checkpoint.pt for its exact position."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = stop_exit_code(signum)


def parent_of(init_from: str) -> dict:
    """{"run_id", "path"} of the completed run whose checkpoint `init_from` (its best.pt) names.

    ValueError with one line when that run is not completed (its run.json
    says otherwise, or there is none) or the file is missing; nothing is read
    or written besides.
    """
    path = Path(init_from)
    record = read_json(path.parent / "run.json") or {}
    name = record.get("run_id") or path.parent.name
    status = record.get("status") or "no run.json"
    if status != "completed":
        raise ValueError(f"parent run {name} is not completed (status: {status}); finish it first")
    if not path.is_file():
        raise ValueError(f"parent run {name} has no {path.name} ({path}); fine-tuning starts from a completed run's best.pt")
    return {"run_id": name, "path": str(path.parent), "checkpoint": path.name}


# Errors whose message already says what is wrong and what to do.
EXPLAINED = (TrainingDiverged, DatasetMissing, checkpoint.CorruptCheckpoint, ValueError)


@dataclass(frozen=True)
class Goal:
    """The validation figure that decides best.pt: a history key and its direction."""

    metric: str
    higher: bool

    def better(self, value: float, best: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        return best is None or (value > best if self.higher else value < best)


ACCURACY = Goal("val_accuracy", higher=True)
LOSS = Goal("val_loss", higher=False)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no GPU is visible; pick CPU or auto (CONFIG_DEVICE_*)")
    return torch.device(name)


def precision(amp: str, device: torch.device, *, note: bool = True) -> str:
    """The mixed precision a run uses: `amp`, or "off" (with a note) off CUDA; bf16 needs GPU support."""
    if amp != "off" and device.type != "cuda":
        if note:
            print(f"note: --amp {amp} is ignored on {device.type} (mixed precision is used on CUDA only)", flush=True)
        return "off"
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("--amp bf16: this GPU has no bfloat16 support; use --amp fp16")
    return amp


def autocast(device: torch.device, amp: str):
    """The mixed-precision context for `amp` ("off", "bf16", "fp16"); a no-op off CUDA or when off."""
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def gradients_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient the optimizer holds is finite (what the gradient scaler checks before stepping)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return not grads or bool(torch.nn.utils.get_total_norm(grads).isfinite())


def optimizer_step(optimizer, scaler=None, pruner=None, scheduler=None, *, clip: float = 0.0) -> None:
    """Everything between backward and the next forward pass, in the one order every loop uses.

    `scaler`: a GradScaler (None or disabled: plain float32 steps). With an
    enabled one the gradients are unscaled first, so the pruner reads and
    `clip` (the global norm over the optimizer's parameters, 0 = off) limits
    true gradients; on a step with non-finite gradients the scaler skips the
    optimizer step and the pruner learns nothing from it (`accumulate=False`).
    """
    scaling = scaler is not None and scaler.is_enabled()
    if scaling:
        scaler.unscale_(optimizer)
    if pruner is not None:
        pruner.mask_gradients(accumulate=not scaling or gradients_finite(optimizer))
    if clip:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
    if scaling:
        scaler.step(optimizer)  # skipped when the gradients overflowed
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if pruner is not None:
        pruner.step()
    if scheduler is not None:
        scheduler.step()  # once per optimizer step


class Run:
    """One training run's lifecycle (see the module docstring); use it as a context manager."""

    def __init__(self, args, *, model: str, dataset: str, unit: str, goal: Goal):
        if unit not in UNIT_WORDS:
            raise ValueError(f"unknown run unit {unit!r}; valid: {', '.join(UNIT_WORDS)}")
        self.args, self.model_name, self.dataset, self.unit, self.goal = args, model, dataset, unit, goal
        self.out = Path(args.output_dir)
        self.resuming = bool(args.resume and (self.out / "checkpoint.pt").exists())
        # A fine-tuning run: its parent (refused here, before anything is written, unless it completed) and shares.
        self.parent = parent_of(args.init_from) if args.init_from and not self.resuming else None
        self.finetune: dict | None = None
        if args.init_from:
            base_lr = getattr(args, "finetune_base_lr", args.lr)  # the configured --lr, also when args is reused
            args.finetune_base_lr, args.lr = base_lr, base_lr * args.finetune_lr_percent / 100
            self.finetune = {"lr_percent": args.finetune_lr_percent, "base_lr": base_lr, "lr": args.lr,
                             "length_percent": args.finetune_length_percent}
        device = resolve_device(args.device)
        self.ctx = distributed.setup(device.type)
        try:
            self.device = distributed.device_for(self.ctx, device.type)
            self.is_main = self.ctx.is_main
            self.amp = precision(args.amp, self.device, note=self.is_main)
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
            if self.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
        except BaseException:  # the `with` block never started: leave the process group here
            distributed.teardown(self.ctx)
            raise
        self.generator: torch.Generator | None = None
        self.budget: dict | None = None
        self.model = self.optimizer = self.scheduler = self.pruner = None
        self.include_tied_head, self.best_extra, self.fixed = False, {}, {}
        self.history: list[dict] = []
        self.before_finetune: dict | None = None  # `before_training`'s evaluation
        self.bench_pending = False  # --bench-inference: set by finish(), run by __exit__
        self.best = {"value": None, "at": None}
        self.elapsed_before = 0.0  # seconds of earlier attempts
        self.metrics: dict = {}
        self.record = RunRecord(self.out) if self.is_main else None
        self.monitor, self.trackers = monitor.Monitor(None), tracking.Trackers()  # real ones from start(), on process 0
        self._started: float | None = None
        self._open = False
        self._stop_asks = 0  # stop_requested() calls: under DDP every STOP_CHECK_STEPS-th one asks the other processes

    # -- processes --------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.ctx.rank

    @property
    def world_size(self) -> int:
        return self.ctx.world_size

    @property
    def distributed(self) -> bool:
        return self.ctx.distributed

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is not None:
                try:
                    code = exc.exit_code if isinstance(exc, Stopped) else 130 if issubclass(exc_type, KeyboardInterrupt) else 1
                    self._close(exit_code=code)
                except Exception as e:  # the failure being raised matters more than the monitor's last write
                    print(f"warning: could not close the memory monitor or trackers: {e}", file=sys.stderr)
        finally:
            distributed.teardown(self.ctx)
        if exc_type is None and self.bench_pending:  # --bench-inference, outside any process group
            from lib import inference
            inference.after_run(self.out, self.device)
        return False

    # -- building -----------------------------------------------------------------------
    def seed(self, offset: int = 0) -> torch.Generator:
        """Seed Python, NumPy and torch with --seed + offset; the returned generator (the data loader's) is checkpointed."""
        self.generator = checkpoint.seed_everything(self.args.seed + offset)
        return self.generator

    def extend_budget(self, length: int) -> int:
        """`length` (epochs or iterations): a fine-tuning run's share of it (--finetune-length-percent, at least 1),
        lengthened by --budget-extension %; run.json records both."""
        if self.finetune is not None:
            trained = max(1, int(length * self.finetune["length_percent"] / 100 + 0.5))
            self.finetune.update(unit=f"{self.unit}s", base=length, trained=trained)
            if self.is_main:
                print(f"fine-tuning for {self.finetune['length_percent']:g}% of {length} {UNIT_WORDS[self.unit][1]}: "
                      f"{trained}, at {self.finetune['lr_percent']:g}% of the learning rate: {self.finetune['lr']:g}", flush=True)
            length = trained
        self.budget = pruning.budget_record(length, self.args.budget_extension, f"{self.unit}s")
        if self.budget["trained"] != length and self.is_main:
            print(f"training budget extended by {self.budget['extension_percent']:g}%: "
                  f"{length} -> {self.budget['trained']} {UNIT_WORDS[self.unit][1]}", flush=True)
        return self.budget["trained"]

    def attach(self, model, optimizer, scheduler, pruner, *, include_tied_head: bool = False, best_extra: dict | None = None) -> None:
        """What the checkpoint bundle holds and the reports read. `model` owns the weights (not a DDP or compiled wrapper)."""
        self.model, self.optimizer, self.scheduler, self.pruner = model, optimizer, scheduler, pruner
        self.include_tied_head = include_tied_head  # GPT-2: sparsity reported over the tied head too when it is pruned
        self.best_extra = dict(best_extra or {})  # more fields for best.pt (GPT-2: the model config)
        if self.parent is not None:  # a fine-tuning run that starts afresh: its parent's weights
            self._load_parent()

    def _load_parent(self) -> None:
        path = Path(self.parent["path"]) / self.parent["checkpoint"]
        state = checkpoint.load(path, map_location=self.device)
        try:
            self.model.load_state_dict(state["model"])
        except (KeyError, RuntimeError) as e:
            detail = " ".join(str(e).split())
            raise ValueError(f"--init-from {path}: its weights do not fit this run's model ({detail[:300]})") from None
        if self.is_main:
            print(f"starting from parent run {self.parent['run_id']} ({path})", flush=True)

    def wrap(self, model) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(training module, evaluation module): compiled with --compile; the training one DDP-wrapped under torchrun."""
        net = torch.compile(model) if self.args.compile else model
        train_net = net
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            train_net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
        return train_net, net

    def autocast(self):
        return autocast(self.device, self.amp)

    # -- checkpoints ----------------------------------------------------------------------
    def _set_aside(self, path: Path, error: checkpoint.CorruptCheckpoint) -> checkpoint.CorruptCheckpoint:
        """Keep a checkpoint this run cannot resume from under another name (process 0); the error that says so."""
        if self.world_size > 1:
            distributed.barrier()  # every process has tried to load it before process 0 renames it
        if not self.is_main:
            return error
        aside = checkpoint.set_aside(path)
        return checkpoint.CorruptCheckpoint(
            f"{error}; it cannot be resumed and was kept as {aside.name}. "
            f"'make continue RESTART_CORRUPT=1' restarts the runs set aside so from the beginning"
        )

    def resume(self, fixed: dict | None = None) -> dict:
        """With --resume and a checkpoint.pt: restore the bundle and return the checkpoint; else {}.

        `fixed`: settings that fix the data order or the model's shape; a
        checkpoint made with other values is refused (and kept).
        """
        self.fixed = dict(fixed or {})
        path = self.out / "checkpoint.pt"
        if not self.resuming:
            return {}
        try:
            state = checkpoint.load(path, map_location=self.device)
            if state.get("bundle") != BUNDLE:
                raise checkpoint.CorruptCheckpoint(f"{path} was written by an older version of the harness")
        except checkpoint.CorruptCheckpoint as e:
            raise self._set_aside(path, e) from None
        saved = state["fixed"]
        changed = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in self.fixed.items() if saved.get(k) != v]
        if changed:
            raise ValueError(f"{path} was made with other settings ({'; '.join(changed)}); it was kept, "
                             "restore the settings or move it aside to start over")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.pruner is not None:
            self.pruner.load_state_dict(state["pruner"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        ranks = state["rng"]  # one entry per process that wrote it
        if len(ranks) == self.world_size:
            checkpoint.set_rng_state(ranks[self.rank], self.generator)
        elif self.is_main:  # another process count: the others keep their fresh streams
            checkpoint.set_rng_state(ranks[0], self.generator)
            print(f"note: the checkpoint was written by {len(ranks)} process(es); only process 0's RNG state carries over", flush=True)
        self.history, self.best, self.elapsed_before = state["history"], state["best"], state["elapsed_s"]
        self.before_finetune = state.get("pruned_before_finetune")
        if self.is_main:
            where = state.get("interrupted_at") or f"{UNIT_WORDS[self.unit][0]} {state[self.unit]}"
            print(f"resumed from {path} at {where}", flush=True)
        return state

    def stop_requested(self) -> int:
        """The signal that asked this run to stop (SIGUSR1, SIGTERM), or 0; the same answer on every process.

        A loop asks after every optimizer step. One process answers for
        free. Under DDP the processes agree by one all-reduce of a single
        number (the highest signal any of them received), so all stop after
        the same step even when the signal reached only some of them; as the
        all-reduce waits for the GPU, they agree only every
        `STOP_CHECK_STEPS` asks (a stop comes minutes before a time limit).
        """
        _check_runner()
        if not self.distributed:
            return _stop_signal
        self._stop_asks += 1
        if self._stop_asks % STOP_CHECK_STEPS:
            return 0
        flag = torch.tensor([_stop_signal], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def stop(self, signum: int, where: str, step: int, fields: dict, per_process: dict | None = None):
        """Write checkpoint.pt for the exact position and raise `Stopped`; call it on every process.

        `where` names the position ("epoch 3, step 17 of 45"), `step` and
        `fields` are what `evaluated` takes (the unit's count, the loop's
        position fields); `per_process` is this process's own part of the
        position (running loss sums, its data loader's state), stored in rank
        order as the checkpoint's "per_process".
        """
        rng = distributed.gather_objects(checkpoint.rng_state(self.generator))
        parts = distributed.gather_objects(per_process)
        if self.is_main:
            bundle = self._bundle(rng, step, {**fields, "per_process": parts, "interrupted_at": where})
            checkpoint.save(self.out / "checkpoint.pt", bundle)
        raise Stopped(signum, f"stopped by {signal.Signals(signum).name} at {where}; checkpoint.pt holds this position")

    def _bundle(self, rng: list, step: int, fields: dict) -> dict:
        return {
            "bundle": BUNDLE,
            self.unit: step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "pruner": self.pruner.state_dict() if self.pruner is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": rng,
            "fixed": self.fixed,
            "history": self.history,
            "best": self.best,
            "elapsed_s": self.elapsed(),
            "pruned_before_finetune": self.before_finetune,
            **fields,
        }

    # -- the record ----------------------------------------------------------------------
    def header(self, **extra) -> dict:
        """metrics.json without its final block: what ran (plus a loop's `extra` fields) and the history."""
        a, pruned = self.args, self.pruner is not None
        return {
            "schema": SCHEMA,
            "run_id": self.out.name,
            "model": self.model_name,
            "dataset": self.dataset,
            "optimizer": a.optimizer,
            "optimizer_base": a.adamwprune_base if a.optimizer == "adamwprune" else None,
            "variant": a.pruning_variant if pruned else None,
            "pruning": a.pruning_method,
            "granularity": a.pruning_granularity if pruned else None,
            "target_sparsity": a.target_sparsity if pruned else 0.0,
            "parent": Path(a.init_from).parent.name if a.init_from else None,
            "seed": a.seed,
            **extra,
            "history": self.history,
        }

    def start(self, **header) -> None:
        """The run begins (after `resume`): run.json "running" with its threads and GPUs, monitor and trackers, the clock.

        A pruner whose schedule is above zero at step 0 (one-shot) gets its masks
        now, before the first optimizer step, unless a checkpoint has them.
        """
        self.metrics = self.header(**header)
        self._started = time.monotonic()
        p = self.pruner
        if p is not None and not self.resuming and p.step_count == 0 and p.schedule(0) > p.sparsity:
            p.update_masks(p.schedule(0))
            p.apply_masks()
        if not self.is_main:
            return
        recorded = self.record.data.get("parent")  # a resumed child keeps what its first attempt recorded
        self.record.start(self.out.name, sys.argv, self.args.seed)
        had = {"threads": torch.get_num_threads(), "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        if self.budget is not None and self.budget["extension_percent"]:
            had["budget"] = self.budget
        if self.args.init_from:
            path = Path(self.args.init_from)
            had["parent"] = self.parent or recorded or {"run_id": path.parent.name, "path": str(path.parent), "checkpoint": path.name}
            had["finetune"] = self.finetune
        self.record.update(**had)
        self.monitor = monitor.for_run(self.args, self.device, self.out)
        self.trackers = tracking.for_run(self.args, model=self.model_name, dataset=self.dataset, run_dir=self.out)
        self.monitor.on_sample = self.trackers.log_memory if self.trackers.trackers else None
        self._open = True
        self._note_warnings()

    def before_training(self, evaluate) -> None:
        """A fine-tuning run that starts afresh: `evaluate()` (a dict of validation figures) once, before any step.

        With the one-shot schedule that is the parent pruned and not yet
        fine-tuned; the final block reports it as `pruned_before_finetune`,
        with the sparsity it had. Call it on every process (DDP evaluates
        together); other runs, and resumed ones, evaluate nothing here.
        """
        if self.parent is None or self.resuming:
            return
        figures = evaluate()
        self.before_finetune = {**figures, "sparsity": self.sparsity()["sparsity_prunable"]}
        if self.is_main:
            shown = " ".join(f"{k} {v:.4g}" for k, v in self.before_finetune.items() if isinstance(v, (int, float)))
            print(f"before fine-tuning: {shown}", flush=True)

    def elapsed(self) -> float:
        """Wall-clock seconds of this run, earlier attempts included."""
        return self.elapsed_before + (time.monotonic() - self._started if self._started is not None else 0.0)

    def sparsity(self) -> dict:
        """The sparsity report over what the pruner prunes (the default selection for a dense run)."""
        params = self.pruner.params if self.pruner is not None else None
        return pruning.sparsity_report(self.model, self.include_tied_head, params=params)

    def at_target(self) -> bool:
        return self.pruner is None or self.pruner.sparsity >= self.pruner.schedule.target

    def evaluated(self, entry: dict, **fields) -> bool:
        """Record one evaluation on every process; returns whether it is the new best.

        `entry` is the history entry (it holds the unit key, "epoch" or
        "iter", and the goal's metric); `fields` are the loop's own position
        fields for checkpoint.pt. Process 0 writes best.pt (when better and
        at the target sparsity), checkpoint.pt, metrics.json and memory.json,
        logs to the trackers and beats run.json's heartbeat.
        """
        self.history.append(entry)
        step, value = entry[self.unit], entry[self.goal.metric]
        improved = self.at_target() and self.goal.better(value, self.best["value"])
        if improved:
            self.best = {"value": value, "at": step}
        rng = distributed.gather_objects(checkpoint.rng_state(self.generator))  # every process's, in rank order
        if not self.is_main:
            return improved
        if improved:
            checkpoint.save(self.out / "best.pt", {"model": self.model.state_dict(), self.unit: step,
                                                   self.goal.metric: value, **self.best_extra})
        checkpoint.save(self.out / "checkpoint.pt", self._bundle(rng, step, fields))
        write_json(self.out / "metrics.json", self.metrics)
        self.monitor.write(self.out / monitor.FILENAME)
        self.trackers.log(entry, step=step)
        self._note_warnings()
        self.record.heartbeat()
        return improved

    def final_block(self, results: dict) -> dict:
        """metrics.json's "final": the loop's `results` first, then what every run reports."""
        report = self.sparsity()
        final = {
            **results,
            "best_at": self.best["at"],
            "sparsity_prunable": report["sparsity_prunable"],
            "sparsity_global": report["sparsity_global"],
            "train_time_s": self.history[-1]["elapsed_s"],
            "peak_memory_mib": self.monitor.peak_memory_mib(),
            "params": report["params"],
            "nonzero_params": report["nonzero_params"],
            "layers": report["layers"],
            "optimizer_state_bytes": optimizer_state_bytes(self.optimizer),
        }
        if self.pruner is not None:  # scheduled vs achieved sparsity, layer levels, RATIO check; masks and scores kept
            final["pruning"] = {**self.pruner.summary(), "state_bytes": self.pruner.state_bytes()}
        if self.before_finetune is not None:
            final["pruned_before_finetune"] = self.before_finetune
        return final

    def finish(self, results: dict) -> dict:
        """The run completed: the final block into metrics.json, the observers closed, run.json "completed"."""
        self.metrics["final"] = self.final_block(results)
        if self.is_main:
            write_json(self.out / "metrics.json", self.metrics)
            self.trackers.summary(self.metrics["final"])
            self._close(exit_code=0)
            self.record.finish("completed", exit_code=0)
            self.bench_pending = getattr(self.args, "bench_inference", False)  # benchmarked when the `with` block ends
        return self.metrics

    def _note_warnings(self) -> None:
        """Copy the monitor's and trackers' warnings into run.json when they changed."""
        found = self.monitor.warnings + self.trackers.warnings
        if found and self.record.data.get("warnings") != found:
            self.record.update(warnings=found)

    def _close(self, exit_code: int) -> None:
        """Final memory.json and tracker finish, once; on failure too, so nothing is left half-written."""
        if not self._open:
            return
        self._open = False
        self.monitor.stop()
        self.monitor.write(self.out / monitor.FILENAME)
        self.trackers.finish(exit_code=exit_code)
        self._note_warnings()


def _request_stop(signum, frame):
    global _stop_signal
    _stop_signal = signum


def _check_runner() -> None:
    """A watched runner that has died: ask for a stop as SIGTERM would (once)."""
    global _runner, _stop_signal
    if _runner and not _runner.alive():
        print(f"the runner (pid {_runner.pid}) is gone: stopping with a checkpoint; 'make continue' resumes the run", flush=True)
        _runner.close()
        _runner, _stop_signal = None, _stop_signal or signal.SIGTERM


def _ancestors() -> tuple[int, ...]:
    """This process's parent and grandparent (the parent alone where /proc cannot say)."""
    parent = os.getppid()
    try:
        stat = Path(f"/proc/{parent}/stat").read_text()
    except OSError:
        return (parent,)
    return parent, int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm)": state, then ppid


class RunnerWatch:
    """Whether runner `pid`, this process's parent or grandparent, still lives (`alive()`).

    A pidfd names the process itself, so a later process that reuses the
    pid is never taken for the runner; it is opened while the runner is
    known to live (an ancestor). Without pidfds (not Linux, or before 5.3)
    only a parent can be watched: it is gone once this process has another.
    """

    def __init__(self, pid: int):
        self.pid, self.fd = pid, None
        try:
            self.fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            return
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)  # readable once the process has exited

    @classmethod
    def of(cls, pid: int) -> "RunnerWatch | None":
        if not pid or pid not in _ancestors():
            return None
        watch = cls(pid)
        return watch if watch.fd is not None or pid == os.getppid() else None

    def alive(self) -> bool:
        return not self.poller.poll(0) if self.fd is not None else os.getppid() == self.pid

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def execute(main, args) -> int:
    """Call a trainer's main(args); turn a failure into a marked run.json and one stderr line; the exit code.

    While it runs, SIGUSR1 and SIGTERM ask the loop to stop at its next
    optimizer step (`Run.stop_requested`); SIGINT stays KeyboardInterrupt.
    """
    global _stop_signal, _runner
    _stop_signal = 0
    _runner = RunnerWatch.of(int(os.environ.get(RUNNER_ENV) or 0))
    before = {s: signal.signal(s, _request_stop) for s in STOP_SIGNALS}
    try:
        main(args)
        return 0
    except Stopped as e:
        _mark(args, "interrupted", e.exit_code, str(e))
        print(f"error: {Path(args.output_dir).name}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        _mark(args, "interrupted", 130, "interrupted")
        print(f"error: {Path(args.output_dir).name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every failure is recorded, then reported in one line
        if fs_errors.is_storage_fault(e):  # the last checkpoint is intact: 'make continue' resumes once it is fixed
            message = fs_errors.explain(e)
            _mark(args, "interrupted", fs_errors.EXIT_STORAGE, message)
            print(f"error: {Path(args.output_dir).name}: {message}", file=sys.stderr)
            return fs_errors.EXIT_STORAGE
        message = str(e) if isinstance(e, EXPLAINED) else f"{type(e).__name__}: {e}"
        _mark(args, "failed", 1, message)
        print(f"error: {message}", file=sys.stderr)
        return 1
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        if _runner:
            _runner.close()
            _runner = None


def _mark(args, status: str, code: int, message: str) -> None:
    """Record how the run ended in run.json; when even that cannot be written, it keeps saying "running"
    and, its claim released, reads as interrupted (`lib.results.live_status`)."""
    if os.environ.get("RANK", "0") != "0":  # under torchrun only process 0 writes run.json
        return
    try:
        record = RunRecord(args.output_dir)
        if record.data.get("status") != "running":  # the run failed before it started: this attempt is still recorded
            record.start(Path(args.output_dir).name, sys.argv, args.seed)
        record.finish(status, exit_code=code, error=message)
    except OSError as e:
        print(f"error: {Path(args.output_dir).name}: its record cannot be written ({fs_errors.explain(e)})", file=sys.stderr)
