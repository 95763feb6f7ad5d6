"""A matrix on Slurm: one job array per submission, one array task per run.

usage:
  python -m scripts.slurm task --results DIR --submission N

The runner (scripts/matrix.py) calls `check` before it writes anything,
`submit` to hand runs to Slurm (fine-tuning runs whose parent has not
completed go into arrays of their own, one per parent, that wait for the
parent's task: --dependency=afterok:<job>_<task>, --kill-on-invalid-dep=yes,
so a parent that fails cancels its children's array and `make continue`
submits them again once the parent is retried), `task_states` and `active` for `make status`
and `make continue`, and `cancel` for `make cancel`. Each submission is
recorded in <matrix>/slurm/submissions.json (job id, run ids in task order,
the SLURM_* settings, the sbatch command); its batch script is
<matrix>/slurm/submission-N.sh, its task logs <matrix>/slurm/<job>_<task>.out
(appended to across requeues).

`task` is what every array task runs: the batch script execs it, so Slurm's
signals reach this process. It maps SLURM_ARRAY_TASK_ID to its run and
executes it with scripts.launch.run_one, the local runner's own entry point,
which resumes from checkpoint.pt when there is one and forwards SIGUSR1 and
SIGTERM to the trainer. On the pre-timeout warning (sbatch
--signal=B:USR1@CONFIG_SLURM_SIGNAL_LEAD) the trainer writes checkpoint.pt at
its current step and stops; the task then requeues itself (scontrol
requeue), and the requeued task resumes the run. A run on several nodes
(CONFIG_SLURM_NODES) is started with srun, one torchrun per node, meeting at
the first node (c10d rendezvous).

No Slurm accounting (sacct) is needed: a task's state comes from squeue while
Slurm remembers the job (MinJobAge after it ends); after that the run
directory (run.json) alone tells.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from lib import config as cfg
from lib import matrix
from lib.results import MatrixError, describe, is_done, now, open_matrix, read_json, write_json

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
SUBMISSIONS = "submissions.json"
# squeue states in which a task may still execute its run: continue does not submit that run again.
ACTIVE = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
    "RESIZING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED",
})
FORWARD = (signal.SIGUSR1, signal.SIGTERM)  # to the trainer: both stop it with a checkpoint
# torchrun passes only the signals it handles on to its workers; the pre-timeout warning is one of them here.
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
RDZV_PORTS = (20000, 10000)  # a multi-node run's rendezvous port: first + job id modulo count


# -- settings ---------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def defaults() -> dict:
    """The SLURM_* values of the Kconfig tree's defaults: what a .config that picks another scheduler leaves at None."""
    kconf = cfg.kconfig()
    kconf.syms["MATRIX_SCHEDULER_SLURM"].set_value("y")
    return {k: v for k, v in cfg.values(kconf).items() if k.startswith("SLURM_")}


def settings(config: dict) -> dict:
    """The SLURM_* settings of `config`, each unset one (make SCHEDULER=slurm over a local .config) at its default."""
    return {k: default if config.get(k) is None else config[k] for k, default in defaults().items()}


def sbatch_options(s: dict) -> list[str]:
    """The sbatch options every task of a submission gets, from the SLURM_* settings `s`."""
    options = [
        f"--time={s['SLURM_TIME_LIMIT']}", f"--nodes={s['SLURM_NODES']}", "--ntasks-per-node=1",
        f"--signal=B:USR1@{s['SLURM_SIGNAL_LEAD']}", "--requeue",
    ]
    for key, flag in (("SLURM_PARTITION", "--partition"), ("SLURM_ACCOUNT", "--account"), ("SLURM_QOS", "--qos"),
                      ("SLURM_MEM", "--mem"), ("SLURM_GPUS", "--gpus-per-node"), ("SLURM_CPUS", "--cpus-per-task")):
        if s[key]:
            options.append(f"{flag}={s[key]}")
    try:
        return options + shlex.split(s["SLURM_EXTRA_ARGS"])
    except ValueError as e:
        raise MatrixError(f"CONFIG_SLURM_EXTRA_ARGS={s['SLURM_EXTRA_ARGS']!r} does not split into arguments: {e}") from None


# -- talking to Slurm ----------------------------------------------------------------
def _reason(stderr: str) -> str:
    """The line of a Slurm command's stderr that says what went wrong."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["no message"])[0].split("error: ", 1)[-1]


def _slurm(argv: list[str], what: str) -> str:
    """Run a Slurm command; its stdout, or MatrixError saying `what` failed and Slurm's reason."""
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        raise MatrixError(f"{what}: {_reason(result.stderr)}")
    return result.stdout


def check(config: dict) -> None:
    """Refuse, before anything is written or submitted, what Slurm would refuse: one line that says what to change."""
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        raise MatrixError(
            f"SCHEDULER=slurm needs Slurm's commands, and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            "not on PATH: run make on a Slurm login node, or use SCHEDULER=local"
        )
    s = settings(config)
    options = sbatch_options(s)
    if s["SLURM_PARTITION"]:
        partitions = sorted(set(_slurm(["sinfo", "--noheader", "--format=%R"], "sinfo cannot list the partitions").split()))
        if s["SLURM_PARTITION"] not in partitions:
            raise MatrixError(
                f"CONFIG_SLURM_PARTITION={s['SLURM_PARTITION']!r} is not a partition of this cluster; "
                f"valid: {', '.join(partitions)} (or empty for the default)"
            )
    _slurm(["sbatch", "--test-only", *options, "--wrap", "true"], "sbatch refuses a run with these CONFIG_SLURM_* settings")


def submissions(matrix_dir: Path) -> list[dict]:
    return read_json(Path(matrix_dir) / "slurm" / SUBMISSIONS) or []


def batch_script(matrix_dir: Path, n: int) -> str:
    command = shlex.join([sys.executable, "-m", "scripts.slurm", "task", "--results", str(matrix_dir), "--submission", str(n)])
    return (
        "#!/bin/bash\n"
        f"# An array task of matrix {matrix_dir.name}, submission {n}. exec: Python replaces this shell, so Slurm's signals reach it.\n"
        f"exec {command}\n"
    )


def submit(matrix_dir: Path, meta: dict, run_ids: list[str], throttle: int) -> int:
    """Submit `run_ids`, at most `throttle` tasks of an array at once (0: no limit); record each array; the exit status.

    The runs that may start now are one job array. A fine-tuning run whose
    parent has not completed goes into an array of that parent's children,
    submitted with a dependency on the parent's task (of this submission, or
    an earlier one Slurm still holds); one whose parent will not run is left
    out, with a note.
    """
    matrix_dir = Path(matrix_dir).resolve()
    parent_of = {r["run_id"]: r.get("spec", {}).get("parent") for r in meta.get("runs", [])}
    ready, waiting = [], {}
    for run_id in run_ids:
        parent = parent_of.get(run_id)
        if parent is None or is_done(matrix_dir / parent):
            ready.append(run_id)
        else:
            waiting.setdefault(parent, []).append(run_id)
    tasks = {}  # run id -> its task, "<array job>_<index>"
    if ready:
        job = _submit_array(matrix_dir, meta, ready, throttle)
        tasks = {run_id: f"{job}_{i}" for i, run_id in enumerate(ready)}
    if waiting:
        tasks = {**active_tasks(matrix_dir), **tasks}
    for parent, children in waiting.items():
        if parent not in tasks:
            status = describe(matrix_dir / parent)["status"]
            print(f"not submitted: {', '.join(children)} (skipped: parent {parent} {'failed' if status == 'failed' else f'is {status}'}; "
                  "'make continue' submits them once it completed)", flush=True)
            continue
        _submit_array(matrix_dir, meta, children, throttle, after=tasks[parent])
    return 0


def _submit_array(matrix_dir: Path, meta: dict, run_ids: list[str], throttle: int, after: str | None = None) -> str:
    """Submit `run_ids` as one job array (held until task `after` completed successfully, when given); its job id."""
    slurm_dir = matrix_dir / "slurm"
    slurm_dir.mkdir(exist_ok=True)
    records = submissions(matrix_dir)
    n = len(records)
    script = slurm_dir / f"submission-{n}.sh"
    script.write_text(batch_script(matrix_dir, n))
    s = settings(meta["config"])
    dependency = [f"--dependency=afterok:{after}", "--kill-on-invalid-dep=yes"] if after else []
    argv = [
        "sbatch", "--parsable", f"--job-name={meta['id']}",
        f"--array=0-{len(run_ids) - 1}" + (f"%{throttle}" if throttle else ""),
        f"--output={slurm_dir}/%A_%a.out", "--open-mode=append", f"--chdir={REPO}", *dependency, *sbatch_options(s), str(script),
    ]
    record = {"job_id": None, "run_ids": list(run_ids), "submitted": now(), "settings": s, "sbatch": argv, "after": after}
    write_json(slurm_dir / SUBMISSIONS, records + [record])  # before sbatch: a task may start at once and look itself up
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        write_json(slurm_dir / SUBMISSIONS, records)
        script.unlink()
        raise MatrixError(f"sbatch refused the job array: {_reason(result.stderr)}")
    record["job_id"] = result.stdout.strip().split(";")[0]  # --parsable: "id" or "id;cluster"
    write_json(slurm_dir / SUBMISSIONS, records + [record])
    print(
        f"submitted {len(run_ids)} run(s) as Slurm job array {record['job_id']} "
        f"({f'at most {throttle}' if throttle else 'any number'} at once{f', after task {after}' if after else ''}); "
        f"task logs {slurm_dir}/{record['job_id']}_<task>.out; 'make status' follows it, 'make cancel' stops it",
        flush=True,
    )
    return record["job_id"]


def _squeue(job_ids: list[str]) -> dict[tuple[str, int], str]:
    """(array job id, task index) -> state of every task Slurm still knows among `job_ids`."""
    if shutil.which("squeue") is None:
        raise MatrixError("squeue is not on PATH: the Slurm state of this matrix's tasks is unknown here; use a Slurm login node")
    result = subprocess.run(
        ["squeue", "--noheader", "--array", "--states=all", f"--jobs={','.join(job_ids)}", "--format=%F|%K|%T"],
        capture_output=True, text=True,
    )
    if result.returncode:
        if "Invalid job id" in result.stderr:  # Slurm has forgotten every one of them
            return {}
        raise MatrixError(f"squeue cannot tell the state of jobs {','.join(job_ids)}: {_reason(result.stderr)}")
    states = {}
    for line in result.stdout.split():
        job, index, state = line.split("|")
        states[(job, int(index))] = state
    return states


def _newest_tasks(matrix_dir: Path) -> dict[str, tuple[str, str]]:
    """Run id -> (its newest task "<array job>_<index>", that task's Slurm state; "" once Slurm has forgotten it)."""
    records = [r for r in submissions(matrix_dir) if r["job_id"]]
    if not records:
        return {}
    known = _squeue([r["job_id"] for r in records])
    tasks = {}
    for record in records:  # oldest first: a run's newest task has the last word
        for index, run_id in enumerate(record["run_ids"]):
            tasks[run_id] = (f"{record['job_id']}_{index}", known.get((record["job_id"], index), ""))
    return tasks


def task_states(matrix_dir: Path) -> dict[str, str]:
    """Run id -> Slurm state of its newest task (PENDING, RUNNING, CANCELLED, ...; "" once Slurm has forgotten it)."""
    return {run_id: state for run_id, (_, state) in _newest_tasks(matrix_dir).items()}


def active_tasks(matrix_dir: Path) -> dict[str, str]:
    """Run id -> its newest task, for the runs whose newest task is pending, running or requeued."""
    return {run_id: task for run_id, (task, state) in _newest_tasks(matrix_dir).items() if state in ACTIVE}


def active(matrix_dir: Path) -> set[str]:
    """The run ids whose newest task is pending, running or requeued: submitting them again would run them twice."""
    return set(active_tasks(matrix_dir))


def cancel(matrix_dir: Path) -> int:
    """scancel the matrix's job arrays that still have a task pending or running; the exit status."""
    jobs = [r["job_id"] for r in submissions(matrix_dir) if r["job_id"]]
    known = _squeue(jobs) if jobs else {}
    live = sorted({job for (job, _), state in known.items() if state in ACTIVE}, key=int)
    if not live:
        print(f"nothing to cancel: no task of {Path(matrix_dir).name} is pending or running", flush=True)
        return 0
    _slurm(["scancel", *live], f"scancel {' '.join(live)} failed")
    tasks = sum(state in ACTIVE for state in known.values())
    print(f"cancelled Slurm job array(s) {', '.join(live)} ({tasks} task(s)); 'make continue SCHEDULER=slurm' resumes the runs",
          flush=True)
    return 0


# -- the array task -------------------------------------------------------------------
def multi_node(argv: list[str], nodes: int, procs: int, head: str, port: int, rdzv_id: str, cpus: int = 0,
               gpus: int = 0) -> list[str]:
    """The command of a run on `nodes` nodes, from its planned `argv`: srun starts one torchrun per node, meeting at `head`.

    `procs` processes per node (0: one per GPU of the node); `cpus` and
    `gpus` per node are given to srun again, as a step does not inherit
    sbatch's --cpus-per-task.
    """
    i = next(k for k in range(len(argv) - 1) if argv[k] == "-m" and argv[k + 1].endswith(".train"))
    module, args = argv[i + 1], argv[i + 2:]
    if args[:1] == ["--"]:
        args = args[1:]
    srun = ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    srun += [f"--cpus-per-task={cpus}"] if cpus else []
    srun += [f"--gpus-per-node={gpus}"] if gpus else []
    torchrun = [
        argv[0], "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc_per_node={procs or 'gpu'}",
        "--rdzv_backend=c10d", f"--rdzv_endpoint={head}:{port}", f"--rdzv_id={rdzv_id}",
    ]
    return srun + torchrun + ["-m", module, "--", *args]


def task(matrix_dir: Path, n: int) -> int:
    """Execute the run of this array task; requeue the task when Slurm's pre-timeout warning stopped it. The exit status."""
    if "SLURM_ARRAY_TASK_ID" not in os.environ:
        raise MatrixError("'task' runs inside a Slurm array task (SLURM_ARRAY_TASK_ID is not set); 'make' submits them")
    job, index = os.environ["SLURM_ARRAY_JOB_ID"], int(os.environ["SLURM_ARRAY_TASK_ID"])
    records = submissions(matrix_dir)
    if not 0 <= n < len(records):
        raise MatrixError(f"{matrix_dir}/slurm/{SUBMISSIONS} has no submission {n}")
    record = records[n]
    run_id = record["run_ids"][index]
    matrix_dir, meta = open_matrix(matrix_dir)
    nodes = record["settings"]["SLURM_NODES"]
    if nodes > 1:
        [run] = [r for r in meta["runs"] if r["run_id"] == run_id]
        port = RDZV_PORTS[0] + int(os.environ["SLURM_JOB_ID"]) % RDZV_PORTS[1]
        argv = multi_node(run["argv"], nodes, meta["config"].get("DDP_PROCS") or 0, socket.gethostname(), port,
                          f"{job}_{index}", record["settings"]["SLURM_CPUS"], record["settings"]["SLURM_GPUS"])
        meta = {**meta, "runs": [{**r, "argv": argv} if r is run else r for r in meta["runs"]]}
    os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = TORCHRUN_SIGNALS  # a DDP run's torchrun passes the warning on

    from scripts import launch

    # task/none binds no CPUs: the task's share is what it asked for, not every core the node shows.
    threads = int(os.environ.get("SLURM_CPUS_PER_TASK", 0)) or launch.usable_cpus()
    slot = launch.Slot(0, None, max(1, threads // max(1, matrix.processes(meta["config"]))))
    outcome = launch.run_one(matrix_dir, meta, run_id, forward=FORWARD, slot=slot)
    print(f"{run_id}: {outcome.status}", flush=True)
    if outcome.status == "interrupted" and signal.SIGUSR1 in outcome.signals:
        name = f"{job}_{index}"
        result = subprocess.run(["scontrol", "requeue", name], capture_output=True, text=True)
        if result.returncode:
            print(f"error: scontrol requeue {name}: {_reason(result.stderr)}; 'make continue SCHEDULER=slurm' resumes {run_id}",
                  file=sys.stderr)
            return 1
        print(f"{run_id}: stopped before the time limit with a checkpoint; task {name} requeued to resume it", flush=True)
        return 0
    return 0 if outcome.status in ("completed", "done", "busy") else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.slurm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("task", help="execute this Slurm array task's run (its batch script runs this)")
    t.add_argument("--results", required=True, type=Path, help="the matrix directory")
    t.add_argument("--submission", required=True, type=int, help="the submission's number in slurm/submissions.json")
    args = p.parse_args(argv)
    try:
        return task(args.results, args.submission)
    except MatrixError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
