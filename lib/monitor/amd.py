"""AMD backends: amdsmi (ROCm 6+), else the `rocm-smi` command's JSON output.

Both report device memory in use, utilisation, power and temperature; amdsmi
also reads the energy accumulator. The GPU is found by its PCI address
(`bdf`, as `torch.cuda.get_device_properties` reports it) when one is given,
otherwise by position. A metric the GPU does not report is left out.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

from lib.monitor.base import MIB, Backend, BackendUnavailable, DeviceBackend
from lib.monitor.cpu import ProcessMemory


def _number(value) -> float | None:
    """amdsmi reports 'N/A' (or a dict with a value) where a number is missing."""
    if isinstance(value, dict):
        value = value.get("value")
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class AmdSmiBackend(DeviceBackend):
    name = "amd"
    MEMORY_FIELD = "used_mib"

    def __init__(self, index: int = 0, bdf: str | None = None, amdsmi=None):
        if amdsmi is None:
            try:
                import amdsmi
            except Exception as e:  # ImportError, or the library failing to load
                raise BackendUnavailable(f"amdsmi is not importable ({e}); it ships with ROCm") from None
        self.smi = amdsmi
        try:
            self.smi.amdsmi_init()
            handles = self.smi.amdsmi_get_processor_handles()
        except Exception as e:
            raise BackendUnavailable(f"amdsmi could not start ({e})") from None
        self.handle = None
        if bdf:
            for h in handles:
                try:
                    if self.smi.amdsmi_get_gpu_device_bdf(h).lower() == bdf.lower():
                        self.handle = h
                        break
                except Exception:
                    continue
        if self.handle is None:
            if not 0 <= index < len(handles):
                self.close()
                raise BackendUnavailable(f"amdsmi sees {len(handles)} GPU(s), none at {bdf or index}")
            self.handle = handles[index]
        self.index, self.bdf = index, bdf
        self.proc = ProcessMemory()
        self.energy_start = None
        self.readers = []
        for reader in (self._memory, self._activity, self._power, self._energy, self._temperature):
            try:
                if reader():
                    self.readers.append(reader)
            except Exception:
                continue
        if self._memory not in self.readers:
            self.close()
            raise BackendUnavailable("amdsmi cannot read this GPU's memory")

    def _memory(self) -> dict:
        usage = self.smi.amdsmi_get_gpu_vram_usage(self.handle)  # MB
        used, total = _number(usage.get("vram_used")), _number(usage.get("vram_total"))
        return {} if used is None else {"used_mib": used, "total_mib": total}

    def _activity(self) -> dict:
        act = self.smi.amdsmi_get_gpu_activity(self.handle)
        out = {"util_percent": _number(act.get("gfx_activity")), "mem_util_percent": _number(act.get("umc_activity"))}
        return {k: v for k, v in out.items() if v is not None}

    def _power(self) -> dict:
        info = self.smi.amdsmi_get_power_info(self.handle)
        for key in ("current_socket_power", "average_socket_power", "socket_power"):
            watts = _number(info.get(key))
            if watts is not None and watts > 0:
                return {"power_w": watts}
        return {}

    def _energy(self) -> dict:
        e = self.smi.amdsmi_get_energy_count(self.handle)
        counter = _number(e.get("energy_accumulator", e.get("power")))
        resolution = _number(e.get("counter_resolution"))
        if counter is None or resolution is None:
            return {}
        joules = counter * resolution / 1e6  # the counter counts units of `resolution` microjoules
        if self.energy_start is None:
            self.energy_start = joules
        return {"energy_j": joules - self.energy_start}

    def _temperature(self) -> dict:
        t = self.smi.AmdSmiTemperatureType
        for sensor in (t.EDGE, t.HOTSPOT):
            try:
                c = _number(self.smi.amdsmi_get_temp_metric(self.handle, sensor, self.smi.AmdSmiTemperatureMetric.CURRENT))
            except Exception:
                continue
            if c is not None:
                return {"temperature_c": c}
        return {}

    def describe(self) -> dict:
        out = {"type": "cuda", "vendor": "amd", "index": self.index, "bdf": self.bdf}
        try:
            info = self.smi.amdsmi_get_gpu_asic_info(self.handle)
            out["name"] = info.get("market_name")
        except Exception:
            out["name"] = None
        try:
            out["total_mib"] = self._memory().get("total_mib")
        except Exception:
            out["total_mib"] = None
        return out

    def close(self) -> None:
        try:
            self.smi.amdsmi_shut_down()
        except Exception:
            pass


# rocm-smi's JSON keys differ between ROCm releases; match them by pattern.
ROCM_SMI_KEYS = [
    ("used_mib", re.compile(r"^VRAM Total Used Memory \(B\)$"), 1 / MIB),
    ("total_mib", re.compile(r"^VRAM Total Memory \(B\)$"), 1 / MIB),
    ("util_percent", re.compile(r"^GPU use \(%\)$"), 1.0),
    ("mem_util_percent", re.compile(r"^GPU [Mm]emory [Aa]llocated \(VRAM%\)$|^GPU memory use \(%\)$"), 1.0),
    ("power_w", re.compile(r"Graphics Package Power \(W\)$|^Current Socket Graphics Package Power \(W\)$"), 1.0),
    ("temperature_c", re.compile(r"^Temperature \(Sensor (edge|junction)\) \(C\)$"), 1.0),
]
ROCM_SMI_ARGS = ["--showmeminfo", "vram", "--showuse", "--showmemuse", "--showpower", "--showtemp", "--json"]


def parse_rocm_smi(text: str, card: str) -> dict[str, float]:
    """One card's sample from `rocm-smi ... --json` output."""
    data = json.loads(text).get(card)
    if not isinstance(data, dict):
        return {}
    out = {}
    for field, pattern, scale in ROCM_SMI_KEYS:
        for key, value in data.items():
            number = _number(value)
            if field not in out and pattern.search(key) and number is not None:
                out[field] = number * scale
    return out


class RocmSmiBackend(Backend):
    """For ROCm installs that have the rocm-smi command but not the amdsmi module."""

    name = "rocm-smi"
    MEMORY_FIELD = "used_mib"

    def __init__(self, index: int = 0, run=None):
        self.command = shutil.which("rocm-smi")
        if run is None and self.command is None:
            raise BackendUnavailable("rocm-smi is not on PATH")
        self.run = run or self._run
        self.card = f"card{index}"
        self.index = index
        self.proc = ProcessMemory()
        try:
            first = parse_rocm_smi(self.run(ROCM_SMI_ARGS), self.card)
        except Exception as e:
            raise BackendUnavailable(f"rocm-smi failed ({e})") from None
        if "used_mib" not in first:
            raise BackendUnavailable(f"rocm-smi reports no VRAM use for {self.card}")

    def _run(self, args: list[str]) -> str:
        return subprocess.run([self.command, *args], capture_output=True, text=True, timeout=10, check=True).stdout

    def describe(self) -> dict:
        return {"type": "cuda", "vendor": "amd", "index": self.index, "name": self.card, "tool": "rocm-smi"}

    def read(self) -> dict[str, float]:
        sample = self.proc.read()
        sample.update(parse_rocm_smi(self.run(ROCM_SMI_ARGS), self.card))
        return sample
