"""docs/reproduce.md: every defconfig it names loads strictly and dry-runs, and every run id it names is a run of it.

The defconfig names and run ids are read out of the page, so the page and the defconfigs cannot drift apart.
"""

from __future__ import annotations

import importlib
import re

import pytest

from lib import config, matrix
from scripts import defconfig
from scripts import matrix as runner

from conftest import REPO

PAGE = REPO / "docs" / "reproduce.md"
# The reference documents' result tables (issue 17), each reproduced by one defconfig.
TABLES = {
    "resnet18-comprehensive-pruning-compare",
    "resnet18-state-pruning-compare",
    "resnet50-cifar100-compare",
    "gpt2-bitter0-4",
    "gpt2-state-vs-movement",
    "lenet5-mnist-compare",
}


def sections() -> list[tuple[str, list[str], set[str]]]:
    """(heading, defconfig names from 'make defconfig-<name>', run ids in backticks) of each '## ' section."""
    models = "|".join(matrix.MODELS.values())
    out = []
    for block in re.split(r"^## ", PAGE.read_text(), flags=re.M)[1:]:
        names = re.findall(r"make defconfig-([\w.-]+)", block)
        ids = set(re.findall(rf"`((?:{models})_[\w-]+)`", block))
        out.append((block.splitlines()[0], names, ids))
    return out


def test_each_section_names_one_defconfig_and_every_table_has_one():
    found = sections()
    assert found, f"{PAGE} has no '## ' section"
    for heading, names, ids in found:
        assert len(names) == 1, f"section '{heading}' names {names or 'no'} defconfig(s); one 'make defconfig-<name>' each"
        assert ids, f"section '{heading}' names no run id"
    assert {names[0] for _, names, _ in found} == TABLES


@pytest.mark.parametrize("heading, name, ids", [pytest.param(h, n[0], i, id=n[0]) for h, n, i in sections() if n])
def test_the_defconfig_loads_strictly_and_dry_runs(heading, name, ids, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    path = defconfig.available().get(name)
    assert path, f"docs/reproduce.md, section '{heading}': no defconfig named {name}"
    kconf = config.kconfig()
    config.load_strict(kconf, path)
    defconfig.check_assignments(kconf, path)  # what 'make defconfig-<name>' refuses
    dot_config = tmp_path / ".config"
    kconf.write_config(str(dot_config))
    monkeypatch.setenv("KCONFIG_CONFIG", str(dot_config))

    assert runner.main(["dry-run"]) == 0
    listed = capsys.readouterr().out
    values = config.load(dot_config)
    specs = matrix.expand(values)
    assert f"{len(specs)} runs" in listed
    planned = {matrix.run_id(s) for s in specs}
    assert ids <= planned, f"section '{heading}' names run ids that {name} does not run: {sorted(ids - planned)}"
    for spec in specs:
        argv = matrix.argv(spec, values, str(tmp_path / matrix.run_id(spec)))
        args = argv[argv.index(f"{spec.model}.train") + 1 :]
        if args[:1] == ["--"]:
            args = args[1:]
        monkeypatch.setenv("WORLD_SIZE", str(matrix.processes(values)))  # GPT-2 checks the accumulation splits
        parsed = importlib.import_module(f"{spec.model}.train").parse_args(args)
        assert (parsed.optimizer, parsed.pruning_method) == (spec.optimizer, spec.pruning)
        assert spec.base is None or parsed.adamwprune_base == spec.base
