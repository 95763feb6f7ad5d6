"""NVIDIA backend: device memory, utilisation, power, energy and temperature through NVML.

NVML comes from the `nvidia-ml-py` package (module `pynvml`). Each metric is
probed once when the backend opens; one the GPU does not support (energy
counters before Volta, power on some boards) is left out of the samples
instead of failing every read. The energy field is the hardware counter's
increase since the backend opened, so it is this run's energy.
"""

from __future__ import annotations

from lib.monitor.base import MIB, BackendUnavailable, DeviceBackend
from lib.monitor.cpu import ProcessMemory


def _import_nvml():
    try:
        import pynvml
    except ImportError:
        raise BackendUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from None
    return pynvml


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvidiaBackend(DeviceBackend):
    name = "nvidia"
    MEMORY_FIELD = "used_mib"

    def __init__(self, index: int = 0, uuid: str | None = None, nvml=None):
        self.nvml = nvml or _import_nvml()
        try:
            self.nvml.nvmlInit()
        except Exception as e:  # no driver, no library, no device
            raise BackendUnavailable(f"NVML could not start ({e})") from None
        self.handle = None
        if uuid:  # the GPU torch trains on, whatever CUDA_VISIBLE_DEVICES renumbered
            try:
                self.handle = self.nvml.nvmlDeviceGetHandleByUUID(uuid)
            except Exception:
                self.handle = None
        if self.handle is None:
            try:
                self.handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
            except Exception as e:
                self.nvml.nvmlShutdown()
                raise BackendUnavailable(f"NVML has no GPU {uuid or index} ({e})") from None
        self.index, self.uuid = index, uuid
        self.proc = ProcessMemory()
        self.energy_start = None
        self.readers = []
        for reader in (self._memory, self._utilisation, self._power, self._energy, self._temperature):
            try:
                reader()
            except Exception:  # not supported on this GPU: leave the field out
                continue
            self.readers.append(reader)
        if self._memory not in self.readers:
            self.close()
            raise BackendUnavailable("NVML cannot read this GPU's memory")

    def _memory(self) -> dict:
        info = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
        return {"used_mib": info.used / MIB, "total_mib": info.total / MIB}

    def _utilisation(self) -> dict:
        rates = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
        return {"util_percent": float(rates.gpu), "mem_util_percent": float(rates.memory)}

    def _power(self) -> dict:
        return {"power_w": self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0}  # mW

    def _energy(self) -> dict:
        total = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)  # mJ since driver load
        if self.energy_start is None:
            self.energy_start = total
        return {"energy_j": (total - self.energy_start) / 1000.0}

    def _temperature(self) -> dict:
        return {"temperature_c": float(self.nvml.nvmlDeviceGetTemperature(self.handle, self.nvml.NVML_TEMPERATURE_GPU))}

    def describe(self) -> dict:
        out = {"type": "cuda", "vendor": "nvidia", "index": self.index}
        for key, call in (
            ("name", lambda: _text(self.nvml.nvmlDeviceGetName(self.handle))),
            ("uuid", lambda: _text(self.nvml.nvmlDeviceGetUUID(self.handle))),
            ("driver", lambda: _text(self.nvml.nvmlSystemGetDriverVersion())),
            ("total_mib", lambda: self.nvml.nvmlDeviceGetMemoryInfo(self.handle).total / MIB),
        ):
            try:
                out[key] = call()
            except Exception:
                out[key] = None
        return out

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:
            pass
