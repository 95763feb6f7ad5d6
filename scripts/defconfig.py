"""Load a named defconfig into .config, strictly.

usage: python -m scripts.defconfig [NAME] [--tracker LIST] [--list]

NAME is a file in defconfigs/ or <model>/defconfigs/ (default: quickstart,
the offline LeNet-5 quick start). Unlike a plain kconfiglib load, any problem
is an error that names the symbol: an unknown symbol, a malformed or
out-of-range value, or an assignment that has no effect because the symbol's
dependencies are not met. --tracker (make's TRACKER=) overrides the
defconfig's experiment trackers, e.g. "wandb,trackio". The .config file is
$KCONFIG_CONFIG when set, as for kconfiglib's own tools.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path

import kconfiglib

from lib import config

DEFAULT = "quickstart"
DEFCONFIG_RECORD = Path("build") / "defconfig.json"


def available() -> dict[str, Path]:
    """Every defconfig name -> file, from defconfigs/ and */defconfigs/."""
    found = {}
    for path in sorted(Path("defconfigs").glob("*")) + sorted(Path(".").glob("*/defconfigs/*")):
        if path.is_file() and not path.name.startswith("."):
            found.setdefault(path.name, path)
    return found


def find(name: str) -> Path:
    table = available()
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, table, n=5, cutoff=0.5) or [n for n in table if name in n][:5]
    hint = f"; did you mean: {', '.join(close)}?" if close else f"; available: {', '.join(table)}"
    raise config.ConfigError(f"unknown defconfig '{name}'{hint} ('make help' lists them all)")


def check_assignments(kconf: kconfiglib.Kconfig, source: Path) -> None:
    """Every value the file assigns must be the value the symbol ends up with."""
    for sym in kconf.unique_defined_syms:
        if sym.user_value is None:
            continue
        wanted = kconfiglib.TRI_TO_STR[sym.user_value] if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE) else sym.user_value
        if sym.str_value == wanted:
            continue
        if kconfiglib.expr_value(sym.direct_dep) == 0:
            why = f"it depends on {kconfiglib.expr_str(sym.direct_dep)}, which is not set"
        elif sym.ranges:
            low, high, _ = sym.ranges[0]
            why = f"the value must be within {low.str_value}..{high.str_value}"
        else:
            why = f"it ended up as {sym.str_value!r}"
        raise config.ConfigError(f"{source}: CONFIG_{sym.name}={wanted} cannot be applied: {why}")


def apply_tracker(kconf: kconfiglib.Kconfig, spec: str) -> None:
    from lib.tracking import tracker_symbols  # the tracking module owns the TRACKER= vocabulary

    try:
        assignments = tracker_symbols(spec)
    except ValueError as e:
        raise config.ConfigError(f"TRACKER={spec}: {e}") from None
    for name, value in assignments.items():
        sym = kconf.syms[name]
        sym.set_value(value)
        if sym.str_value != value:
            raise config.ConfigError(f"TRACKER={spec}: CONFIG_{name} cannot be set to {value}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", default="")
    p.add_argument("--tracker", default="", help="override the trackers, e.g. wandb,trackio or none")
    p.add_argument("--list", action="store_true", help="list the defconfigs and exit")
    args = p.parse_args(argv)
    if args.list:
        for name, path in available().items():
            print(f"{name:45s} {path}")
        return 0
    name = args.name or DEFAULT
    out = os.environ.get("KCONFIG_CONFIG", ".config")
    try:
        path = find(name)
        kconf = config.kconfig()
        config.load_strict(kconf, path)
        check_assignments(kconf, path)
        if args.tracker:
            apply_tracker(kconf, args.tracker)
        values = config.values(kconf)
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    kconf.write_config(out, save_old=True)
    from lib.results import write_json  # small import, kept local to keep --list fast

    write_json(DEFCONFIG_RECORD, {"name": name, "path": str(path), "config_hash": config.config_hash(values)})
    print(f"{out}: configured from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
