"""The sampler, the CPU backend, backend selection and fallback, memory.json and its schema."""

import json
import time
from types import SimpleNamespace

import pytest
import torch

from conftest import more_samples
from lib import monitor
from lib.monitor import sampler as sampler_module
from lib.monitor.base import Backend


class Scripted(Backend):
    """A backend that returns the values it is given, one per read."""

    name = "scripted"
    MEMORY_FIELD = "used_mib"

    def __init__(self, values):
        self.values = list(values)
        self.closed = False

    def describe(self):
        return {"type": "test"}

    def read(self):
        value = self.values.pop(0) if len(self.values) > 1 else self.values[0]
        if isinstance(value, Exception):
            raise value
        return dict(value)

    def close(self):
        self.closed = True


def test_cpu_backend_sees_resident_memory_rise_when_the_test_allocates():
    mon = monitor.Monitor(monitor.CPUBackend(), interval=0.02).start()
    more_samples(mon)
    before = mon.samples[-1]["rss_mib"]
    block = bytearray(200 * 2**20)  # 200 MiB, touched by the zero fill
    block[::4096] = b"x" * len(block[::4096])
    more_samples(mon)  # taken while the block is held
    mon.stop()
    after = max(s["rss_mib"] for s in mon.samples)
    del block
    assert after - before > 150
    assert mon.summary()["peak_memory_mib"] >= after


def test_samples_are_timestamped_phase_tagged_and_summarised():
    backend = Scripted([{"used_mib": 10.0, "power_w": 100.0}] * 3 + [{"used_mib": 50.0, "power_w": 300.0}])
    mon = monitor.Monitor(backend, interval=0.02)
    mon.start()
    t0 = time.monotonic()
    mon.set_phase("train")
    more_samples(mon, 3)
    mon.set_phase("eval")
    more_samples(mon)
    mon.set_phase(None)
    elapsed = time.monotonic() - t0
    mon.stop()
    assert backend.closed
    times = [s["t"] for s in mon.samples]
    assert times == sorted(times) and len(times) >= 4
    assert {"train", "eval"} <= {s["phase"] for s in mon.samples}
    summary = mon.summary()
    assert summary["fields"]["used_mib"]["peak"] == 50.0
    assert 10.0 < summary["fields"]["used_mib"]["mean"] < 50.0
    assert summary["peak_sampled_mib"] == 50.0
    assert summary["energy_source"] == "power integral" and summary["energy_j"] > 0
    train, evaluation = summary["phases"]["train"], summary["phases"]["eval"]
    assert train["entries"] == evaluation["entries"] == 1
    assert train["seconds"] > 0 and evaluation["seconds"] > 0 and train["seconds"] + evaluation["seconds"] <= elapsed


def test_energy_counter_wins_over_the_power_integral():
    mon = monitor.Monitor(Scripted([{"used_mib": 1.0, "power_w": 50.0, "energy_j": 0.0}, {"used_mib": 1.0, "power_w": 50.0, "energy_j": 7.5}]), 1.0)
    mon._take()
    mon._take()
    assert mon.summary()["energy_j"] == 7.5 and mon.summary()["energy_source"] == "counter"


def test_a_failing_read_is_reported_once_and_sampling_goes_on(capsys):
    backend = Scripted([{"used_mib": 1.0}, RuntimeError("driver hiccup"), RuntimeError("driver hiccup"), {"used_mib": 2.0}])
    mon = monitor.Monitor(backend, 1.0)
    for _ in range(4):
        mon._take()
    assert mon.errors == 2 and len(mon.samples) == 2
    assert capsys.readouterr().err.count("driver hiccup") == 1
    assert any("driver hiccup" in w for w in mon.warnings)


def test_long_runs_are_thinned_but_the_summary_counts_every_sample():
    mon = monitor.Monitor(Scripted([{"used_mib": float(i)} for i in range(100)]), 1.0, max_samples=10)
    for _ in range(100):
        mon._take()
    assert len(mon.samples) <= 10 and mon.stride > 1
    s = mon.summary()
    assert s["samples"] == 100 and s["fields"]["used_mib"]["peak"] == 99.0 and s["stride"] == mon.stride


def test_on_sample_gets_every_sample_and_a_failing_callback_is_dropped():
    got = []
    mon = monitor.Monitor(Scripted([{"used_mib": 1.0}]), 1.0, on_sample=got.append)
    mon._take()
    assert got and got[0]["used_mib"] == 1.0

    def broken(sample):
        raise OSError("tracker gone")

    mon.on_sample = broken
    mon._take()
    mon._take()
    assert mon.on_sample is None and any("tracker gone" in w for w in mon.warnings)


def test_unavailable_backend_says_so_once_and_falls_back_to_process_memory(monkeypatch, capsys):
    monkeypatch.setattr(monitor, "_said", set())

    def no_gpu(*a, **k):
        raise monitor.BackendUnavailable("NVML could not start (no driver)")

    monkeypatch.setattr(monitor, "NvidiaBackend", no_gpu)
    for _ in range(2):
        backend, warnings = monitor.open_backend("nvidia", torch.device("cpu"))
        assert backend.name == "cpu"
        assert warnings and "nvidia backend unavailable" in warnings[0] and "no driver" in warnings[0]
    assert capsys.readouterr().err.count("nvidia backend unavailable") == 1


def test_amd_falls_back_from_amdsmi_to_rocm_smi_to_cpu(monkeypatch):
    monkeypatch.setattr(monitor, "_said", set())

    def unavailable(why):
        def make(*a, **k):
            raise monitor.BackendUnavailable(why)
        return make

    monkeypatch.setattr(monitor, "AmdSmiBackend", unavailable("amdsmi is not importable"))
    monkeypatch.setattr(monitor, "RocmSmiBackend", unavailable("rocm-smi is not on PATH"))
    backend, warnings = monitor.open_backend("amd", torch.device("cpu"))
    assert backend.name == "cpu" and "amdsmi is not importable" in warnings[0] and "rocm-smi is not on PATH" in warnings[0]


def test_no_gpu_is_never_an_error_and_off_samples_nothing(tmp_path, capsys):
    backend, warnings = monitor.open_backend("auto", torch.device("cpu"))
    assert backend.name == "cpu" and warnings == []
    assert monitor.open_backend("off", torch.device("cpu")) == (None, [])
    with pytest.raises(ValueError, match="valid: auto, nvidia, amd, cpu, off"):
        monitor.open_backend("intel", torch.device("cpu"))
    mon = monitor.for_run(SimpleNamespace(monitor="off", monitor_interval=1.0), torch.device("cpu"), tmp_path)
    mon.set_phase("train")
    mon.stop()
    mon.write(tmp_path / "memory.json")
    assert not (tmp_path / "memory.json").exists()
    assert mon.peak_memory_mib() > 0  # metrics.json still gets a peak
    assert capsys.readouterr().err == ""


def test_memory_json_matches_the_documented_schema(tmp_path):
    run = tmp_path / "lenet5_sgd_none"
    mon = monitor.for_run(SimpleNamespace(monitor="cpu", monitor_interval=0.02), torch.device("cpu"), run)
    mon.set_phase("train")
    more_samples(mon)
    mon.set_phase("eval")
    more_samples(mon, 1)
    mon.stop()
    mon.write(run / "memory.json")
    doc = json.loads((run / "memory.json").read_text())
    assert monitor.validate(doc) == []
    assert list(doc) == ["schema", "run_id", "header", "samples", "summary"]
    assert doc["run_id"] == "lenet5_sgd_none" and doc["header"]["backend"] == "cpu"
    assert doc["header"]["device"]["type"] == "cpu" and doc["header"]["interval_s"] == 0.02
    assert set(doc["header"]["fields"]) == {"rss_mib", "cpu_percent"}
    assert doc["summary"]["peak_memory_source"] == "process resident memory high-water mark"
    assert doc["summary"]["memory_field"] == "rss_mib"
    assert doc["summary"]["phases"]["train"]["samples"] >= 1


def test_schema_checker_names_what_is_wrong():
    mon = monitor.Monitor(Scripted([{"used_mib": 1.0}]), 1.0)
    mon._take()
    good = mon.to_dict()
    assert monitor.validate(good) == []
    bad = json.loads(json.dumps(good))
    bad["schema"] = 2
    del bad["summary"]["peak_memory_mib"]
    bad["samples"].append({"t": -1.0, "bogus_mib": 1.0})
    problems = monitor.validate(bad)
    assert any("schema is 2" in p for p in problems)
    assert any("peak_memory_mib" in p for p in problems)
    assert any("goes back in time" in p for p in problems)
    assert any("bogus_mib is not a documented field" in p for p in problems)
    assert monitor.validate([]) == ["memory.json is not an object"]


def test_a_previous_attempts_memory_json_is_kept(tmp_path):
    (tmp_path / "memory.json").write_text("{}")
    (tmp_path / "memory.json.1").write_text("{}")
    mon = monitor.for_run(SimpleNamespace(monitor="cpu", monitor_interval=1.0), torch.device("cpu"), tmp_path)
    mon.stop()
    assert (tmp_path / "memory.json.2").read_text() == "{}" and not (tmp_path / "memory.json").exists()


class FakeCuda:
    """torch.cuda's allocator counters, driven by the test."""

    def __init__(self):
        self.allocated, self.reserved, self.peak, self.peak_reserved = 0, 0, 0, 0

    def alloc(self, mib):
        self.allocated += mib * 2**20
        self.reserved = max(self.reserved, self.allocated)
        self.peak = max(self.peak, self.allocated)
        self.peak_reserved = max(self.peak_reserved, self.reserved)

    def free(self, mib):
        self.allocated -= mib * 2**20

    def reset_peak_memory_stats(self, device):
        self.peak, self.peak_reserved = self.allocated, self.reserved

    def memory_allocated(self, device):
        return self.allocated

    def memory_reserved(self, device):
        return self.reserved

    def max_memory_allocated(self, device):
        return self.peak

    def max_memory_reserved(self, device):
        return self.peak_reserved


def test_allocator_counters_are_kept_per_phase_and_overall():
    cuda = FakeCuda()
    cuda.alloc(100)  # model weights, before the first phase
    counters = monitor.AllocatorCounters(torch.device("cuda", 0), cuda=cuda)
    mon = monitor.Monitor(Scripted([{"used_mib": 1.0}]), 1.0, allocator=counters)
    mon.set_phase("train")
    cuda.alloc(400)
    mon._take()
    cuda.free(400)
    mon.set_phase("eval")
    cuda.alloc(50)
    cuda.free(50)
    mon.set_phase(None)
    phases = mon.summary()["phases"]
    assert phases["train"]["max_allocated_mib"] == 500
    assert phases["eval"]["max_allocated_mib"] == 150
    assert mon.samples[-1]["allocated_mib"] == 500
    assert mon.peak_memory_mib() == 500
    assert mon.peak_source() == "torch.cuda.max_memory_allocated"


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval"):
        monitor.Monitor(Scripted([{"used_mib": 1.0}]), 0)
    assert sampler_module.SCHEMA == monitor.SCHEMA == 1
