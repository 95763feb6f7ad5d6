"""Where and how the runs of a matrix execute on this machine: slots, claims, trainers, the pool.

A *slot* is what one run gets: its GPUs (`CUDA_VISIBLE_DEVICES`; a DDP run
as many as its processes) and its CPU threads (`torch.set_num_threads`, and
`OMP_NUM_THREADS` for a fresh process). `slots()` cuts the machine into
JOBS of them; no two runs at once share a GPU.

A run is executed by whoever holds its *claim* (`lib.results.claim`, an
flock in the run directory): a local worker or a Slurm task. The trainer
inherits the claim, so `make status` can tell a live run from one whose
process is gone, and two processes never execute one run.

A trainer starts one of two ways:
- forked from this process (the fork server): the runner imports torch and
  the matrix's trainers once, and each run is a `fork()` of it that parses
  its argv and calls the trainer's `main()`; the run is still its own
  process, with its own log, threads and exit status. Used when the runs
  use no GPU and one process each: CUDA cannot be used in a child forked
  from a parent that touched it, and a GPU run's minutes dwarf the start-up.
- a fresh `python -m <model>.train` process (GPU runs, DDP under torchrun,
  and every Slurm task).

`Pool` runs up to JOBS runs at once, in order as slots free up: a failed
run never stops the others; with `fail_fast` no new run starts after the
first failure. A fine-tuning run (`spec.parent`) starts only once its parent
completed: while the parent is queued or running, the runs after it go
first; a parent that will not run in this pool (failed, interrupted, left
out) leaves the child unstarted ("skipped: parent <id> failed") and `make
continue` runs it once the parent completes. SIGTERM to the
runner reaches every running trainer, which checkpoints its exact position
and stops (`make continue` resumes it); Ctrl-C interrupts them. `run_one`
runs a single run to its end (the Slurm task's entry point).
"""

from __future__ import annotations

import importlib
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lib import fs_errors, matrix
from lib.atomic import remove_partial
from lib.results import RUNNER_ENV, MatrixError, RunRecord, claim, describe, is_done

REPO = Path(__file__).resolve().parent.parent
GPUS_ENV = "MATRIX_GPUS"  # overrides the GPU list the runner sees: "0,1" (ids, real or not), "" for none
FORK_ENV = "MATRIX_FORK"  # "0": every run a fresh process, even where it could be forked (comparison, debugging)
TICK_S = 0.5  # how often the display refreshes while runs are in flight


# -- the machine ------------------------------------------------------------------
def visible_gpus() -> list[str]:
    """The GPUs runs may be pinned to: $MATRIX_GPUS, else $CUDA_VISIBLE_DEVICES, else NVML's count.

    NVML (never CUDA) so that this process stays fit to fork trainers.
    """
    for name in (GPUS_ENV, "CUDA_VISIBLE_DEVICES"):
        if name in os.environ:
            return [g for g in os.environ[name].replace(" ", "").split(",") if g]
    return [str(i) for i in range(len(gpu_names()))]


def gpu_names() -> list[str]:
    """The names of the GPUs NVML sees, none without NVML, a driver or a GPU (never CUDA: see visible_gpus)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(pynvml.nvmlDeviceGetCount())]
        return [n.decode() if isinstance(n, bytes) else n for n in names]
    finally:
        pynvml.nvmlShutdown()


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0))


def uses_gpus(config: dict, gpus: list[str]) -> bool:
    """Whether the matrix's runs train on GPUs: CONFIG_DEVICE_CUDA, or auto with a GPU visible."""
    return bool(config.get("DEVICE_CUDA") or (config.get("DEVICE_AUTO", True) and gpus))


# -- slots --------------------------------------------------------------------------
@dataclass(frozen=True)
class Slot:
    """What one run gets: GPU ids (None: not pinned) and CPU threads per process."""

    index: int
    gpus: tuple[str, ...] | None
    threads: int

    def env(self) -> dict[str, str]:
        env = {"OMP_NUM_THREADS": str(self.threads)}
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        return env

    def describe(self) -> str:
        where = f"gpu {','.join(self.gpus)}, " if self.gpus else ""
        return f"{where}{self.threads} thread{'s' if self.threads != 1 else ''}"


def parse_jobs(text) -> int | str:
    """JOBS as given (make JOBS= or CONFIG_MATRIX_JOBS): a count >= 1, or "auto"."""
    text = str(text).strip()
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise MatrixError(f"JOBS={text!r}: give the number of runs at once (1, 2, ...) or auto")
    return int(text)


def slots(jobs, processes: int, gpus: list[str] | None, cpus: int, threads: int = 0) -> list[Slot]:
    """`jobs` slots for runs of `processes` processes each.

    `gpus`: the GPU ids to pin to, or None when the runs use none. With GPUs
    each slot takes `processes` of them, and JOBS is capped at what fits
    ("auto" is exactly that); without, "auto" is one run per two cores.
    `threads` per process (0: the cores split evenly, at least one each).
    """
    jobs = parse_jobs(jobs)
    if gpus is not None:
        if len(gpus) < processes:
            raise MatrixError(f"a run takes {processes} GPUs (DDP_PROCS) but {len(gpus)} are visible: {','.join(gpus) or 'none'}")
        fit = len(gpus) // processes
        if jobs != "auto" and jobs > fit:
            print(f"note: JOBS={jobs} but only {fit} run(s) of {processes} GPU(s) fit on {len(gpus)} GPU(s); running {fit} at once",
                  flush=True)
        jobs = fit if jobs == "auto" else min(jobs, fit)
    elif jobs == "auto":
        jobs = max(1, cpus // 2)
    per_process = threads or max(1, cpus // (jobs * processes))
    return [
        Slot(k, tuple(gpus[k * processes:(k + 1) * processes]) if gpus is not None else None, per_process)
        for k in range(jobs)
    ]


# -- one trainer ----------------------------------------------------------------------
def rotate_log(run_dir: Path) -> None:
    log = run_dir / "train.log"
    if log.exists():
        n = 1
        while (run_dir / f"train.log.{n}").exists():
            n += 1
        log.rename(run_dir / f"train.log.{n}")


def last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [""])[-1]


def run_dir_of(run: dict) -> Path:
    argv = run["argv"]
    return Path(argv[argv.index("--output-dir") + 1])


def forkable(run: dict) -> bool:
    """A run the fork server can start: one process (`python -m <model>.train ...`), not torchrun."""
    return run["argv"][1:3] == ["-m", f"{run['spec'].get('model')}.train"]


def preload(runs: list[dict]) -> None:
    """Make this process a fork server for `runs`: what every trainer would load itself, loaded once here.

    torch and torch._dynamo (which the first optimizer imports), each model's
    trainer and model modules, and its data for the first of its runs (the trainer's
    `load(args)`; `lib.data` keeps it), all on one thread: no thread pool
    may exist when the trainers are forked, and each sets its own count.
    """
    first = {}
    for run in runs:
        if forkable(run):
            first.setdefault(run["spec"]["model"], run)
    if not first:
        return
    import torch
    import torch._dynamo  # noqa: F401

    torch.set_num_threads(1)
    for model, run in first.items():
        module = importlib.import_module(f"{model}.train")
        importlib.import_module(f"{model}.model")  # trainers import their model (torchvision) only in main()
        if hasattr(module, "load"):
            try:
                module.load(module.parse_args(run["argv"][3:]))
            except (Exception, SystemExit):  # the trainer meets the same problem and reports it in its run
                pass


@dataclass
class Trainer:
    """A started trainer process: forked (`pid`) or a fresh one (`proc`)."""

    run: dict
    slot: Slot
    claim_fd: int
    pid: int
    proc: subprocess.Popen | None = None
    code: int | None = None
    signals: list[int] = field(default_factory=list)
    attempts_before: int = 0  # run.json's attempt count when it started: a trainer that never recorded its own is counted by `settle`

    def poll(self) -> int | None:
        if self.code is None:
            if self.proc is not None:
                self.code = self.proc.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def send(self, signum: int) -> None:
        self.signals.append(signum)
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass


def start(run: dict, resume: bool, slot: Slot, claim_fd: int, *, fork: bool, others: tuple[int, ...] = ()) -> Trainer:
    """Start `run`'s trainer in `slot` (forked, or a fresh process), its output in train.log.

    `others`: the claims of the trainers already running, which a forked one
    must not keep alive (a fresh process inherits only its own).
    """
    argv = list(run["argv"]) + (["--resume"] if resume else [])
    run_dir = run_dir_of(run)
    remove_partial(run_dir)  # leftovers of writes a kill interrupted; the claim makes this the only writer
    rotate_log(run_dir)
    env = {**slot.env(), RUNNER_ENV: str(os.getpid())}  # a trainer whose runner dies stops with a checkpoint
    attempts = int(RunRecord(run_dir).data.get("attempt") or 0)
    with open(run_dir / "train.log", "w") as log:
        if not fork:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **env},
                                    pass_fds=(claim_fd,))
            return Trainer(run, slot, claim_fd, proc.pid, proc, attempts_before=attempts)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            for fd in others:
                os.close(fd)
            _forked_trainer(run["spec"]["model"], argv[3:], env, slot.threads, log.fileno())
    return Trainer(run, slot, claim_fd, pid, attempts_before=attempts)


def _forked_trainer(model: str, args: list[str], env: dict, threads: int, log_fd: int) -> None:
    code = 1
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the runner's handler; the trainer sets its own
        os.environ.update(env)
        import torch

        from lib import run as lifecycle

        torch.set_num_threads(threads)
        module = importlib.import_module(f"{model}.train")
        sys.argv = [module.__file__, *args]  # what run.json records, as for `python -m`
        code = lifecycle.execute(module.main, module.parse_args(args))
    except SystemExit as e:  # argparse's refusal of a bad flag
        code = e.code if isinstance(e.code, int) else 2
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def settle(trainer: Trainer) -> str:
    """After the trainer exited: make run.json say what happened if it could not, release the claim; the status."""
    run, code = trainer.run, trainer.code
    run_dir = run_dir_of(run)
    record = RunRecord(run_dir)
    try:
        unrecorded = int(record.data.get("attempt") or 0) == trainer.attempts_before  # it died before writing its start
        if code and (unrecorded or record.data.get("status") in (None, "running")):
            if unrecorded:  # still an attempt: counted, and its end recorded
                record.start(run["run_id"], run["argv"], run["spec"]["seed"])
            status = "interrupted" if code < 0 or code in (130, 143, fs_errors.EXIT_STORAGE) else "failed"
            record.finish(status, exit_code=code, error=last_line(run_dir / "train.log") or f"exit status {code}")
        return record.data.get("status", "failed")
    except OSError as e:  # run.json cannot be written (a full disk): it reads as interrupted once the claim is released
        print(f"error: {run['run_id']}: its record cannot be written ({fs_errors.explain(e)})", file=sys.stderr, flush=True)
        return "interrupted"
    finally:
        os.close(trainer.claim_fd)


# -- many trainers --------------------------------------------------------------------
class Pool:
    """Runs up to len(slots) runs at once, each in a free slot; `display` is told what happens."""

    def __init__(self, slots: list[Slot], display, *, fail_fast: bool = False, fork: bool = True):
        self.free, self.display, self.fail_fast, self.fork = list(slots), display, fail_fast, fork
        self.running: dict[int, Trainer] = {}
        self.failed = self.terminated = False

    def run(self, runs: list[dict]) -> None:
        """Execute `runs` (in order, as slots free up, children after their parents); returns when all started ones have ended."""
        queue = list(runs)
        if self.fork:
            preload(queue)
        previous = signal.signal(signal.SIGTERM, self._terminate)
        try:
            while queue or self.running:
                while self.free and not self.stopped and (run := self._next(queue)) is not None:
                    self._start(run)
                if self.stopped and not self.running:
                    break
                self._wait()
        except KeyboardInterrupt:
            for trainer in self.running.values():
                trainer.send(signal.SIGINT)
            while self.running:
                self._wait()
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        why = "not started: the runner was told to stop" if self.terminated else "not started: FAIL_FAST after a failure"
        for run in queue:
            self.display.skipped(run, describe(run_dir_of(run)), why)

    def _next(self, queue: list[dict]) -> dict | None:
        """Take the first run of `queue` that may start now: no parent, or a completed one.

        A child whose parent is queued or running waits in place; one whose
        parent will not run here leaves the queue, reported skipped.
        """
        waiting = {r["run_id"] for r in queue} | {t.run["run_id"] for t in self.running.values()}
        for run in list(queue):
            parent = run["spec"].get("parent")
            if parent is None or is_done(run_dir_of(run).parent / parent):
                queue.remove(run)
                return run
            if parent not in waiting:
                queue.remove(run)
                status = describe(run_dir_of(run).parent / parent)["status"]
                why = f"skipped: parent {parent} " + ("failed" if status == "failed" else f"is not completed ({status})")
                self.display.skipped(run, describe(run_dir_of(run)), why)
        return None

    @property
    def stopped(self) -> bool:
        return self.terminated or (self.fail_fast and self.failed)

    def _terminate(self, signum, frame) -> None:
        """SIGTERM: every running trainer checkpoints and stops (they get it too); no new run starts."""
        self.terminated = True
        for trainer in self.running.values():
            trainer.send(signum)

    def _start(self, run: dict) -> None:
        run_dir = run_dir_of(run)
        fd = claim(run_dir)
        if fd is None:
            self.display.skipped(run, describe(run_dir), "executed by another process (its claim is held)")
            return
        slot = self.free.pop(0)
        resume = (run_dir / "checkpoint.pt").exists()
        try:
            others = tuple(t.claim_fd for t in self.running.values())
            trainer = start(run, resume, slot, fd, fork=self.fork and forkable(run), others=others)
        except BaseException:
            os.close(fd)
            self.free.insert(0, slot)
            raise
        self.running[trainer.pid] = trainer
        self.display.started(run, ("resuming, " if resume else "") + slot.describe())

    def _wait(self) -> None:
        """Until a trainer ends (reaped and settled) or TICK_S passes; the display ticks."""
        fds = {}
        for pid in self.running:
            try:
                fds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:  # already exited: poll() reaps it below
                pass
        try:
            if fds and len(fds) == len(self.running):
                select.select(list(fds), [], [], TICK_S)
        finally:
            for fd in fds:
                os.close(fd)
        for pid, trainer in list(self.running.items()):
            if trainer.poll() is not None:
                del self.running[pid]
                self.free.append(trainer.slot)
                self.free.sort(key=lambda s: s.index)
                status = settle(trainer)
                self.failed |= status != "completed"
                self.display.finished(trainer.run, describe(run_dir_of(trainer.run)))
        self.display.tick()


@dataclass
class Outcome:
    """How `run_one` ended: run.json's status ("busy": another process holds the run; "done": completed before)."""

    status: str
    signals: list[int]


def run_one(matrix_dir: Path, meta: dict, run_id: str, forward=(signal.SIGUSR1, signal.SIGTERM), slot: Slot | None = None) -> Outcome:
    """Execute one run of the matrix in a fresh trainer process, forwarding `forward` signals to it."""
    [run] = [r for r in meta["runs"] if r["run_id"] == run_id] or [None]
    if run is None:
        raise MatrixError(f"{run_id} is not a run of {matrix_dir}")
    run_dir = matrix_dir / run_id
    if is_done(run_dir):
        return Outcome("done", [])
    fd = claim(run_dir)
    if fd is None:
        return Outcome("busy", [])
    slot = slot or Slot(0, None, max(1, usable_cpus() // matrix.processes(meta["config"])))
    trainer = start(run, (run_dir / "checkpoint.pt").exists(), slot, fd, fork=False)
    previous = {s: signal.signal(s, lambda signum, frame: trainer.send(signum)) for s in forward}
    try:
        trainer.proc.wait()
        trainer.poll()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return Outcome(settle(trainer), trainer.signals)
