"""A real one-node Slurm on localhost for the tests (Debian's slurm-wlm and munge, run as root):
munged if none runs, then slurmctld and slurmd in the foreground with every file and port of their
own, stopped afterwards (``KillWait=2``: a cancelled task gets SIGKILL 2 s after SIGTERM, which
submitit's tasks ignore while they finish, so that the tests' short tasks are really stopped). `.ci/run` installs the packages. Where they are missing the tests that need
the cluster are skipped with a line saying what to install, except on CI (``CI`` set) or with
``ROBDISTILL_REQUIRE_SLURM=1``, where a cluster that cannot start fails them with a line saying why."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

CONF = """ClusterName=robdistill-tests
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
ReturnToService=2
KillWait=2
MpiDefault=none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName=localhost CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") or os.environ.get("ROBDISTILL_REQUIRE_SLURM") == "1":
        pytest.fail(f"Slurm could not start: {reason}", pytrace=False)
    pytest.skip(f"no Slurm here ({reason}): apt-get install slurm-wlm munge, as .ci/run does")


def _munge_works() -> bool:
    try:
        token = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        return token.returncode == 0 and subprocess.run(["unmunge"], input=token.stdout, capture_output=True,
                                                        timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def one_node_slurm(root: Path) -> Iterator[dict[str, str]]:
    """Start the cluster under ``root``; yields the environment its clients need (``SLURM_CONF``)."""
    missing = [tool for tool in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scancel")
               if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        _unavailable(f"{', '.join(missing)} not installed")
    if os.geteuid() != 0:
        _unavailable("a one-node Slurm here runs its daemons as root")
    started: list[subprocess.Popen] = []
    if not _munge_works():
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["/usr/sbin/mungekey", "--create"], capture_output=True)
        subprocess.run(["/usr/sbin/munged", "--force"], capture_output=True)
        for _ in range(20):
            if _munge_works():
                break
            time.sleep(0.5)
        else:
            _unavailable("munged did not start (munge -n | unmunge fails)")
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(CONF.format(root=root, ctld_port=_free_port(), d_port=_free_port(), cpus=os.cpu_count() or 1))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        started.append(subprocess.Popen(["/usr/sbin/slurmctld", "-D", "-i"], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        started.append(subprocess.Popen(["/usr/sbin/slurmd", "-D", "-N", "localhost"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            if state.returncode == 0 and state.stdout.strip() in ("idle", "mixed", "allocated"):
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in started):
                log = (root / "slurmctld.log").read_text()[-300:] if (root / "slurmctld.log").exists() else ""
                _unavailable(f"the node did not come up (sinfo: {state.stdout.strip() or state.stderr.strip()}); "
                             f"{log.strip().splitlines()[-1] if log.strip() else 'no slurmctld log'}")
            time.sleep(0.5)
        yield {"SLURM_CONF": str(conf)}
    finally:
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
