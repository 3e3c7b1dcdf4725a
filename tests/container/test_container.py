"""bevctl build / bevctl shell / bevctl.docker: commands rendered without a daemon, then the real thing against
a Docker engine (started by tests/helpers/docker_engine.py when none answers; skipped with the reason when impossible)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from bevctl import docker as container  # the package under test, named as the tests read
from bevctl.docker import daemon as client_module
from bevctl.errors import CheckFailed, EnvironmentUnusable
from tests.conftest import ROOT, run_cli
from tests.helpers.docker_engine import (  # noqa: F401  (pytest fixtures)
    TEST_BUILD_ARGS,
    bevctl_test_image,
    copy_project,
    docker_base,
    docker_engine,
)

DEAD = "unix:///tmp/bevctl-no-daemon-here.sock"
needs_docker_cli = pytest.mark.skipif(not shutil.which("docker"), reason="no docker CLI (bevctl shell execs it)")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------ no daemon needed


def test_dockerfile_targets_hopper_and_is_switchable():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert 'TORCH_CUDA_ARCH_LIST="7.0 7.5 8.0 8.6 8.9 9.0"' in text
    for arg in ("BASE_IMAGE", "INSTALL_SYSTEM_PACKAGES", "INSTALL_TRAINING_STACK", "INSTALL_MMDET3D", "USER_UID",
                "USER_GID", "TORCH_VERSION=2.13.0", "SPCONV_PACKAGE=spconv-cu12"):
        assert arg in text, arg
    assert "tini" in text and "ENTRYPOINT" in text


def test_build_dry_run_prints_the_docker_build_command():
    result = run_cli("build", "--dry-run", "--build-arg", "INSTALL_MMDET3D=1", "--no-cache", env={"DOCKER_HOST": DEAD})
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout.strip())
    assert argv[:6] == ["docker", "build", "-f", str(ROOT / "docker" / "Dockerfile"), "-t", "bevctl:latest"]
    assert argv[-1] == str(ROOT)
    assert "INSTALL_MMDET3D=1" in argv and "--no-cache" in argv
    labels = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--label")
    assert labels["org.bevctl.dockerfile-sha256"] == container.build_inputs_hash(ROOT)
    assert labels["org.bevctl.version"] and labels["org.bevctl.git-commit"]

    as_json = run_cli("build", "--dry-run", "--json", "--tag", "x:1", env={"DOCKER_HOST": DEAD})
    data = json.loads(as_json.stdout)
    assert data["schema"] == 1 and data["tag"] == "x:1" and data["command"][5] == "x:1"


def test_build_arg_must_be_key_value():
    result = run_cli("build", "--dry-run", "--build-arg", "NOEQUALS")
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr


def test_shell_print_cmd_prints_the_docker_run_line(tmp_path):
    dataset = tmp_path / "nuscenes"
    dataset.mkdir()
    phase_file = tmp_path / "p.yaml"
    phase_file.write_text(yaml.safe_dump({"name": "p", "data": {"root": str(dataset)}, "launch": {"gpus": 2}}))
    result = run_cli("shell", "--print-cmd", "--phase", str(phase_file), env={"DOCKER_HOST": DEAD})
    assert result.returncode == 0, result.stderr
    run_line, exec_line = result.stdout.strip().splitlines()
    argv = shlex.split(run_line)
    assert argv[:5] == ["docker", "run", "-d", "--name", "bevfusion"]
    assert "--init" in argv
    assert argv[argv.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    assert argv[argv.index("--gpus") + 1] == "2"
    assert argv[argv.index("--shm-size") + 1] == "16g"
    assert "memlock=-1:-1" in argv or os.environ.get("BEVCTL_MEMLOCK")
    volumes = [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]
    assert f"{ROOT}:/workspace/bevfusion" in volumes
    assert f"{ROOT}/runs:/workspace/bevfusion/runs" in volumes
    assert f"{dataset}:/data/nuscenes:ro" in volumes
    assert "org.bevctl.managed=1" in argv and "org.bevctl.role=shell" in argv
    assert argv[-3:] == ["bevctl:latest", "sleep", "infinity"]
    assert shlex.split(exec_line) == ["docker", "exec", "-it", "bevfusion", "bash"]


def test_run_spec_and_docker_run_cmd_agree():
    from bevctl.phases import load_phase

    phase = load_phase("demo", ["container.ipc_host=true", "launch.nnodes=2", "train.device=cuda", "launch.gpus=8"])
    spec = container.run_spec(phase, ["python", "-m", "model.train"], extra_mounts=["/tmp:/scratch:ro"], env={"A": "1"})
    argv = container.docker_run_cmd(spec)
    assert spec["ipc_mode"] == "host" and "shm_size" not in spec and argv[argv.index("--ipc") + 1] == "host"
    assert spec["network_mode"] == "host" and argv[argv.index("--network") + 1] == "host"
    assert spec["device_requests"][0]["Count"] == 8 and argv[argv.index("--gpus") + 1] == "8"
    assert "/tmp:/scratch:ro" in argv and "A=1" in argv
    assert spec["stop_timeout"] == phase.train.grace_seconds
    assert argv[-3:] == ["python", "-m", "model.train"]
    # synthetic data is generated on first use inside the (writable) project mount: no read-only dataset mount
    assert not [m for m in spec["mounts"] if m["Target"] == "/data/nuscenes"]
    assert container.docker_run_cmd(container.run_spec(None, ["true"], gpus="device=0,3"))[
        container.docker_run_cmd(container.run_spec(None, ["true"], gpus="device=0,3")).index("--gpus") + 1
    ] == '"device=0,3"'


class _FakeBuildClient:
    """Stands in for the SDK client: replays a build's event stream (pulls included, which no local test can do)."""

    def __init__(self, events):
        self.api = type("API", (), {"build": lambda _self, **kwargs: iter(events)})()


def test_build_stream_is_parsed_into_steps_layers_and_log(tmp_path):
    events = [
        {"stream": "Step 1/2 : FROM nvidia/cuda:x\n"},
        {"status": "Pulling from nvidia/cuda", "id": "x"},
        {"status": "Pulling fs layer", "id": "a1"},
        {"status": "Pulling fs layer", "id": "b2"},
        {"status": "Downloading", "progressDetail": {"current": 1, "total": 9}, "id": "a1"},
        {"status": "Pull complete", "id": "a1"},
        {"status": "Pull complete", "id": "b2"},
        {"stream": " ---> 1234\n"},
        {"stream": "Step 2/2 : RUN make\n"},
        {"stream": "\x1b[91mpartial "},
        {"stream": "line\x1b[0m\n"},
        {"aux": {"ID": "sha256:abc"}},
        {"stream": "Successfully built abc\n"},
    ]
    seen = []
    result = container.build_image("t:1", ROOT, log_path=tmp_path / "b.log", on_event=seen.append, cli=_FakeBuildClient(events))
    assert result.image_id == "sha256:abc" and result.steps == 2
    steps = [(e.step, e.total, e.text) for e in seen if e.kind == "step"]
    assert steps == [(1, 2, "FROM nvidia/cuda:x"), (2, 2, "RUN make")]
    pulls = [e for e in seen if e.kind == "pull"]
    assert (pulls[-1].layers_done, pulls[-1].layers_total) == (2, 2)
    assert [e.text for e in seen if e.kind == "output"] == ["partial line"]
    log = (tmp_path / "b.log").read_text()
    assert "partial line" in log and "a1: Pull complete" in log and "Downloading" not in log

    failing = events[:9] + [{"stream": "cc: error\n"}, {"error": "The command '/bin/sh -c make' returned a non-zero code: 2"}]
    with pytest.raises(container.BuildFailed) as info:
        container.build_image("t:1", ROOT, log_path=tmp_path / "f.log", cli=_FakeBuildClient(failing))
    assert info.value.code == 1 and info.value.tail == ["cc: error"]
    assert "at step 2/2 (RUN make)" in info.value.message and "non-zero code: 2" in info.value.message


@pytest.mark.parametrize("command", [["build"], ["shell"]])
def test_daemon_down_is_one_line_exit_3(command):
    result = run_cli(*command, env={"DOCKER_HOST": DEAD})
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "not running" in lines[0] and "fix:" in lines[0], result.stderr


def test_permission_denied_on_the_socket_says_how_to_fix():
    error = client_module._connect_error(PermissionError(13, "Permission denied"))
    assert isinstance(error, EnvironmentUnusable) and error.code == 3
    assert "permission denied" in error.message and "docker group" in error.fix


# ------------------------------------------------------------------------------------------ a real engine


@pytest.fixture
def project_copy(tmp_path):
    return copy_project(tmp_path / "proj")


def _test_build(project: Path, base: str, tag: str, *extra: str):
    args = ["build", "--tag", tag, "--build-arg", f"BASE_IMAGE={base}", "--network", "none", "--json", *extra]
    for key, value in TEST_BUILD_ARGS.items():
        args += ["--build-arg", f"{key}={value}"]
    return run_cli(*args, cwd=project, timeout=900)


@pytest.mark.docker
@pytest.mark.slow
def test_build_labels_and_staleness(docker_engine, docker_base, project_copy):
    tag = f"{_unique('bevctl-test-build')}:1"
    result = _test_build(project_copy, docker_base.tag, tag)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data["schema"] == 1 and data["tag"] == tag and data["steps"] > 5
    log = Path(data["log"])
    assert log.is_file() and log.parent == project_copy / "runs" / ".build" and "Step 1/" in log.read_text()

    cli = container.client()
    labels = cli.images.get(tag).labels
    assert labels["org.bevctl.dockerfile-sha256"] == container.build_inputs_hash(project_copy)
    assert labels["org.bevctl.version"] == data["labels"]["org.bevctl.version"]
    assert "org.bevctl.git-commit" in labels
    assert container.image_status(tag, root=project_copy) == "present"
    assert container.image_status("bevctl-test-none:0", root=project_copy) == "missing"

    dockerfile = project_copy / "docker" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\n# changed after the build\n")
    assert container.image_status(tag, root=project_copy) == "stale"
    with pytest.raises(CheckFailed, match="stale"):
        container.require_image(tag, root=project_copy)
    with pytest.raises(EnvironmentUnusable, match="not found") as missing:
        container.require_image("bevctl-test-none:0", root=project_copy)
    assert "bevctl build" in missing.value.fix
    cli.images.remove(tag, force=True)


@pytest.mark.docker
def test_failing_build_step_shows_its_last_lines_and_exits_1(docker_engine, docker_base, project_copy):
    dockerfile = project_copy / "docker" / "Dockerfile"
    # The output differs from the instruction's text, so finding it proves the step's output was shown.
    dockerfile.write_text(dockerfile.read_text() + '\nRUN echo "first-line-$((1+1))" && echo "the-last-$((3+4))" && exit 7\n')
    result = _test_build(project_copy, docker_base.tag, f"{_unique('bevctl-test-fail')}:1")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "the-last-7" in result.stderr and "first-line-2" in result.stderr
    assert "docker build failed at step" in result.stderr and "returned a non-zero code: 7" in result.stderr
    logs = list((project_copy / "runs" / ".build").glob("*.log"))
    assert logs and "the-last-7" in logs[0].read_text() and "\x1b[" not in logs[0].read_text()


def _phase(tmp_path: Path, **data) -> "object":
    from bevctl.phases import load_phase

    dataset = tmp_path / "dataset"
    dataset.mkdir(exist_ok=True)
    (dataset / "README").write_text("a dataset\n")
    runs = tmp_path / "runs"
    runs.mkdir(exist_ok=True)
    overrides = [f"data.root={dataset}", "data.synthetic=false", f"run.root={runs}", "train.grace_seconds=20"]
    return load_phase("demo", overrides), runs, dataset


@pytest.mark.docker
def test_container_runs_as_the_given_user_with_mounts_and_exit_code(docker_engine, bevctl_test_image, tmp_path):
    phase, runs, dataset = _phase(tmp_path)
    os.chown(runs, 1234, 1234)
    script = "\n".join(
        [
            "import os, pathlib, sys, torch, bevctl",
            "d = pathlib.Path('/workspace/bevfusion/runs/r1'); d.mkdir()",
            "(d / 'out.txt').write_text(os.environ['HOME'] + ' ' + torch.__version__)",
            "print('dataset:', open('/data/nuscenes/README').read().strip(), flush=True)",
            "try:",
            "    open('/data/nuscenes/x', 'w')",
            "except OSError as e:",
            "    print('read-only', e.errno, flush=True)",
            "sys.exit(5)",
        ]
    )
    name = _unique("bevctl-test-run")
    spec = container.run_spec(
        phase, ["python", "-c", script], extra_mounts=bevctl_test_image.mounts, name=name, image=bevctl_test_image.tag,
        user="1234:1234", run_name="r1", network_mode="none",
    )
    assert spec.get("device_requests") is None  # the demo phase trains on the CPU
    cid = container.run_detached(spec)
    try:
        assert container.wait(cid, timeout=120) == 5
        out = container.logs(cid)
        assert "dataset: a dataset" in out and "read-only 30" in out, out
        written = runs / "r1" / "out.txt"
        assert (written.stat().st_uid, written.stat().st_gid) == (1234, 1234)
        assert (runs / "r1").stat().st_uid == 1234
        assert written.read_text().startswith("/tmp/home-1234 2.13.0")
        found = container.find_containers({container.LABEL_RUN: "r1", container.LABEL_PHASE: "demo"})
        assert [c["name"] for c in found] == [name] and found[0]["exit_code"] == 5
    finally:
        container.remove(cid, force=True)


def test_train_command():
    from bevctl.phases import load_phase

    assert container.train_command(load_phase("demo", ["launch.cpu_processes=1"]), "r") == [
        "python", "-m", "model.train", "--run-dir", "/workspace/bevfusion/runs/r"]
    two_cpu = container.train_command(load_phase("demo"), "r")  # the demo: 2 one-thread CPU processes
    assert two_cpu[:2] == ["torchrun", "--nproc-per-node=2"] and "--standalone" in two_cpu
    multi = container.train_command(load_phase("demo", ["launch.gpus=8", "launch.nnodes=2", "launch.rdzv_endpoint=h:29500"]), "r")
    assert multi[:3] == ["torchrun", "--nproc-per-node=8", "--nnodes=2"] and "--rdzv-endpoint=h:29500" in multi
    assert multi[-4:] == ["-m", "model.train", "--run-dir", "/workspace/bevfusion/runs/r"]


@pytest.mark.docker
@pytest.mark.slow
def test_trainer_fills_the_host_run_dir_as_the_user(docker_engine, bevctl_test_image, tmp_path):
    """What `bevctl start --container` does: the trainer as the container's main process, runs/ on the host."""
    from bevctl.phases import load_phase

    runs, data = tmp_path / "runs", tmp_path / "synth"
    runs.mkdir()
    for folder in (runs, tmp_path):  # the synthetic dataset is generated next to its root, then renamed
        os.chown(folder, 1234, 1234)
    overrides = [
        "train.epochs=1", "train.max_iters_per_epoch=1", "train.eval_interval=0", f"data.root={data}",
        "launch.cpu_processes=1",
        "data.synth.scenes=2", "data.synth.samples_per_scene=2", "data.workers=0", f"run.root={runs}",
    ]
    phase = load_phase("demo", overrides)
    command = container.train_command(phase, "demo-c") + ["--phase", "demo"]
    for item in overrides:
        command += ["--set", item]
    spec = container.run_spec(phase, command, user="1234:1234", name=_unique("bevctl-test-train"), run_name="demo-c",
                              **bevctl_test_image.run_kwargs())
    cid = container.run_detached(spec)
    try:
        code = container.wait(cid, timeout=300)
        assert code == 0, container.logs(cid, tail=30)
        run_dir = runs / "demo-c"
        manifest = json.loads((run_dir / "run.json").read_text())
        assert manifest["status"] == "finished"
        for name in ("run.json", "events.jsonl", "latest.pth"):
            assert (run_dir / name).stat().st_uid == 1234, name
    finally:
        container.remove(cid, force=True)


@pytest.mark.docker
def test_stop_delivers_sigterm_to_the_main_process(docker_engine, bevctl_test_image, tmp_path):
    phase, runs, _ = _phase(tmp_path)
    script = (
        "import signal, sys, time, pathlib\n"
        "def bye(*_):\n pathlib.Path('/workspace/bevfusion/runs/stopped').write_text('saved'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye); print('ready', flush=True); time.sleep(600)\n"
    )
    spec = container.run_spec(
        phase, ["python", "-c", script], extra_mounts=bevctl_test_image.mounts, name=_unique("bevctl-test-stop"),
        image=bevctl_test_image.tag, network_mode="none",
    )
    cid = container.run_detached(spec)
    try:
        lines = container.logs(cid, follow=True)
        assert next(lines) == "ready"
        assert container.stop(cid, grace_seconds=30) == 0
        assert (runs / "stopped").read_text() == "saved"
        assert container.state(cid)["status"] == "exited"
    finally:
        container.remove(cid, force=True)


@pytest.mark.docker
@needs_docker_cli
def test_shell_starts_the_container_and_execs_into_it(docker_engine, bevctl_test_image, tmp_path):
    phase_file = tmp_path / "p.yaml"
    runs = tmp_path / "runs"
    phase_file.write_text(yaml.safe_dump({"name": "p", "run": {"root": str(runs)}, "train": {"device": "cpu"}}))
    name = _unique("bevctl-test-shell")
    args = ["shell", "--phase", str(phase_file), "--image", bevctl_test_image.tag, "--name", name, "--network", "none"]
    try:
        first = run_cli(*args, input="id -u\npwd\ntouch runs/from-shell\npython -c 'print(6 * 7)'\nexit 3\n",
                        env=bevctl_test_image.env)
        assert first.returncode == 3, first.stderr
        assert first.stdout.split() == [str(os.getuid()), "/workspace/bevfusion", "42"]
        assert "created container" in first.stderr
        assert (runs / "from-shell").stat().st_uid == os.getuid()
        again = run_cli(*args, input="exit 0\n")
        assert again.returncode == 0 and "reused container" in again.stderr
        by_run = run_cli("shell", "--run", "no-such-run")
        assert by_run.returncode == 2 and "no running container for run no-such-run" in by_run.stderr
    finally:
        container.remove(name, force=True)


@pytest.mark.docker
@needs_docker_cli
def test_shell_into_a_runs_container(docker_engine, bevctl_test_image, tmp_path):
    phase, _, _ = _phase(tmp_path)
    name = _unique("bevctl-test-run")
    spec = container.run_spec(phase, ["sleep", "300"], name=name, image=bevctl_test_image.tag, run_name="r-shell",
                               network_mode="none")
    cid = container.run_detached(spec)
    try:
        result = run_cli("shell", "--run", "r-shell", input="echo inside-$HOSTNAME\nexit 4\n")
        assert result.returncode == 4, result.stderr
        assert f"inside-{cid[:12]}" in result.stdout
    finally:
        container.remove(cid, force=True)


@pytest.mark.docker
def test_gpus_without_nvidia_runtime_is_one_clear_error(docker_engine, bevctl_test_image, tmp_path):
    cli = container.client()
    if container.gpu_runtime_available(cli) or container.host_has_gpu():
        pytest.skip("this machine may really have GPUs for Docker")
    spec = container.run_spec(None, ["true"], image=bevctl_test_image.tag, gpus="all", network_mode="none",
                              name=_unique("bevctl-test-gpu"), root=ROOT, runs_dir=tmp_path)
    with pytest.raises(EnvironmentUnusable, match="NVIDIA") as info:
        container.run_detached(spec, cli)
    assert "nvidia-ctk" in info.value.fix
