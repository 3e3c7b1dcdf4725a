"""bevctl doctor against a real Docker engine: the host-side docker checks and `--in-container`.

The container is an empty image whose programs come from the host by read-only bind mounts (the host's /usr, its
Python and this checkout), so no registry, base image or build is needed.
"""

import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

engine_fixtures = pytest.importorskip("tests.helpers.docker_engine", reason="tests/helpers/docker_engine.py (the engine fixtures) is missing")
docker_engine = engine_fixtures.docker_engine

from tests.conftest import ROOT, run_cli  # noqa: E402

pytestmark = pytest.mark.docker
EMPTY = "bevctl-doctor-empty:test"
HOST_DIRS = ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc"]


@pytest.fixture(scope="module")
def client(docker_engine):
    import docker

    cli = docker.DockerClient(base_url=docker_engine.host, timeout=120)
    yield cli
    cli.close()


@pytest.fixture(scope="module")
def host_container(client):
    """A running container of an empty image that runs the host's Python and this checkout's bevctl."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder, mode in (("workspace/bevfusion", 0o755), ("tmp", 0o1777)):  # /tmp in the layer: docker cp skips tmpfs
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
    client.api.import_image_from_data(buffer.getvalue(), repository=EMPTY.split(":")[0], tag=EMPTY.split(":")[1])
    sources = [d for d in HOST_DIRS if os.path.exists(d)] + [os.path.realpath(sys.base_prefix), str(ROOT)]
    volumes = {os.path.realpath(d): {"bind": d, "mode": "ro"} for d in sources}
    name = f"bevctl-doctor-test-{os.getpid()}"
    container = client.containers.run(
        EMPTY, ["/bin/sleep", "600"], name=name, detach=True, network_mode="none", volumes=volumes,
        working_dir=str(ROOT), environment={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    try:
        yield container
    finally:
        container.remove(force=True)
        client.images.remove(EMPTY, force=True)


def test_daemon_reachable_and_missing_image_fails_for_a_container_phase(tmp_path, docker_engine):
    phase = tmp_path / "p.yaml"
    phase.write_text(yaml.safe_dump({"name": "p", "launch": {"gpus": 0, "where": "container"}, "train": {"device": "cpu"},
                                     "container": {"image": "bevctl-doctor-missing:none"}}))
    result = run_cli("doctor", "--phase", str(phase), "--check", "docker", "--json", env={"BEVCTL_IN_CONTAINER": "0"})
    checks = {c["id"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["docker.daemon"]["status"] == "ok", checks["docker.daemon"]
    assert checks["docker.image"]["status"] == "fail" and "bevctl build" in checks["docker.image"]["fix"]
    assert result.returncode == 1


def test_in_container_runs_the_checks_inside_and_renders_them(tmp_path, host_container):
    phase = tmp_path / "p.yaml"  # a phase file only the host has: doctor copies it into the container
    phase.write_text(yaml.safe_dump({"name": "p", "launch": {"gpus": 0, "where": "container"}, "train": {"device": "cpu"},
                                     "container": {"name": host_container.name}, "data": {"synthetic": True}}))
    args = ["doctor", "--in-container", "--phase", str(phase), "--check", "python.version", "--check", "docker",
            "--check", "data.root"]
    result = run_cli(*args, "--json", env={"BEVCTL_IN_CONTAINER": "0"})
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    assert report["where"] == f"container {host_container.name}" and report["phase"] == "p"
    checks = {c["id"]: c for c in report["checks"]}
    assert checks["docker.daemon"]["status"] == "skipped" and "inside the project container" in checks["docker.daemon"]["message"]
    assert checks["python.version"]["status"] == "ok"
    # docker's default 64 MB /dev/shm is too small for 2 workers: seen from inside, as a warning for a CPU phase
    assert checks["docker.shm"]["status"] == "warn" and "this container's /dev/shm" in checks["docker.shm"]["message"]

    human = run_cli(*args, env={"BEVCTL_IN_CONTAINER": "0"})
    assert f"inside container {host_container.name}" in human.stdout and human.returncode == 0, human.stdout + human.stderr


def test_in_container_when_the_container_is_missing(tmp_path, docker_engine):
    phase = tmp_path / "p.yaml"
    phase.write_text(yaml.safe_dump({"name": "p", "container": {"name": "bevctl-doctor-nobody"}}))
    result = run_cli("doctor", "--in-container", "--phase", str(phase), env={"BEVCTL_IN_CONTAINER": "0"})
    assert result.returncode == 3 and "does not exist" in result.stderr and "bevctl shell" in result.stderr
