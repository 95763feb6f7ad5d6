"""Kconfig -> typed configuration, and the symbol -> train.py flag table.

`.config` is only ever read through kconfiglib (no hand-written parser).
`load()` turns it into a plain dict, one key per symbol, with Python types:
bool for bool/tristate, int for int/hex, float for the string symbols the
flag table declares as floats, str for the rest; a symbol whose dependencies
are not met is `None`.

The flag table says how a symbol reaches a trainer: `Flag` copies a value to a
command-line flag (a `bool` Flag is a bare switch, passed only when set),
`Choice` turns the selected member of a Kconfig choice into one flag value. Symbols that shape the matrix itself (models, optimizers,
methods, sparsities, seeds) are consumed by `lib.matrix` instead.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import kconfiglib

KCONFIG = "Kconfig"


class ConfigError(Exception):
    """A problem with the configuration that the person has to fix."""


@dataclass(frozen=True)
class Flag:
    symbol: str
    flag: str
    type: type = str
    model: str | None = None  # only passed to this model's trainer


@dataclass(frozen=True)
class Choice:
    flag: str
    options: dict = field(default_factory=dict)  # symbol -> flag value
    model: str | None = None
    join: str | None = None  # checkboxes, not a choice: every picked value, joined by this


FLAGS: list[Flag | Choice] = [
    Choice("--device", {"DEVICE_AUTO": "auto", "DEVICE_CPU": "cpu", "DEVICE_CUDA": "cuda"}),
    Flag("DATA_DIR", "--data-dir"),
    Flag("SGD_MOMENTUM", "--momentum", float),
    Flag("WEIGHT_DECAY", "--weight-decay", float),
    # optimizer family and learning-rate schedule (lib/Kconfig.optimizers)
    Flag("SGD_NESTEROV", "--nesterov", bool),
    Choice("--optimizer-kernels", {"OPTIMIZER_KERNELS_FUSED": "fused", "OPTIMIZER_KERNELS_TORCH": "torch"}),
    Flag("ADAM_BETA1", "--beta1", float),
    Flag("ADAM_BETA2", "--beta2", float),
    Flag("ADAM_EPS", "--eps", float),
    Choice("--adamwprune-base", {"ADAMWPRUNE_BASE_ADAM": "adam", "ADAMWPRUNE_BASE_ADAMW": "adamw", "ADAMWPRUNE_BASE_ADAMWADV": "adamwadv", "ADAMWPRUNE_BASE_ADAMWSPAM": "adamwspam"}),
    Flag("ADAMWADV_CLIP_NORM", "--adamwadv-clip-norm", float),
    Choice("--adamwadv-schedule", {"ADAMWADV_SCHEDULE_COSINE": "cosine", "ADAMWADV_SCHEDULE_SHARED": "shared"}),
    Flag("ADAMWSPAM_THETA", "--spam-theta", float),
    Flag("ADAMWSPAM_INTERVAL", "--spam-interval", int),
    Flag("ADAMWSPAM_WARMUP", "--spam-warmup", int),
    Flag("ADAMWSPAM_CLIP_DELAY", "--spam-clip-delay", int),
    Choice("--lr-schedule", {"LR_SCHEDULE_CONSTANT": "constant", "LR_SCHEDULE_STEP": "step", "LR_SCHEDULE_COSINE": "cosine", "LR_SCHEDULE_WARMUP_COSINE": "warmup_cosine"}),
    Flag("LR_MIN", "--lr-min", float),
    Flag("LR_WARMUP_PERCENT", "--lr-warmup", int),
    Flag("LR_STEP_PERCENT", "--lr-step-every", int),
    Flag("LR_STEP_GAMMA", "--lr-step-gamma", float),
    Choice("--pruning-schedule", {"PRUNING_SCHEDULE_CUBIC": "cubic", "PRUNING_SCHEDULE_LINEAR": "linear"}),
    Flag("PRUNING_WARMUP_PERCENT", "--pruning-warmup", int),
    Flag("PRUNING_RAMP_END_PERCENT", "--pruning-ramp-end", int),
    Flag("PRUNING_FREQUENCY", "--pruning-frequency", int),
    # pruning family (lib/Kconfig.pruning); variants and budget extensions go through lib.matrix
    Choice("--pruning-unit", {"PRUNING_UNIT_STEP": "step", "PRUNING_UNIT_EPOCH": "epoch"}),
    Choice("--pruning-scope", {"PRUNING_SCOPE_GLOBAL": "global", "PRUNING_SCOPE_LAYER": "layer"}),
    Choice("--pruning-remask", {"PRUNING_REMASK_STEP": "step", "PRUNING_REMASK_UPDATE": "update"}),
    Flag("PRUNING_INCLUDE_EMBEDDINGS", "--prune-embeddings", bool),
    Flag("PRUNING_INCLUDE_NORMS", "--prune-norms", bool),
    Flag("PRUNING_INCLUDE_BIASES", "--prune-biases", bool),
    Flag("PRUNING_LAYER_ADAPTIVE_KEEP_LEVELS", "--no-layer-adaptive-rescale", bool),
    Flag("PRUNING_STRUCTURE_WEIGHT_ATTENTION", "--structure-weight-attention", float),
    Flag("PRUNING_STRUCTURE_WEIGHT_MLP", "--structure-weight-mlp", float),
    Flag("PRUNING_STRUCTURE_WEIGHT_COUPLING", "--structure-weight-coupling", float),
    Flag("PRUNING_RATIO_PRESERVE", "--ratio-preserve", bool),
    Flag("PRUNING_RATIO", "--ratio", float),
    Flag("PRUNING_RATIO_TOLERANCE", "--ratio-tolerance", float),
    # memory monitor and experiment trackers (lib/Kconfig.monitor, lib/Kconfig.tracking)
    Choice("--monitor", {"MONITOR_AUTO": "auto", "MONITOR_NVIDIA": "nvidia", "MONITOR_AMD": "amd", "MONITOR_CPU": "cpu", "MONITOR_OFF": "off"}),
    Flag("MONITOR_INTERVAL", "--monitor-interval", float),
    Choice("--tracker", {"TRACKER_TRACKIO": "trackio", "TRACKER_WANDB": "wandb"}, join=","),
    Flag("TRACKER_DIR", "--tracking-dir"),
    # LeNet-5
    Choice("--dataset", {"LENET5_DATASET_DIGITS": "digits", "LENET5_DATASET_MNIST": "mnist"}, model="lenet5"),
    Flag("LENET5_EPOCHS", "--epochs", int, model="lenet5"),
    Flag("LENET5_BATCH_SIZE", "--batch-size", int, model="lenet5"),
    Flag("LENET5_LEARNING_RATE", "--lr", float, model="lenet5"),
    # ResNet-18
    Choice("--dataset", {"RESNET18_DATASET_CIFAR10": "cifar10", "RESNET18_DATASET_CIFAR100": "cifar100", "RESNET18_DATASET_DIGITS": "digits"}, model="resnet18"),
    Flag("RESNET18_EPOCHS", "--epochs", int, model="resnet18"),
    Flag("RESNET18_BATCH_SIZE", "--batch-size", int, model="resnet18"),
    Flag("RESNET18_LEARNING_RATE", "--lr", float, model="resnet18"),
    Flag("RESNET18_WORKERS", "--workers", int, model="resnet18"),
    Flag("RESNET18_IMAGE_SIZE", "--image-size", int, model="resnet18"),
    Flag("RESNET18_TRAIN_SAMPLES", "--train-samples", int, model="resnet18"),
    Choice("--amp", {"RESNET18_AMP_OFF": "off", "RESNET18_AMP_BF16": "bf16", "RESNET18_AMP_FP16": "fp16"}, model="resnet18"),
    Flag("RESNET18_COMPILE", "--compile", bool, model="resnet18"),
    # ResNet-50
    Choice("--dataset", {"RESNET50_DATASET_CIFAR100": "cifar100", "RESNET50_DATASET_IMAGEFOLDER": "imagefolder", "RESNET50_DATASET_DIGITS": "digits"}, model="resnet50"),
    Flag("RESNET50_IMAGE_FOLDER", "--image-folder", model="resnet50"),
    Flag("RESNET50_EPOCHS", "--epochs", int, model="resnet50"),
    Flag("RESNET50_BATCH_SIZE", "--batch-size", int, model="resnet50"),
    Flag("RESNET50_LEARNING_RATE", "--lr", float, model="resnet50"),
    Flag("RESNET50_WORKERS", "--workers", int, model="resnet50"),
    Flag("RESNET50_IMAGE_SIZE", "--image-size", int, model="resnet50"),
    Flag("RESNET50_TRAIN_SAMPLES", "--train-samples", int, model="resnet50"),
    Choice("--amp", {"RESNET50_AMP_OFF": "off", "RESNET50_AMP_BF16": "bf16", "RESNET50_AMP_FP16": "fp16"}, model="resnet50"),
    Flag("RESNET50_COMPILE", "--compile", bool, model="resnet50"),
    # GPT-2 (gpt2/Kconfig); GPT2_DDP_PROCS is read by lib.matrix.argv
    Choice("--model-size", {"GPT2_MODEL_TINY": "tiny", "GPT2_MODEL_124M": "gpt2", "GPT2_MODEL_MEDIUM": "gpt2-medium", "GPT2_MODEL_LARGE": "gpt2-large", "GPT2_MODEL_XL": "gpt2-xl"}, model="gpt2"),
    Choice("--dataset", {"GPT2_DATASET_PYDOC": "pydoc", "GPT2_DATASET_SHAKESPEARE": "shakespeare", "GPT2_DATASET_FINEWEBEDU": "finewebedu", "GPT2_DATASET_OPENWEBTEXT": "openwebtext", "GPT2_DATASET_FILE": "file"}, model="gpt2"),
    Flag("GPT2_TEXT_FILE", "--text-file", model="gpt2"),
    Flag("GPT2_BLOCK_SIZE", "--block-size", int, model="gpt2"),
    Flag("GPT2_BATCH_SIZE", "--batch-size", int, model="gpt2"),
    Flag("GPT2_GRAD_ACCUM", "--grad-accum", int, model="gpt2"),
    Flag("GPT2_MAX_ITERS", "--max-iters", int, model="gpt2"),
    Flag("GPT2_EVAL_INTERVAL", "--eval-interval", int, model="gpt2"),
    Flag("GPT2_EVAL_ITERS", "--eval-iters", int, model="gpt2"),
    Flag("GPT2_LEARNING_RATE", "--lr", float, model="gpt2"),
    Flag("GPT2_GRAD_CLIP", "--grad-clip", float, model="gpt2"),
    Flag("GPT2_DROPOUT", "--dropout", float, model="gpt2"),
    Flag("GPT2_MAX_MINUTES", "--max-minutes", int, model="gpt2"),
    Choice("--amp", {"GPT2_AMP_OFF": "off", "GPT2_AMP_BF16": "bf16", "GPT2_AMP_FP16": "fp16"}, model="gpt2"),
    Flag("GPT2_COMPILE", "--compile", bool, model="gpt2"),
    Flag("GPT2_PRUNE_TIED_HEAD", "--prune-tied-head", bool, model="gpt2"),
]

FLOAT_SYMBOLS = {f.symbol for f in FLAGS if isinstance(f, Flag) and f.type is float}


def flag_symbols() -> set[str]:
    """Every symbol the flag table reads."""
    out = set()
    for f in FLAGS:
        out |= {f.symbol} if isinstance(f, Flag) else set(f.options)
    return out


def trainer_argv(config: dict, model: str) -> list[str]:
    """The flags that carry `config` to `model`'s trainer, in table order."""
    argv: list[str] = []
    for f in FLAGS:
        if f.model not in (None, model):
            continue
        if isinstance(f, Choice):
            picked = [v for s, v in f.options.items() if config.get(s)]
            if picked:
                argv += [f.flag, f.join.join(picked) if f.join else picked[0]]
        elif f.type is bool:  # a switch: the bare flag when y, nothing when n
            argv += [f.flag] if config.get(f.symbol) else []
        elif config.get(f.symbol) is not None:
            argv += [f.flag, str(config[f.symbol])]
    return argv


def kconfig(path: str | os.PathLike = KCONFIG) -> kconfiglib.Kconfig:
    kconf = kconfiglib.Kconfig(str(path), warn_to_stderr=False)
    kconf.warn_assign_undef = True  # an unknown symbol in a .config is a warning we turn into an error
    return kconf


def load_strict(kconf: kconfiglib.Kconfig, config_file: str | os.PathLike) -> None:
    """Load a .config or defconfig; any kconfiglib warning is an error.

    kconfiglib only warns about unknown symbols, malformed values and values
    out of range; a defconfig must not load with any of those.
    """
    if not Path(config_file).is_file():
        raise ConfigError(f"{config_file}: no such file")
    kconf.warnings.clear()
    kconf.load_config(str(config_file), replace=True)
    if kconf.warnings:
        first = kconf.warnings[0].replace("warning: ", "").strip()
        raise ConfigError(f"{config_file}: {first}")


def values(kconf: kconfiglib.Kconfig) -> dict:
    """One typed value per defined symbol (None when its dependencies are unmet)."""
    out = {}
    for sym in kconf.unique_defined_syms:
        name, raw = sym.name, sym.str_value
        if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
            out[name] = raw in ("y", "m")
        elif kconfiglib.expr_value(sym.direct_dep) == 0:
            out[name] = None
        elif sym.orig_type == kconfiglib.INT:
            out[name] = int(raw)
        elif sym.orig_type == kconfiglib.HEX:
            out[name] = int(raw, 16)
        elif name in FLOAT_SYMBOLS:
            try:
                out[name] = float(raw)
            except ValueError:
                raise ConfigError(f"CONFIG_{name}={raw!r} is not a number") from None
        else:
            out[name] = raw
    return out


def load(config_file: str | os.PathLike = ".config", kconfig_file: str | os.PathLike = KCONFIG) -> dict:
    """Read a .config through kconfiglib into the typed dict described above."""
    if not Path(config_file).is_file():
        raise ConfigError(
            f"no {config_file}: run 'make defconfig' for the quick start, "
            "'make defconfig-<name>' for another matrix, or 'make menuconfig'"
        )
    kconf = kconfig(kconfig_file)
    load_strict(kconf, config_file)
    return values(kconf)


def config_hash(config: dict) -> str:
    """A stable hash of the symbol values (not of the file's bytes or comments)."""
    text = "\n".join(f"{k}={config[k]!r}" for k in sorted(config))
    return hashlib.sha256(text.encode()).hexdigest()


def diff(old: dict, new: dict) -> list[str]:
    """Symbols whose value differs, as 'NAME: old -> new' lines."""
    return [
        f"CONFIG_{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
