"""The one matrix expansion and the one run-id function.

`expand(config)` turns a typed configuration (see `lib.config`) into the
ordered list of runs: model x optimizer (AdamWPrune once per checked base)
x pruning method x variant (state pruning's bitter* only) x granularity
(pruned runs only; an N:M pattern at its own sparsity) x sparsity x seed,
keeping only valid combinations. With CONFIG_FINETUNE, every dense run is
then the parent of fine-tuning runs (`RunSpec.parent`), listed after every
run of the matrix: one per pruning method, variant, granularity and
sparsity, started from the parent's best.pt. With GPT-2 ablation steps
(CONFIG_GPT2_ABLATION_STEPS, `gpt2.ablation`), GPT-2's runs are step x
optimizer (AdamWPrune once per base) x seed instead (`RunSpec.step`): the
steps replace its pruning axis, and the pruned step runs with AdamWPrune only.
`run_id(spec)` names a run. `argv(spec, config)` is the command that runs
it: the settings by `lib.config`'s naming rule, then the run's own axes.
Run, continue, status, dry-run and the graphs all go through these three
functions. `matrix_symbols()` are the symbols consumed here rather than
passed to trainers.
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from gpt2 import ablation
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
# Granularity axis (lib/Kconfig.structured): what one pruning decision removes. N:M's pattern is PRUNING_NM_PATTERN.
GRANULARITIES = {"PRUNING_GRANULARITY_ELEMENT": "element", "PRUNING_GRANULARITY_NM": "nm",
                 "PRUNING_GRANULARITY_CHANNEL": "channel"}
ELEMENT = "element"
# Prune and fine-tune (lib/Kconfig.finetune): FINETUNE adds the child runs; choice FINETUNE_SCHEDULE gives their
# --pruning-schedule (one-shot, or the configured ramp over the fine-tuning run).
FINETUNE_SCHEDULE = "FINETUNE_SCHEDULE"
FINETUNE_SCHEDULES = {"FINETUNE_SCHEDULE_ONESHOT": "oneshot", "FINETUNE_SCHEDULE_GRADUAL": "gradual"}
ONESHOT_METHODS = ("magnitude",)  # scores that exist before the first training step
# GPT-2's ablation steps (gpt2/Kconfig.ablation): the steps, and the target sparsity of the pruned step.
ABLATION_STEPS, ABLATION_SPARSITY = "GPT2_ABLATION_STEPS", "GPT2_ABLATION_SPARSITY"
ABLATION_MODEL = "gpt2"
# Symbols the runner itself reads (not passed to trainers as flags). DDP_PROCS: processes per run
# (DDP through torchrun), for every model of the matrix. Every MATRIX_* and SLURM_* symbol (and
# choice) is the runner's too: where and how the runs execute, never how one trains.
RUNNER_SYMBOLS = {"SEEDS", "SPARSITIES", "RESULTS_DIR", "DDP_PROCS"}
RUNNER_PREFIXES = ("MATRIX_", "SLURM_")


def is_runner_symbol(name: str) -> bool:
    """A symbol (or choice) the runner and the matrix read themselves: never a trainer flag."""
    return name in RUNNER_SYMBOLS or name.startswith(RUNNER_PREFIXES) or name == FINETUNE_SCHEDULE


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
    return (set(MODELS) | set(OPTIMIZERS) | set(ADAMWPRUNE_BASES) | set(PRUNING) | set(variants()) | set(GRANULARITIES)
            | {"FINETUNE"} | set(FINETUNE_SCHEDULES))


def matrix_symbols() -> set[str]:
    """Every symbol the matrix consumes itself: axes, runner settings, budget extensions, the N:M pattern."""
    runner = {s.name for s in cfg.kconfig().unique_defined_syms if is_runner_symbol(s.name)}
    return (axis_symbols() | RUNNER_SYMBOLS | runner | {budget_symbol(v) for v in variants().values()}
            | {"PRUNING_NM_PATTERN", ABLATION_STEPS, ABLATION_SPARSITY})


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
    granularity: str = ELEMENT  # element, channel or an N:M pattern "2:4" (--pruning-granularity)
    parent: str | None = None  # a fine-tuning run: the run id of the dense run it starts from
    step: str | None = None  # a GPT-2 ablation step (gpt2.ablation); None outside an ablation

    @property
    def granularity_tag(self) -> str | None:
        """The run id's granularity part: None for element, "channel", "2of4" for the N:M pattern 2:4."""
        if self.granularity == ELEMENT:
            return None
        return self.granularity.replace(":", "of")

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
    """`{model}[_{step}]_{optimizer}[_{variant}]_{pruning}[_{granularity}][_{sparsity%}][_s{seed}]`, the optimizer by
    `optimizer_label`, the granularity by `RunSpec.granularity_tag` (none for element), the ablation step right
    after the model (`gpt2_mla_adamwprune_none`, `gpt2_ratio_adamwprune_bitter9_state_50`).

    A fine-tuning run: `{parent id without its seed}_ft_{pruning}[_{variant}][_{granularity}]_{sparsity%}[_s{seed}]`,
    the seed last as in every id, so that its seeds group into one configuration.
    """
    if spec.parent is not None:
        parent = RunSpec(spec.model, spec.optimizer, "none", None, spec.seed, base=spec.base)
        parts = [run_id(parent), "ft", spec.pruning, spec.variant, spec.granularity_tag, f"{round(spec.sparsity * 100)}"]
        if spec.multi_seed:
            parts.append(f"s{spec.seed}")
        return "_".join(p for p in parts if p)
    parts = [spec.model, *([spec.step] if spec.step else []), optimizer_label(spec.optimizer, spec.base)]
    if spec.variant:
        parts.append(spec.variant)
    parts.append(spec.pruning)
    if spec.granularity_tag:
        parts.append(spec.granularity_tag)
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


def parse_sparsities(text: str | None, symbol: str = "SPARSITIES") -> list[float]:
    """The sparsity levels of CONFIG_SPARSITIES (or `symbol`): fractions in (0, 1), each with its own run-id percent."""
    levels, names = [], {}
    for word in str(text or "").replace(",", " ").split():
        try:
            level = float(word)
        except ValueError:
            raise cfg.ConfigError(f"CONFIG_{symbol}={text!r}: {word!r} is not a number; write fractions, e.g. \"0.5 0.7\"") from None
        if not 0 < level < 1:
            hint = f" (for {word} %, write {level / 100:g})" if 1 <= level < 100 else ""
            raise cfg.ConfigError(f"CONFIG_{symbol}={text!r}: {word} is not a fraction in (0, 1){hint}")
        percent = round(level * 100)
        if not 1 <= percent <= 99:
            raise cfg.ConfigError(f"CONFIG_{symbol}={text!r}: {word} would be named {percent} % in run ids; use 0.005 to 0.994")
        if percent in names:
            raise cfg.ConfigError(
                f"CONFIG_{symbol}={text!r}: {names[percent]} and {word} are both named {percent} in run ids; keep one"
            )
        names[percent] = word
        levels.append(level)
    return levels


def _picked(config: dict, table: dict) -> list:
    return [value for symbol, value in table.items() if config.get(symbol)]


def parse_nm(text) -> tuple[int, int]:
    """(N, M) of CONFIG_PRUNING_NM_PATTERN, written "N:M" with whole numbers 0 < N < M."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text or ""))
    if not match or not 0 < int(match[1]) < int(match[2]):
        raise cfg.ConfigError(f"CONFIG_PRUNING_NM_PATTERN={text!r}: write N:M with 0 < N < M, e.g. 2:4")
    return int(match[1]), int(match[2])


def granularities(config: dict) -> list[tuple[str, list[float] | None]]:
    """The checked granularities: (--pruning-granularity value, its own sparsity levels or None for CONFIG_SPARSITIES).

    An N:M pattern prunes to (M-N)/M, whatever the sparsity levels say.
    """
    out = []
    for kind in _picked(config, GRANULARITIES):
        if kind == "nm":
            n, m = parse_nm(config.get("PRUNING_NM_PATTERN"))
            out.append((f"{n}:{m}", [(m - n) / m]))
        else:
            out.append((kind, None))
    return out


def _layer_adaptive(variant: str | None) -> bool:
    from lib.pruning.state import VARIANTS

    return variant is not None and VARIANTS[variant].layer_adaptive


def _pruned(opt: str, methods: list[str], picked_variants: list[str], grains: list[tuple[str, list[float] | None]],
            sparsities: list[float]):
    """(method, variant, granularity, sparsity) of every valid pruned combination for optimizer `opt`."""
    for method in methods:
        if method == "none" or (opt == "adamwprune" and method not in ADAMWPRUNE_PRUNING):
            continue
        if method == "state" and opt != "adamwprune":
            continue  # state pruning reads AdamWPrune's moments
        for variant in (picked_variants if method == "state" else [None]):
            for grain, own in grains:
                if grain != ELEMENT and _layer_adaptive(variant):
                    continue  # a layer-adaptive variant (bitter4) sets per-layer levels of single weights
                for sparsity in own or sparsities:
                    yield method, variant, grain, sparsity


def ablation_steps(config: dict) -> list[str]:
    """GPT-2's ablation steps (CONFIG_GPT2_ABLATION_STEPS) in `gpt2.ablation.REGISTRY` order; [] when the ablation is off."""
    text = config.get(ABLATION_STEPS)
    try:
        return ablation.parse(text)
    except ValueError as e:
        raise cfg.ConfigError(f"CONFIG_{ABLATION_STEPS}={text!r}: {e}") from None


def ablation_sparsity(config: dict) -> float:
    """The pruned ablation step's target sparsity: CONFIG_GPT2_ABLATION_SPARSITY, one fraction in (0, 1)."""
    text = config.get(ABLATION_SPARSITY)
    levels = parse_sparsities(None if text is None else f"{text}", ABLATION_SPARSITY)
    if len(levels) != 1:
        raise cfg.ConfigError(f"CONFIG_{ABLATION_SPARSITY}={text!r}: give one fraction in (0, 1), e.g. \"0.5\"")
    return levels[0]


def _ablation(steps: list[str], opt: str, base: str | None, seeds: list[int], multi: bool, sparsity: float | None):
    """GPT-2's runs of optimizer `opt` in an ablation: one per step and seed; a pruned step with AdamWPrune only."""
    for name in steps:
        pruned = ablation.step(name).pruning
        if pruned is not None and opt != "adamwprune":
            continue  # state pruning reads AdamWPrune's moments
        method, variant = pruned or ("none", None)
        for seed in seeds:
            yield RunSpec(ABLATION_MODEL, opt, method, sparsity if pruned else None, seed, variant, base, multi, step=name)


def expand(config: dict) -> list[RunSpec]:
    """Every valid run the configuration asks for, in a fixed order; fine-tuning runs after all others."""
    models = _picked(config, MODELS)
    optimizers = _picked(config, OPTIMIZERS)
    methods = _picked(config, PRUNING)
    sparsities = parse_sparsities(config.get("SPARSITIES"))
    seeds = parse_seeds(config.get("SEEDS", "1"))
    for what, got in (("model", models), ("optimizer", optimizers), ("pruning method", methods)):
        if not got:
            raise cfg.ConfigError(f"the configuration selects no {what}: pick at least one in 'make menuconfig'")
    pruning = any(m != "none" for m in methods)
    if pruning and not sparsities:
        raise cfg.ConfigError("a pruning method is selected but no sparsity level: set CONFIG_SPARSITIES, e.g. \"0.5 0.7\"")
    grains = granularities(config) if pruning else []
    if pruning and not grains:
        raise cfg.ConfigError(
            f"a pruning method is selected but no granularity: check at least one of {', '.join(f'CONFIG_{s}' for s in GRANULARITIES)}"
        )
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
    steps = ablation_steps(config) if ABLATION_MODEL in models else []
    pruned_steps = [name for name in steps if ablation.step(name).pruning is not None]
    if pruned_steps and "adamwprune" not in optimizers:
        raise cfg.ConfigError(
            f"CONFIG_{ABLATION_STEPS} lists {pruned_steps[0]!r}, which prunes by the optimizer's state: check "
            f"CONFIG_OPTIMIZER_ADAMWPRUNE or drop {pruned_steps[0]!r} from the steps"
        )
    step_sparsity = ablation_sparsity(config) if pruned_steps else None
    runs = []
    multi = len(seeds) > 1
    for model in models:
        for opt in optimizers:
            for base in (bases if opt == "adamwprune" else [None]):
                if steps and model == ABLATION_MODEL:  # the steps replace GPT-2's pruning axis
                    runs += _ablation(steps, opt, base, seeds, multi, step_sparsity)
                    continue
                if "none" in methods:
                    runs += [RunSpec(model, opt, "none", None, seed, None, base, multi_seed=multi) for seed in seeds]
                for method, variant, grain, sparsity in _pruned(opt, methods, picked_variants, grains, sparsities):
                    runs += [RunSpec(model, opt, method, sparsity, seed, variant, base, multi, grain) for seed in seeds]
    if not runs:
        raise cfg.ConfigError(
            "the configuration selects no valid run: adamwprune runs only with pruning "
            f"{' or '.join(ADAMWPRUNE_PRUNING)} (CONFIG_PRUNING_NONE), and state pruning only with adamwprune"
        )
    if config.get("FINETUNE"):
        runs += children(config, runs, methods, picked_variants, grains, sparsities)
    return runs


def children(config: dict, runs: list[RunSpec], methods: list[str], picked_variants: list[str],
             grains: list[tuple[str, list[float] | None]], sparsities: list[float]) -> list[RunSpec]:
    """The fine-tuning runs of every dense run of `runs` (ablation steps have none): one per valid method, variant,
    granularity and sparsity."""
    out = []
    for dense in (r for r in runs if r.pruning == "none" and r.step is None):
        parent = run_id(dense)
        for method, variant, grain, sparsity in _pruned(dense.optimizer, methods, picked_variants, grains, sparsities):
            out.append(RunSpec(dense.model, dense.optimizer, method, sparsity, dense.seed, variant, dense.base,
                               dense.multi_seed, grain, parent))
    if not out:
        raise cfg.ConfigError(
            "CONFIG_FINETUNE is set but no dense run can be pruned by a checked method: adamwprune takes only "
            "state pruning, the other optimizers magnitude or movement (GPT-2's ablation steps have no fine-tuning runs)"
        )
    schedule = finetune_schedule(config)
    learnt = sorted({c.pruning for c in out if c.pruning not in ONESHOT_METHODS})
    if schedule == "oneshot" and learnt:
        raise cfg.ConfigError(
            f"CONFIG_FINETUNE_SCHEDULE_ONESHOT prunes before the first fine-tuning step, which only "
            f"{' or '.join(ONESHOT_METHODS)} can score ({', '.join(learnt)} learns its scores while training): "
            f"pick CONFIG_FINETUNE_SCHEDULE_GRADUAL or uncheck {', '.join(f'CONFIG_PRUNING_{m.upper()}' for m in learnt)}"
        )
    return out


def finetune_schedule(config: dict) -> str:
    """The fine-tuning runs' schedule: "oneshot" (the default) or "gradual" (the configured ramp)."""
    picked = _picked(config, FINETUNE_SCHEDULES)
    return picked[0] if picked else "oneshot"


def parent_checkpoint(output_dir: str, parent: str) -> str:
    """The best.pt a fine-tuning run in `output_dir` starts from: its parent's, beside it in the matrix directory."""
    return str(Path(output_dir).parent / parent / "best.pt")


def _set(args: list[str], flag: str, value: str) -> None:
    """Give `flag` the value `value` in `args`, appending it when absent."""
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]


def argv(spec: RunSpec, config: dict, output_dir: str, overrides: dict | None = None) -> list[str]:
    """The full command line of one run (a list, never a shell string).

    An ablation step's run: the settings with the step's architecture flags in place of the configuration's
    (`gpt2.ablation.argv`), then its own axes.
    A fine-tuning run: its parent's settings, its own pruning axes, `--init-from` the parent's best.pt and, with
    the one-shot fine-tune schedule, `--pruning-schedule oneshot` (never a budget extension: its length is
    FINETUNE_LENGTH_PERCENT of the configured one).
    """
    args = cfg.trainer_argv(config, spec.model)
    if spec.step is not None:  # the step's architecture in place of the configuration's (and RATIO budgets)
        args = ablation.argv(args, spec.step, config)
    args += ["--optimizer", spec.optimizer, "--pruning-method", spec.pruning, "--seed", str(spec.seed)]
    if spec.base:
        args += ["--adamwprune-base", spec.base]
    if spec.sparsity is not None:
        args += ["--target-sparsity", str(spec.sparsity)]
    if spec.granularity != ELEMENT:
        args += ["--pruning-granularity", spec.granularity]
    if spec.variant:
        args += ["--pruning-variant", spec.variant]
        if config.get(budget_symbol(spec.variant)) and spec.parent is None:
            args += ["--budget-extension", str(config[budget_symbol(spec.variant)])]
    if spec.parent is not None:
        if finetune_schedule(config) == "oneshot":
            _set(args, "--pruning-schedule", "oneshot")
        args += ["--init-from", parent_checkpoint(output_dir, spec.parent)]
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
