"""`launch.where: slurm` against a real Slurm: slurmctld + slurmd on localhost (tests/helpers/slurm_cluster.py),
a 1-node CPU job of the demo submitted by `bevctl start`, watched with `bevctl runs`/`bevctl watch`, stopped
with `bevctl stop` (scancel --signal=TERM, then the final checkpoint) and resumed with `--resume auto` (a new job)."""

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, run_cli
from tests.helpers.slurm_cluster import SlurmUnavailable, slurm_cluster
from tests.launch.common import FAST, events, wait_for_event, wait_status

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm_env():
    # Slurm's socket and state paths must be short; pytest's tmp paths can exceed the unix-socket limit.
    folder = Path(tempfile.mkdtemp(prefix="bevctl-slurm-"))
    try:
        with slurm_cluster(folder) as env:
            yield {"SLURM_CONF": env["SLURM_CONF"], "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    except SlurmUnavailable as exc:
        pytest.skip(f"no Slurm here: {exc}")


def test_submit_watch_stop_resume(tmp_path, launch_synth, slurm_env):
    common = ["demo", "--name", "s1", "--set", "launch.where=slurm", "--set", f"data.root={launch_synth}",
              "--set", "train.epochs=1", "--set", "train.max_iters_per_epoch=6", "--set", "train.batch_size=2", *FAST]
    started = run_cli("start", *common, "--yes", "--json", cwd=tmp_path, env=slurm_env)
    assert started.returncode == 0, started.stderr
    run_dir = tmp_path / "runs" / "s1"
    manifest = json.loads((run_dir / "run.json").read_text())
    first_job = manifest["job_id"]
    assert first_job and manifest["where"] == "slurm"
    script = (run_dir / "job.sbatch").read_text()  # what `start --dry-run` prints
    srun = [line for line in script.splitlines() if line.startswith("srun ")]
    assert "#SBATCH --nodes=1" in script and len(srun) == 1 and f"-m model.train --run-dir {run_dir}" in srun[0]

    wait_for_event(run_dir, "train", timeout=180)
    info, _ = wait_status(tmp_path, "s1", ("running",), env=slurm_env)
    assert info["where"] == "slurm" and info["alive"] is True
    stopped = run_cli("stop", "s1", "--json", cwd=tmp_path, env=slurm_env, timeout=200)
    assert stopped.returncode == 0, stopped.stderr
    report = json.loads(stopped.stdout)
    assert report["status"] == "stopped", report
    assert report["last_checkpoint"] and (run_dir / "latest.pth").is_file()
    done_before = max(e["global_step"] for e in events(run_dir) if e["kind"] == "train")
    watched = run_cli("watch", "s1", "--json", cwd=tmp_path, env=slurm_env)
    assert watched.returncode == 0, watched.stderr
    snap = json.loads(watched.stdout)["runs"][0]
    assert snap["run"]["status"] == "stopped" and snap["progress"]["global_step"] == done_before

    resumed = run_cli("start", *common, "--resume", "auto", "--yes", cwd=tmp_path, env=slurm_env)
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["job_id"] != first_job
    info, _ = wait_status(tmp_path, "s1", ("finished", "failed", "crashed", "stopped"), timeout=240, env=slurm_env)
    assert info["status"] == "finished", (info, (run_dir / "console.out").read_text()[-2000:])
    got = events(run_dir)
    last_start = max(i for i, e in enumerate(got) if e["kind"] == "run_start")
    steps = [e["global_step"] for e in got[last_start:] if e["kind"] == "train"]
    assert steps and steps[0] == done_before + 1 and steps[-1] == 6  # continued where the stop saved


def test_job_state_reads_squeue(slurm_env, tmp_path):
    from bevctl.launchers import slurm

    script = tmp_path / "sleep.sbatch"
    script.write_text(f"#!/bin/bash\n#SBATCH --output={tmp_path}/out.txt\nsrun sleep 30\n")
    old = dict(os.environ)
    os.environ.update(slurm_env)
    try:
        job = slurm.submit(script)
        assert slurm.job_state(job) in ("PENDING", "RUNNING", "CONFIGURING")
        slurm.cancel(job)

        deadline = time.monotonic() + 60
        while slurm.is_active(slurm.job_state(job)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert slurm.job_state(job) in ("CANCELLED", "FAILED", "COMPLETED")
        assert slurm.job_state("999999") is None
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_torchpack_job_stops_with_a_final_checkpoint(tmp_path, launch_synth, slurm_env):
    """`launch.launcher: torchpack` under Slurm: the batch shell runs mpirun with 2 CPU ranks; `bevctl stop` reaches
    the ranks (not mpirun, which would kill them before they save) and the job ends stopped with latest.pth."""
    import shutil
    import subprocess
    import sys

    if not (shutil.which("mpirun") and (BIN / "torchpack").is_file()
            and subprocess.run([sys.executable, "-c", "import mpi4py"], capture_output=True).returncode == 0):
        pytest.skip("tests/setup_extras.sh could not install OpenMPI, torchpack and mpi4py")
    common = ["demo", "--name", "tps", "--set", "launch.where=slurm", "--set", "launch.launcher=torchpack",
              "--set", "launch.gpus=0", "--set", "launch.cpu_processes=2", "--set", "train.device=cpu", "--set", f"data.root={launch_synth}",
              "--set", "train.epochs=100", "--set", "train.eval_interval=0", "--set", "train.log_interval=1",
              "--set", "data.workers=1"]
    started = run_cli("start", *common, "--yes", "--json", cwd=tmp_path, env=slurm_env)
    assert started.returncode == 0, started.stderr
    run_dir = tmp_path / "runs" / "tps"
    wait_for_event(run_dir, "train", timeout=240)
    stopped = run_cli("stop", "tps", "--json", "--grace", "120", cwd=tmp_path, env=slurm_env, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    report = json.loads(stopped.stdout)
    got = events(run_dir)
    console = (run_dir / "console.out").read_text()[-2000:] if (run_dir / "console.out").exists() else ""
    assert report["status"] == "stopped", (report, console)
    saved = [e for e in got if e["kind"] == "checkpoint_saved" and e.get("reason") == "signal"]
    assert saved and (run_dir / "latest.pth").is_file(), console
    assert [(e["status"], e["exit_code"]) for e in got if e["kind"] == "run_end"] == [("stopped", 0)]
