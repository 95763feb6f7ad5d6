"""Print the make targets (from the `## target: text` comments) and the defconfigs."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.defconfig import available


def targets() -> list[tuple[str, str]]:
    out = []
    for path in [Path("Makefile"), *sorted(Path("make").glob("*.mk"))]:
        for line in path.read_text().splitlines():
            m = re.match(r"^## ([\w<>%-]+): (.*)$", line)
            if m:
                out.append(m.groups())
    return out


def main() -> None:
    print("Targets:")
    for name, text in targets():
        print(f"  {name:22s} {text}")
    print("\nVariables: PYTHON=<python> (skip .venv), V=1 (show commands), EPOCHS=N, RESULTS=<dir>, RETRY_FAILED=1, TRACKER=<list>")
    print("\nDefconfigs (make defconfig-<name>):")
    for name, path in available().items():
        print(f"  {name:40s} {path}")


if __name__ == "__main__":
    main()
