"""What one pruning decision removes: a single weight, an N:M pattern slot or a whole unit (channel, neuron, head).

`Granularity.parse("element" | "channel" | "N:M")` is the setting
(`--pruning-granularity`). `Pruner.update_masks` selects by it:

- element: `threshold.lowest_keep` over the allocation group's scores.
- N:M (`nm_keep`): weights are grouped M at a time along the input dimension
  (dim 1: a Linear's [out, in], a convolution's in-channels at each output
  channel and kernel position). In each group the M-N lowest scores, pruned
  entries first, are the candidates; the group's exact count is then taken
  among the candidates by `lowest_keep`. A group of M thus never has more than
  M-N zeros, and at level (M-N)/M every group has exactly M-N. Tensors whose
  input dimension is not a multiple of M (and 1-d tensors) stay dense.
- channel (`ChannelSelection`): units come from `lib.pruning.channels`; a
  unit's score is the sum of the element scores it covers. Within a coupling
  group units go in `lowest_keep`'s order (pruned units first, then the
  lowest score, ties by unit index); across groups, every group prunes the
  same fraction of its units (at least one kept), the fraction solved by
  bisection so that the zeros over the allocation group's tensors reach the
  level's count, within one unit.

Everything on the hot path is torch operations over whole tensors; loops run
over tensors and coupling groups, never over elements.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from lib.pruning.threshold import PRUNED_KEY, lowest_keep, order_keys

ELEMENT, CHANNEL, NM = "element", "channel", "nm"
FORMS = "element, channel, or N:M such as 2:4"
FLOAT32_MAX = torch.finfo(torch.float32).max


@dataclass(frozen=True)
class Granularity:
    kind: str  # ELEMENT | CHANNEL | NM
    n: int = 0  # N:M: weights kept in every group of M
    m: int = 0

    @classmethod
    def parse(cls, text: "str | Granularity") -> "Granularity":
        """"element", "channel" or "N:M" (0 < N < M); anything else is a ValueError listing the valid forms."""
        if isinstance(text, Granularity):
            return text
        value = str(text).strip().lower()
        if value in (ELEMENT, CHANNEL):
            return cls(value)
        match = re.fullmatch(r"(\d+):(\d+)", value)
        if match is None:
            raise ValueError(f"unknown pruning granularity {text!r}; valid: {FORMS}")
        n, m = int(match[1]), int(match[2])
        if not 0 < n < m:
            raise ValueError(f"pruning granularity {text!r}: N:M needs 0 < N < M, e.g. 2:4")
        return cls(NM, n, m)

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.kind == NM else self.kind

    @property
    def max_sparsity(self) -> float:
        """The highest level this granularity can reach: (M-N)/M for N:M, else below 1."""
        return (self.m - self.n) / self.m if self.kind == NM else 1.0


# N:M -------------------------------------------------------------------------------------------------------------


def nm_eligible(shape: Sequence[int], m: int) -> bool:
    """Whether a tensor of `shape` has an input dimension (dim 1) that groups of `m` tile."""
    return len(shape) >= 2 and shape[1] % m == 0


def _grouped(t: torch.Tensor, m: int) -> torch.Tensor:
    """`t` with dim 1 moved last and split into groups of `m`: shape (..., in / m, m)."""
    moved = t.movedim(1, -1)
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)


def _ungrouped(g: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of `_grouped` for a tensor of `shape`."""
    moved_shape = (shape[0], *shape[2:], shape[1])
    return g.reshape(moved_shape).movedim(-1, 1)


def nm_candidates(score: torch.Tensor, kept: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool tensor of `score`'s shape: the M-N lowest of every group of M along dim 1, pruned entries (False in `kept`) first.

    Ties go to the lower position in the group (a stable sort of `order_keys`
    along the last dimension of the (..., M) view, so -0.0 equals 0.0 as in
    `lowest_keep`).
    """
    keys = order_keys(score).view(score.shape).masked_fill_(kept.view(score.shape).logical_not(), PRUNED_KEY)
    grouped = _grouped(keys, m)
    lowest = torch.sort(grouped, dim=-1, stable=True).indices[..., : m - n]
    cand = torch.zeros(grouped.shape, dtype=torch.bool, device=score.device).scatter_(-1, lowest, True)
    return _ungrouped(cand, score.shape)


def nm_keep(
    scores: Sequence[torch.Tensor], kept: Sequence[torch.Tensor], n_prune: int, n: int, m: int
) -> list[torch.Tensor]:
    """Flat keep-masks pruning exactly `n_prune` entries of the group, only N:M candidates (see the module docstring).

    Non-candidates score +inf and candidates at most the largest float32, so
    the count (at most (M-N)/M of the entries) is always taken among
    candidates; a NaN score stays NaN and `lowest_keep` refuses it.
    """
    inf = torch.tensor(float("inf"), device=scores[0].device)
    masked = []
    for s, k in zip(scores, kept):
        s = s.detach().float()
        cand = nm_candidates(s, k, n, m)
        masked.append(torch.where(cand, s.clamp(max=FLOAT32_MAX), torch.where(s.isnan(), s, inf)))
    return lowest_keep(masked, n_prune, kept)


# Channel ---------------------------------------------------------------------------------------------------------


def unit_order_ranks(scores: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Each unit's position in `lowest_keep`'s pruning order (pruned units first, lowest score, ties by index).

    The k units of rank < k are exactly the ones `lowest_keep([scores], k, [kept])` prunes.
    """
    keys = order_keys(scores).masked_fill_(kept.logical_not(), PRUNED_KEY)
    order = torch.sort(keys, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel(), device=order.device)
    return ranks


@dataclass
class UnitPlan:
    """One allocation group at channel granularity: the coupling groups it picks units in, the tensors it counts zeros over."""

    groups: list[int]  # indices into the coupling groups
    params: list[int]  # indices into the pruner's params


class ChannelSelection:
    """Per-group unit counts that reach each plan's zero count, every group of a plan at the same unit fraction.

    `groups`: the coupling groups (`channels.ChannelGroup`: `units` and
    `slices`, each slice a parameter index, a dimension and the unit owning
    each position along it); `shapes`: the pruner's tensors' shapes. A mask is
    the product of per-dimension keep vectors, so the entries a set of unit
    keeps leaves are counted from the vectors' sums, without building masks.
    A plan's candidate steps are the units of its groups in order of the
    fraction they bring their group to ((j - 1/2) / units for the j-th unit,
    at most units - 1 of them), ties by group order: a prefix of that
    sequence is "the same fraction f in every group" with one unit added at
    a time, so the zeros grow monotonically along it and a bisection finds
    the prefix nearest the count.
    """

    def __init__(self, groups: Sequence, shapes: Sequence[Sequence[int]], plans: Sequence[UnitPlan], device=None):
        self.groups = list(groups)
        self.units = [int(g.units) for g in self.groups]
        self.shapes = [tuple(s) for s in shapes]
        self.plans = list(plans)
        self.device = device
        self.steps = []  # per plan: the coupling group of each candidate step, in order
        for plan in self.plans:
            keys, owner = [], []
            for g in plan.groups:
                u = self.units[g]
                keys.append((torch.arange(1, u, dtype=torch.float64) - 0.5) / u)
                owner.append(torch.full((u - 1,), g, dtype=torch.long))
            if keys:
                keys, owner = torch.cat(keys), torch.cat(owner)
                self.steps.append(owner[torch.sort(keys, stable=True).indices].to(device))
            else:
                self.steps.append(torch.zeros(0, dtype=torch.long, device=device))

    def zeros(self, keeps: Sequence[torch.Tensor], params: Sequence[int]) -> int:
        """Entries of the tensors `params` that per-group unit `keeps` mask (as `channels.unit_masks` would)."""
        if not params:
            return 0
        wanted = set(params)
        vectors: dict[tuple[int, int], torch.Tensor] = {}
        for g, keep in zip(self.groups, keeps):
            extended = torch.cat([keep.reshape(-1), keep.new_ones(1)])  # owner -1 (no unit) reads the trailing True
            for s in g.slices:
                if s.param in wanted:
                    v = extended[s.owner.to(extended.device)]
                    key = (s.param, s.dim)
                    vectors[key] = vectors[key] & v if key in vectors else v
        sums: dict[int, list[torch.Tensor]] = {}
        for (p, d), v in vectors.items():
            sums.setdefault(p, []).append(v.sum())
        total = sum(math.prod(self.shapes[p]) for p in params)
        kept = [torch.stack(s).prod() * (math.prod(self.shapes[p]) // math.prod(self.shapes[p][d] for (q, d) in vectors if q == p))
                for p, s in sums.items()]
        untouched = sum(math.prod(self.shapes[p]) for p in params if p not in sums)
        return total - untouched - (int(torch.stack(kept).sum()) if kept else 0)

    def _keeps(self, ranks: Sequence[torch.Tensor], counts: torch.Tensor) -> list[torch.Tensor]:
        return [r >= c for r, c in zip(ranks, counts)]

    def capacity(self, plan: int) -> int:
        """Zeros over the plan's tensors with every coupling group at its last unit (the most any level can get)."""
        return self.zeros([torch.arange(u, device=self.device) == 0 for u in self.units], self.plans[plan].params)

    def select(
        self, unit_scores: Sequence[torch.Tensor], unit_kept: Sequence[torch.Tensor], need: Sequence[int]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-group unit keep vectors and pruned-unit counts; plan p gets zeros nearest `need[p]` (masks only grow).

        Plans are solved one after another with the others' counts fixed, in
        sweeps until no count changes (one sweep for one plan): zeros a plan
        causes in another plan's tensors (a layer's inputs) are counted there.
        """
        for s in unit_scores:
            if torch.isnan(s).any():
                raise ValueError("pruning scores contain NaN: the weights, gradients or optimizer moments have diverged")
        ranks = [unit_order_ranks(s, k) for s, k in zip(unit_scores, unit_kept)]
        device = ranks[0].device if ranks else None
        floor = torch.stack([k.numel() - k.count_nonzero() for k in unit_kept]).to(torch.long) if ranks else None
        counts = floor.clone()
        for _ in range(len(self.plans) + 1 if len(self.plans) > 1 else 1):
            changed = False
            for p, plan in enumerate(self.plans):
                if not plan.groups:
                    continue
                steps = self.steps[p]

                def at(length: int) -> tuple[torch.Tensor, int]:
                    c = counts.clone()
                    taken = torch.bincount(steps[:length], minlength=len(self.units))
                    idx = torch.tensor(plan.groups, device=device)
                    c[idx] = torch.maximum(floor[idx], taken[idx])
                    return c, self.zeros(self._keeps(ranks, c), plan.params)

                lo, hi = 0, steps.numel()  # smallest prefix whose zeros reach need[p], or all of them
                while lo < hi:
                    mid = (lo + hi) // 2
                    if at(mid)[1] >= need[p]:
                        hi = mid
                    else:
                        lo = mid + 1
                best, zeros = at(lo)
                if lo > 0 and zeros > need[p]:
                    below, zeros_below = at(lo - 1)
                    if need[p] - zeros_below < zeros - need[p]:
                        best = below
                if not torch.equal(best, counts):
                    counts, changed = best, True
            if not changed:
                break
        return self._keeps(ranks, counts), counts
