"""scripts.launch: slots (GPU pinning, thread split, JOBS), the GPU list the runner sees, the pool with stand-in trainers."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from conftest import wait_until
from lib.results import MatrixError, read_json
from scripts import launch


@pytest.mark.parametrize("text, jobs", [("1", 1), ("4", 4), (" 2 ", 2), ("auto", "auto"), (3, 3)])
def test_jobs_is_a_count_or_auto(text, jobs):
    assert launch.parse_jobs(text) == jobs


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5", ""])
def test_bad_jobs_is_one_clear_error(text):
    with pytest.raises(MatrixError, match=r"JOBS=.*: give the number of runs at once \(1, 2, \.\.\.\) or auto"):
        launch.parse_jobs(text)


def test_four_runs_on_two_gpus_never_share_one():
    slots = launch.slots(4, 1, ["0", "1"], cpus=16)
    assert [s.gpus for s in slots] == [("0",), ("1",)]  # capped at what fits: two at once
    assert [s.env()["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1"]
    assert all(s.threads == 8 for s in slots)


def test_a_ddp_run_gets_as_many_gpus_as_processes():
    assert [s.gpus for s in launch.slots("auto", 2, ["0", "1", "2", "3"], cpus=8)] == [("0", "1"), ("2", "3")]
    assert [s.gpus for s in launch.slots(1, 2, ["4", "7"], cpus=8)] == [("4", "7")]
    with pytest.raises(MatrixError, match="a run takes 2 GPUs .* but 1 are visible: 0"):
        launch.slots(1, 2, ["0"], cpus=8)


def test_cpu_slots_split_the_cores():
    assert [(s.gpus, s.threads) for s in launch.slots(2, 1, None, cpus=2)] == [(None, 1), (None, 1)]
    assert [s.threads for s in launch.slots(1, 1, None, cpus=8)] == [8]
    assert [s.threads for s in launch.slots(3, 1, None, cpus=8)] == [2, 2, 2]
    assert [s.threads for s in launch.slots(4, 1, None, cpus=2)] == [1] * 4  # at least one each
    assert [s.threads for s in launch.slots(2, 1, None, cpus=8, threads=1)] == [1, 1]  # THREADS=1
    assert len(launch.slots("auto", 1, None, cpus=8)) == 4  # one per two cores
    assert "OMP_NUM_THREADS" in launch.slots(1, 1, None, cpus=2)[0].env()
    assert "CUDA_VISIBLE_DEVICES" not in launch.slots(1, 1, None, cpus=2)[0].env()


def test_the_gpu_list_can_be_given_to_the_runner(monkeypatch):
    monkeypatch.setenv(launch.GPUS_ENV, "0, 3")
    assert launch.visible_gpus() == ["0", "3"]
    monkeypatch.setenv(launch.GPUS_ENV, "")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert launch.visible_gpus() == []  # the override wins, even when it says none
    monkeypatch.delenv(launch.GPUS_ENV)
    assert launch.visible_gpus() == ["1"]


def test_runs_use_gpus_only_when_their_device_can_be_one():
    assert launch.uses_gpus({"DEVICE_AUTO": True}, ["0"])
    assert not launch.uses_gpus({"DEVICE_AUTO": True}, [])
    assert not launch.uses_gpus({"DEVICE_CPU": True, "DEVICE_AUTO": False}, ["0"])
    assert launch.uses_gpus({"DEVICE_CUDA": True, "DEVICE_AUTO": False}, [])


# A stand-in trainer: records its pid, threads and devices, then succeeds or fails as its argv says.
TRAINER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from lib.results import RunRecord, write_json
    out = Path(sys.argv[sys.argv.index("--output-dir") + 1])
    rec = RunRecord(out)
    rec.start(out.name, sys.argv, 1)
    rec.update(threads=os.environ["OMP_NUM_THREADS"], visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
               began=time.monotonic())
    if "--fail" in sys.argv:
        print("error: told to fail", file=sys.stderr)
        rec.finish("failed", 1, "told to fail")
        sys.exit(1)
    write_json(out / "metrics.json", {"history": [{"epoch": 1}], "final": {"accuracy": 90.0, "sparsity_prunable": 0.0, "train_time_s": 1.0}})
    rec.update(ended=time.monotonic())
    rec.finish("completed", 0)
    """
)


class Events:
    """A display that records what the pool tells it."""

    def __init__(self):
        self.events = []

    def skipped(self, run, info, why):
        self.events.append(("skipped", run["run_id"], why))

    def started(self, run, where):
        self.events.append(("started", run["run_id"], where))

    def finished(self, run, info):
        self.events.append(("finished", run["run_id"], info["status"]))

    def tick(self):
        pass

    def close(self):
        pass


def stand_in_runs(tmp_path: Path, names: dict[str, list[str]]) -> list[dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    return [
        {"run_id": rid, "spec": {"seed": 1}, "argv": [sys.executable, str(script), *extra, "--output-dir", str(tmp_path / rid)]}
        for rid, extra in names.items()
    ]


@pytest.fixture(autouse=True)
def repo_on_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(launch.REPO))


def test_the_pool_pins_each_run_to_its_slot_and_never_shares_one(tmp_path):
    runs = stand_in_runs(tmp_path, {f"r{i}": [] for i in range(4)})
    display = Events()
    launch.Pool(launch.slots(2, 1, ["0", "1"], cpus=2), display, fork=False).run(runs)
    records = [read_json(tmp_path / r["run_id"] / "run.json") for r in runs]
    assert all(r["status"] == "completed" for r in records)
    assert {r["visible_devices"] for r in records} == {"0", "1"} and all(r["threads"] == "1" for r in records)
    for a in records:  # two runs on one device never overlap in time
        for b in records:
            if a is not b and a["visible_devices"] == b["visible_devices"]:
                assert a["ended"] <= b["began"] or b["ended"] <= a["began"]
    assert [e[0] for e in display.events].count("started") == 4


def test_a_run_starts_without_the_leftovers_of_writes_a_kill_interrupted(tmp_path):
    runs = stand_in_runs(tmp_path, {"r": []})
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / ".checkpoint.pt.1a2b3c4d.partial").write_bytes(b"half a checkpoint")
    launch.Pool(launch.slots(1, 1, None, cpus=2), Events(), fork=False).run(runs)
    assert read_json(tmp_path / "r" / "run.json")["status"] == "completed"
    assert not list((tmp_path / "r").glob("*.partial"))


def test_a_failure_does_not_stop_the_others_unless_fail_fast(tmp_path):
    runs = stand_in_runs(tmp_path, {"bad": ["--fail"], "b": [], "c": []})
    display = Events()
    launch.Pool(launch.slots(1, 1, None, cpus=2), display, fork=False).run(runs)
    assert [read_json(tmp_path / r / "run.json")["status"] for r in ("bad", "b", "c")] == ["failed", "completed", "completed"]

    runs = stand_in_runs(tmp_path / "ff", {"bad": ["--fail"], "b": [], "c": []})
    display = Events()
    launch.Pool(launch.slots(1, 1, None, cpus=2), display, fail_fast=True, fork=False).run(runs)
    assert read_json(tmp_path / "ff" / "bad" / "run.json")["status"] == "failed"
    assert not (tmp_path / "ff" / "b" / "run.json").exists()
    assert ("skipped", "c", "not started: FAIL_FAST after a failure") in display.events


# A stand-in trainer that runs until SIGTERM, then records that it stopped, as the real ones do.
PATIENT = textwrap.dedent(
    """
    import signal, sys
    from pathlib import Path
    from lib.results import RunRecord
    out = Path(sys.argv[sys.argv.index("--output-dir") + 1])
    rec = RunRecord(out)
    signal.signal(signal.SIGTERM, lambda s, f: (rec.finish("interrupted", 143, "stopped by SIGTERM"), sys.exit(143)))
    rec.start(out.name, sys.argv, 1)
    while True:
        signal.pause()
    """
)


def test_sigterm_to_the_runner_stops_its_trainers_and_starts_no_more(tmp_path):
    script = tmp_path / "patient.py"
    script.write_text(PATIENT)
    runs = [{"run_id": r, "spec": {"seed": 1}, "argv": [sys.executable, str(script), "--output-dir", str(tmp_path / r)]}
            for r in ("a", "b", "c")]
    display = Events()
    sender = threading.Thread(target=lambda: (
        wait_until(lambda: (read_json(tmp_path / "a" / "run.json") or {}).get("status") == "running", "run a running"),
        os.kill(os.getpid(), signal.SIGTERM),
    ))
    sender.start()
    launch.Pool(launch.slots(1, 1, None, cpus=2), display, fork=False).run(runs)
    sender.join()
    assert read_json(tmp_path / "a" / "run.json")["status"] == "interrupted"
    assert ("skipped", "b", "not started: the runner was told to stop") in display.events
    assert not (tmp_path / "c" / "run.json").exists()
