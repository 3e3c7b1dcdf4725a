"""`launch.launcher: torchpack` through the real parts: `bevctl start` runs `torchpack dist-run` (PyPI's torchpack
over Debian's OpenMPI), which starts 2 CPU ranks of the bundled trainer that join one gloo process group.
OpenMPI, torchpack and mpi4py come from tests/setup_extras.sh; without them the test skips and says why."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import BIN, run_cli
from tests.launch.common import FAST, events

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


@pytest.fixture(scope="module")
def mpi_env():
    missing = []
    if not shutil.which("mpirun"):
        missing.append("mpirun (apt-get install openmpi-bin libopenmpi-dev)")
    if not (BIN / "torchpack").is_file():
        missing.append("torchpack (pip install --no-deps torchpack)")
    if subprocess.run([sys.executable, "-c", "import mpi4py"], capture_output=True).returncode != 0:
        missing.append("mpi4py")
    if missing:
        pytest.skip("tests/setup_extras.sh could not install: " + ", ".join(missing))
    # As a user with the venv activated: torchpack (and the trainer's python) on PATH.
    return {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_torchpack_dist_run_trains_two_cpu_ranks(tmp_path, launch_synth, mpi_env):
    common = ["demo", "--local", "--name", "tp", "--set", "launch.launcher=torchpack", "--set", "launch.gpus=2",
              "--set", "train.device=cpu", "--set", f"data.root={launch_synth}", "--set", "train.epochs=1",
              "--set", "train.max_iters_per_epoch=2", *FAST]
    plan = run_cli("start", *common, "--dry-run", "--json", cwd=tmp_path, env=mpi_env)
    assert plan.returncode == 0, plan.stderr
    command = json.loads(plan.stdout)["command"]
    assert command[1:4] == ["dist-run", "-np", "2"] and os.path.basename(command[0]) == "torchpack"

    result = run_cli("start", *common, "--yes", "--wait", cwd=tmp_path, env=mpi_env, timeout=400)
    run_dir = tmp_path / "runs" / "tp"
    console = (run_dir / "console.out").read_text()[-3000:] if (run_dir / "console.out").exists() else ""
    assert result.returncode == 0, (result.stderr[-2000:], console)
    got = events(run_dir)
    start = next(e for e in got if e["kind"] == "run_start")
    assert start["world_size"] == 2  # both MPI ranks joined one process group
    assert [e["status"] for e in got if e["kind"] == "run_end"] == ["finished"]
    assert sum(1 for e in got if e["kind"] == "run_start") == 1  # only rank 0 writes events
    assert (run_dir / "latest.pth").is_file()
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["command"][1:4] == ["dist-run", "-np", "2"] and manifest["status"] == "finished"


def test_preflight_refuses_without_openmpi(tmp_path, mpi_env):
    # Only the venv on PATH: torchpack is there, mpirun is not. Doctor's launcher checks are start's preflight.
    result = run_cli("start", "demo", "--local", "--dry-run", "--set", "launch.launcher=torchpack",
                     cwd=tmp_path, env={"PATH": str(BIN)})
    assert result.returncode == 1, result.stderr
    assert "mpirun" in result.stderr and "openmpi" in result.stderr.lower()


def test_stop_of_a_torchpack_run_saves_and_ends_it_stopped(tmp_path, launch_synth, mpi_env):
    """`bevctl stop` reaches the MPI ranks themselves (mpirun, signalled, would kill them about a second later):
    both ranks stop together, rank 0 writes its final checkpoint, and the run ends `stopped` with exit code 0."""
    from bevctl import runs
    from tests.safety.hostile import wait_until

    result = run_cli("start", "demo", "--local", "--yes", "--name", "tps", "--set", "launch.launcher=torchpack",
                     "--set", "launch.gpus=2", "--set", "train.device=cpu", "--set", f"data.root={launch_synth}",
                     "--set", "train.epochs=100", "--set", "train.eval_interval=0", "--set", "train.log_interval=1",
                     "--set", "data.workers=1", cwd=tmp_path, env=mpi_env)  # a DataLoader worker under each rank
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "tps"
    assert wait_until(lambda: any(e["kind"] == "train" for e in events(run_dir)), timeout=300), \
        (run_dir / "console.out").read_text()[-2000:]
    trainer = runs.read_manifest(run_dir)["trainer"]
    stop = run_cli("stop", "tps", "--grace", "120", "--json", cwd=tmp_path, env=mpi_env, timeout=300)
    assert stop.returncode == 0, stop.stderr
    got = events(run_dir)
    saved = [e for e in got if e["kind"] == "checkpoint_saved" and e.get("reason") == "signal"]
    assert saved and saved[-1]["path"].endswith("latest.pth") and (run_dir / "latest.pth").is_file()
    assert [(e["status"], e["exit_code"]) for e in got if e["kind"] == "run_end"] == [("stopped", 0)]
    manifest = runs.read_manifest(run_dir)
    assert manifest["status"] == "stopped" and manifest["exit_code"] == 0  # mpirun itself ended cleanly
    assert wait_until(lambda: not runs.pid_alive(trainer["pid"]), timeout=30)
