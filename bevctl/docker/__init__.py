"""Docker, in one package: nothing else in bevctl talks to the Docker SDK (>= 7.1). Import it lazily, inside
commands. Everything non-interactive goes through the SDK; the interactive shell is the docker CLI itself
(`os.execvp`), because the SDK cannot give a real terminal.

- `daemon`: the daemon (`client()`: reachable, else EnvironmentUnusable with the fix), `project_root()`, GPU
  hints, label and image names.
- `image`: build inputs hash, `image_info` / `image_status` / `require_image`, `build_image` (streamed, parsed into
  `BuildEvent`s, `BuildFailed` with the failing step's last lines), `docker_build_cmd`.
- `runspec`: `run_spec(phase, command, ...)` -> `RunSpec` (the SDK's arguments), `docker_run_cmd(spec)` (the same
  as a `docker run` argv), `train_command(phase, run_name)`.
- `lifecycle`: `run_detached`, `wait`, `logs`, `stop`, `remove`, `state`, `find_containers`, `exec_in`,
  `exec_argv`, `ensure_running`, `get`.

Tests get a real engine and a local image from tests/helpers/docker_engine.py.
"""

from bevctl.docker.daemon import (
    BUILD_INPUTS,
    DEFAULT_IMAGE,
    DEFAULT_NAME,
    DOCKERFILE,
    LABEL_COMMIT,
    LABEL_DOCKERFILE,
    LABEL_MANAGED,
    LABEL_PHASE,
    LABEL_PROJECT,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_VERSION,
    NVIDIA_FIX,
    DockerClient,
    client,
    connect_env,
    docker_cli,
    gpu_runtime_available,
    host_has_gpu,
    project_root,
)
from bevctl.docker.image import (
    BuildEvent,
    BuildFailed,
    BuildResult,
    build_image,
    build_inputs_hash,
    build_log_path,
    default_build_args,
    docker_build_cmd,
    find_image,
    git_commit,
    image_info,
    image_labels,
    image_status,
    require_image,
)
from bevctl.docker.lifecycle import (
    ensure_running,
    exec_argv,
    exec_in,
    find,
    find_containers,
    get,
    logs,
    remove,
    run_detached,
    state,
    stop,
    wait,
)
from bevctl.paths import WORKDIR
from bevctl.docker.runspec import MountLike, RunSpec, docker_run_cmd, run_spec, train_command

__all__ = [
    "BUILD_INPUTS", "DEFAULT_IMAGE", "DEFAULT_NAME", "DOCKERFILE", "LABEL_COMMIT", "LABEL_DOCKERFILE", "LABEL_MANAGED",
    "LABEL_PHASE", "LABEL_PROJECT", "LABEL_ROLE", "LABEL_RUN", "LABEL_VERSION", "NVIDIA_FIX", "WORKDIR",
    "DockerClient", "client", "connect_env", "find", "find_image", "docker_cli", "gpu_runtime_available", "host_has_gpu", "project_root",
    "BuildEvent", "BuildFailed", "BuildResult", "build_image", "build_inputs_hash", "build_log_path",
    "default_build_args", "docker_build_cmd", "git_commit", "image_info", "image_labels", "image_status",
    "require_image", "ensure_running", "exec_argv", "exec_in", "find_containers", "get", "logs", "remove",
    "run_detached", "state", "stop", "wait", "MountLike", "RunSpec", "docker_run_cmd", "run_spec", "train_command",
]
