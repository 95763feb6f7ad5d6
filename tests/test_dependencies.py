"""pyproject.toml declares what the code uses, no more: every dependency and extra is imported somewhere."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from conftest import REPO

CODE = ["lib", "scripts", "gpt2", "lenet5", "resnet18", "resnet50", "benchmarks"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def used_modules(dirs: list[str]) -> set[str]:
    """Top-level modules the sources import (anywhere in a file), or open with importlib.resources.files("...")."""
    out = set()
    for d in dirs:
        for path in (REPO / d).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    out |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    out.add(node.module.split(".")[0])
                elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "files"
                      and node.args and isinstance(node.args[0], ast.Constant)):
                    out.add(str(node.args[0].value).split(".")[0])
    return out


def distribution(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]


def modules_of(dist: str) -> set[str]:
    """The import names a distribution provides (its own name when it is not installed here)."""
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    found = {m for m, dists in packages_distributions().items() if any(norm(d) == norm(dist) for d in dists)}
    return found or {dist.replace("-", "_")}


@pytest.mark.parametrize("requirement", PYPROJECT["project"]["dependencies"])
def test_every_dependency_is_used_by_the_code(requirement):
    dist = distribution(requirement)
    assert modules_of(dist) & used_modules(CODE), f"{dist} is declared in pyproject.toml but nothing imports it"


@pytest.mark.parametrize("extra, dirs", [("web", ["gpt2"]), ("test", ["tests"])])
def test_every_extra_is_used_where_it_says(extra, dirs):
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        dist = distribution(requirement)
        assert modules_of(dist) & used_modules(dirs), f"extra {extra}: {dist} is not imported in {dirs}"


def test_the_web_extra_holds_datasets_and_no_package_data_is_shipped():
    assert [distribution(r) for r in PYPROJECT["project"]["optional-dependencies"]["web"]] == ["datasets"]
    assert "package-data" not in PYPROJECT["tool"]["setuptools"]
