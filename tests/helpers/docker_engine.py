"""A real Docker engine and a small local base image for the container tests (no registry needed).

Import the fixtures into a test module (`from tests.helpers.docker_engine import docker_engine, docker_base, ...`).

* `docker_engine` (session): uses the daemon at DOCKER_HOST / the default socket when it answers; otherwise, as
  root, installs `docker.io` with apt-get if `dockerd` is missing and starts a private daemon
  (vfs storage, no bridge, no iptables, data under a temporary directory, its own socket). `DOCKER_HOST` points at
  it for the whole session, so `bevctl` subprocesses use it too; it is stopped and deleted at the end.
  When no engine can be had, the tests skip with the reason.
* `docker_base` (session): a Debian `debootstrap --variant=minbase` root file system of the host's release with
  `tini` and the shared libraries the host's Python needs, imported with `docker import`. The tarball is cached in
  `~/.cache/bevctl/`. Containers run the host's Python and the project's virtual environment, bind-mounted
  read-only at the same paths (the venv also at /opt/venv, where the image's PATH looks), so
  `python -m model.train` really runs in a container without installing anything: see `BaseImage.mounts`.
* `bevctl_test_image` (session): the project's own docker/Dockerfile built on that base with the heavy install
  steps switched off (INSTALL_SYSTEM_PACKAGES=0, INSTALL_TRAINING_STACK=0), tagged `bevctl-test:latest`.
  Use it with `bevctl.docker.run_spec(..., image=img.tag, extra_mounts=img.mounts, network_mode="none")`.

Everything these fixtures do to the machine is printed on the terminal (stderr), also under pytest's capture.
"""

from __future__ import annotations

import atexit
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "bevctl"
TEST_IMAGE = "bevctl-test:latest"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def say(message: str) -> None:
    """Tell the person running the tests what was done to their machine, past pytest's output capture."""
    stream = sys.__stderr__ or sys.stderr
    stream.write(f"\n[docker_engine] {message}\n")
    stream.flush()


# ------------------------------------------------------------------------------------------------- the engine


@dataclass
class Engine:
    host: str
    started: bool = False  # True when these fixtures started the daemon (and will stop it)
    workdir: Path | None = None
    process: subprocess.Popen | None = None
    log: Path | None = None

    def stop(self) -> None:
        if self.process is None:
            return
        proc, self.process = self.process, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.workdir:
            _unmount_below(self.workdir)
            shutil.rmtree(self.workdir, ignore_errors=True)
        say(f"stopped the test Docker daemon (pid {proc.pid}) and removed {self.workdir}")


def _unmount_below(folder: Path) -> None:
    """Mounts a daemon can leave behind (e.g. a network namespace after a --network host build)."""
    try:
        points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for point in sorted((p for p in points if p.startswith(str(folder) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _answers(host: str, timeout: float = 5) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=host, timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _apt_install(*packages: str) -> str | None:
    """Install Debian packages; returns None on success, else why it failed."""
    if os.geteuid() != 0:
        return f"not root, cannot apt-get install {' '.join(packages)}"
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    say(f"apt-get install -y {' '.join(packages)} (needed by the Docker tests) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"{' '.join(cmd)} failed: {' | '.join(tail)}"
    say(f"installed {' '.join(packages)}")
    return None


def start_engine() -> Engine:
    """The engine to test against, started here when none answers; raises RuntimeError with the reason."""
    configured = os.environ.get("DOCKER_HOST")
    for host in [configured] if configured else [DEFAULT_SOCKET]:
        if _answers(host):
            return Engine(host=host)
    if os.environ.get("BEVCTL_TEST_NO_DAEMON_START"):
        raise RuntimeError("no Docker engine answers and BEVCTL_TEST_NO_DAEMON_START is set")
    if os.geteuid() != 0:
        raise RuntimeError(f"no Docker engine answers at {configured or DEFAULT_SOCKET} and starting one needs root")
    if not shutil.which("dockerd"):
        why = _apt_install("docker.io")
        if why:
            raise RuntimeError(why)
    # overlay2 makes a layer nearly free; vfs (a full copy per layer, ~30x slower builds) works everywhere.
    drivers = [os.environ["BEVCTL_TEST_STORAGE_DRIVER"]] if os.environ.get("BEVCTL_TEST_STORAGE_DRIVER") else ["overlay2", "vfs"]
    reasons = []
    for driver in drivers:
        try:
            return _start_dockerd(driver)
        except RuntimeError as exc:
            reasons.append(f"{driver}: {exc}")
            say(f"dockerd with {driver} storage did not start: {exc}")
    raise RuntimeError("; ".join(reasons))


def _start_dockerd(driver: str) -> Engine:
    # A short path: the daemon's sockets live below it and unix socket paths are limited to ~100 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="bevd-", dir="/tmp"))
    sock = workdir / "docker.sock"
    log = workdir / "dockerd.log"
    cmd = [
        "dockerd",
        f"--storage-driver={driver}",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--data-root={workdir / 'data'}",
        f"--exec-root={workdir / 'exec'}",
        f"--pidfile={workdir / 'docker.pid'}",
        f"--host=unix://{sock}",
    ]
    say(f"starting a private Docker daemon: {' '.join(cmd)} (log: {log})")
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    engine = Engine(host=f"unix://{sock}", started=True, workdir=workdir, process=proc, log=log)
    atexit.register(engine.stop)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            engine.stop()
            raise RuntimeError(f"dockerd exited with {proc.returncode}: {' | '.join(tail)}")
        if sock.exists() and _answers(engine.host, timeout=2):
            say(f"Docker daemon ready at {engine.host} (pid {proc.pid}, {driver} storage)")
            return engine
        time.sleep(0.3)
    engine.stop()
    raise RuntimeError("dockerd did not answer within 60 s")


@pytest.fixture(scope="session")
def docker_engine():
    """The Docker engine (started when needed); DOCKER_HOST points at it for the session."""
    try:
        engine = start_engine()
    except RuntimeError as exc:
        say(f"Docker tests skipped: {exc}")
        pytest.skip(f"no Docker engine: {exc}")
    env = {"DOCKER_HOST": engine.host}
    memlock = _memlock_ceiling() if engine.started else None
    if memlock is not None and "BEVCTL_MEMLOCK" not in os.environ:
        # Our daemon inherits this process's memlock ceiling and cannot raise it (no CAP_SYS_RESOURCE here), so
        # containers asking for memlock=unlimited would not start; real servers' docker.service has no such cap.
        env["BEVCTL_MEMLOCK"] = str(memlock)
        say(f"BEVCTL_MEMLOCK={memlock}: this machine cannot raise the memlock limit to unlimited")
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield engine
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        engine.stop()


def _memlock_ceiling() -> int | None:
    """The memlock hard limit when it is finite and cannot be raised, else None."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    if hard == resource.RLIM_INFINITY:
        return None
    probe = "import resource; resource.setrlimit(resource.RLIMIT_MEMLOCK, (-1, -1))"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0:
        return None
    return hard


# ------------------------------------------------------------------------------------------------- base image


@dataclass
class BaseImage:
    tag: str
    # (host path, container path, "ro"|"rw"): what a container of this base needs to run the host's Python.
    mounts: list[tuple[str, str, str]] = field(default_factory=list)
    python: str = "python"  # the interpreter inside the container, on the image's PATH through /opt/venv

    @property
    def env(self) -> dict[str, str]:
        """Environment for `bevctl` subprocesses (e.g. `bevctl start demo --container --set container.image=TAG`):
        every container they start gets the mounts that make the host's Python work inside."""
        return {"BEVCTL_EXTRA_MOUNTS": ";".join(f"{src}:{dst}:{mode}" for src, dst, mode in self.mounts)}

    def run_kwargs(self) -> dict:
        """Keyword arguments for `bevctl.docker.run_spec` in tests."""
        return {"image": self.tag, "extra_mounts": list(self.mounts), "network_mode": "none"}


def _os_release() -> dict[str, str]:
    values = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                values[key] = value.strip().strip('"')
    except OSError:
        pass
    return values


def _mirror() -> str:
    """The Debian mirror this machine's apt already uses (the only registry it may reach)."""
    for source in glob.glob("/etc/apt/sources.list.d/*.sources"):
        for line in Path(source).read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split(":", 1)[1].split()[0]
    try:
        for line in Path("/etc/apt/sources.list").read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and "security" not in line:
                return next(p for p in parts[1:] if p.startswith("http"))
    except (OSError, StopIteration):
        pass
    return "http://deb.debian.org/debian"


def _python_runtime() -> tuple[list[str], list[str]]:
    """Debian packages the host's Python (and torch) need inside the base, and host paths to bind-mount."""
    base = os.path.realpath(sys.base_prefix)
    exe = os.path.realpath(sys.executable)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    files = [exe]
    files += [f for f in glob.glob(os.path.join(os.path.dirname(os.__file__), "lib-dynload", "*.so")) if "_tkinter" not in f]
    files += glob.glob(os.path.join(libdir, "libpython*.so*"))
    libs: set[str] = set()
    for chunk in range(0, len(files), 50):
        out = subprocess.run(["ldd", *files[chunk : chunk + 50]], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "=>" in line and "/" in line.split("=>", 1)[1]:
                path = line.split("=>", 1)[1].split()[0]
                if not path.startswith((base, os.path.realpath(sys.prefix))):
                    libs.add(os.path.realpath(path))
    packages = {"tini", "libstdc++6", "libgcc-s1", "libgomp1"}
    owned = base.startswith("/usr")  # a Debian python: install it in the base instead of mounting /usr
    queries = sorted(libs) + ([exe, os.path.dirname(os.__file__)] if owned else [])
    for path in queries:
        for candidate in (path, path.replace("/usr/lib/", "/lib/", 1)):
            found = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if found.returncode == 0:
                packages.update(p.strip().split(":")[0] for p in found.stdout.split(":", 1)[0].split(","))
                break
    mounts = [sys.prefix] if owned else [base, sys.prefix]
    return sorted(packages), mounts


def base_rootfs() -> Path:
    """A cached tarball of a minimal Debian root file system for this host's release (made with debootstrap)."""
    release = _os_release()
    suite = release.get("VERSION_CODENAME") or "bookworm"
    packages, _ = _python_runtime()
    key = hashlib.sha256(f"2 {suite} {' '.join(packages)}".encode()).hexdigest()[:12]
    tarball = CACHE / f"rootfs-{suite}-{key}.tar"
    if tarball.is_file():
        return tarball
    if not shutil.which("debootstrap"):
        why = _apt_install("debootstrap")
        if why:
            raise RuntimeError(why)
    CACHE.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="rootfs-", dir=str(CACHE)))
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", suite, str(target), _mirror()]
    say(f"making the test base image's root file system (about a minute, cached in {tarball}): {' '.join(cmd)}")
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise RuntimeError(f"debootstrap failed: {' | '.join(tail)}")
    # The host's Python lives under /root on some machines (pyenv): let any uid traverse it inside the container.
    os.chmod(target / "root", 0o755)
    # mkdtemp made the top folder 0700; as the image's "/" it would lock every non-root user out (seen on vfs).
    os.chmod(target, 0o755)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (target / junk).glob("*"):
            if item.is_file():
                item.unlink()
    partial = tarball.with_suffix(".tar.partial")
    subprocess.run(["tar", "-C", str(target), "--numeric-owner", "-cf", str(partial), "."], check=True)
    partial.rename(tarball)
    shutil.rmtree(target, ignore_errors=True)
    say(f"root file system ready in {time.monotonic() - started:.0f} s: {tarball}")
    return tarball


def import_base(client, tarball: Path) -> str:
    tag = f"bevctl-test-base:{tarball.stem.rsplit('-', 1)[-1]}"
    try:
        client.images.get(tag)
        return tag
    except Exception:
        pass
    say(f"docker import {tarball} {tag}")
    repo, version = tag.split(":")
    client.api.import_image_from_file(str(tarball), repository=repo, tag=version)
    return tag


def base_mounts() -> list[tuple[str, str, str]]:
    _, paths = _python_runtime()
    mounts = [(p, p, "ro") for p in paths]
    mounts.append((sys.prefix, "/opt/venv", "ro"))  # the image's PATH starts with /opt/venv/bin
    return mounts


@pytest.fixture(scope="session")
def docker_base(docker_engine):
    """A local base image (no registry) plus the mounts that let its containers run the host's Python."""
    import docker

    try:
        tarball = base_rootfs()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        say(f"Docker tests skipped: {exc}")
        pytest.skip(f"no base image: {exc}")
    client = docker.DockerClient(base_url=docker_engine.host, timeout=300)
    try:
        tag = import_base(client, tarball)
    finally:
        client.close()
    return BaseImage(tag=tag, mounts=base_mounts())


def copy_project(dest: Path) -> Path:
    """A copy of the project's build inputs (to change its Dockerfile without touching the checkout)."""
    skip = shutil.ignore_patterns(".git", ".venv", "runs", "data", "__pycache__", ".pytest_cache", "*.egg-info", "*.pth", "build", "dist")
    dest.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(ROOT):
        src = ROOT / name
        if name in (".git", ".venv", "runs", "data", ".pytest_cache", "build", "dist") or name.endswith(".egg-info"):
            continue
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=skip, symlinks=True)
        else:
            shutil.copy2(src, dest / name)
    (dest / "runs").mkdir(exist_ok=True)
    return dest


TEST_BUILD_ARGS = {"INSTALL_SYSTEM_PACKAGES": "0", "INSTALL_TRAINING_STACK": "0"}


@pytest.fixture(scope="session")
def bevctl_test_image(docker_engine, docker_base):
    """docker/Dockerfile built on the local base with the heavy steps off; `.tag` and `.mounts` as `docker_base`."""
    from bevctl import docker

    started = time.monotonic()
    result = docker.build_image(
        TEST_IMAGE,
        root=ROOT,
        build_args={"BASE_IMAGE": docker_base.tag, **TEST_BUILD_ARGS},
        network_mode="none",
        # not into the checkout's runs/.build: test builds are not the user's
        log_path=Path(tempfile.mkdtemp(prefix="bevctl-build-")) / "build.log",
    )
    say(f"built {TEST_IMAGE} from docker/Dockerfile on {docker_base.tag} in {time.monotonic() - started:.0f} s")
    return BaseImage(tag=TEST_IMAGE, mounts=docker_base.mounts, python=docker_base.python) if result else None
