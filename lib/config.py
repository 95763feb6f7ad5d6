"""Kconfig -> typed configuration, and the naming rule that carries it to trainers.

`.config` is only ever read through kconfiglib (no hand-written parser).
`load()` turns it into a plain dict, one key per symbol, with Python types:
bool for bool/tristate, int for int/hex, str for string, and float for a
*real*: a `string` setting whose Kconfig defaults are all numbers (Kconfig
has no float type). A symbol whose dependencies are not met is `None`.

The naming rule: every prompted symbol that `lib.matrix` does not consume is
a setting, and reaches a trainer as the flag its name spells.

    DATA_DIR="x"                  --data-dir x           (lower case, "_" -> "-")
    COMPILE=y                     --compile              (a bool is a switch: the bare flag when y)
    LENET5_EPOCHS=12              --epochs 12            (a model's prefix: that model's trainer only)
    choice PRUNING_SCHEDULE,
      PRUNING_SCHEDULE_CUBIC=y    --pruning-schedule cubic   (a named choice; members <CHOICE>_<VALUE>)

`CHOICE_VALUES` and `CHECKBOX_GROUPS` list where the rule does not hold.
`settings()` derives the table from the Kconfig tree; `trainer_argv()`
applies it to a typed config.
Which flags exist, with which types and defaults, is the trainers' business
(their argparse parsers); the tests parse every flag the rule produces.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import kconfiglib

from lib.tracking import spec as tracking_spec

KCONFIG = "Kconfig"

# The naming rule's exceptions, each with its reason.
# lib.optim.schedules names this schedule with an underscore, and run records carry the name.
CHOICE_VALUES = {"LR_SCHEDULE_WARMUP_COSINE": "warmup_cosine"}
# Several trackers at once: the checked boxes join into one comma-separated flag value.
CHECKBOX_GROUPS = {"--tracker": {symbol: name for name, symbol in tracking_spec.SYMBOLS.items()}}


class ConfigError(Exception):
    """A problem with the configuration that the person has to fix."""


@dataclass(frozen=True)
class Setting:
    """One trainer flag and the symbol(s) that set it.

    kind "value": `symbols` is one int or string symbol, passed as `flag VALUE`;
    "switch": one bool, the bare flag when y; "choice": a choice's members, or
    "group": checkboxes, with `values` the flag value of each member.
    """

    flag: str
    kind: str
    symbols: tuple[str, ...]
    values: tuple[str, ...] = ()
    model: str | None = None  # only this model's trainer gets the flag

    def argv(self, config: dict) -> list[str]:
        if self.kind == "switch":
            return [self.flag] if config.get(self.symbols[0]) else []
        if self.kind == "value":
            value = config.get(self.symbols[0])
            return [] if value is None else [self.flag, str(value)]
        picked = [v for s, v in zip(self.symbols, self.values) if config.get(s)]
        if not picked:  # a choice whose dependencies are unmet, or no box checked: the trainer's default
            return []
        return [self.flag, ",".join(picked) if self.kind == "group" else picked[0]]


def _dashed(name: str) -> str:
    return name.lower().replace("_", "-")


def flag_of(symbol: str, models) -> tuple[str, str | None]:
    """(flag, model or None) that a setting's name spells."""
    for model in models:
        prefix = f"{model.upper()}_"
        if symbol.startswith(prefix):
            return "--" + _dashed(symbol[len(prefix):]), model
    return "--" + _dashed(symbol), None


def _choice(choice: kconfiglib.Choice, models) -> Setting:
    where = f"{choice.nodes[0].filename}:{choice.nodes[0].linenr}"
    if not choice.name:
        raise ConfigError(f"{where}: a choice needs a name ('choice <NAME>') to map to a trainer flag")
    flag, model = flag_of(choice.name, models)
    values = []
    for sym in choice.syms:
        if sym.name in CHOICE_VALUES:
            values.append(CHOICE_VALUES[sym.name])
        elif sym.name.startswith(choice.name + "_"):
            values.append(_dashed(sym.name[len(choice.name) + 1:]))
        else:
            raise ConfigError(f"{where}: member {sym.name} of choice {choice.name} must be named {choice.name}_<VALUE>")
    return Setting(flag, "choice", tuple(s.name for s in choice.syms), tuple(values), model)


@functools.lru_cache(maxsize=None)
def _settings(kconfig_file: str) -> tuple[Setting, ...]:
    from lib import matrix  # matrix imports this module

    kconf = kconfig(kconfig_file)
    models = tuple(matrix.MODELS.values())
    consumed = matrix.matrix_symbols()
    grouped = {s for members in CHECKBOX_GROUPS.values() for s in members}
    out: list[Setting] = []
    for node in kconf.node_iter():
        item = node.item
        if isinstance(item, kconfiglib.Choice) and node is item.nodes[0]:
            if not matrix.is_runner_symbol(item.name or ""):
                out.append(_choice(item, models))
        elif (
            isinstance(item, kconfiglib.Symbol) and node is item.nodes[0] and any(n.prompt for n in item.nodes)
            and item.choice is None and item.name not in consumed and item.name not in grouped
        ):
            flag, model = flag_of(item.name, models)
            kind = "switch" if item.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE) else "value"
            out.append(Setting(flag, kind, (item.name,), model=model))
    for flag, members in CHECKBOX_GROUPS.items():
        out.append(Setting(flag, "group", tuple(members), tuple(members.values())))
    return tuple(out)


def settings(kconfig_file: str | os.PathLike = KCONFIG) -> tuple[Setting, ...]:
    """Every setting of the Kconfig tree, in menu order, by the naming rule."""
    return _settings(str(Path(kconfig_file).resolve()))


def flag_symbols(kconfig_file: str | os.PathLike = KCONFIG) -> set[str]:
    """Every symbol that reaches a trainer as a flag."""
    return {s for setting in settings(kconfig_file) for s in setting.symbols}


def trainer_argv(config: dict, model: str, kconfig_file: str | os.PathLike = KCONFIG) -> list[str]:
    """The flags that carry `config` to `model`'s trainer, in menu order."""
    argv: list[str] = []
    for setting in settings(kconfig_file):
        if setting.model in (None, model):
            argv += setting.argv(config)
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


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_real(sym: kconfiglib.Symbol) -> bool:
    """A string setting whose defaults are all numbers: its value is a float."""
    from lib import matrix  # matrix imports this module

    return (
        sym.orig_type == kconfiglib.STRING
        and not matrix.is_runner_symbol(sym.name)
        and bool(sym.defaults)
        and all(_is_number(value.str_value) for value, _ in sym.defaults)
    )


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
        elif is_real(sym):
            if not _is_number(raw):
                raise ConfigError(f"CONFIG_{name}={raw!r} is not a number")
            out[name] = float(raw)
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
