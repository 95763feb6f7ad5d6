"""CPU backend: the training process's resident memory and CPU use, through psutil.

This is what runs when there is no GPU (or the GPU's library is missing);
GPU backends also report the process's resident memory through it.
"""

from __future__ import annotations

import os
import platform

from lib.monitor.base import MIB, Backend, BackendUnavailable


class ProcessMemory:
    """Resident memory (and CPU %) of one process."""

    def __init__(self, pid: int | None = None):
        try:
            import psutil
        except ImportError as e:  # psutil is a dependency; say so if it is gone
            raise BackendUnavailable(f"psutil is not importable ({e}); install it with pip install psutil") from None
        self.process = psutil.Process(pid or os.getpid())
        self.process.cpu_percent(None)  # the first call only starts the interval

    def read(self) -> dict[str, float]:
        with self.process.oneshot():
            return {
                "rss_mib": self.process.memory_info().rss / MIB,
                "cpu_percent": self.process.cpu_percent(None),
            }


class CPUBackend(Backend):
    name = "cpu"
    MEMORY_FIELD = "rss_mib"

    def __init__(self, pid: int | None = None):
        self.proc = ProcessMemory(pid)

    def describe(self) -> dict:
        import psutil

        return {
            "type": "cpu",
            "name": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "total_mib": psutil.virtual_memory().total / MIB,
        }

    def read(self) -> dict[str, float]:
        return self.proc.read()
