"""What each launcher runs, built from real phases (no daemon): torchpack's command line, a checkout's command,
the sbatch script (parsed by bash), the container environment. The real-daemon tests are beside this file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bevctl.errors import UsageError
from bevctl.launchers import checkout, container_env, program, slurm, torchpack, workdir
from bevctl.phases import load_phase


def test_bundled_program_and_torchpack_form():
    phase = load_phase("phase4a", ["launch.launcher=torchpack"])
    prog = program(phase, "/runs/r", "python")
    assert prog == ["python", "-m", "model.train", "--run-dir", "/runs/r"]
    cmd = torchpack.command(phase, prog, 8)
    assert cmd[1:4] == ["dist-run", "-np", "8"] and Path(cmd[0]).name == "torchpack"
    assert cmd[4:] == prog


def test_torchpack_across_nodes_needs_hosts():
    phase = load_phase("phase4a", ["launch.launcher=torchpack", "launch.nnodes=2"])
    with pytest.raises(UsageError, match="host list"):
        torchpack.command(phase, ["python", "x.py"], 8)
    assert torchpack.command(phase, ["python", "x.py"], 8, hosts="a:8,b:8")[2:6] == ["-np", "16", "-H", "a:8,b:8"]


def test_checkout_command_is_the_originals_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    phase = load_phase("phase4a", ["trainer.repo=/src/bevfusion", "trainer.config=configs/x.yaml",
                                   "trainer.args=[--data.samples_per_gpu, '2']"])
    assert workdir(phase) == Path("/src/bevfusion")
    cmd = program(phase, "runs/r", "unused")
    assert cmd == ["python", "tools/train.py", "configs/x.yaml", "--load_from", str(tmp_path / "runs/phase3/epoch_5.pth"),
                   "--run-dir", str(tmp_path / "runs/r"), "--data.samples_per_gpu", "2"]
    resumed = phase.model_copy(update={"resume": "auto", "load_from": None})
    assert program(resumed, "/runs/r", "python")[3:5] == ["--resume_from", "/runs/r/latest.pth"]


def test_checkout_problems_name_the_missing_part(tmp_path):
    repo = tmp_path / "bevfusion"
    phase = load_phase("demo", [f"trainer.repo={repo}", "trainer.config=configs/x.yaml"])
    assert checkout.problems(phase)[0][0] == "trainer.repo"
    (repo / "tools").mkdir(parents=True)
    (repo / "tools/train.py").write_text("")
    labels = [p[0] for p in checkout.problems(phase)]
    assert labels == ["trainer.config"]
    (repo / "configs").mkdir()
    (repo / "configs/x.yaml").write_text("")
    assert checkout.problems(phase) == []
    with pytest.raises(UsageError, match="trainer.manifest"):
        checkout.require_runnable(load_phase("demo", [f"trainer.repo={repo}", "trainer.config=configs/x.yaml",
                                                      "trainer.manifest=nope.json"]))


def _bash_ok(text: str, tmp_path: Path) -> None:
    path = tmp_path / "job.sbatch"
    path.write_text(text)
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_sbatch_script_two_nodes_torchrun(tmp_path):
    phase = load_phase("phase4a", ["launch.where=slurm", "launch.nnodes=2", "launch.slurm.partition=gpu",
                                   "launch.slurm.account=proj1", "launch.slurm.time=2-00:00:00",
                                   "launch.slurm.cpus_per_task=32", "launch.slurm.extra_sbatch=[--qos=high, exclusive]"])
    text = slurm.script(phase, "r1", tmp_path / "runs/r1", Path("/proj"), {"NCCL_DEBUG": "INFO"})
    _bash_ok(text, tmp_path)
    sbatch = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("#SBATCH")]
    for option in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=gpu", "--account=proj1",
                   "--time=2-00:00:00", "--cpus-per-task=32", "--qos=high", "--exclusive",
                   f"--output={tmp_path / 'runs/r1/console.out'}"):
        assert option in sbatch, option
    srun = [line for line in text.splitlines() if line.startswith("srun ")]
    assert len(srun) == 1
    for part in ("torch.distributed.run", '"--nnodes=$SLURM_NNODES"', "--nproc-per-node=8", "--rdzv-backend=c10d",
                 '"--rdzv-endpoint=$head:29500"', '"--rdzv-id=$SLURM_JOB_ID"', "-m model.train",
                 f"--run-dir {tmp_path / 'runs/r1'}"):
        assert part in srun[0], part
    assert "export NCCL_DEBUG=INFO" in text and "export PYTHONPATH=/proj" in text


def test_sbatch_script_single_cpu_process_has_no_torchrun(tmp_path):
    phase = load_phase("demo", ["launch.where=slurm", "launch.cpu_processes=1"])
    text = slurm.script(phase, "d", tmp_path / "d", Path("/proj"))
    _bash_ok(text, tmp_path)
    srun = [line for line in text.splitlines() if line.startswith("srun ")][0]
    assert srun.endswith(f"{sys.executable} -m model.train --run-dir {tmp_path / 'd'}")
    assert "--gpus-per-node" not in text


def test_sbatch_script_torchpack_and_containers(tmp_path):
    phase = load_phase("phase4a", ["launch.where=slurm", "launch.nnodes=2", "launch.launcher=torchpack",
                                   "launch.slurm.container_runtime=apptainer", "launch.slurm.container_image=/img/b.sif"])
    text = slurm.script(phase, "r", tmp_path / "r", Path("/proj"))
    _bash_ok(text, tmp_path)
    assert 'torchpack dist-run -np 16 -H "$hosts" python -m model.train' in text
    assert "#SBATCH --ntasks-per-node=8" in text  # mpirun takes its slots from the allocation: one task per rank
    assert "apptainer exec --nv --bind /proj," in text and "/img/b.sif torchpack" in text
    pyxis = load_phase("phase4a", ["launch.where=slurm", "launch.slurm.container_runtime=pyxis"])
    text = slurm.script(pyxis, "r", tmp_path / "r", Path("/proj"))
    assert "--container-image=bevctl:latest" in text and 'torchrun "--nnodes=$SLURM_NNODES"' in text
    with pytest.raises(UsageError, match="pyxis"):
        slurm.script(phase.model_copy(update={"launch": pyxis.launch.model_copy(update={"launcher": "torchpack"})}),
                     "r", tmp_path / "r", Path("/proj"))


def test_slurm_time_must_be_text(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("launch:\n  slurm:\n    time: 48:00:00\n")  # YAML 1.1 reads 172800 (base 60)
    with pytest.raises(UsageError, match="quoted Slurm time"):
        load_phase(str(path))
    path.write_text('launch:\n  slurm:\n    time: "48:00:00"\n')
    assert load_phase(str(path)).launch.slurm.time == "48:00:00"


def test_job_state_is_none_without_slurm(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurm.job_state("12") is None
    assert slurm.is_active(None) is None and slurm.is_active("RUNNING") and not slurm.is_active("CANCELLED")


def test_container_environment_order_and_validation():
    host = {"NCCL_IB_HCA": "mlx5", "WANDB_API_KEY": "k", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "HOME": "/root",
            "CUDA_VISIBLE_DEVICES": "1"}
    phase = load_phase("demo", ["container.env={NCCL_IB_HCA: mlx5_0, FOO: bar}"])
    env = container_env.environment(phase, ["FOO=baz", "CUDA_VISIBLE_DEVICES"], host=host)
    assert env == {"NCCL_IB_HCA": "mlx5_0", "WANDB_API_KEY": "k", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
                   "FOO": "baz", "CUDA_VISIBLE_DEVICES": "1"}
    assert container_env.environment(None, [], host={**host, "BEVCTL_NO_PASSTHROUGH": "1"}) == {}
    with pytest.raises(UsageError, match="not a variable name"):
        container_env.parse_env_args(["1X=2"], host)
    with pytest.raises(UsageError, match="not set on this host"):
        container_env.parse_env_args(["MISSING"], host)


def test_gpus_accepts_counts_and_device_ids():
    assert container_env.parse_gpus("device=0,1") == (2, "device=0,1")
    assert container_env.parse_gpus("0,3") == (2, "device=0,3")
    assert container_env.parse_gpus("4") == (4, 4)
    assert container_env.parse_gpus("all") == (None, "all")
    assert container_env.parse_gpus("none") == (0, None)
    with pytest.raises(UsageError, match="device=ID"):
        container_env.parse_gpus("device=x")


def test_infiniband_devices_and_ipc_lock(tmp_path):
    assert container_env.infiniband(tmp_path / "none") == {}
    (tmp_path / "uverbs0").write_text("")
    (tmp_path / "rdma_cm").write_text("")
    options = container_env.infiniband(tmp_path)
    assert options["cap_add"] == ["IPC_LOCK"]
    assert options["devices"] == [f"{tmp_path}/rdma_cm:{tmp_path}/rdma_cm:rwm", f"{tmp_path}/uverbs0:{tmp_path}/uverbs0:rwm"]


def test_doctor_reports_infiniband(monkeypatch, tmp_path):
    from bevctl import doctor

    monkeypatch.setattr(container_env, "IB_DIR", tmp_path)
    monkeypatch.setattr(container_env.infiniband, "__defaults__", (tmp_path,))
    monkeypatch.setattr(container_env.infiniband_summary, "__defaults__", (tmp_path,))
    two_nodes = load_phase("phase4a", ["launch.nnodes=2", "launch.rdzv_endpoint=h:1"])
    report = doctor.run_checks(two_nodes, ids=["launcher.infiniband"])
    assert report.results[0].status == "warn" and "TCP" in report.results[0].message
    (tmp_path / "uverbs0").write_text("")
    report = doctor.run_checks(two_nodes, ids=["launcher.infiniband"])
    assert report.results[0].status == "ok" and "uverbs0" in report.results[0].message


def test_findings_name_what_blocks_the_launch(tmp_path, monkeypatch):
    from bevctl.launchers import findings

    monkeypatch.setenv("PATH", str(tmp_path))  # no Slurm tools
    rows = findings(load_phase("phase4a", ["launch.where=slurm", f"trainer.repo={tmp_path}/nope",
                                           "trainer.config=c.yaml"]), "slurm")
    assert [(r[0], r[1]) for r in rows] == [("fail", "trainer.repo"), ("fail", "slurm")]
    assert "sbatch" in rows[1][2]
    rows = findings(load_phase("phase4a", ["launch.launcher=torchpack", "launch.nnodes=2"]), "local")
    assert rows[0][:2] == ("fail", "launcher")


def test_shell_passes_env_and_gpu_ids_to_the_container(tmp_path):
    from tests.conftest import run_cli

    result = run_cli("shell", "--print-cmd", "--env", "FOO=bar", "--env", "WANDB_MODE", "--gpus", "device=0,1",
                     env={"NCCL_IB_HCA": "mlx5_0", "WANDB_MODE": "offline", "BEVCTL_NO_PASSTHROUGH": ""}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[0]
    for part in ("-e NCCL_IB_HCA=mlx5_0", "-e WANDB_MODE=offline", "-e FOO=bar", "--gpus '\"device=0,1\"'"):
        assert part in line, part
    bad = run_cli("shell", "--print-cmd", "--env", "1X=2", cwd=tmp_path)
    assert bad.returncode == 2 and "not a variable name" in bad.stderr


def test_run_spec_gets_infiniband_devices_and_ipc_lock(tmp_path, monkeypatch):
    from bevctl import docker

    (tmp_path / "uverbs0").write_text("")
    monkeypatch.setattr(container_env.infiniband, "__defaults__", (tmp_path,))
    spec = docker.run_spec(load_phase("demo", ["container.env={A: b}"]), ["true"], env={"C": "d"})
    assert spec["cap_add"] == ["IPC_LOCK"] and spec["environment"]["A"] == "b" and spec["environment"]["C"] == "d"
    argv = docker.docker_run_cmd(spec)
    assert argv[argv.index("--device") + 1] == f"{tmp_path}/uverbs0:{tmp_path}/uverbs0:rwm"
    assert argv[argv.index("--cap-add") + 1] == "IPC_LOCK"


def test_start_takes_gpu_ids_as_the_process_count(tmp_path):
    from tests.conftest import run_cli

    result = run_cli("start", "demo", "--local", "--dry-run", "--json", "--gpus", "device=0,1", cwd=tmp_path)
    plan = json.loads(result.stdout)
    assert plan["nproc_per_node"] == 2 and "--nproc-per-node=2" in plan["command"]
    bad = run_cli("start", "demo", "--local", "--dry-run", "--gpus", "device=x", cwd=tmp_path)
    assert bad.returncode == 2 and "device=ID" in bad.stderr


def test_sbatch_script_expands_only_its_own_variables(tmp_path):
    marker = tmp_path / "pwned"
    phase = load_phase("demo", ["launch.where=slurm", f"trainer.repo={tmp_path}", "trainer.config=c.py",
                                f"trainer.args=['--x', '$(touch {marker})', '`touch {marker}`', '$HOME']"])
    text = slurm.script(phase, "r", tmp_path / "r", Path("/proj"))
    srun = [line for line in text.splitlines() if line.startswith("srun ")][0]
    # bash itself tells what the words become: echo them instead of running srun
    proc = subprocess.run(["bash", "-c", "srun() { printf '%s\\n' \"$@\"; }\n" + srun], capture_output=True, text=True)
    words = proc.stdout.splitlines()
    assert f"$(touch {marker})" in words and f"`touch {marker}`" in words and "$HOME" in words
    assert not marker.exists()


def test_mpi_stop_finds_the_ranks_not_their_forked_workers_and_signals_them():
    """The ranks under a launcher are the processes running the program whose parent does not: a forked worker with
    the same command line (a DataLoader worker) is left alone, and so is the launcher itself."""
    import os
    import signal
    import time

    from bevctl.launchers import mpi_stop
    from bevctl.runs.process import parent_pid, pid_alive

    assert mpi_stop.mpi_program(["/v/bin/torchpack", "dist-run", "-np", "4", "-H", "a:2,b:2", "py", "-m", "t"]) == \
        ["py", "-m", "t"]
    assert mpi_stop.mpi_program(["python", "-m", "torch.distributed.run", "-m", "t"]) is None
    code = "import os, time\nos.fork()\ntime.sleep(60)\n"  # each rank forks one worker with its command line
    program = [sys.executable, "-c", code]
    launcher = subprocess.Popen(["bash", "-c", '"$@" & "$@" & wait', "launcher", *program])
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ranks = mpi_stop.mpi_ranks(launcher.pid, program)
            workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and parent_pid(int(p)) in ranks]
            if len(ranks) == 2 and len(workers) == 2:
                break
            time.sleep(0.05)
        assert len(ranks) == 2 and len(workers) == 2 and launcher.pid not in ranks
        assert mpi_stop.mpi_ranks(launcher.pid + 10**7, program) == []  # nothing under an unknown root
        assert mpi_stop.main([str(launcher.pid), "--", *program]) == 0
        assert launcher.wait(timeout=20) == 0  # the ranks ended on SIGTERM and the launcher finished by itself
        assert all(pid_alive(pid) for pid in workers)  # the workers were not signalled
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if launcher.poll() is None:
            launcher.kill()
        launcher.wait()
