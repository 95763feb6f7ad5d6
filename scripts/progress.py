"""What a running matrix shows: a line per run as it ends, the headline figure of a run, and the live display.

`Display` is told by the runner what happens (a run skipped, started,
finished; `tick()` about twice a second while runs are in flight). On a
terminal it keeps a live area at the bottom (rich, refreshed only from
`tick()` and the events: no refresh thread, since the runner forks
trainers): the counts of runs done, running, failed and left, the matrix's
ETA, and one row per running run with its epoch or iteration and latest
validation metric. Finished runs print their `progress_line` above it.
Elsewhere (CI, Slurm logs, `make > log`) it prints plain lines only: one
when a run starts, its `progress_line` when it ends, then one line of
counts and ETA.

The ETA comes from the runs' measured pace: seconds per epoch or
iteration of this matrix's runs of the same model (their metrics.json),
else of earlier matrices on this host (`scripts.estimate.history`), plus the
start-up seen between a run's start and its clock; the runs left are then
scheduled in order on as many workers as have run at once
(`scripts.estimate.wall_time`).
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lib.results import read_json
from scripts import estimate


def headline(info: dict) -> tuple[str, str, float, float | None]:
    """(name, unit, final, best) of a finished run: accuracy for classifiers, perplexity for language models."""
    if "accuracy" in info:
        return "acc", "%", info["accuracy"], info.get("best_accuracy")
    return "ppl", "", info.get("perplexity", float("nan")), info.get("best_perplexity")


def progress_line(i: int, n: int, run: dict, info: dict) -> str:
    head = f"[{i}/{n}] {run['run_id']:<40s} {info['status']}"
    if info["status"] == "completed":
        name, unit, final, _ = headline(info)
        return f"{head:<62s} {name} {final:.2f}{unit}  sparsity {100 * info['sparsity_prunable']:.1f}%  {info['train_time_s']:.1f}s"
    return f"{head}  {info.get('error') or ''}".rstrip()


def latest_metric(entry: dict) -> str:
    """The validation figure of a history entry, as the rows show it."""
    if entry.get("val_accuracy") is not None:
        return f"acc {entry['val_accuracy']:.2f}%"
    if entry.get("val_perplexity") is not None:
        return f"ppl {entry['val_perplexity']:.2f}"
    return ""


class MetricsTail:
    """The last history entry of a metrics.json, parsed again only when the file changed (size or mtime)."""

    def __init__(self, path: Path):
        self.path, self.stamp, self.entry = path, None, None

    def latest(self) -> dict | None:
        try:
            st = self.path.stat()
        except OSError:
            return self.entry
        if (st.st_mtime_ns, st.st_size) != self.stamp:
            history = (read_json(self.path) or {}).get("history") or []
            if history:  # a file replaced between stat and read keeps the old entry until the next change
                self.stamp, self.entry = (st.st_mtime_ns, st.st_size), history[-1]
        return self.entry


@dataclass
class Running:
    """A run in flight, as the display follows it."""

    run: dict
    where: str
    began: float  # time.monotonic() at start
    tail: MetricsTail
    elapsed_before: float  # the run's clock when this attempt started (a resumed run's earlier attempts)
    unit: str  # its history key, "epoch" or "iter"
    units: int  # its length
    entry: dict | None = None  # its latest history entry

    def done_units(self) -> int:
        return self.entry.get(self.unit, 0) if self.entry else 0


class Display:
    """The runner's progress display: live on a terminal, plain lines elsewhere (see the module docstring)."""

    def __init__(self, matrix_dir: Path, runs: list[dict], stream=None, live: bool | None = None):
        """`stream`: sys.stdout (as it is now) by default; `live`: None decides by whether `stream` is a terminal."""
        stream = stream if stream is not None else sys.stdout
        self.matrix_dir, self.runs, self.stream = Path(matrix_dir), runs, stream
        self.index = {r["run_id"]: i for i, r in enumerate(runs, 1)}
        self.state = {r["run_id"]: "left" for r in runs}  # left, running, done, failed, skipped
        self.running: dict[str, Running] = {}
        self.workers = 0  # the most runs seen in flight at once
        self.paces: dict[str, float] = {}  # run id -> seconds per unit it showed
        self.warned: set[str] = set()  # kinds of run warnings already said
        self.startups: list[float] = []
        self.earlier: dict[str, estimate.Pace | None] = {}  # model -> pace of earlier matrices on this host
        self.lengths: dict[str, tuple[str, int] | None] = {}  # run id -> (unit, units)
        if live is None:
            live = getattr(stream, "isatty", lambda: False)() and os.environ.get("TERM") != "dumb"
        self.live = None
        if live:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=stream, force_terminal=True, highlight=False)
            # auto_refresh=False: no refresh thread; no redirection: a forked trainer must not inherit a proxy for stdout.
            self.live = Live(console=console, auto_refresh=False, transient=True, redirect_stdout=False, redirect_stderr=False)
            self.live.start()

    # -- events ---------------------------------------------------------------------------
    def skipped(self, run: dict, info: dict, why: str) -> None:
        """A run left alone at start: kept (done), failed and not retried, or not selected."""
        status = info.get("status")
        self.state[run["run_id"]] = "done" if status == "completed" else "failed" if status == "failed" else "skipped"
        self._measured(run["run_id"])
        self._print(self._line(run, info) + f"  ({why})")

    def started(self, run: dict, where: str) -> None:
        run_id = run["run_id"]
        run_dir = self.matrix_dir / run_id
        history = (read_json(run_dir / "metrics.json") or {}).get("history") or []
        unit, units = self.length(run) or ("epoch", 0)
        self.running[run_id] = Running(run, where, time.monotonic(), MetricsTail(run_dir / "metrics.json"),
                                       history[-1].get("elapsed_s", 0.0) if history else 0.0, unit, units)
        self.state[run_id] = "running"
        self.workers = max(self.workers, len(self.running))
        if self.live:
            self._refresh()
        else:
            self._print(f"[{self.index[run_id]}/{len(self.runs)}] {run_id:<40s} started ({where})")

    def finished(self, run: dict, info: dict) -> None:
        run_id = run["run_id"]
        went = self.running.pop(run_id, None)
        self.state[run_id] = "done" if info["status"] == "completed" else "failed"
        self._measured(run_id)
        if went is not None and info["status"] == "completed":
            clock = info["train_time_s"] - went.elapsed_before
            self.startups.append(max(0.0, time.monotonic() - went.began - clock))
        self._print(self._line(run, info))
        self._warnings(run_id)
        if not self.live and (self.running or self.count("left")):
            self._print(f"  {self.summary()}")

    def _warnings(self, run_id: str) -> None:
        """A run's tracker and monitor warnings (run.json), each kind said once per matrix (the runs' own logs have them all)."""
        for warning in (read_json(self.matrix_dir / run_id / "run.json") or {}).get("warnings") or []:
            kind = warning.split(" (", 1)[0]  # "tracking: wandb failed in start": the details differ from run to run
            if kind not in self.warned:
                self.warned.add(kind)
                self._print(f"warning: {run_id}: {warning} (said once for this matrix; each run's run.json lists its own)")

    def tick(self) -> None:
        if self.live:
            self._refresh()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    # -- figures --------------------------------------------------------------------------------
    def count(self, state: str) -> int:
        return sum(1 for s in self.state.values() if s == state)

    def summary(self) -> str:
        """done / running / failed / left, and the ETA when the pace of every model still to run is known."""
        counts = [f"{self.count(s)} {s}" for s in ("done", "running", "failed", "left")]
        if self.count("skipped"):
            counts.append(f"{self.count('skipped')} skipped")
        eta = self.eta()
        return ", ".join(counts) + (f"; ETA {estimate.human(eta)}" if eta is not None and (self.running or self.count("left")) else "")

    def length(self, run: dict) -> tuple[str, int] | None:
        """(unit, units) a run trains, None when its command line does not say (no ETA then)."""
        if run["run_id"] not in self.lengths:
            try:
                self.lengths[run["run_id"]] = estimate.length(run["argv"])
            except estimate.MatrixError:
                self.lengths[run["run_id"]] = None
        return self.lengths[run["run_id"]]

    def pace(self, run: dict) -> estimate.Pace | None:
        """Seconds per unit of `run`'s model: this matrix's runs of it, else earlier matrices'; None when unknown."""
        model = estimate.model_of(run["argv"])
        if model is None or self.length(run) is None:
            return None
        here = [p for run_id, p in self.paces.items() if estimate.model_of(self._run(run_id)["argv"]) == model]
        if model not in self.earlier:
            self.earlier[model] = estimate.history(self.matrix_dir.parent, run["argv"], host=socket.gethostname(),
                                                   exclude=self.matrix_dir)
        earlier = self.earlier[model]
        startup = statistics.median(self.startups) if self.startups else (earlier.startup if earlier else None)
        if here:
            unit, _ = self.length(run)
            return estimate.Pace(statistics.median(here), unit, startup, "this matrix")
        return estimate.Pace(earlier.seconds, earlier.unit, startup, earlier.source) if earlier else None

    def eta(self) -> float | None:
        """Seconds until the runs in flight and the runs left are done, or None while a model's pace is unknown."""
        now, busy, durations = time.monotonic(), [], []
        self.observe()
        for r in self.running.values():
            pace = self.pace(r.run)
            if pace is None:
                return None
            if r.entry:
                busy.append(max(0.0, (r.units - r.done_units()) * pace.seconds))
            else:
                busy.append(max(0.0, pace.run_seconds(r.run["argv"]) - (now - r.began)))
        for run in self.runs:
            if self.state[run["run_id"]] == "left":
                pace = self.pace(run)
                if pace is None:
                    return None
                durations.append(pace.run_seconds(run["argv"]))
        return estimate.wall_time(durations, max(self.workers, 1), busy)

    def _measured(self, run_id: str) -> None:
        """The pace a run that ended showed, from its metrics.json."""
        pace = estimate.seconds_per_unit(read_json(self.matrix_dir / run_id / "metrics.json"))
        if pace:
            self.paces[run_id] = pace[1]

    def observe(self) -> None:
        """Read the runs in flight (their metrics.json only when it changed): progress and pace."""
        for run_id, r in self.running.items():
            r.entry = r.tail.latest()
            pace = estimate.seconds_per_unit({"history": [r.entry]} if r.entry else None)
            if pace:
                self.paces[run_id] = pace[1]

    # -- output -----------------------------------------------------------------------------------
    def _run(self, run_id: str) -> dict:
        return self.runs[self.index[run_id] - 1]

    def _line(self, run: dict, info: dict) -> str:
        return progress_line(self.index[run["run_id"]], len(self.runs), run, info)

    def _print(self, line: str) -> None:
        if self.live:
            self._refresh()  # printing redraws the live area below the line: the current one
            self.live.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=self.stream, flush=True)

    def _refresh(self) -> None:
        self.live.update(self.render(), refresh=True)

    def render(self):
        """The live area: the counts and ETA, then one row per running run."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        rows = Table.grid(padding=(0, 2))
        for justify in ("right", "left", "left", "right", "left", "right"):
            rows.add_column(justify=justify, no_wrap=True)
        summary, now = self.summary(), time.monotonic()
        for run_id, r in sorted(self.running.items(), key=lambda item: self.index[item[0]]):
            step = f"{estimate.UNIT_WORDS[r.unit]} {r.done_units()}{f'/{r.units}' if r.units else ''}" if r.entry else "starting"
            rows.add_row(*(Text(c) for c in (f"[{self.index[run_id]}/{len(self.runs)}]", run_id, r.where, step,
                                              latest_metric(r.entry or {}), estimate.human(now - r.began))))
        return Group(Text(summary, style="bold"), rows)
