"""Magnitude pruning: importance is |w|, allocated globally or layer by layer (`scope`)."""

from __future__ import annotations

from lib.pruning.base import Pruner


class MagnitudePruner(Pruner):
    name = "magnitude"

    def score(self, index):
        return self.params[index][1].detach().abs()
