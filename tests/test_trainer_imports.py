"""The trainers parse and check their flags before importing what only training needs (torchvision, scikit-learn).

torch itself is still imported by the parse: the pruning family's flags and
checks read the state-pruning variant registry, which lives with the
torch pruners (docs/harness.md, "Flags before heavy imports").
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

PARSE = """
import sys
from {model} import train
try:
    train.parse_args(["--bad-flag"])
except SystemExit as e:
    assert e.code == 2, e.code
train.parse_args(["--dry-run"])
print(sorted(m for m in ("torchvision", "sklearn") if m in sys.modules))
"""


@pytest.mark.parametrize("model", ["lenet5", "resnet18", "resnet50", "gpt2"])
def test_parsing_a_trainers_flags_imports_no_training_library(model):
    out = subprocess.run([sys.executable, "-c", PARSE.format(model=model)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert "unrecognized arguments: --bad-flag" in out.stderr
