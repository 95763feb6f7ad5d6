"""A matrix's runs as one table: loading, configurations, statistics over seeds, and each series' style.

The figures (scripts.figures), the report (scripts.report) and the
comparison of two matrices read a matrix through this module only:

  m = load(matrix_dir)              every run with a history: metrics.json, memory.json, run.json; and matrix.json
  m.models()                        the models, in matrix order
  m.configs(model)                  its configurations: runs grouped by run id without the seed suffix
  c.values(key)                     a final-block figure over the configuration's completed runs
  stat(values)                      mean, std, n and the 95 % Student t half-width (n >= 3)
  delta(values, baseline_values)    difference of means, Welch's 95 % interval when both n >= 3
  m.baseline(c)                     the configuration c is compared with (MATRIX_BASELINE, else the dense
                                    configuration of the same optimizer)
  m.styles.of(c)                    colour, marker and line style of c's series, the same in every figure
  quality(model runs)               the model's metric: key, label, direction, unit of training, throughput
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy import stats

from lib.results import MatrixError, load_runs, read_json

CONFIDENCE = 0.95
MIN_SEEDS_FOR_CI = 3


# -- one run ------------------------------------------------------------------------
@dataclass
class Run:
    """One run directory: metrics.json, memory.json (None without the monitor) and run.json."""

    metrics: dict
    memory: dict | None = None
    record: dict = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.metrics["run_id"]

    @property
    def seed(self) -> int | None:
        return self.metrics.get("seed")

    @property
    def history(self) -> list[dict]:
        return self.metrics["history"]

    @property
    def final(self) -> dict | None:
        final = self.metrics.get("final")
        return final if isinstance(final, dict) else None

    @property
    def status(self) -> str:
        return self.record.get("status") or ("completed" if self.final else "running")


def config_key(run_id: str, seed: int | None) -> str:
    """The run id without its seed suffix (`lenet5_sgd_none_s2` -> `lenet5_sgd_none`)."""
    suffix = f"_s{seed}"
    return run_id[: -len(suffix)] if seed is not None and run_id.endswith(suffix) else run_id


# -- a configuration: the runs that differ only in their seed --------------------------
@dataclass
class Config:
    key: str
    runs: list[Run]
    step: str | None = None  # a GPT-2 ablation step (matrix.json's planned spec; metrics.json does not name it)

    @property
    def spec(self) -> dict:
        return self.runs[0].metrics

    @property
    def model(self) -> str:
        return self.spec["model"]

    @property
    def optimizer(self) -> str:
        return self.spec["optimizer"]

    @property
    def pruning(self) -> str:
        return self.spec["pruning"]

    @property
    def dense(self) -> bool:
        return self.pruning == "none"

    @property
    def method(self) -> str:
        """"dense", the pruning method, or the state-pruning variant (bitter7); then a granularity other than
        element ("magnitude channel", "magnitude 2:4") and "fine-tuned" for a run started from a parent's weights.
        An ablation step's run: the step ("mla"), followed by its variant when it prunes ("ratio bitter9")."""
        if self.step is not None:
            return self.step if self.dense else f"{self.step} {self.spec.get('variant') or self.pruning}"
        name = "dense" if self.dense else self.spec.get("variant") or self.pruning
        if self.spec.get("granularity") not in (None, "element"):
            name += f" {self.spec['granularity']}"
        return f"{name} fine-tuned" if self.spec.get("parent") else name

    @property
    def sparsity(self) -> float:
        """Target sparsity in percent (0 for dense)."""
        return 0.0 if self.dense else 100 * self.spec["target_sparsity"]

    @property
    def label(self) -> str:
        return f"{self.optimizer} {self.method}" + ("" if self.dense else f" {self.sparsity:.0f}%")

    @property
    def series(self) -> str:
        """The series name: optimizer and method (a line over sparsity levels joins the same series)."""
        return f"{self.optimizer} {self.method}"

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.final]

    def values(self, key: str, scale: float = 1.0) -> list[float]:
        """A final-block figure (`pruning.state_bytes` reaches into a sub-block) over the completed runs that have it."""
        out = []
        for run in self.completed:
            value = run.final
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out.append(scale * value)
        return out


# -- statistics ------------------------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for one value), n, and the CI half-width (None below 3 values)."""

    mean: float
    std: float | None
    n: int
    ci: float | None

    def text(self, digits: int = 2) -> str:
        spread = f" ± {self.std:.{digits}f}" if self.std is not None else ""
        return f"{self.mean:.{digits}f}{spread} (n={self.n})"


def stat(values: list[float]) -> Stat | None:
    """Statistics of `values` (None when empty); the interval is Student's t at CONFIDENCE."""
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    n = len(a)
    std = float(a.std(ddof=1)) if n > 1 else None
    ci = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n)) if n >= MIN_SEEDS_FOR_CI else None
    return Stat(float(a.mean()), std, n, ci)


@dataclass(frozen=True)
class Delta:
    """Difference of two means with its interval (None when either side has fewer than 3 values)."""

    value: float
    low: float | None
    high: float | None

    def text(self, digits: int = 2) -> str:
        interval = f" [{self.low:+.{digits}f}, {self.high:+.{digits}f}]" if self.low is not None else ""
        return f"{self.value:+.{digits}f}{interval}"


def delta(values: list[float], baseline: list[float]) -> Delta | None:
    """mean(values) - mean(baseline); Welch's t interval at CONFIDENCE when both have at least 3 values."""
    if not values or not baseline:
        return None
    a, b = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    d = float(a.mean() - b.mean())
    if min(len(a), len(b)) < MIN_SEEDS_FOR_CI:
        return Delta(d, None, None)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:  # identical values on both sides: no spread to widen the interval
        return Delta(d, d, d)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof) * se)
    return Delta(d, d - half, d + half)


def curve(runs: list[Run], x: str, y: str, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A history key over training, aggregated over seeds at each x: (x, mean, std (0 for n=1), n)."""
    points: dict[float, list[float]] = {}
    for run in runs:
        for entry in run.history:
            if entry.get(y) is not None and entry.get(x) is not None:
                points.setdefault(entry[x], []).append(scale * entry[y])
    xs = np.array(sorted(points), dtype=float)
    groups = [np.asarray(points[k]) for k in sorted(points)]
    return (xs, np.array([g.mean() for g in groups]), np.array([g.std(ddof=1) if len(g) > 1 else 0.0 for g in groups]),
            np.array([len(g) for g in groups]))


def resampled(series: list[tuple[np.ndarray, np.ndarray]], points: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time series of different lengths on one time grid (to the longest's end): (t, mean, std); a run counts until it ends."""
    end = max(float(t[-1]) for t, _ in series)
    grid = np.linspace(0.0, end, points)
    stack = np.array([np.where(grid <= t[-1], np.interp(grid, t, v), np.nan) for t, v in series])
    counts = np.sum(~np.isnan(stack), axis=0)  # at least 1: the longest run covers the whole grid
    mean = np.nanmean(stack, axis=0)
    squares = np.nansum((stack - mean) ** 2, axis=0)
    std = np.sqrt(np.divide(squares, counts - 1, out=np.zeros_like(squares), where=counts > 1))
    return grid, mean, std


# -- the model's metric --------------------------------------------------------------------
@dataclass(frozen=True)
class Quality:
    unit: str  # history x key: "epoch" or "iter"
    history: str  # history metric key
    final: str  # final-block key
    label: str  # axis label with its unit
    higher_is_better: bool
    throughput: str  # final-block key
    throughput_label: str


CLASSIFIER = Quality("epoch", "val_accuracy", "accuracy", "validation accuracy (%)", True,
                     "samples_per_s", "training throughput (samples/s)")
LANGUAGE_MODEL = Quality("iter", "val_perplexity", "perplexity", "validation perplexity", False,
                         "tokens_per_s", "training throughput (tokens/s)")


def quality(runs: list[Run]) -> Quality:
    """The metric of a model's runs: accuracy for classifiers, perplexity for language models."""
    return CLASSIFIER if "val_accuracy" in runs[0].history[0] else LANGUAGE_MODEL


# -- styles ---------------------------------------------------------------------------------
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2, 2, 2)))


class Styles:
    """One colour, marker and line style per optimizer and method (state variants are methods), for a whole matrix.

    The dimension with more members (optimizers, or methods) gets the colours,
    the most distinct channel; the other gets markers and line styles. Every
    figure of the matrix draws a series the same way, and legends name it.
    """

    def __init__(self, configs: list[Config]):
        self.optimizers = list(dict.fromkeys(c.optimizer for c in configs))
        self.methods = list(dict.fromkeys(c.method for c in configs))
        self.colour_by = "optimizer" if len(self.optimizers) >= len(self.methods) else "method"
        coloured = self.optimizers if self.colour_by == "optimizer" else self.methods
        import matplotlib  # the colour maps only; scripts.report (no figures) never builds Styles

        palette = matplotlib.colormaps["tab10" if len(coloured) <= 10 else "tab20"].colors
        self.colours = {name: palette[i % len(palette)] for i, name in enumerate(coloured)}

    def of(self, c: Config) -> dict:
        """matplotlib keywords for c's series: color, marker, linestyle."""
        if self.colour_by == "optimizer":
            colour, other = self.colours[c.optimizer], self.methods.index(c.method)
        else:
            colour, other = self.colours[c.method], self.optimizers.index(c.optimizer)
        return {"color": colour, "marker": MARKERS[other % len(MARKERS)], "linestyle": LINESTYLES[other % len(LINESTYLES)]}


# -- the matrix --------------------------------------------------------------------------------
@dataclass
class Matrix:
    path: Path
    meta: dict
    runs: list[Run]

    @cached_property
    def _configs(self) -> list[Config]:
        groups: dict[str, list[Run]] = {}
        for run in self.runs:
            groups.setdefault(config_key(run.run_id, run.seed), []).append(run)
        order = {key: i for i, key in enumerate(self.planned_configs())}
        keys = sorted(groups, key=lambda k: (order.get(k, len(order)), k))
        steps = {config_key(r["run_id"], r.get("spec", {}).get("seed")): r.get("spec", {}).get("step")
                 for r in self.meta.get("runs", [])}
        return [Config(k, sorted(groups[k], key=lambda r: (r.seed is None, r.seed)), steps.get(k)) for k in keys]

    def planned_configs(self) -> dict[str, str]:
        """Configuration key -> model of matrix.json's planned runs, in order."""
        runs = self.meta.get("runs", [])
        return {config_key(r["run_id"], r.get("spec", {}).get("seed")): r.get("spec", {}).get("model") for r in runs}

    def models(self) -> list[str]:
        return list(dict.fromkeys(c.model for c in self._configs))

    def configs(self, model: str | None = None) -> list[Config]:
        return [c for c in self._configs if model is None or c.model == model]

    @cached_property
    def styles(self) -> Styles:
        return Styles(self._configs)

    @property
    def baseline_key(self) -> str | None:
        """MATRIX_BASELINE from matrix.json's configuration; a name that is no planned configuration is a MatrixError."""
        key = (self.meta.get("config") or {}).get("MATRIX_BASELINE") or None
        planned = self.planned_configs()
        if key and planned and key not in planned:
            raise MatrixError(f"CONFIG_MATRIX_BASELINE={key!r} is no configuration of {self.path.name}; "
                              f"valid: {', '.join(planned)}")
        return key

    def baseline(self, c: Config) -> Config | None:
        """MATRIX_BASELINE for configurations of its model, else the dense configuration of c's optimizer; None for itself."""
        key = self.baseline_key
        if key and self.planned_configs()[key] == c.model:
            found = next((o for o in self.configs(c.model) if o.key == key), None)  # None until it has run
        else:
            found = next((o for o in self.configs(c.model) if o.dense and o.optimizer == c.optimizer), None)
        return None if found is None or found.key == c.key else found


def load(matrix_dir: str | Path) -> Matrix:
    """Every run of a matrix directory that has at least one history entry, with its memory.json and run.json."""
    matrix_dir = Path(matrix_dir)
    runs = [Run(m, read_json(matrix_dir / m["run_id"] / "memory.json"), read_json(matrix_dir / m["run_id"] / "run.json") or {})
            for m in load_runs(matrix_dir) if m.get("run_id") and m.get("model")]  # a trainer's metrics.json, not a stand-in
    return Matrix(matrix_dir, read_json(matrix_dir / "matrix.json") or {}, runs)
