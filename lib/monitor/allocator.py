"""PyTorch's CUDA caching-allocator counters, overall and per phase.

Works the same on NVIDIA and on AMD (ROCm builds of PyTorch expose the same
`torch.cuda` counters). `mark(phase)` closes the previous phase: it reads the
allocator's high-water marks, keeps the largest per phase and overall, then
resets them so the next phase starts from the memory it really holds.
"""

from __future__ import annotations

import torch

from lib.monitor.base import MIB


class AllocatorCounters:
    def __init__(self, device: torch.device, cuda=None):
        self.cuda = cuda or torch.cuda
        self.device = device
        self.phase: str | None = None
        self.phases: dict[str, dict] = {}
        self.peak_allocated_mib = 0.0
        self.peak_reserved_mib = 0.0  # the first phase's reading includes everything since the process started

    def read(self) -> dict[str, float]:
        """Current allocator use (cheap: reads host-side counters)."""
        return {
            "allocated_mib": self.cuda.memory_allocated(self.device) / MIB,
            "reserved_mib": self.cuda.memory_reserved(self.device) / MIB,
        }

    def _close_phase(self) -> None:
        allocated = self.cuda.max_memory_allocated(self.device) / MIB
        reserved = self.cuda.max_memory_reserved(self.device) / MIB
        self.peak_allocated_mib = max(self.peak_allocated_mib, allocated)
        self.peak_reserved_mib = max(self.peak_reserved_mib, reserved)
        if self.phase is not None:
            p = self.phases.setdefault(self.phase, {"max_allocated_mib": 0.0, "max_reserved_mib": 0.0})
            p["max_allocated_mib"] = max(p["max_allocated_mib"], allocated)
            p["max_reserved_mib"] = max(p["max_reserved_mib"], reserved)

    def mark(self, phase: str | None) -> None:
        """End the current phase and start `phase` (None: between phases)."""
        self._close_phase()
        self.cuda.reset_peak_memory_stats(self.device)
        self.phase = phase

    def finish(self) -> None:
        self._close_phase()
        self.phase = None
