"""A real, throw-away Slurm cluster on localhost for the tests: one node, 2 CPUs, slurmctld + slurmd in a temp dir.

`slurm_cluster(tmp)` yields the environment (SLURM_CONF) that sbatch/squeue/scancel need and tears the daemons
down afterwards. Debian's `slurm-wlm` (22.05) still ships `auth/none` and `cred/none`, so no munge daemon is needed;
the daemons run as the current user (root under CI) with proctrack/linuxproc and no cgroups, which works inside
a container. When slurm is missing it is installed with apt-get (as the docker tests install docker); when that
or the daemons fail, `SlurmUnavailable` carries the reason the test skips with.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

NODE = "localhost"
DAEMONS = ("slurmctld", "slurmd")


class SlurmUnavailable(RuntimeError):
    """The OS cannot run a Slurm daemon here; the message is the skip reason."""


def ensure_installed() -> None:
    if all(shutil.which(t) for t in ("slurmctld", "slurmd", "sbatch", "squeue", "scancel")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlurmUnavailable("slurm-wlm is not installed and apt-get (as root) is not available to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", "--no-install-recommends", "slurm-wlm"]
    proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:  # the package lists may be missing on a fresh machine
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SlurmUnavailable(f"apt-get install slurm-wlm failed: {tail}")


def _plugin_dir() -> Path | None:
    for candidate in ("/usr/lib/x86_64-linux-gnu/slurm-wlm", "/usr/lib/aarch64-linux-gnu/slurm-wlm",
                      "/usr/lib64/slurm", "/usr/lib/slurm"):
        if Path(candidate).is_dir():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_conf(folder: Path, cpus: int = 2) -> Path:
    plugins = _plugin_dir()
    if plugins is not None and not (plugins / "auth_none.so").is_file():
        raise SlurmUnavailable(f"this Slurm has no auth/none plugin in {plugins} (munge would be needed)")
    user = os.environ.get("USER") or ("root" if os.geteuid() == 0 else str(os.geteuid()))
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(f"""\
ClusterName=bevctltest
SlurmctldHost={NODE}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
KillWait=30
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _stop(folder: Path) -> None:
    for daemon in reversed(DAEMONS):
        pid_file = folder / f"{daemon}.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _log_tail(folder: Path, daemon: str, count: int = 3) -> str:
    try:
        lines = (folder / "log" / f"{daemon}.log").read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
    return " | ".join((errors or lines)[-count:]) or "empty log"


@contextlib.contextmanager
def slurm_cluster(folder: Path, cpus: int = 2, ready_timeout: float = 60) -> Iterator[dict[str, str]]:
    """Start slurmctld + slurmd configured in `folder`; yields the environment for Slurm's clients."""
    ensure_installed()
    conf = write_conf(folder, cpus)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        for daemon, extra in (("slurmctld", ["-c", "-i"]), ("slurmd", ["-N", NODE])):
            proc = subprocess.run([daemon, "-f", str(conf), *extra], env=env, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise SlurmUnavailable(f"{daemon} did not start: {(proc.stderr or proc.stdout).strip()[-300:]} "
                                       f"({_log_tail(folder, daemon)})")
        deadline = time.monotonic() + ready_timeout
        state = ""
        while time.monotonic() < deadline:
            proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True, timeout=30)
            state = proc.stdout.strip().lower()
            if proc.returncode == 0 and state.startswith(("idle", "mix", "alloc")):
                break
            time.sleep(0.5)
        else:
            raise SlurmUnavailable(f"the Slurm node never became idle (state {state or 'unknown'}: "
                                   f"{_log_tail(folder, 'slurmd')}; {_log_tail(folder, 'slurmctld')})")
        yield env
    finally:
        # Jobs first, so their processes do not outlive the daemons that track them.
        subprocess.run(["scancel", "--full", "--signal=KILL", "--user", os.environ.get("USER", "root")],
                       env=env, capture_output=True, timeout=30)
        _stop(folder)
