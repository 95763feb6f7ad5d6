"""Magnitude pruning: importance is |w|, over all layers at once or layer by layer.

The allocation (`scope`) decides: "global" prunes the smallest |w| of the
whole model (one exact threshold), "layer" prunes every layer to the
scheduled level.
"""

from __future__ import annotations

from lib.pruning.base import Pruner
from lib.pruning.state import abs_float


class MagnitudePruner(Pruner):
    name = "magnitude"
    nonnegative_scores = True  # |w|, a new tensor each call

    def score(self, index):
        return self.params[index][1].detach().abs()

    def score_into(self, index, out):
        w = self.params[index][1]
        return abs_float(w, out.view(w.shape)).view(-1)
