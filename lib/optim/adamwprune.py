"""AdamWPrune: an Adam-family optimizer whose moments drive state-based pruning.

AdamWPrune takes its update from a selectable base (Adam, AdamW, AdamWAdv or
AdamWSpam): each `AdamWPrune*` class below *is* its base class plus the hook
the state pruner reads, so with pruning off it updates the weights exactly as
the base does, bit for bit, and the base really decides the update.

The hook (the contract with `lib/pruning/state.py`): for every parameter p
the optimizer has stepped, `optimizer.state[p]["exp_avg"]` and
`optimizer.state[p]["exp_avg_sq"]` hold the first and second moments, with p's
shape; `moments(p)` returns that pair (zeros before p's first step, which is
what the moments are then). The pruner zeroes pruned entries of the moments in
place (`Pruner.apply_masks`); AdamWSpam's resets also zero them in place, so a
reference to a moment tensor stays valid for the whole run.
"""

from __future__ import annotations

import torch

from lib.optim.adamwadv import AdamWAdv
from lib.optim.adamwspam import AdamWSpam


class AdamWPrune:
    """Mixin: the state-pruning hook. Concrete classes put it before their base."""

    base: str = ""

    def moments(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.state.get(p)
        if not state or "exp_avg" not in state:
            return torch.zeros_like(p), torch.zeros_like(p)
        return state["exp_avg"], state["exp_avg_sq"]


class AdamWPruneAdam(AdamWPrune, torch.optim.Adam):
    base = "adam"


class AdamWPruneAdamW(AdamWPrune, torch.optim.AdamW):
    base = "adamw"


class AdamWPruneAdamWAdv(AdamWPrune, AdamWAdv):
    base = "adamwadv"


class AdamWPruneAdamWSpam(AdamWPrune, AdamWSpam):
    base = "adamwspam"


CLASSES = {cls.base: cls for cls in (AdamWPruneAdam, AdamWPruneAdamW, AdamWPruneAdamWAdv, AdamWPruneAdamWSpam)}
