"""Magnitude pruning: importance is |w|, over all layers at once or layer by layer.

The allocation (`scope`) decides: "global" prunes the smallest |w| of the
whole model (one exact threshold), "layer" prunes every layer to the
scheduled level.
"""

from __future__ import annotations

from lib.pruning.base import Pruner


class MagnitudePruner(Pruner):
    name = "magnitude"

    def score(self, index):
        return self.params[index][1].detach().abs()
