"""Write build/config.json from .config: one typed value per Kconfig symbol.

usage: python -m scripts.genconfig [--out build/config.json]

Reads $KCONFIG_CONFIG (default .config) through kconfiglib. The runner does
the same on every `make`; this target exists to look at what it sees.
"""

from __future__ import annotations

import argparse
import os
import sys

from lib import config
from lib.results import write_json


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="build/config.json")
    args = p.parse_args(argv)
    try:
        values = config.load(os.environ.get("KCONFIG_CONFIG", ".config"))
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_json(args.out, values)
    print(f"{args.out}: {len(values)} symbols")
    return 0


if __name__ == "__main__":
    sys.exit(main())
