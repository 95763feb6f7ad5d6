"""lib.pruning.budget: explicit training-budget extensions and what run.json records."""

from __future__ import annotations

import pytest

from lib.pruning.budget import budget_record, extend


def test_extensions_of_the_reference_variants():
    assert extend(10_000, 21) == 12_100  # bitter2
    assert extend(10_000, 30) == 13_000  # bitter3 / bitter4
    assert extend(12, 30) == 16  # 15.6 epochs -> 16
    assert extend(12, 0) == 12 and extend(1, 1) == 1


def test_the_record_says_what_was_asked_and_what_was_trained():
    assert budget_record(12, 21, "epochs") == {"extension_percent": 21, "unit": "epochs", "base": 12, "trained": 15}


def test_negative_extension_is_refused():
    with pytest.raises(ValueError, match=">= 0"):
        extend(10, -5)
