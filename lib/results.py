"""Results on disk: run directories (run.json, metrics.json) and the matrix directories that hold them.

A run is done if and only if run.json says "completed" and metrics.json parses
with a final block that has what every reader needs (`is_done`,
`metrics_problem`); `describe` calls any other completed run "unreadable",
and `make continue` writes its metrics again from its checkpoint. Writers go through `write_json`, an atomic
write (`lib.atomic`), so a reader never sees half a file, even after SIGKILL.

A matrix directory is `<results>/<id>/` with its `matrix.json`; `newest_matrix`
and `open_matrix` find it, `describe` and `load_runs` read its runs. One
runner at a time holds `<results>/.lock` (`lock`, an flock that dies with its
holder, labelled with the matrix it runs). One process at a time executes a
run and holds its claim (`claim`, an flock in the run directory that its
trainer inherits); `claimed` asks whether someone still does, which is how
`status` tells a run that is running from one whose process was killed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from lib.atomic import atomic_open

SCHEMA = 1
STATUSES = ("running", "completed", "failed", "interrupted")  # run.json's; `describe` adds pending and unreadable
MATRIX_FILE = "matrix.json"
LOCK_FILE = ".lock"
CLAIM_FILE = ".claim"
RUNNER_GONE = "interrupted (runner gone)"
RUNNER_ENV = "MATRIX_RUNNER_PID"  # the runner's pid, given to its trainers: one whose runner died stops (lib.run)
CORRUPT = ".corrupt"  # suffix of a checkpoint set aside because the run could not resume from it (lib.checkpoint.set_aside)


class MatrixError(Exception):
    """A matrix directory that cannot be found, opened or locked; the message says what to do."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: str | os.PathLike, data) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def set_aside_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether the run's checkpoint was set aside as corrupt and nothing has replaced it yet."""
    run_dir = Path(run_dir)
    return not (run_dir / "checkpoint.pt").exists() and any(run_dir.glob(f"checkpoint.pt{CORRUPT}*"))


def read_json(path: str | os.PathLike):
    """The parsed file, or None when it is missing or does not parse."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


FINAL_KEYS = ("sparsity_prunable", "train_time_s")  # what status, graphs and the report read of every final block
HEADLINES = ("accuracy", "perplexity")  # and one of these


def metrics_problem(metrics) -> str | None:
    """Why a parsed metrics.json cannot be read as a finished run's (None: it can)."""
    if not isinstance(metrics, dict) or not isinstance(metrics.get("history"), list):
        return "metrics.json is missing, does not parse or has no history list"
    final = metrics.get("final")
    if not isinstance(final, dict):
        return "metrics.json has no final block"
    missing = [k for k in FINAL_KEYS if k not in final] + ([] if any(k in final for k in HEADLINES) else [" or ".join(HEADLINES)])
    return f"metrics.json's final block lacks {', '.join(missing)}" if missing else None


def is_done(run_dir: str | os.PathLike) -> bool:
    """run.json says completed and metrics.json holds a readable final block (`metrics_problem`)."""
    run = read_json(Path(run_dir) / "run.json") or {}
    return run.get("status") == "completed" and metrics_problem(read_json(Path(run_dir) / "metrics.json")) is None


class RunRecord:
    """run.json of one run directory."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / "run.json"
        self.data = read_json(self.path) or {}

    def start(self, run_id: str, argv: list[str], seed: int) -> None:
        self.data = {
            "schema": SCHEMA,
            "run_id": run_id,
            "status": "running",
            "attempt": int(self.data.get("attempt", 0)) + 1,
            "started": now(),
            "finished": None,
            "heartbeat": now(),
            "exit_code": None,
            "error": None,
            "argv": list(argv),
            "seed": seed,
        }
        write_json(self.path, self.data)

    def update(self, **fields) -> None:
        self.data.update(fields)
        write_json(self.path, self.data)

    def heartbeat(self) -> None:
        self.update(heartbeat=now())

    def finish(self, status: str, exit_code: int | None = None, error: str | None = None) -> None:
        assert status in STATUSES, status
        self.update(status=status, finished=now(), heartbeat=now(), exit_code=exit_code, error=error)


# -- matrix directories ----------------------------------------------------------
MATRIX_ID = re.compile(r"\d{8}-\d{6}-")  # `make` names a matrix <YYYYmmdd-HHMMSS>-<defconfig>


def newest_matrix(results_root: str | os.PathLike) -> Path:
    """The newest `<results_root>/<id>/` (ids sort by time), whether or not its matrix.json is still readable.

    A newest matrix that lost its matrix.json is an error of `open_matrix`
    naming it, never a silent fall-back to an older one.
    """
    root = Path(results_root)
    dirs = sorted(p for p in root.glob("*/") if MATRIX_ID.match(p.name) or (p / MATRIX_FILE).exists()) if root.is_dir() else []
    if not dirs:
        raise MatrixError(f"no matrix in {results_root}/; run 'make' first")
    return dirs[-1]


def results_dir() -> Path:
    """The results directory that .config (or $KCONFIG_CONFIG) names in RESULTS_DIR, else results/."""
    from lib import config  # kconfiglib: only the scripts that look for a matrix need it, never a trainer

    config_file = os.environ.get("KCONFIG_CONFIG", ".config")
    values = config.load(config_file) if Path(config_file).exists() else {}
    return Path(values.get("RESULTS_DIR") or "results")


def open_matrix(matrix_dir: str | os.PathLike | None = None, results_root: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """(directory, matrix.json) of `matrix_dir`, else of the newest matrix under `results_root` (default: `results_dir()`)."""
    matrix_dir = Path(matrix_dir) if matrix_dir else newest_matrix(results_root or results_dir())
    meta = read_json(matrix_dir / MATRIX_FILE)
    if not meta:
        raise MatrixError(f"{matrix_dir}/{MATRIX_FILE} is missing or unreadable; is {matrix_dir} a matrix directory?")
    return matrix_dir, relocated(meta, matrix_dir)


def relocated(meta: dict, matrix_dir: Path) -> dict:
    """matrix.json with its runs' paths moved into `matrix_dir`: a moved or copied matrix runs where it is now.

    Command-line words under the directory the matrix was planned in (each
    run's --output-dir, a fine-tuning run's --init-from) are rewritten; the
    file on disk keeps the planned paths.
    """
    planned = next((Path(r["argv"][r["argv"].index("--output-dir") + 1]).parent for r in meta.get("runs", [])
                    if "--output-dir" in r.get("argv", [])), None)
    if planned is None or planned == matrix_dir:
        return meta
    old, new = str(planned), str(matrix_dir)

    def move(word: str) -> str:
        return new + word[len(old):] if word == old or word.startswith(old + os.sep) else word

    return {**meta, "runs": [{**r, "argv": [move(w) for w in r["argv"]]} for r in meta["runs"]]}


def describe(run_dir: str | os.PathLike) -> dict:
    """Status ("pending" before run.json exists), error and the final block of a run, from its files."""
    run_dir = Path(run_dir)
    record = read_json(run_dir / "run.json")
    if record is None and (run_dir / "run.json").exists():
        return {"status": "unreadable", "error": "run.json does not parse; 'make continue' runs it again from its checkpoint"}
    record = record if isinstance(record, dict) else {}
    metrics = read_json(run_dir / "metrics.json")
    if record.get("status") == "completed" and (problem := metrics_problem(metrics)):
        return {"status": "unreadable", "error": f"{problem}; 'make continue' writes it again from the run's checkpoint"}
    final = metrics.get("final") if isinstance(metrics, dict) and isinstance(metrics.get("final"), dict) else {}
    return {"status": record.get("status", "pending"), "error": record.get("error"), **final}


def load_runs(matrix_dir: str | os.PathLike) -> list[dict]:
    """Every run's metrics.json in a matrix directory that has at least one history entry.

    One that cannot be read (it does not parse, or its final block lacks what
    the readers need: `metrics_problem`) is left out with a line on stderr.
    """
    runs = []
    for path in sorted(Path(matrix_dir).glob("*/metrics.json")):
        m = read_json(path)
        problem = "metrics.json does not parse" if m is None else metrics_problem(m) if "final" in m else None
        if problem:
            print(f"note: {path.parent.name} left out: {problem}", file=sys.stderr)
        elif m.get("history"):
            runs.append(m)
    return runs


@contextmanager
def lock(results_root: str | os.PathLike, matrix_id: str):
    """Hold `<results_root>/.lock` while running `matrix_id`; a second holder gets MatrixError.

    flock: the kernel drops the lock when its holder dies, SIGKILL included.
    The file says who holds it ("pid N matrix ID") for the refusal message.
    """
    results_root = Path(results_root)
    results_root.mkdir(parents=True, exist_ok=True)
    path = results_root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            raise MatrixError(
                f"a matrix is already running in {results_root} ({holder}); wait for it or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} matrix {matrix_id}".encode())
        yield
    finally:
        os.close(fd)


def claim(run_dir: str | os.PathLike) -> int | None:
    """Take the run's claim (an flock on `<run_dir>/.claim`): the open descriptor, or None when a process holds it.

    The process that executes a run holds its claim: a local worker's trainer
    or a Slurm task. The descriptor is inherited by the trainer (fork, or
    `pass_fds`), so the claim lives exactly as long as someone that runs the
    run does; close it once the run's record is settled.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / CLAIM_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} host {socket.gethostname()}".encode())
    return fd


def claimed(run_dir: str | os.PathLike) -> bool:
    """Whether a live process holds the run's claim (probed with a shared flock, released at once)."""
    try:
        fd = os.open(Path(run_dir) / CLAIM_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def live_status(info: dict, alive: bool) -> str:
    """A run's status as `status` shows it: "running" only while its runner lives."""
    return RUNNER_GONE if info["status"] == "running" and not alive else info["status"]
