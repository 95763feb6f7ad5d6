"""NVIDIA and AMD backends against fakes of their libraries (pynvml, amdsmi, rocm-smi)."""

import json
import sys
import types
from enum import IntEnum

import pytest
import torch

from conftest import more_samples
from lib import monitor
from lib.monitor.amd import AmdSmiBackend, RocmSmiBackend, parse_rocm_smi
from lib.monitor.base import BackendUnavailable
from lib.monitor.nvidia import NvidiaBackend

MIB = 2**20


class NVMLError(Exception):
    pass


def fake_pynvml(*, energy=True, init_error=None, devices=("GPU-aaaa",)):
    """A stand-in for nvidia-ml-py's pynvml module with one scripted GPU."""
    m = types.ModuleType("pynvml")
    state = {"used": 1000 * MIB, "energy_mj": 5_000_000, "shutdown": 0}
    m.NVMLError = NVMLError
    m.NVML_TEMPERATURE_GPU = 0
    m.state = state

    def init():
        if init_error:
            raise NVMLError(init_error)

    m.nvmlInit = init
    m.nvmlShutdown = lambda: state.__setitem__("shutdown", state["shutdown"] + 1)

    def by_uuid(uuid):
        if uuid not in devices:
            raise NVMLError("Not Found")
        return ("handle", uuid)

    m.nvmlDeviceGetHandleByUUID = by_uuid
    m.nvmlDeviceGetHandleByIndex = lambda i: ("handle", devices[i])
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=state["used"], total=80_000 * MIB, free=0)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87, memory=40)
    m.nvmlDeviceGetPowerUsage = lambda h: 250_500  # mW
    m.nvmlDeviceGetTemperature = lambda h, sensor: 61
    m.nvmlDeviceGetName = lambda h: b"NVIDIA Fake 80GB"
    m.nvmlDeviceGetUUID = lambda h: h[1]
    m.nvmlSystemGetDriverVersion = lambda: "999.1"

    def energy_counter(h):
        if not energy:
            raise NVMLError("Not Supported")
        return state["energy_mj"]

    m.nvmlDeviceGetTotalEnergyConsumption = energy_counter
    return m


def test_nvidia_backend_reads_memory_utilisation_power_energy_temperature():
    nvml = fake_pynvml()
    b = NvidiaBackend(0, uuid="GPU-aaaa", nvml=nvml)
    first = b.read()
    assert first["used_mib"] == 1000 and first["total_mib"] == 80_000
    assert first["util_percent"] == 87 and first["mem_util_percent"] == 40
    assert first["power_w"] == 250.5 and first["temperature_c"] == 61
    assert first["energy_j"] == 0.0 and first["rss_mib"] > 0
    nvml.state["energy_mj"] += 12_000  # 12 J later
    nvml.state["used"] = 3000 * MIB
    second = b.read()
    assert second["energy_j"] == 12.0 and second["used_mib"] == 3000
    d = b.describe()
    assert d == {"type": "cuda", "vendor": "nvidia", "index": 0, "name": "NVIDIA Fake 80GB", "uuid": "GPU-aaaa", "driver": "999.1", "total_mib": 80_000}
    b.close()
    assert nvml.state["shutdown"] == 1


def test_nvidia_metric_the_gpu_lacks_is_left_out_not_fatal():
    b = NvidiaBackend(0, nvml=fake_pynvml(energy=False))
    assert "energy_j" not in b.read() and "power_w" in b.read()


def test_nvidia_unknown_uuid_falls_back_to_the_index():
    b = NvidiaBackend(0, uuid="GPU-missing", nvml=fake_pynvml())
    assert b.describe()["uuid"] == "GPU-aaaa"


def test_nvidia_without_driver_is_unavailable_with_the_reason():
    with pytest.raises(BackendUnavailable, match="NVML could not start.*Driver Not Loaded"):
        NvidiaBackend(0, nvml=fake_pynvml(init_error="Driver Not Loaded"))


def test_nvidia_backend_through_the_monkeypatched_module_and_the_sampler(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    mon = monitor.Monitor(NvidiaBackend(0), interval=0.02).start()
    more_samples(mon)
    mon.stop()
    doc = mon.to_dict()
    assert monitor.validate(doc) == []
    assert doc["header"]["backend"] == "nvidia" and doc["summary"]["memory_field"] == "used_mib"
    assert doc["summary"]["peak_sampled_mib"] == 1000 and doc["summary"]["energy_source"] == "counter"


def test_nvidia_not_installed_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    with pytest.raises(BackendUnavailable, match="nvidia-ml-py is not installed"):
        NvidiaBackend(0)


def fake_amdsmi(*, bdfs=("0000:03:00.0", "0000:83:00.0"), power="N/A"):
    """A stand-in for ROCm's amdsmi module."""
    m = types.ModuleType("amdsmi")
    m.state = {"energy": 1000, "shutdown": 0}
    m.AmdSmiTemperatureType = IntEnum("AmdSmiTemperatureType", {"EDGE": 0, "HOTSPOT": 1})
    m.AmdSmiTemperatureMetric = IntEnum("AmdSmiTemperatureMetric", {"CURRENT": 0})
    m.amdsmi_init = lambda: None
    m.amdsmi_shut_down = lambda: m.state.__setitem__("shutdown", m.state["shutdown"] + 1)
    m.amdsmi_get_processor_handles = lambda: [f"h{i}" for i in range(len(bdfs))]
    m.amdsmi_get_gpu_device_bdf = lambda h: bdfs[int(h[1:])]
    m.amdsmi_get_gpu_vram_usage = lambda h: {"vram_total": 65536, "vram_used": 2048 if h == "h1" else 10}
    m.amdsmi_get_gpu_activity = lambda h: {"gfx_activity": 95, "umc_activity": 30, "mm_activity": "N/A"}
    m.amdsmi_get_power_info = lambda h: {"current_socket_power": power, "average_socket_power": 300, "socket_power": 300}
    m.amdsmi_get_energy_count = lambda h: {"energy_accumulator": m.state["energy"], "counter_resolution": 15.3, "timestamp": 0}

    def temp(h, sensor, metric):
        if sensor == m.AmdSmiTemperatureType.EDGE:
            raise RuntimeError("AMDSMI_STATUS_NOT_SUPPORTED")
        return 74

    m.amdsmi_get_temp_metric = temp
    m.amdsmi_get_gpu_asic_info = lambda h: {"market_name": "AMD Instinct Fake"}
    return m


def test_amdsmi_backend_finds_the_gpu_by_pci_address_and_reads_it():
    smi = fake_amdsmi()
    b = AmdSmiBackend(0, bdf="0000:83:00.0", amdsmi=smi)
    s = b.read()
    assert s["used_mib"] == 2048 and s["total_mib"] == 65536
    assert s["util_percent"] == 95 and s["mem_util_percent"] == 30
    assert s["power_w"] == 300  # current power is N/A: the average is used
    assert s["temperature_c"] == 74  # no edge sensor: the hotspot is used
    assert s["energy_j"] == 0.0
    smi.state["energy"] += 1_000_000  # counter units of 15.3 uJ
    assert b.read()["energy_j"] == pytest.approx(15.3)
    assert b.describe()["name"] == "AMD Instinct Fake" and b.describe()["bdf"] == "0000:83:00.0"
    b.close()
    assert smi.state["shutdown"] == 1


def test_amdsmi_backend_through_the_monkeypatched_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", fake_amdsmi())
    b = AmdSmiBackend(1)
    assert b.read()["used_mib"] == 2048


def test_amdsmi_missing_or_gpu_absent_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    with pytest.raises(BackendUnavailable, match="amdsmi is not importable"):
        AmdSmiBackend(0)
    with pytest.raises(BackendUnavailable, match="none at 5"):
        AmdSmiBackend(5, amdsmi=fake_amdsmi())


ROCM_SMI_JSON = json.dumps(
    {
        "card0": {
            "GPU use (%)": "63",
            "GPU Memory Allocated (VRAM%)": "12",
            "Average Graphics Package Power (W)": "212.0",
            "Temperature (Sensor edge) (C)": "55.0",
            "Temperature (Sensor junction) (C)": "70.0",
            "VRAM Total Memory (B)": str(64 * 2**30),
            "VRAM Total Used Memory (B)": str(3 * 2**30),
        },
        "system": {"Driver version": "6.8"},
    }
)


def test_rocm_smi_json_is_parsed_by_key_pattern():
    s = parse_rocm_smi(ROCM_SMI_JSON, "card0")
    assert s == {
        "used_mib": 3072.0, "total_mib": 65536.0, "util_percent": 63.0, "mem_util_percent": 12.0,
        "power_w": 212.0, "temperature_c": 55.0,
    }
    assert parse_rocm_smi(ROCM_SMI_JSON, "card7") == {}


def test_rocm_smi_backend_with_a_fake_command():
    calls = []

    def run(args):
        calls.append(args)
        return ROCM_SMI_JSON

    b = RocmSmiBackend(0, run=run)
    s = b.read()
    assert s["used_mib"] == 3072 and s["rss_mib"] > 0 and "--json" in calls[-1]
    with pytest.raises(BackendUnavailable, match="no VRAM use for card3"):
        RocmSmiBackend(3, run=run)


def test_auto_on_a_rocm_torch_picks_amd(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", fake_amdsmi())
    monkeypatch.setattr(torch.version, "hip", "6.2", raising=False)
    monkeypatch.setattr(monitor, "_gpu_identity", lambda device: {"index": 1, "uuid": None, "bdf": None})
    backend, warnings = monitor.open_backend("auto", torch.device("cuda", 0))
    assert backend.name == "amd" and warnings == [] and backend.read()["used_mib"] == 2048


def test_auto_on_a_cuda_torch_picks_nvidia(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(monitor, "_gpu_identity", lambda device: {"index": 0, "uuid": "GPU-aaaa", "bdf": None})
    backend, warnings = monitor.open_backend("auto", torch.device("cuda", 0))
    assert backend.name == "nvidia" and warnings == []
