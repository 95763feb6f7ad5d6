"""Which trackers a run uses: the `--tracker` value and the `TRACKER=` override.

A tracker spec is a comma-separated list of names ("trackio", "wandb",
"wandb,trackio") or "none". `tracker_symbols()` turns it into the Kconfig
checkbox assignments the defconfig loader applies (`make defconfig-X
TRACKER=...`); `parse()` splits it for a trainer, setting unknown names aside
so the trainer can warn about them and carry on.
"""

from __future__ import annotations

# tracker name -> its Kconfig checkbox (lib/Kconfig.tracking)
SYMBOLS = {"trackio": "TRACKER_TRACKIO", "wandb": "TRACKER_WANDB"}
TRACKERS = tuple(SYMBOLS)
NONE = "none"


def split(spec: str | None) -> list[str]:
    """The names in a spec, lower-cased, in order, without repeats or 'none'."""
    names = []
    for part in (spec or "").replace(" ", ",").split(","):
        name = part.strip().lower()
        if name and name != NONE and name not in names:
            names.append(name)
    return names


def parse(spec: str | None) -> tuple[list[str], list[str]]:
    """(known tracker names, unknown names) of a spec."""
    names = split(spec)
    return [n for n in names if n in SYMBOLS], [n for n in names if n not in SYMBOLS]


def tracker_symbols(spec: str) -> dict[str, str]:
    """Kconfig assignments for a TRACKER= value: every tracker's checkbox, "y" or "n".

    Raises ValueError naming the valid trackers when a name is unknown.
    """
    known, unknown = parse(spec)
    if unknown or (not known and (spec or "").strip().lower() not in (NONE, "")):
        bad = ", ".join(unknown) or repr(spec)
        raise ValueError(f"TRACKER: unknown tracker {bad}; valid: {', '.join(TRACKERS)}, {NONE} (comma-separated)")
    return {symbol: ("y" if name in known else "n") for name, symbol in SYMBOLS.items()}


def flag_value(config: dict) -> str:
    """The --tracker value a typed configuration selects ("none" when none is)."""
    picked = [name for name, symbol in SYMBOLS.items() if config.get(symbol)]
    return ",".join(picked) or NONE
