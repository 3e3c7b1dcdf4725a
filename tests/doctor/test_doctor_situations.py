"""bevctl doctor in real situations built in temp dirs, mostly through the installed CLI."""

import ctypes
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from bevctl import doctor
from bevctl.doctor import checks_python
from bevctl.doctor.core import Context
from bevctl.phases import phase_from_dict
from tests.conftest import run_cli

NO_DOCKER = "unix:///nonexistent.sock"
ON_HOST = {"BEVCTL_IN_CONTAINER": "0"}  # these tests describe the host side, even when the suite runs in a container


def _has_nvidia() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        return True
    except OSError:
        return shutil.which("nvidia-smi") is not None


needs_no_gpu = pytest.mark.skipif(_has_nvidia(), reason="this machine has an NVIDIA driver")


def write_phase(folder: Path, **sections) -> Path:
    data = {"name": "t", "model": {"config": "tiny", "gca": "task"},
            "data": {"root": str(folder / "data"), "version": "v1.0-mini", "synthetic": False, "workers": 2, "sweeps": 1},
            "train": {"device": "cpu", "max_keep": 1}, "launch": {"gpus": 0, "where": "local"},
            "run": {"root": str(folder / "runs")}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = folder / "phase.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def doctor_json(*args, cwd=None, env=None, code=None):
    result = run_cli("doctor", "--json", *args, cwd=cwd, env=env)
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    if code is not None:
        assert result.returncode == code, result.stdout + result.stderr
    assert report["exit_code"] == result.returncode
    return {c["id"]: c for c in report["checks"]}, report


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# --------------------------------------------------------------------------------------------- launcher


def test_torchpack_installed_but_not_on_path_fails_with_the_path_fix(tmp_path):
    """The seed's problem 1: `torchpack: command not found`, fixed by an environment variable."""
    phase = write_phase(tmp_path, launch={"launcher": "torchpack"})
    conda_bin = tmp_path / "conda" / "bin"
    script(conda_bin / "torchpack", "echo torchpack")
    env = {"PATH": "/usr/bin:/bin", "CONDA_PREFIX": str(tmp_path / "conda"), "HOME": str(tmp_path)}
    checks, _ = doctor_json("--phase", str(phase), "--check", "launcher.torchpack", env=env, code=1)
    result = checks["launcher.torchpack"]
    assert result["status"] == "fail" and "torchpack: command not found" in result["message"]
    assert f'export PATH="{conda_bin}:$PATH"' in result["fix"]

    env["PATH"] = f"{conda_bin}:/usr/bin:/bin"
    checks, _ = doctor_json("--phase", str(phase), "--check", "launcher.torchpack", env=env, code=0)
    assert checks["launcher.torchpack"]["status"] == "ok"


def test_torchpack_checks_are_skipped_for_torchrun_phases(tmp_path):
    phase = write_phase(tmp_path)
    checks, _ = doctor_json("--phase", str(phase), "--check", "launcher", env={"PATH": "/usr/bin:/bin"}, code=0)
    for name in ("launcher.torchpack", "launcher.mpirun", "launcher.mpi4py"):
        assert checks[name]["status"] == "skipped"
    assert checks["launcher.torchrun"]["status"] == "ok"


def test_mpirun_must_be_openmpi(tmp_path):
    phase = write_phase(tmp_path, launch={"launcher": "torchpack"})
    bindir = tmp_path / "bin"
    script(bindir / "mpirun", 'echo "HYDRA build details:"; echo "    Version: 3.3.2 (MPICH)"')
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    checks, _ = doctor_json("--phase", str(phase), "--check", "launcher.mpirun", env=env, code=1)
    assert "is not OpenMPI" in checks["launcher.mpirun"]["message"]
    script(bindir / "mpirun", 'echo "mpirun (Open MPI) 4.0.4"')
    checks, _ = doctor_json("--phase", str(phase), "--check", "launcher.mpirun", env=env, code=0)
    assert "Open MPI" in checks["launcher.mpirun"]["message"]


# --------------------------------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("ckpt")
    state = {"encoders.camera.backbone.stem.weight": torch.zeros(2), "encoders.lidar.backbone.conv.weight": torch.zeros(2),
             "heads.object.bias": torch.zeros(1)}
    torch.save({"meta": {"epoch": 5}, "state_dict": state}, folder / "epoch_5.pth")
    torch.save({"state_dict": {"encoders.lidar.backbone.conv.weight": torch.zeros(2)}}, folder / "lidar-only.pth")
    torch.save({"state_dict": state}, folder / "legacy.pth", _use_new_zipfile_serialization=False)
    data = (folder / "epoch_5.pth").read_bytes()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 2])
    (folder / "text.pth").write_text("this is not a checkpoint\n")
    (folder / "lfs.pth").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    return folder


def test_pretrained_missing_fails_but_is_not_needed_when_load_from_covers_it(tmp_path, checkpoints):
    """The seed's problem 2: swint-nuimages-pretrained.pth not found, not needed when load_from has the backbone."""
    missing = str(tmp_path / "pretrained" / "swint-nuimages-pretrained.pth")
    covered = write_phase(tmp_path, load_from=str(checkpoints / "epoch_5.pth"), expect_missing=["task_gca.*"],
                          pretrained={"encoders.camera.backbone": missing})
    checks, _ = doctor_json("--phase", str(covered), "--check", "weights", code=0)
    assert checks["weights.load_from"]["status"] == "ok"
    assert checks["weights.pretrained"]["status"] == "ok"
    assert "not needed" in checks["weights.pretrained"]["message"]

    # phase 3's situation: load_from is LiDAR-only, the camera backbone must come from the pretrained file
    needed = write_phase(tmp_path, load_from=str(checkpoints / "lidar-only.pth"), expect_missing=["encoders.camera.*"],
                         pretrained={"encoders.camera.backbone": missing})
    checks, _ = doctor_json("--phase", str(needed), "--check", "weights", code=1)
    assert checks["weights.pretrained"]["status"] == "fail"
    assert "not found" in checks["weights.pretrained"]["message"] and checks["weights.pretrained"]["fix"]


def test_pretrained_needed_when_load_from_lacks_the_module_keys(tmp_path, checkpoints):
    phase = write_phase(tmp_path, load_from=str(checkpoints / "lidar-only.pth"),
                        pretrained={"encoders.camera.backbone": str(tmp_path / "nope.pth")})
    checks, _ = doctor_json("--phase", str(phase), "--check", "weights.pretrained", code=1)
    assert checks["weights.pretrained"]["status"] == "fail"


@pytest.mark.parametrize("name,status,words", [
    ("epoch_5.pth", "ok", "torch checkpoint"),
    ("legacy.pth", "ok", "legacy format"),
    ("truncated.pth", "fail", "truncated or corrupt"),
    ("text.pth", "fail", "is not a checkpoint"),
    ("lfs.pth", "fail", "Git LFS pointer"),
    ("absent.pth", "fail", "not found"),
])
def test_load_from_header_check(tmp_path, checkpoints, name, status, words):
    phase = write_phase(tmp_path, load_from=str(checkpoints / name))
    result = doctor.run_checks(str(phase), ids=["weights.load_from"]).get("weights.load_from")
    assert result.status == status and words in result.message, result
    assert (result.fix is not None) == (status == "fail")


def test_missing_load_from_of_a_shipped_phase_names_the_phase_to_train_first(tmp_path):
    report = doctor.run_checks("demo-phase4a", ids=["weights"], cwd=tmp_path)
    result = report.get("weights.load_from")
    assert result.status == "fail" and "bevctl start demo-phase3" in result.fix


# --------------------------------------------------------------------------------------------- data


def make_nuscenes(root: Path, version: str = "v1.0-mini") -> None:
    tables = root / version
    tables.mkdir(parents=True)
    files = []
    for sensor in doctor.checks_data.CAMERAS + ["LIDAR_TOP"]:
        name = f"samples/{sensor}/n008__{sensor}__1.{'pcd.bin' if sensor == 'LIDAR_TOP' else 'jpg'}"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\0" * 32)
        files.append({"token": sensor, "filename": name, "is_key_frame": True})
    (root / "sweeps" / "LIDAR_TOP").mkdir(parents=True)
    for table in doctor.checks_data.TABLES:
        (tables / f"{table}.json").write_text("[]")
    (tables / "scene.json").write_text(json.dumps([{"token": "s1", "name": "scene-0001"}]))
    (tables / "sample.json").write_text(json.dumps([{"token": "a"}]))
    (tables / "sample_data.json").write_text(json.dumps(files))
    (tables / "log.json").write_text(json.dumps([{"token": "l", "location": "boston-seaport"}]))
    (root / "maps" / "expansion").mkdir(parents=True)
    (root / "maps" / "expansion" / "boston-seaport.json").write_text("{}")


def test_valid_dataset_tree_is_ok(tmp_path):
    make_nuscenes(tmp_path / "data")
    checks, _ = doctor_json("--phase", str(write_phase(tmp_path)), "--check", "data", code=0)
    for name in ("data.root", "data.tables", "data.sensors", "data.maps"):
        assert checks[name]["status"] == "ok", checks[name]


@pytest.mark.parametrize("damage,check,words", [
    (lambda r: (r / "v1.0-mini" / "sample_data.json").unlink(), "data.tables", "sample_data.json"),
    (lambda r: shutil.rmtree(r / "sweeps"), "data.sensors", "sweeps/LIDAR_TOP/"),
    (lambda r: shutil.rmtree(r / "samples" / "CAM_FRONT"), "data.sensors", "samples/CAM_FRONT/"),
    (lambda r: (r / "maps" / "expansion" / "boston-seaport.json").unlink(), "data.maps", "boston-seaport"),
    (lambda r: (r / "v1.0-mini").rename(r / "v1.0-trainval"), "data.root", "found v1.0-trainval"),
])
def test_broken_dataset_tree_fails_with_the_reason(tmp_path, damage, check, words):
    make_nuscenes(tmp_path / "data")
    damage(tmp_path / "data")
    checks, _ = doctor_json("--phase", str(write_phase(tmp_path)), "--check", "data", code=1)
    assert checks[check]["status"] == "fail" and words in checks[check]["message"], checks[check]
    assert checks[check]["fix"]


def test_generated_synthetic_data_passes_the_data_checks(tmp_path):
    """What the demo trains on, once generated, must satisfy the same checks as real nuScenes."""
    synth = pytest.importorskip("model.data.synth")
    synth.ensure_dataset(tmp_path / "data", scenes=2, samples_per_scene=1, seed=0, sweeps=1)
    phase = write_phase(tmp_path, data={"synthetic": True})
    checks, _ = doctor_json("--phase", str(phase), "--check", "data", code=0)
    for name in ("data.root", "data.tables", "data.sensors", "data.maps"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "synthetic" in checks["data.root"]["message"]


def test_files_named_in_the_tables_must_exist(tmp_path):
    make_nuscenes(tmp_path / "data")
    (tmp_path / "data" / "samples" / "CAM_BACK" / "n008__CAM_BACK__1.jpg").unlink()
    checks, _ = doctor_json("--phase", str(write_phase(tmp_path)), "--check", "data.sensors", code=1)
    assert "missing" in checks["data.sensors"]["message"]


def test_missing_dataset_fails_but_synthetic_will_be_generated(tmp_path):
    checks, _ = doctor_json("--phase", str(write_phase(tmp_path)), "--check", "data", code=1)
    assert checks["data.root"]["status"] == "fail" and "ln -s" in checks["data.root"]["fix"]
    synthetic = write_phase(tmp_path, data={"synthetic": True})
    checks, _ = doctor_json("--phase", str(synthetic), "--check", "data", code=0)
    assert checks["data.root"]["status"] == "ok" and "will be generated" in checks["data.root"]["message"]


# --------------------------------------------------------------------------------------------- docker


def test_no_docker_daemon_fails_when_the_phase_runs_in_the_container(tmp_path):
    env = {"DOCKER_HOST": NO_DOCKER, **ON_HOST}
    phase = write_phase(tmp_path, launch={"where": "container"})
    checks, report = doctor_json("--phase", str(phase), "--check", "docker.daemon", env=env, code=3)
    daemon = checks["docker.daemon"]
    assert daemon["status"] == "fail" and daemon["unusable"] and "not running" in daemon["message"]
    assert "systemctl start docker" in daemon["fix"]

    checks, _ = doctor_json("--phase", str(write_phase(tmp_path, launch={"where": "auto"})), "--check", "docker", env=env, code=0)
    assert checks["docker.daemon"]["status"] == "warn"
    checks, _ = doctor_json("--phase", str(write_phase(tmp_path)), "--check", "docker.daemon", env=env, code=0)
    assert checks["docker.daemon"]["status"] == "skipped"


@pytest.mark.skipif(os.path.exists("/var/run/docker.sock"), reason="a system docker daemon socket exists")
def test_rootless_docker_socket_is_pointed_out(tmp_path):
    runtime = Path(tempfile.mkdtemp(prefix="bevrt-", dir="/tmp"))
    try:
        (runtime / "docker.sock").write_text("")  # only its presence matters here
        env = {"DOCKER_HOST": "", "XDG_RUNTIME_DIR": str(runtime), **ON_HOST}
        phase = write_phase(tmp_path, launch={"where": "container"})
        checks, _ = doctor_json("--phase", str(phase), "--check", "docker.daemon", env=env, code=3)
        assert "rootless" in checks["docker.daemon"]["message"]
        assert checks["docker.daemon"]["fix"] == f"export DOCKER_HOST=unix://{runtime}/docker.sock"
    finally:
        shutil.rmtree(runtime)


def test_in_container_without_docker_is_unusable(tmp_path):
    result = run_cli("doctor", "--phase", "demo", "--in-container", env={"DOCKER_HOST": NO_DOCKER, **ON_HOST})
    assert result.returncode == 3 and "not running" in result.stderr and "Traceback" not in result.stderr


def test_hanging_docker_daemon_is_timed_out(tmp_path):
    """A daemon that accepts connections and never answers must not hang the report."""
    folder = tempfile.mkdtemp(prefix="bevctl-", dir="/tmp")  # unix socket paths are limited to ~100 chars
    path = os.path.join(folder, "hang.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        phase = write_phase(tmp_path, launch={"where": "container"})
        checks, _ = doctor_json("--phase", str(phase), "--check", "docker.daemon", "--check", "disk.runs",
                                "--timeout", "2", env={"DOCKER_HOST": f"unix://{path}", **ON_HOST}, code=3)
        assert checks["docker.daemon"]["status"] == "fail" and "timed out" in checks["docker.daemon"]["message"]
        assert checks["disk.runs"]["status"] == "ok"
    finally:
        stop.set()
        thread.join()
        server.close()
        for conn in held:
            conn.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_inside_the_project_container_docker_is_skipped_and_the_stack_is_checked(tmp_path):
    phase = write_phase(tmp_path, launch={"where": "container"})
    env = {"DOCKER_HOST": NO_DOCKER, "BEVCTL_IN_CONTAINER": "1"}
    checks, report = doctor_json("--phase", str(phase), "--check", "docker", "--check", "python.packages", env=env, code=0)
    assert report["where"].startswith("container") and report["launch_where"] == "inside"
    assert checks["docker.daemon"]["status"] == "skipped" and "inside the project container" in checks["docker.daemon"]["message"]
    assert checks["python.packages"]["status"] == "ok"
    assert checks["docker.shm"]["status"] == "ok" and "/dev/shm" in checks["docker.shm"]["message"]


def test_docker_errors_tell_permission_from_down():
    from bevctl.doctor.checks_docker import _explain

    def chained(inner):
        try:
            try:
                raise inner
            except OSError as exc:
                raise RuntimeError("Connection aborted.") from exc
        except RuntimeError as outer:
            return outer

    message, fix = _explain(chained(PermissionError(13, "Permission denied")), "unix:///var/run/docker.sock")
    assert "permission denied" in message and "usermod -aG docker" in fix
    message, fix = _explain(chained(ConnectionRefusedError(111, "Connection refused")), "unix:///var/run/docker.sock")
    assert "not running" in message and "systemctl start docker" in fix


def test_shm_too_small_for_gpus_times_workers():
    phase = phase_from_dict({"name": "t", "launch": {"gpus": 8, "where": "container"},
                             "data": {"workers": 4}, "container": {"shm_size": "1g"}})
    result = doctor.run_checks(phase, ids=["docker.shm"]).get("docker.shm")
    assert result.status == "fail" and "16.0 GiB" in result.message and "shm_size=16g" in result.fix
    phase.container.shm_size = "32g"
    assert doctor.run_checks(phase, ids=["docker.shm"]).get("docker.shm").status == "ok"


# --------------------------------------------------------------------------------------------- GPUs


@needs_no_gpu
def test_no_gpu_warns_for_demo_and_fails_for_a_gpu_phase(tmp_path):
    checks, _ = doctor_json("--phase", "demo", "--check", "gpu.devices", code=0)
    assert checks["gpu.devices"]["status"] == "warn"
    phase = write_phase(tmp_path, train={"device": "auto"}, launch={"gpus": 2})
    checks, _ = doctor_json("--phase", str(phase), "--check", "gpu.devices", code=1)
    assert checks["gpu.devices"]["status"] == "fail" and "no NVIDIA GPU" in checks["gpu.devices"]["message"]


@needs_no_gpu
def test_gpus_from_nvidia_smi_against_launch_gpus(tmp_path):
    bindir = tmp_path / "bin"
    script(bindir / "nvidia-smi", '''case "$1" in
  --query-gpu=*) echo "NVIDIA H100 80GB HBM3, 81559, 9.0, 550.54.15";;
  *) echo "| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4 |";;
esac''')
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    phase = write_phase(tmp_path, train={"device": "auto"}, launch={"gpus": 2})
    checks, _ = doctor_json("--phase", str(phase), "--check", "gpu.devices", env=env, code=1)
    assert "1 GPU(s) found, the phase wants 2" in checks["gpu.devices"]["message"]
    assert "--set launch.gpus=1" in checks["gpu.devices"]["fix"]
    phase = write_phase(tmp_path, train={"device": "auto"}, launch={"gpus": 1})
    checks, _ = doctor_json("--phase", str(phase), "--check", "gpu.devices", env=env, code=0)
    assert "1× NVIDIA H100 80GB HBM3 (79 GiB, sm_90)" in checks["gpu.devices"]["message"]
    assert "CUDA 12.4" in checks["gpu.devices"]["message"]


FAKE_NVML = r"""
#include <string.h>
typedef struct { unsigned long long total, free, used; } mem_t;
int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
int nvmlSystemGetDriverVersion(char *v, unsigned int n) { strncpy(v, "550.54.15", n); return 0; }
int nvmlSystemGetCudaDriverVersion_v2(int *v) { *v = 12040; return 0; }
int nvmlDeviceGetCount_v2(unsigned int *n) { *n = GPUS; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) { *h = (void *)(long)(i + 1); return 0; }
int nvmlDeviceGetName(void *h, char *v, unsigned int n) { strncpy(v, "NVIDIA H100 80GB HBM3", n); return 0; }
int nvmlDeviceGetCudaComputeCapability(void *h, int *a, int *b) { *a = 9; *b = 0; return 0; }
int nvmlDeviceGetMemoryInfo(void *h, mem_t *m) { m->total = 85520809984ULL; m->free = m->total; m->used = 0; return 0; }
"""


@needs_no_gpu
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to build a fake libnvidia-ml")
def test_gpus_from_nvml_through_ctypes(tmp_path):
    """The NVML path with a stand-in libnvidia-ml.so.1 (8 H100s), found through LD_LIBRARY_PATH as the real one is."""
    import subprocess

    (tmp_path / "nvml.c").write_text(FAKE_NVML)
    subprocess.run(["cc", "-shared", "-fPIC", "-DGPUS=8", "-o", str(tmp_path / "libnvidia-ml.so.1"), str(tmp_path / "nvml.c")],
                   check=True)
    phase = write_phase(tmp_path, train={"device": "auto"}, launch={"gpus": 8})
    checks, _ = doctor_json("--phase", str(phase), "--check", "gpu.devices", env={"LD_LIBRARY_PATH": str(tmp_path)}, code=0)
    message = checks["gpu.devices"]["message"]
    assert "8× NVIDIA H100 80GB HBM3 (79 GiB, sm_90)" in message and "driver 550.54.15 (CUDA 12.4) via NVML" in message


def _gpu_context(torch_cuda, arch_list, driver_cuda="12.4"):
    phase = phase_from_dict({"name": "t", "launch": {"gpus": 1, "where": "local"}})
    ctx = Context(phase, in_container=False)
    h100 = {"name": "NVIDIA H100 80GB HBM3", "capability": [9, 0], "memory_mib": 81559}
    ctx._memo["driver"] = (True, {"source": "NVML", "driver": "550.54.15", "cuda": driver_cuda, "gpus": [h100]})
    ctx._memo["probe"] = (True, {"torch": {"version": "2.13.0+cu" + torch_cuda.replace(".", ""), "cuda": torch_cuda,
                                           "arch_list": arch_list, "available": True, "devices": []}})
    return ctx


def test_h100_against_a_torch_without_sm90(monkeypatch):
    monkeypatch.setattr(checks_python, "installed", lambda name: "2.13.0")
    status, message, fix = checks_python.check_arch(_gpu_context("11.3", ["sm_70", "sm_75", "sm_80", "sm_86"]))
    assert status == "fail" and "no kernels for sm_90" in message and "sm_90" in fix
    status, message, _ = checks_python.check_arch(_gpu_context("12.4", ["sm_80", "sm_86", "sm_90"]))
    assert status == "ok" and "sm_90 covered" in message


def test_torch_cuda_newer_than_the_driver(monkeypatch):
    monkeypatch.setattr(checks_python, "installed", lambda name: "2.13.0")
    status, message, fix = checks_python.check_cuda(_gpu_context("12.6", ["sm_90"], driver_cuda="11.8"))
    assert status == "fail" and "driver" in message and "update the NVIDIA driver" in fix
    status, _, _ = checks_python.check_cuda(_gpu_context("12.6", ["sm_90"], driver_cuda="12.4"))
    assert status == "warn"
    status, _, _ = checks_python.check_cuda(_gpu_context("12.4", ["sm_90"], driver_cuda="12.4"))
    assert status == "ok"


# --------------------------------------------------------------------------------------------- python, disk


def test_no_training_dependencies_is_unusable(monkeypatch):
    monkeypatch.setattr(checks_python, "installed", lambda name: None)
    report = doctor.run_checks("demo", ids=["python.packages", "python.torch"])
    assert report.get("python.packages").status == "fail" and "no training dependencies" in report.get("python.packages").message
    assert report.exit_code == 3


def test_another_bevctl_earlier_on_path_is_a_warning(tmp_path):
    script(tmp_path / "other" / "bevctl", "exec /opt/elsewhere/python3 -m bevctl")
    (tmp_path / "other" / "bevctl").write_text("#!/opt/elsewhere/python3\nprint('old bevctl')\n")
    env = {"PATH": f"{tmp_path / 'other'}:/usr/bin:/bin"}
    checks, _ = doctor_json("--check", "python.bevctl", env=env, code=0)
    assert checks["python.bevctl"]["status"] == "warn" and "/opt/elsewhere/python3" in checks["python.bevctl"]["message"]


def test_runs_root_that_is_a_file_fails(tmp_path):
    (tmp_path / "runs").write_text("oops")
    checks, _ = doctor_json("--phase", str(write_phase(tmp_path)), "--check", "disk", code=1)
    assert checks["disk.runs"]["status"] == "fail"
