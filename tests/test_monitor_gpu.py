"""The monitor on a real GPU (skipped where torch sees none): vendor backend, allocator phases, memory.json."""

import json

import pytest
import torch

from conftest import more_samples
from lib import monitor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU visible to torch")


def test_auto_picks_the_vendor_backend_and_reads_it():
    device = torch.device("cuda", 0)
    backend, warnings = monitor.open_backend("auto", device)
    assert warnings == []
    assert backend.name == ("amd" if torch.version.hip else "nvidia") or backend.name == "rocm-smi"
    sample = backend.read()
    assert 0 < sample["used_mib"] <= sample["total_mib"] and sample["rss_mib"] > 0
    assert backend.describe()["total_mib"] > 1000
    backend.close()


def test_allocator_phases_and_device_samples_in_memory_json(tmp_path):
    device = torch.device("cuda", 0)
    mon = monitor.for_run(type("A", (), {"monitor": "auto", "monitor_interval": 0.05})(), device, tmp_path / "run")
    mon.set_phase("train")
    big = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)  # 256 MiB
    more_samples(mon)  # taken while the 256 MiB are held
    del big
    mon.set_phase("eval")
    small = torch.empty(16 * 2**20, dtype=torch.uint8, device=device)
    more_samples(mon)
    del small
    mon.set_phase(None)
    mon.stop()
    mon.write(tmp_path / "run" / "memory.json")
    doc = json.loads((tmp_path / "run" / "memory.json").read_text())
    assert monitor.validate(doc) == []
    phases = doc["summary"]["phases"]
    assert phases["train"]["max_allocated_mib"] >= 256
    assert 16 <= phases["eval"]["max_allocated_mib"] < 256
    assert doc["summary"]["peak_memory_mib"] >= 256
    assert doc["summary"]["peak_memory_source"] == "torch.cuda.max_memory_allocated"
    assert max(s["allocated_mib"] for s in doc["samples"]) >= 256
    assert all(s["used_mib"] > 0 for s in doc["samples"])
    if "power_w" in doc["summary"]["fields"]:
        assert doc["summary"]["energy_j"] is not None and doc["summary"]["energy_j"] >= 0
