"""Layer-adaptive sparsity (bitter4): prune deeper layers harder than early ones.

Layer l of L (registration order, the depth proxy) gets `min(cap, target *
scale_l)`, scale_l linear from `low` to `high` (0.7x..1.3x, cap 0.95; one
layer: 1.0). With `rescale` one factor on the scales makes the
size-weighted mean hit the target and the per-layer counts sum to
round(target * N); otherwise the levels stand and the achieved sparsity is
reported. Impossible targets are refused before training:
`check_target` without the model (at or above the cap, when rescaling),
`LayerAdaptive.check` with the layer sizes. See docs/pruning.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


CAP = 0.95  # the default per-layer cap


def check_target(target: float, cap: float = CAP, rescale: bool = True) -> None:
    """Refuse, whatever the model, a target a rescaled plan cannot reach: at or above the cap (any below 1 without `rescale`)."""
    if rescale and target >= cap:
        raise ValueError(
            f"target sparsity {target} is at or above the layer-adaptive (bitter4) per-layer cap {cap}: "
            f"no depth-scaled plan reaches it; valid: a target below {cap}, or layer-adaptive rescaling off "
            "(the depth-scaled levels kept, clipped at the cap)"
        )


@dataclass(frozen=True)
class LayerAdaptive:
    low: float = 0.7
    high: float = 1.3
    cap: float = CAP
    rescale: bool = True

    def __post_init__(self):
        if not 0 < self.low <= self.high:
            raise ValueError(f"layer-adaptive scales need 0 < low ({self.low}) <= high ({self.high})")
        if not 0 < self.cap < 1:
            raise ValueError(f"layer-adaptive cap must be in (0, 1), got {self.cap}")

    def check(self, sizes: list[int], target: float) -> None:
        """Refuse `target` when the plan for these layer sizes cannot reach it (a ValueError naming the cap)."""
        check_target(target, self.cap, self.rescale)
        self.counts(sizes, target)

    def scales(self, n_layers: int) -> list[float]:
        if n_layers == 1:
            return [1.0]
        return [self.low + (self.high - self.low) * i / (n_layers - 1) for i in range(n_layers)]

    def levels(self, sizes: list[int], target: float) -> list[float]:
        """Per-layer sparsity for a global target (rescaled when `rescale`)."""
        scales = self.scales(len(sizes))
        if not self.rescale or target == 0:
            return [min(self.cap, target * a) for a in scales]
        if target > self.cap:
            raise ValueError(
                f"target sparsity {target} is above the layer-adaptive cap {self.cap}: no per-layer plan reaches it"
            )
        u = _solve_level_factor(sizes, scales, target, self.cap)
        return [min(self.cap, u * a) for a in scales]

    def counts(self, sizes: list[int], target: float) -> list[int]:
        """Entries to prune per layer; they sum to round(target * N) when `rescale`."""
        levels = self.levels(sizes, target)
        if not self.rescale:
            return [min(n, round(n * s)) for n, s in zip(sizes, levels)]
        want = [n * s for n, s in zip(sizes, levels)]
        limit = [math.floor(n * self.cap + 1e-9) for n in sizes]
        counts = [min(math.floor(w + 1e-9), c) for w, c in zip(want, limit)]
        short = round(target * sum(sizes)) - sum(counts)
        # Largest remainder first, ties by layer order; never past a layer's cap.
        order = sorted(range(len(sizes)), key=lambda i: (-(want[i] - counts[i]), i))
        while short > 0:
            grown = False
            for i in order:
                if short and counts[i] < limit[i]:
                    counts[i] += 1
                    short -= 1
                    grown = True
            if not grown:
                raise ValueError(
                    f"target sparsity {target} cannot be met under the layer-adaptive per-layer cap {self.cap}: "
                    f"{len(sizes)} layers of {sum(sizes)} weights can lose at most {sum(limit)}; "
                    f"valid: a target of at most {sum(limit) / sum(sizes):.6f}"
                )
        for i in reversed(order):  # float rounding can overshoot by an entry
            while short < 0 and counts[i] > 0:
                counts[i] -= 1
                short += 1
        return counts

    def achieved(self, sizes: list[int], target: float) -> float:
        """Global sparsity the plan implements for `target`."""
        return sum(self.counts(sizes, target)) / max(1, sum(sizes))


def _solve_level_factor(sizes: list[int], scales: list[float], target: float, cap: float) -> float:
    """u with sum_l n_l * min(cap, u * a_l) == target * N.

    The left side is piecewise linear and non-decreasing in u; try each count
    j of saturated layers (largest scales saturate first) and keep the piece
    whose u is consistent with it.
    """
    order = sorted(range(len(sizes)), key=lambda i: -scales[i])
    total = target * sum(sizes)
    saturated = 0.0
    for j in range(len(order) + 1):
        rest = sum(sizes[i] * scales[i] for i in order[j:])
        if rest == 0:
            break
        u = (total - cap * saturated) / rest
        sat_ok = j == 0 or u * scales[order[j - 1]] >= cap - 1e-12
        free_ok = u * scales[order[j]] <= cap + 1e-12
        if sat_ok and free_ok:
            return u
        saturated += sizes[order[j]]
    return cap / min(scales)  # every layer at the cap (target == cap)
