"""Global unstructured magnitude pruning: importance is |w|."""

from __future__ import annotations

from lib.pruning.base import Pruner


class MagnitudePruner(Pruner):
    name = "magnitude"

    def scores(self):
        return [p.detach().abs() for _, p in self.params]
