"""Memory monitor: which backend samples this run, and the sampler it drives.

`open_backend(choice, device)` picks the backend: "auto" uses the training
GPU's vendor library (NVML on NVIDIA, amdsmi or rocm-smi on AMD) and the
process's resident memory on CPU; a named backend that cannot run says why
once per process and falls back to the CPU backend. No GPU is never an error.
`for_run(args, device, run_dir)` starts a `Monitor` for a trainer's run;
"off" samples nothing and writes no memory.json, but the peak memory for
metrics.json is still measured.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from lib.monitor.allocator import AllocatorCounters
from lib.monitor.amd import AmdSmiBackend, RocmSmiBackend
from lib.monitor.base import FIELDS, Backend, BackendUnavailable, process_peak_rss_mib
from lib.monitor.cpu import CPUBackend
from lib.monitor.nvidia import NvidiaBackend
from lib.monitor.sampler import SCHEMA, Monitor
from lib.monitor.schema import validate

CHOICES = ("auto", "nvidia", "amd", "cpu", "off")
FILENAME = "memory.json"

__all__ = [
    "CHOICES", "FIELDS", "SCHEMA", "AllocatorCounters", "Backend", "BackendUnavailable", "CPUBackend",
    "Monitor", "NvidiaBackend", "AmdSmiBackend", "RocmSmiBackend", "open_backend", "for_run",
    "process_peak_rss_mib", "validate",
]

_said: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        print(message, file=sys.stderr, flush=True)


def _gpu_identity(device: torch.device) -> dict:
    """Index, NVML UUID and PCI address of the GPU torch trains on (what is known)."""
    out = {"index": 0, "uuid": None, "bdf": None}
    if device.type != "cuda" or not torch.cuda.is_available():
        return out
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", os.environ.get("HIP_VISIBLE_DEVICES", ""))
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    out["index"] = int(ids[index]) if index < len(ids) and ids[index].isdigit() else index
    try:
        props = torch.cuda.get_device_properties(index)
        uuid = str(props.uuid)
        out["uuid"] = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
        out["bdf"] = f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    except Exception:  # older torch builds lack these properties; the index still works
        pass
    return out


def _vendor_chain(vendor: str, gpu: dict) -> list:
    if vendor == "nvidia":
        return [lambda: NvidiaBackend(gpu["index"], uuid=gpu["uuid"])]
    return [lambda: AmdSmiBackend(gpu["index"], bdf=gpu["bdf"]), lambda: RocmSmiBackend(gpu["index"])]


def open_backend(choice: str, device: torch.device) -> tuple[Backend | None, list[str]]:
    """The backend for `choice` on `device`, and the fallback messages on the way."""
    if choice not in CHOICES:
        raise ValueError(f"--monitor {choice!r} is unknown; valid: {', '.join(CHOICES)}")
    if choice == "off":
        return None, []
    if choice == "auto":
        if device.type != "cuda":
            return CPUBackend(), []
        vendor = "amd" if getattr(torch.version, "hip", None) else "nvidia"
    else:
        vendor = choice
    warnings = []
    if vendor != "cpu":
        reasons = []
        for make in _vendor_chain(vendor, _gpu_identity(device)):
            try:
                return make(), warnings
            except BackendUnavailable as e:
                reasons.append(str(e))
        message = f"monitor: {vendor} backend unavailable ({'; '.join(reasons)}); recording process memory instead"
        _say_once(message)
        warnings.append(message)
    return CPUBackend(), warnings


def _keep_previous(path: Path) -> None:
    """A previous attempt's memory.json becomes memory.json.1 (.2, ...), never lost."""
    if path.exists():
        n = 1
        while path.with_name(f"{path.name}.{n}").exists():
            n += 1
        path.rename(path.with_name(f"{path.name}.{n}"))


def for_run(args, device: torch.device, run_dir, run_id: str | None = None) -> Monitor:
    """Start the monitor a trainer's flags ask for (--monitor, --monitor-interval)."""
    choice = getattr(args, "monitor", "auto")
    interval = float(getattr(args, "monitor_interval", 1.0))
    backend, warnings = open_backend(choice, device)
    allocator = AllocatorCounters(device) if device.type == "cuda" else None
    if backend is not None:
        _keep_previous(Path(run_dir) / FILENAME)
    mon = Monitor(backend, interval, allocator=allocator, run_id=run_id or Path(run_dir).name, warnings=warnings)
    return mon.start()
