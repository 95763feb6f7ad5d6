"""What every memory-monitor backend provides, and the error that says one cannot run.

A backend reads one sample of its device on demand: a flat dict of numbers
whose keys carry their unit (`used_mib`, `power_w`, ...). `describe()` is the
device part of memory.json's header. `MEMORY_FIELD` names the field that
counts as "memory in use" for the backend's peaks and means.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import resource
import sys

MIB = 2**20

# Every field a sample may carry, with its meaning (written to memory.json's header).
FIELDS = {
    "rss_mib": "resident memory of the training process (MiB)",
    "cpu_percent": "CPU time of the training process since the previous sample (% of one core)",
    "used_mib": "device memory in use, all processes (MiB)",
    "total_mib": "device memory size (MiB)",
    "util_percent": "device compute utilisation (%)",
    "mem_util_percent": "device memory-controller utilisation (%)",
    "power_w": "device power draw (W)",
    "energy_j": "device energy since the monitor started, from the hardware counter (J)",
    "temperature_c": "device temperature (degrees C)",
    "allocated_mib": "PyTorch caching allocator: memory held by tensors (MiB)",
    "reserved_mib": "PyTorch caching allocator: memory reserved from the device (MiB)",
}


class BackendUnavailable(Exception):
    """This backend cannot run here; the message says why."""


class Backend(ABC):
    name = "base"
    MEMORY_FIELD = "rss_mib"

    @abstractmethod
    def describe(self) -> dict:
        """The device part of memory.json's header."""

    @abstractmethod
    def read(self) -> dict[str, float]:
        """One sample: field name -> number."""

    def close(self) -> None:
        pass


class DeviceBackend(Backend):
    """A GPU backend: the training process's memory plus every device reader that works here.

    Subclasses set `self.proc` (a ProcessMemory) and `self.readers` (callables
    returning partial samples) in their constructor.
    """

    def read(self) -> dict[str, float]:
        sample = self.proc.read()
        for reader in self.readers:
            sample.update(reader())
        return sample


def process_peak_rss_mib() -> float:
    """The operating system's high-water mark of this process's resident memory."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024  # macOS: bytes, Linux: KiB
