"""A one-node Slurm cluster on this machine for the tests: munged, slurmctld and slurmd from Debian's
slurm-wlm, with a generated slurm.conf.

No accounting database: jobs are recorded by the job-completion plugin (jobcomp/filetxt, read by
`sacct -c` and by the tests), and Snakemake follows them with `squeue --states=all`, which sees a
finished job for MinJobAge seconds. Memory is a consumable resource (CR_Core_Memory), so a job's
--mem is what it is allocated, as on a real cluster.

The configuration goes to /etc/slurm/slurm.conf because that is where `srun` inside a job looks
(the Slurm job-step executor drops SLURM_CONF from the job's environment); a slurm.conf this module
did not write is never replaced.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

CONF = Path("/etc/slurm/slurm.conf")
MARK = "# written by qwen3repro's tests (tests/slurm_cluster.py); removed when they end"
DAEMONS = ("munged", "slurmctld", "slurmd")


def why_not() -> str | None:
    """One line saying why a cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "Slurm's daemons need root to start here (the test runs them itself)"
    missing = [d for d in DAEMONS + ("sbatch", "squeue", "sacct") if not shutil.which(d)]
    if missing:
        return f"{', '.join(missing)} not installed (make slurm installs Debian's slurm-wlm and munge as root)"
    if CONF.exists() and MARK not in CONF.read_text():
        return f"{CONF} exists and was not written by these tests; they will not replace it"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    """What the node offers jobs: the machine's memory less 2 GiB for the system and the tests."""
    total_kb = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")))
    return total_kb // 1024 - 2048


def _munge_running() -> bool:
    munge = subprocess.run(["munge", "-n"], capture_output=True)
    return (
        munge.returncode == 0 and subprocess.run(["unmunge"], input=munge.stdout, capture_output=True).returncode == 0
    )


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = root
        self.jobcomp = root / "jobcomp.txt"
        self.node = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.memory_mb = _memory_mb()

    def conf(self) -> str:
        r = self.root
        return "\n".join(
            [
                MARK,
                "ClusterName=qwen3repro-test",
                f"SlurmctldHost={self.node}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                f"StateSaveLocation={r}/state",
                f"SlurmdSpoolDir={r}/spool",
                f"SlurmctldPidFile={r}/slurmctld.pid",
                f"SlurmdPidFile={r}/slurmd.pid",
                f"SlurmctldLogFile={r}/slurmctld.log",
                f"SlurmdLogFile={r}/slurmd.log",
                # no cgroups in a container: processes tracked through /proc, tasks not bound
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SchedulerType=sched/backfill",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "ReturnToService=2",
                "MpiDefault=none",
                "JobAcctGatherType=jobacct_gather/linux",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/filetxt",
                f"JobCompLoc={self.jobcomp}",
                # squeue --states=all shows a finished job this long: what Snakemake's status check reads
                "MinJobAge=3600",
                f"NodeName={self.node} CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
                "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def start(self) -> None:
        for d in ("state", "spool"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.write_text(self.conf())
        if not _munge_running():
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            if not Path("/etc/munge/munge.key").exists():
                subprocess.run(["mungekey", "--create"], check=True)
                shutil.chown("/etc/munge/munge.key", "munge", "munge")
            subprocess.run(["munged", "--force"], check=True, capture_output=True)
        subprocess.run(["slurmctld", "-c"], check=True)  # -c: a clean state, no jobs from an earlier run
        subprocess.run(["slurmd"], check=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.strip()
            if state == "idle":
                return
            time.sleep(1)
        raise RuntimeError(f"the Slurm node did not come up (sinfo says {state!r}); see {self.root}/slurmd.log")

    def stop(self) -> None:
        subprocess.run(["scontrol", "shutdown"], capture_output=True)
        for pid_file in ("slurmctld.pid", "slurmd.pid"):
            deadline = time.monotonic() + 30
            path = self.root / pid_file
            while path.exists() and time.monotonic() < deadline:
                time.sleep(0.5)
        if CONF.exists() and MARK in CONF.read_text():
            CONF.unlink()

    def records(self) -> list[dict]:
        """Slurm's completion record of every job: JobId, Name, JobState, TimeLimit (minutes),
        ProcCnt (CPUs) and Tres (cpu=..,mem=..M,..), as jobcomp/filetxt writes them."""
        records = []
        for line in self.jobcomp.read_text().splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            records.append(fields)
        return records
