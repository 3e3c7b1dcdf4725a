"""Images: what the project image is built from (a hash of docker/, pyproject.toml, .dockerignore, kept in its
labels), whether the local image is present, missing or stale, and the build itself through the SDK's stream,
parsed into step/output/pull events and a failure report."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from docker import errors as derrors

from bevctl import __version__
from bevctl.docker.daemon import (
    BUILD_INPUTS,
    DEFAULT_IMAGE,
    DOCKERFILE,
    LABEL_COMMIT,
    LABEL_DOCKERFILE,
    LABEL_VERSION,
    DockerClient,
    _cli,
    project_root,
)
from bevctl.errors import CheckFailed, EnvironmentUnusable

def build_inputs_hash(root: Optional[Path] = None) -> str:
    """sha256 over the files the image is built from (docker/, pyproject.toml, .dockerignore): names and contents."""
    root = root or project_root()
    digest = hashlib.sha256()
    for name in BUILD_INPUTS:
        path = root / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
        for item in files:
            if "__pycache__" in item.parts:
                continue
            digest.update(item.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(item.read_bytes()).digest())
    return digest.hexdigest()


def git_commit(root: Optional[Path] = None) -> str:
    """The checkout's commit, with `-dirty` when tracked files changed; "unknown" outside git."""
    from bevctl import gitinfo

    return gitinfo.commit(root or project_root()) or "unknown"


def image_labels(root: Optional[Path] = None) -> dict[str, str]:
    root = root or project_root()
    return {LABEL_DOCKERFILE: build_inputs_hash(root), LABEL_VERSION: __version__, LABEL_COMMIT: git_commit(root)}


def default_build_args() -> dict[str, str]:
    """The image's user gets the invoking user's uid/gid (not root's: root keeps the Dockerfile's 1000)."""
    uid, gid = os.getuid(), os.getgid()
    return {"USER_UID": str(uid), "USER_GID": str(gid)} if uid != 0 else {}


def image_info(tag: str, root: Optional[Path] = None, cli: Optional[DockerClient] = None) -> dict[str, Any]:
    """{"tag", "status": present|missing|stale, "id", "labels", "expected_sha256", "created"}."""
    root = root or project_root()
    expected = build_inputs_hash(root)
    try:
        image = _cli(cli).images.get(tag)
    except derrors.ImageNotFound:
        return {"tag": tag, "status": "missing", "id": None, "labels": {}, "expected_sha256": expected, "created": None}
    labels = image.labels or {}
    built_from = labels.get(LABEL_DOCKERFILE)
    # An image without our label (built by hand without --label) cannot be judged: treat it as present.
    status = "stale" if built_from and built_from != expected else "present"
    return {
        "tag": tag,
        "status": status,
        "id": image.id,
        "labels": labels,
        "expected_sha256": expected,
        "created": image.attrs.get("Created"),
    }


def find_image(tag: str, cli: Optional[DockerClient] = None) -> Any:
    """The SDK's Image for a tag, or None when there is none."""
    try:
        return _cli(cli).images.get(tag)
    except derrors.ImageNotFound:
        return None


def image_status(tag: str = DEFAULT_IMAGE, root: Optional[Path] = None, cli: Optional[DockerClient] = None) -> str:
    """"present", "missing" or "stale" (docker/, pyproject.toml or .dockerignore changed since the build)."""
    return image_info(tag, root, cli)["status"]


def require_image(
    tag: str = DEFAULT_IMAGE, root: Optional[Path] = None, allow_stale: bool = False, cli: Optional[DockerClient] = None
) -> str:
    """Raise the one-line error a user needs when the image is missing (exit 3) or stale (exit 1)."""
    status = image_status(tag, root, cli)
    if status == "missing":
        raise EnvironmentUnusable(f"image {tag} not found", fix=f"run `bevctl build{_tag_flag(tag)}`")
    if status == "stale" and not allow_stale:
        raise CheckFailed(
            f"image {tag} is stale: docker/Dockerfile (or pyproject.toml) changed since it was built",
            fix=f"run `bevctl build{_tag_flag(tag)}`",
        )
    return status


def _tag_flag(tag: str) -> str:
    return "" if tag == DEFAULT_IMAGE else f" --tag {tag}"


def docker_build_cmd(
    tag: str = DEFAULT_IMAGE,
    root: Optional[Path] = None,
    build_args: Optional[dict[str, str]] = None,
    no_cache: bool = False,
    network_mode: Optional[str] = None,
) -> list[str]:
    """The `docker build` argv equivalent to `build_image` with the same arguments."""
    root = root or project_root()
    argv = ["docker", "build", "-f", str(root / DOCKERFILE), "-t", tag]
    for key, value in {**default_build_args(), **(build_args or {})}.items():
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in image_labels(root).items():
        argv += ["--label", f"{key}={value}"]
    if no_cache:
        argv.append("--no-cache")
    if network_mode:
        argv += ["--network", network_mode]
    argv.append(str(root))
    return argv


class BuildFailed(CheckFailed):
    """A build step failed; `tail` holds the last lines of its output, `log_path` the full log."""

    def __init__(self, message: str, fix: str, tail: list[str], log_path: Optional[Path]):
        super().__init__(message, fix=fix)
        self.tail = tail
        self.log_path = log_path


@dataclass
class BuildEvent:
    """One thing that happened during a build, for progress displays."""

    kind: str  # "step" | "output" | "pull" | "done"
    step: int = 0
    total: int = 0
    text: str = ""
    layer: str = ""
    layers_total: int = 0
    layers_done: int = 0


@dataclass
class BuildResult:
    tag: str
    image_id: str
    log_path: Optional[Path]
    steps: int
    seconds: float
    labels: dict[str, str] = field(default_factory=dict)


def build_log_path(root: Optional[Path] = None) -> Path:
    root = root or project_root()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / "runs" / ".build" / f"{stamp}.log"


def build_image(
    tag: str = DEFAULT_IMAGE,
    root: Optional[Path] = None,
    build_args: Optional[dict[str, str]] = None,
    no_cache: bool = False,
    network_mode: Optional[str] = None,
    log_path: Optional[Path] = None,
    on_event: Optional[Callable[[BuildEvent], None]] = None,
    cli: Optional[DockerClient] = None,
) -> BuildResult:
    """Build docker/Dockerfile through the SDK's streaming API; every line goes to `log_path` (default
    runs/.build/<time>.log). Raises BuildFailed with the failing step's last lines."""
    root = root or project_root()
    cli = _cli(cli)
    log_path = log_path or build_log_path(root)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    labels = image_labels(root)
    args = {**default_build_args(), **(build_args or {})}
    emit = on_event or (lambda event: None)
    started = time.monotonic()
    step = total = 0
    step_text = ""
    step_lines: list[str] = []  # output of the current step, for the failure report
    layers: dict[str, bool] = {}
    image_id = ""
    pending = ""
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"# {shlex.join(docker_build_cmd(tag, root, build_args, no_cache, network_mode))}\n")
        try:
            stream = cli.api.build(
                path=str(root),
                dockerfile=DOCKERFILE,
                tag=tag,
                buildargs=args,
                labels=labels,
                nocache=no_cache,
                rm=True,
                forcerm=True,
                network_mode=network_mode,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk or "errorDetail" in chunk:
                    message = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error") or "unknown error"
                    if pending:
                        step_lines.append(pending)
                        log.write(pending + "\n")
                    log.write(f"ERROR: {message}\n")
                    raise _build_failed(message, step, total, step_text, step_lines, log_path)
                if "aux" in chunk and isinstance(chunk["aux"], dict) and chunk["aux"].get("ID"):
                    image_id = chunk["aux"]["ID"]
                if "stream" in chunk:
                    # The classic builder colours RUN steps' stderr; the log and the failure report want plain text.
                    pending += _ANSI.sub("", chunk["stream"])
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        log.write(line + "\n")
                        parsed = _parse_step(line)
                        if parsed:
                            step, total, step_text = parsed
                            step_lines = []
                            emit(BuildEvent("step", step=step, total=total, text=step_text))
                        elif line.strip() and not line.startswith(_BUILDER_NOISE):
                            step_lines.append(line)
                            emit(BuildEvent("output", step=step, total=total, text=line))
                        if line.startswith("Successfully built ") and not image_id:
                            image_id = line.split()[-1]
                elif "status" in chunk:
                    status, layer = chunk["status"], chunk.get("id", "")
                    if status not in ("Downloading", "Extracting", "Waiting"):
                        log.write(f"{layer + ': ' if layer else ''}{status}\n")
                    if layer and status in ("Pulling fs layer", "Waiting", "Already exists", "Pull complete", "Download complete"):
                        layers.setdefault(layer, False)
                        if status in ("Pull complete", "Already exists"):
                            layers[layer] = True
                        emit(BuildEvent("pull", step=step, total=total, text=status, layer=layer,
                                        layers_total=len(layers), layers_done=sum(layers.values())))
        except derrors.BuildError as exc:  # pragma: no cover - the low-level API reports errors in the stream
            raise _build_failed(str(exc), step, total, step_text, step_lines, log_path) from None
        except derrors.APIError as exc:
            log.write(f"ERROR: {exc.explanation or exc}\n")
            raise _build_failed(str(exc.explanation or exc), step, total, step_text, step_lines, log_path) from None
        if pending:
            log.write(pending + "\n")
    if not image_id:
        image_id = cli.images.get(tag).id
    seconds = time.monotonic() - started
    emit(BuildEvent("done", step=step, total=total, text=image_id))
    return BuildResult(tag=tag, image_id=image_id, log_path=log_path, steps=total, seconds=seconds, labels=labels)


# The classic builder's own bookkeeping lines: not a step's output.
_BUILDER_NOISE = (" ---> ", "Removing intermediate container", "Successfully built ", "Successfully tagged ")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _parse_step(line: str) -> Optional[tuple[int, int, str]]:
    # The classic builder announces each instruction as "Step 3/12 : RUN ...".
    if not line.startswith("Step "):
        return None
    head, _, text = line.partition(" : ")
    try:
        n, m = head[5:].split("/")
        return int(n), int(m), text.strip()
    except ValueError:
        return None


def _build_failed(message: str, step: int, total: int, step_text: str, lines: list[str], log_path: Path) -> BuildFailed:
    where = f" at step {step}/{total} ({_clip(step_text, 80)})" if step else ""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return BuildFailed(
        f"docker build failed{where}: {_clip(first, 300)}",
        fix=f"see the step's last lines above; full log: {log_path}",
        tail=lines[-15:],
        log_path=log_path,
    )


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
