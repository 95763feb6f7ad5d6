"""Memory monitor: which backend samples this run, and the sampler it drives.

`open_backend(choice, device)` picks the backend: "auto" uses the training
GPU's vendor library (NVML on NVIDIA, amdsmi or rocm-smi on AMD) and the
process's resident memory on CPU; a named backend that cannot run says why
once per process and falls back to the CPU backend. No GPU is never an error.
`for_run(args, device, run_dir)` starts a `Monitor` for a trainer's run;
"off" samples nothing and writes no memory.json, but the peak memory for
metrics.json is still measured. The family's flags (`add_arguments`: choice
MONITOR -> --monitor, MONITOR_INTERVAL -> --monitor-interval, defaults as in
lib/Kconfig.monitor), their `check` and `MonitorSettings` live here.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from lib.monitor.allocator import AllocatorCounters
from lib.monitor.amd import AmdSmiBackend, RocmSmiBackend
from lib.monitor.base import FIELDS, Backend, BackendUnavailable, process_peak_rss_mib
from lib.monitor.cpu import CPUBackend
from lib.monitor.nvidia import NvidiaBackend
from lib.monitor.sampler import SCHEMA, Monitor
from lib.monitor.schema import validate
from lib.settings import Settings

CHOICES = ("auto", "nvidia", "amd", "cpu", "off")
FILENAME = "memory.json"

__all__ = [
    "CHOICES", "FIELDS", "SCHEMA", "AllocatorCounters", "Backend", "BackendUnavailable", "CPUBackend",
    "Monitor", "MonitorSettings", "NvidiaBackend", "AmdSmiBackend", "RocmSmiBackend", "add_arguments", "check",
    "open_backend", "for_run", "process_peak_rss_mib", "validate",
]


def add_arguments(parser) -> None:
    g = parser.add_argument_group("memory monitor (lib/Kconfig.monitor)")
    g.add_argument("--monitor", default="auto", choices=CHOICES,
                   help="memory monitor backend (memory.json); a backend that cannot run falls back to process memory")
    g.add_argument("--monitor-interval", type=float, default=1.0, help="seconds between memory samples")


def check(p, args) -> None:
    if not args.monitor_interval > 0:
        p.error(f"--monitor-interval must be > 0 seconds, got {args.monitor_interval}")


@dataclass(frozen=True)
class MonitorSettings(Settings):
    monitor: str
    monitor_interval: float

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
    s = MonitorSettings.from_args(args)
    backend, warnings = open_backend(s.monitor, device)
    allocator = AllocatorCounters(device) if device.type == "cuda" else None
    if backend is not None:
        _keep_previous(Path(run_dir) / FILENAME)
    mon = Monitor(backend, float(s.monitor_interval), allocator=allocator, run_id=run_id or Path(run_dir).name, warnings=warnings)
    return mon.start()
