"""The one matrix expansion and the one run-id function.

`expand(config)` turns a typed configuration (see `lib.config`) into the
ordered list of runs: model x optimizer (AdamWPrune once per checked base)
x pruning method x variant (state pruning's bitter* only) x sparsity x seed,
keeping only valid combinations.
`run_id(spec)` names a run. `argv(spec, config)` is the command that runs
it: the settings by `lib.config`'s naming rule, then the run's own axes.
Run, continue, status, dry-run and the graphs all go through these three
functions. `matrix_symbols()` are the symbols consumed here rather than
passed to trainers.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

from lib import config as cfg

# Kconfig symbol -> axis value. The order here is the order of the matrix.
MODELS = {"MODEL_LENET5": "lenet5", "MODEL_RESNET18": "resnet18", "MODEL_RESNET50": "resnet50", "MODEL_GPT2": "gpt2"}
OPTIMIZERS = {
    "OPTIMIZER_SGD": "sgd",
    "OPTIMIZER_ADAM": "adam",
    "OPTIMIZER_ADAMW": "adamw",
    "OPTIMIZER_ADAMWADV": "adamwadv",
    "OPTIMIZER_ADAMWSPAM": "adamwspam",
    "OPTIMIZER_ADAMWPRUNE": "adamwprune",
}
# AdamWPrune runs only with these pruning methods; its other pairs are skipped.
ADAMWPRUNE_PRUNING = ("none", "state")
# AdamWPrune's base optimizers (lib.optim's BASES), one run each per checked box. AdamW, AdamWPrune's
# own base, is checked by default; its runs are named plain "adamwprune" (`optimizer_label`).
ADAMWPRUNE_BASES = {
    "ADAMWPRUNE_BASE_ADAMW": "adamw",
    "ADAMWPRUNE_BASE_ADAM": "adam",
    "ADAMWPRUNE_BASE_ADAMWADV": "adamwadv",
    "ADAMWPRUNE_BASE_ADAMWSPAM": "adamwspam",
}
DEFAULT_ADAMWPRUNE_BASE = "adamw"
PRUNING = {"PRUNING_NONE": "none", "PRUNING_MAGNITUDE": "magnitude", "PRUNING_MOVEMENT": "movement", "PRUNING_STATE": "state"}
# Symbols the runner itself reads (not passed to trainers as flags). DDP_PROCS: processes per run
# (DDP through torchrun), for every model of the matrix. Every MATRIX_* and SLURM_* symbol (and
# choice) is the runner's too: where and how the runs execute, never how one trains.
RUNNER_SYMBOLS = {"SEEDS", "SPARSITIES", "RESULTS_DIR", "DDP_PROCS"}
RUNNER_PREFIXES = ("MATRIX_", "SLURM_")


def is_runner_symbol(name: str) -> bool:
    return name in RUNNER_SYMBOLS or name.startswith(RUNNER_PREFIXES)


def variants() -> dict[str, str]:
    """State-pruning variants: Kconfig symbol PRUNING_STATE_<NAME> -> name, one per `state.VARIANTS` entry.

    State runs expand over the checked ones (and only state runs have one). Read from the
    registry on each call, imported only then: the pruning package brings torch with it.
    """
    from lib.pruning.state import VARIANTS

    return {f"PRUNING_STATE_{name.upper()}": name for name in VARIANTS}


def budget_symbol(variant: str) -> str:
    """The symbol of a variant's training-budget extension (%), passed as --budget-extension when set."""
    return f"PRUNING_{variant.upper()}_BUDGET_PERCENT"


def axis_symbols() -> set[str]:
    return set(MODELS) | set(OPTIMIZERS) | set(ADAMWPRUNE_BASES) | set(PRUNING) | set(variants())


def matrix_symbols() -> set[str]:
    """Every symbol the matrix consumes itself: axes, runner settings, budget extensions."""
    runner = {s.name for s in cfg.kconfig().unique_defined_syms if is_runner_symbol(s.name)}
    return axis_symbols() | RUNNER_SYMBOLS | runner | {budget_symbol(v) for v in variants().values()}


@dataclass(frozen=True)
class RunSpec:
    model: str
    optimizer: str
    pruning: str
    sparsity: float | None  # None for the dense baseline
    seed: int
    variant: str | None = None  # state-pruning variant (bitter*); None for every other method
    base: str | None = None  # AdamWPrune's base optimizer; None for every other optimizer
    multi_seed: bool = False  # whether the id carries the seed

    def to_dict(self) -> dict:
        return asdict(self)


def optimizer_label(optimizer: str, base: str | None = None) -> str:
    """The optimizer as run ids name it: `adamwprune` on AdamW, `adamwprune-<base>` on another base.

    Also for readers of metrics.json: `optimizer_label(m["optimizer"], m["optimizer_base"])`.
    """
    if base in (None, DEFAULT_ADAMWPRUNE_BASE):
        return optimizer
    return f"{optimizer}-{base}"


def run_id(spec: RunSpec) -> str:
    """`{model}_{optimizer}[_{variant}]_{pruning}[_{sparsity%}][_s{seed}]`, the optimizer by `optimizer_label`."""
    parts = [spec.model, optimizer_label(spec.optimizer, spec.base)]
    if spec.variant:
        parts.append(spec.variant)
    parts.append(spec.pruning)
    if spec.sparsity is not None:
        parts.append(f"{round(spec.sparsity * 100)}")
    if spec.multi_seed:
        parts.append(f"s{spec.seed}")
    return "_".join(parts)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(text).replace(",", " ").split()]
    except ValueError:
        raise cfg.ConfigError(f"CONFIG_SEEDS={text!r}: seeds must be integers separated by spaces") from None
    if not seeds:
        raise cfg.ConfigError("CONFIG_SEEDS is empty: give at least one seed, e.g. \"1\"")
    if len(set(seeds)) != len(seeds):
        raise cfg.ConfigError(f"CONFIG_SEEDS={text!r} repeats a seed")
    return seeds


def parse_sparsities(text: str | None) -> list[float]:
    """The sparsity levels of CONFIG_SPARSITIES: fractions in (0, 1), each with its own run-id percent."""
    levels, names = [], {}
    for word in str(text or "").replace(",", " ").split():
        try:
            level = float(word)
        except ValueError:
            raise cfg.ConfigError(f"CONFIG_SPARSITIES={text!r}: {word!r} is not a number; write fractions, e.g. \"0.5 0.7\"") from None
        if not 0 < level < 1:
            hint = f" (for {word} %, write {level / 100:g})" if 1 <= level < 100 else ""
            raise cfg.ConfigError(f"CONFIG_SPARSITIES={text!r}: {word} is not a fraction in (0, 1){hint}")
        percent = round(level * 100)
        if not 1 <= percent <= 99:
            raise cfg.ConfigError(f"CONFIG_SPARSITIES={text!r}: {word} would be named {percent} % in run ids; use 0.005 to 0.994")
        if percent in names:
            raise cfg.ConfigError(
                f"CONFIG_SPARSITIES={text!r}: {names[percent]} and {word} are both named {percent} in run ids; keep one"
            )
        names[percent] = word
        levels.append(level)
    return levels


def _picked(config: dict, table: dict) -> list:
    return [value for symbol, value in table.items() if config.get(symbol)]


def expand(config: dict) -> list[RunSpec]:
    """Every valid run the configuration asks for, in a fixed order."""
    models = _picked(config, MODELS)
    optimizers = _picked(config, OPTIMIZERS)
    methods = _picked(config, PRUNING)
    sparsities = parse_sparsities(config.get("SPARSITIES"))
    seeds = parse_seeds(config.get("SEEDS", "1"))
    for what, got in (("model", models), ("optimizer", optimizers), ("pruning method", methods)):
        if not got:
            raise cfg.ConfigError(f"the configuration selects no {what}: pick at least one in 'make menuconfig'")
    if any(m != "none" for m in methods) and not sparsities:
        raise cfg.ConfigError("a pruning method is selected but no sparsity level: set CONFIG_SPARSITIES, e.g. \"0.5 0.7\"")
    bases = _picked(config, ADAMWPRUNE_BASES) if "adamwprune" in optimizers else []
    if "adamwprune" in optimizers and not bases:
        raise cfg.ConfigError(
            f"AdamWPrune is selected but no base optimizer: check at least one of {', '.join(f'CONFIG_{s}' for s in ADAMWPRUNE_BASES)}"
        )
    picked_variants = _picked(config, variants()) if "state" in methods else []
    if "state" in methods and not picked_variants:
        raise cfg.ConfigError(
            f"state pruning is selected but no variant: check at least one of {', '.join(f'CONFIG_{s}' for s in variants())}"
        )
    runs = []
    for model in models:
        for opt in optimizers:
            for base in (bases if opt == "adamwprune" else [None]):
                for method in methods:
                    if opt == "adamwprune" and method not in ADAMWPRUNE_PRUNING:
                        continue
                    if method == "state" and opt != "adamwprune":
                        continue  # state pruning reads AdamWPrune's moments
                    for variant in (picked_variants if method == "state" else [None]):
                        for sparsity in ([None] if method == "none" else sparsities):
                            for seed in seeds:
                                runs.append(RunSpec(model, opt, method, sparsity, seed, variant, base, multi_seed=len(seeds) > 1))
    if not runs:
        raise cfg.ConfigError(
            "the configuration selects no valid run: adamwprune runs only with pruning "
            f"{' or '.join(ADAMWPRUNE_PRUNING)} (CONFIG_PRUNING_NONE), and state pruning only with adamwprune"
        )
    return runs


def argv(spec: RunSpec, config: dict, output_dir: str, overrides: dict | None = None) -> list[str]:
    """The full command line of one run (a list, never a shell string)."""
    args = cfg.trainer_argv(config, spec.model)
    args += ["--optimizer", spec.optimizer, "--pruning-method", spec.pruning, "--seed", str(spec.seed)]
    if spec.base:
        args += ["--adamwprune-base", spec.base]
    if spec.sparsity is not None:
        args += ["--target-sparsity", str(spec.sparsity)]
    if spec.variant:
        args += ["--pruning-variant", spec.variant]
        if config.get(budget_symbol(spec.variant)):
            args += ["--budget-extension", str(config[budget_symbol(spec.variant)])]
    for flag, value in (overrides or {}).items():  # e.g. make EPOCHS=N; models without the flag keep theirs
        if flag in args:
            args[args.index(flag) + 1] = str(value)
    args += ["--output-dir", output_dir]
    procs = processes(config)
    if procs > 1:
        # "--" ends torchrun's own options: without it, its argparse rejects trainer flags that
        # abbreviate two of its options (--monitor: --monitor-interval, --monitor_interval).
        launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
        return [sys.executable, *launch, "-m", f"{spec.model}.train", "--", *args]
    return [sys.executable, "-m", f"{spec.model}.train", *args]


def processes(config: dict) -> int:
    """How many processes one run uses: CONFIG_DDP_PROCS (every model); 0 means one per visible GPU."""
    wanted = config.get("DDP_PROCS")
    if wanted is None:
        return 1
    if wanted == 0:
        import torch  # only when asked to count GPUs

        return max(1, torch.cuda.device_count())
    return int(wanted)
