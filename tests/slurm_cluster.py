"""A one-node Slurm cluster on this machine for the tests: the `slurm_cluster` fixture.

It writes a munge key and a slurm.conf into a temporary directory, starts
munged, slurmctld and slurmd as root (all in the foreground, on free ports,
with their state, spool, logs and sockets in that directory), points
SLURM_CONF at it for the session and waits until sinfo shows the node idle.
At the end it cancels every job, waits until none is left, and stops the
three daemons. Nothing outside the directory is read or written, so a
cluster the machine may already run is left alone, and the tests never
depend on /etc/slurm.

The cluster is what works in a container: proctrack/linuxproc (no cgroups),
task/none, SlurmUser=root, cons_tres with CPUs as the consumable, JobRequeue,
no accounting (the runner reads task states from squeue). The packages
are Debian's slurm-wlm and munge (.ci/run installs them in CI). A test that
needs the cluster is skipped where they cannot be installed (not root, or no
apt-get); with root and apt-get but no packages, it fails and says what to
install.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import wait_until

DAEMONS = ("munged", "slurmctld", "slurmd")
PACKAGES = "slurm-wlm munge"
REAL_MEMORY_MB = 2000  # what the node offers; modest, as no test asks for much


@dataclass
class Cluster:
    """The running cluster: its directory, configuration file, node and partition names."""

    root: Path
    conf: Path
    node: str
    partition: str = "debug"

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def squeue(self, *args: str) -> str:
        return subprocess.run(["squeue", "--noheader", *args], capture_output=True, text=True, check=True,
                              env={**os.environ, **self.env()}).stdout

    def jobs(self) -> list[str]:
        """The ids of every job and array task the controller knows, finished ones included."""
        return self.squeue("--array", "--states=all", "--format=%i").split()


def _missing() -> list[str]:
    return [d for d in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
            if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]


def _require_packages() -> None:
    missing = _missing()
    if not missing:
        if os.geteuid() != 0:
            pytest.skip("the one-node Slurm cluster needs root (slurmctld and slurmd run as SlurmUser=root)")
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing) and cannot be here "
                    f"({'not root' if os.geteuid() else 'no apt-get'}); apt-get install {PACKAGES}")
    pytest.fail(f"{', '.join(missing)} missing: apt-get install {PACKAGES} (.ci/run does it in CI)")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def write_config(root: Path, node: str) -> Path:
    ctld_port, slurmd_port = _free_ports(2)
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(f"""ClusterName=tests
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={REAL_MEMORY_MB} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _log_tail(root: Path) -> str:
    return "\n".join(f"{p.name}: {p.read_text(errors='replace')[-1500:]}" for p in sorted((root / "log").glob("*.log")))


def _node_idle(cluster: Cluster, procs: list[subprocess.Popen]) -> bool:
    dead = [p for p in procs if p.poll() is not None]
    if dead:
        pytest.fail(f"{dead[0].args[0]} exited ({dead[0].returncode}) while the test cluster started:\n{_log_tail(cluster.root)}")
    out = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, env={**os.environ, **cluster.env()})
    return out.returncode == 0 and out.stdout.split() == ["idle"]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Cluster:
    """A one-node Slurm cluster for the session; SLURM_CONF points at it while the session lasts."""
    _require_packages()
    root = tmp_path_factory.mktemp("slurm")
    root.chmod(0o755)  # munged wants its socket's directories searchable by all
    node = socket.gethostname().split(".")[0]
    cluster = Cluster(root, write_config(root, node), node)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    env = {**os.environ, **cluster.env()}
    logs = open(root / "log" / "daemons.out", "w")
    procs: list[subprocess.Popen] = []
    before = os.environ.get("SLURM_CONF")
    try:
        procs.append(subprocess.Popen(
            [_daemon("munged"), "--foreground", "--force", f"--socket={root}/munge.socket", f"--key-file={key}",
             f"--log-file={root}/log/munged.log", f"--pid-file={root}/munged.pid", f"--seed-file={root}/munged.seed"],
            stdout=logs, stderr=subprocess.STDOUT))
        wait_until(lambda: (root / "munge.socket").exists() or procs[0].poll() is not None, "munged's socket")
        procs.append(subprocess.Popen([_daemon("slurmctld"), "-D", "-i"], env=env, stdout=logs, stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen([_daemon("slurmd"), "-D", "-N", node], env=env, stdout=logs, stderr=subprocess.STDOUT))
        wait_until(lambda: _node_idle(cluster, procs), "idle node in sinfo")
        os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
    finally:
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        if len(procs) == len(DAEMONS) and all(p.poll() is None for p in procs):
            subprocess.run(["scancel", f"--partition={cluster.partition}"], env=env, capture_output=True)
            wait_until(lambda: not cluster.squeue(), "no job left in the test cluster")
        for proc in reversed(procs):
            proc.terminate()
            proc.wait()
        logs.close()
