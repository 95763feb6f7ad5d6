"""The fault suite: randomized kills and injected write errors, each followed by `make continue`, lose nothing.

A matrix of four LeNet-5 runs is run once without a fault (the reference),
then again under faults chosen at random (a seeded generator; the seed is
printed, FAULT_SEED=<n> replays it): SIGKILL of make, the runner and its
trainers at once; SIGKILL or SIGTERM of the runner alone (its trainers stop
by themselves); and, through lib.atomic's hook (HARNESS_FAULT), a process's
n-th file write failing half-way with ENOSPC or EACCES, or the process
killed inside it. After every fault the invariants hold: a run once
completed is byte-identical from then on, no run directory appears that the
matrix did not plan, `make status` reads every run. After the last fault
`make continue` finishes the matrix, whose final metrics equal the
reference's, with no temporary file of an interrupted write left behind.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess

import pytest

from conftest import PATIENCE_S, kill_group, wait_until
from lib.results import claimed, read_json
from test_runner_e2e import KILL_CONFIG, comparable, only_matrix, snapshot

pytestmark = pytest.mark.e2e

FAULTS = 10  # per runner setting (JOBS=1, JOBS=2): 20 in CI
CONFIG = KILL_CONFIG.replace("CONFIG_LENET5_EPOCHS=15", "CONFIG_LENET5_EPOCHS=4")  # two LeNet-5 runs, dense and 50 %
RUNS = ["lenet5_sgd_none", "lenet5_sgd_magnitude_50"]
INJECTED = ("ENOSPC", "EACCES", "KILL")
TIMED = ("group", "runner-kill", "runner-term")


def epochs_done(mdir) -> int:
    return sum(len((read_json(mdir / r / "metrics.json") or {}).get("history") or []) for r in RUNS)


def completed(mdir) -> set[str]:
    return {r for r in RUNS if (read_json(mdir / r / "run.json") or {}).get("status") == "completed"}


def runner_pid(root) -> int:
    """The runner holding the results lock ("pid N matrix <id>")."""
    return int((root / "results" / ".lock").read_text().split()[1])


def timed_fault(make, jobs: str, rng: random.Random, kind: str, mdir) -> str | None:
    """Start `make continue` and hit it once the matrix has trained 1-2 more epochs; what was done (None: it ended first)."""
    proc = make.popen("continue", jobs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        target = epochs_done(mdir) + rng.randint(1, 2)
        wait_until(lambda: epochs_done(mdir) >= target or proc.poll() is not None, f"{target} epochs trained")
        if proc.poll() is not None:
            return None
        if kind == "group":
            kill_group(proc)
            return "SIGKILL to make, the runner and its trainers"
        sig = signal.SIGKILL if kind == "runner-kill" else signal.SIGTERM
        os.kill(runner_pid(make.root), sig)
        proc.wait(timeout=PATIENCE_S)
        return f"{signal.Signals(sig).name} to the runner alone"
    finally:
        if proc.poll() is None:
            kill_group(proc)


def check_invariants(make, mdir, kept: dict, after: str) -> None:
    """Completed runs unchanged since first seen complete, no unplanned run directory, every run readable by status."""
    for run_id, files in kept.items():
        assert snapshot(mdir / run_id) == files, f"completed run {run_id} changed after: {after}"
    kept.update({r: snapshot(mdir / r) for r in completed(mdir) - set(kept)})
    assert {p.name for p in mdir.iterdir() if p.is_dir()} <= set(RUNS), f"an unplanned run directory after: {after}"
    status = make("status")
    assert status.returncode == 0 and all(f"] {r} " in status.stdout for r in RUNS), status.stdout + status.stderr


@pytest.mark.parametrize("jobs", ["JOBS=1", "JOBS=2"])
def test_randomized_faults_then_continue_lose_nothing(make, jobs):
    root = make.root
    (root / ".config").write_text(CONFIG)
    reference = make("all", jobs)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    ref_dir = only_matrix(root)
    expected = {r: comparable(read_json(ref_dir / r / "metrics.json")) for r in RUNS}
    (root / "done").mkdir()
    ref_dir.rename(root / "done" / ref_dir.name)

    seed = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(10**6))
    rng = random.Random(seed)
    print(f"fault seed {seed} (FAULT_SEED={seed} replays it)")
    log = []
    while len(log) < FAULTS:  # matrices under faults until FAULTS of them hit
        first = make.popen("all", jobs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: any((root / "results").glob("*/matrix.json")), "matrix.json", first)
            mdir = only_matrix(root)
            wait_until(lambda: epochs_done(mdir) >= 1, "a first epoch", first)
        finally:
            kill_group(first)
        log.append("SIGKILL to make, the runner and its trainers")
        kept: dict = {}
        check_invariants(make, mdir, kept, log[-1])
        while len(log) < FAULTS and completed(mdir) != set(RUNS):
            kind = rng.choice(INJECTED + TIMED)
            if kind in INJECTED:
                at = rng.randint(1, 10)
                env = {**make.env, "HARNESS_FAULT": f"{at}:{kind}"}
                done = subprocess.run(make.argv("continue", jobs), env=env, capture_output=True, text=True,
                                      timeout=PATIENCE_S)
                if done.returncode == 0:
                    continue  # every process finished before its write number `at`: nothing was hit
                log.append(f"write {at} of each process: {kind}")
            else:
                what = timed_fault(make, jobs, rng, kind, mdir)
                if what is None:
                    continue  # the matrix finished before the moment chosen
                log.append(what)
            check_invariants(make, mdir, kept, log[-1])

        # The runner's orphans (after a kill of the runner alone) stop at their next step; then continue finishes.
        wait_until(lambda: not any(claimed(mdir / r) for r in RUNS), "every trainer to be gone")
        final = make("continue", jobs)
        assert final.returncode == 0, final.stdout + final.stderr
        check_invariants(make, mdir, kept, "the last continue")
        assert completed(mdir) == set(RUNS)
        assert {r: comparable(read_json(mdir / r / "metrics.json")) for r in RUNS} == expected
        assert not list(mdir.rglob("*.partial")), "a temporary file of an interrupted write was left behind"
        mdir.rename(root / "done" / mdir.name)
    print(f"{len(log)} faults, none lost a run:", *log, sep="\n  ")


def test_sigterm_to_the_runner_alone_then_continue_equals_an_uninterrupted_matrix(make):
    root = make.root
    (root / ".config").write_text(CONFIG)
    reference = make("all", "JOBS=2")
    assert reference.returncode == 0, reference.stdout + reference.stderr
    ref_dir = only_matrix(root)
    expected = {r: comparable(read_json(ref_dir / r / "metrics.json")) for r in RUNS}
    (root / "done").mkdir()
    ref_dir.rename(root / "done" / ref_dir.name)

    proc = make.popen("all", "JOBS=2", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: any((root / "results").glob("*/matrix.json")), "matrix.json", proc)
        mdir = only_matrix(root)
        wait_until(lambda: epochs_done(mdir) >= 2, "two epochs", proc)
        os.kill(runner_pid(root), signal.SIGTERM)  # the runner alone, not make
        proc.wait(timeout=PATIENCE_S)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    assert proc.returncode != 0
    # The runner passed the signal on: its trainers checkpointed and stopped, none trains on without it.
    assert not any(claimed(mdir / r) for r in RUNS)
    stopped = [r for r in RUNS if (read_json(mdir / r / "run.json") or {}).get("status") == "interrupted"]
    assert stopped and all("stopped by SIGTERM" in read_json(mdir / r / "run.json")["error"] for r in stopped)

    resumed = make("continue", "JOBS=2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for r in stopped:
        assert read_json(mdir / r / "run.json")["attempt"] == 2 and (mdir / r / "train.log.1").exists()
    assert {r: comparable(read_json(mdir / r / "metrics.json")) for r in RUNS} == expected
