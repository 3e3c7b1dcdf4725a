"""Start, stop and describe runs: preflight, the trainer command, a detached local or in-container launch.

Data flows one way: phase → preflight (`plan_start`) → launch (`launch`) → run directory → `describe_run`.
Nothing here imports torch: the trainer runs in its own process (or container).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bevctl import gitinfo, runs
from bevctl.errors import UsageError

TRAINER = ["-m", "model.train"]
FINAL = ("finished", "stopped", "failed", "crashed")
# The trainer process's own stdout/stderr (tracebacks land here); not *.log, which tools read as the mmcv log.
CONSOLE = "console.out"


@dataclasses.dataclass
class Finding:
    status: str  # ok | warn | fail | info
    label: str
    detail: str = ""
    fix: str = ""


@dataclasses.dataclass
class RunPlan:
    phase: Any  # bevctl.phases.Phase
    name: str
    run_dir: Path
    where: str  # local | container
    nproc: int
    command: list[str]
    resuming: bool
    findings: list[Finding] = dataclasses.field(default_factory=list)
    new_params: dict[str, int] = dataclasses.field(default_factory=dict)
    kept_params: int = 0
    load_report: Any = None  # bevctl.ckpt's report on load_from, shared by the preflight checks

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "phase": self.phase.name,
            "run": self.name,
            "run_dir": str(self.run_dir),
            "where": self.where,
            "nproc_per_node": self.nproc,
            "nnodes": self.phase.launch.nnodes,
            "resuming": self.resuming,
            "command": self.command,
            "model": {"config": self.phase.model.config, "gca": self.phase.model.gca, "heads": self.phase.model.heads},
            "load_from": self.phase.load_from,
            "kept_params": self.kept_params,
            "new_params": self.new_params,
            "epochs": self.phase.train.epochs,
            "precision": self.phase.train.precision,
            "data": {"root": self.phase.data.root, "version": self.phase.data.version, "synthetic": self.phase.data.synthetic},
            "checks": [dataclasses.asdict(f) for f in self.findings],
        }


# --------------------------------------------------------------------------------------------- preflight


def plan_start(
    phase_name: str,
    overrides: list[str] | None = None,
    where: str | None = None,
    gpus: int | None = None,
    nnodes: int | None = None,
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
    resume: str | None = None,
    name: str | None = None,
    run_checks: bool = True,
) -> RunPlan:
    """Everything `bevctl start` decides before anything starts; refusals raise with one line and a fix."""
    from bevctl.phases import load_phase

    extra = list(overrides or [])
    for key, value in (("launch.gpus", gpus), ("launch.nnodes", nnodes), ("launch.node_rank", node_rank),
                       ("launch.rdzv_endpoint", rdzv_endpoint), ("run.name", name)):
        if value is not None:
            extra.append(f"{key}={value}")
    phase = load_phase(phase_name, extra)
    if phase.launch.nnodes > 1 and not phase.launch.rdzv_endpoint:
        raise UsageError("a multi-node run needs a rendezvous endpoint", fix="pass --rdzv-endpoint HOST:PORT (the same on every node)")

    root = runs.runs_root(phase.run.root)
    run_name, run_dir, resuming = _choose_run_dir(phase, root, resume)
    if resuming:
        phase.resume = "auto" if resume in (None, "auto") else str(Path(resume).resolve())
        phase.load_from = None
    chosen_where = _choose_where(phase, where)
    nproc = max(1, phase.launch.gpus)
    if chosen_where == "container":
        from bevctl import container

        command = container.train_command(phase, run_name)
    else:
        command = trainer_command(phase, str(run_dir), nproc)
    plan = RunPlan(phase=phase, name=run_name, run_dir=run_dir, where=chosen_where, nproc=nproc,
                   command=command, resuming=resuming)
    if run_checks:
        plan.findings += _checkpoint_findings(plan)
        plan.findings += _pretrained_findings(plan)
        plan.findings += _data_findings(plan)
        plan.findings += _environment_findings(plan)
    return plan


def _choose_run_dir(phase: Any, root: Path, resume: str | None) -> tuple[str, Path, bool]:
    if resume:
        if resume == "auto":
            candidates = [root / phase.run.name] if phase.run.name else [
                d for d in runs.list_run_dirs(root) if (runs.read_manifest(d) or {}).get("phase") == phase.name]
            for run_dir in candidates:
                if (run_dir / runs.LATEST).is_file():
                    return run_dir.name, run_dir, True
            raise UsageError(f"--resume auto found no {runs.LATEST} for phase {phase.name!r} under {root}",
                             fix="start it without --resume, or pass --resume PATH to a checkpoint")
        path = Path(resume)
        if not path.is_file():
            raise UsageError(f"resume checkpoint {resume} not found", fix="pass --resume auto or an existing .pth file")
        run_dir = path.resolve().parent
        return run_dir.name, run_dir, True
    name = phase.run.name or f"{phase.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = root / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(f"run directory {run_dir} already holds a run",
                         fix=f"continue it with --resume auto, or choose another name with --name {name}-2")
    return name, run_dir, False


def _choose_where(phase: Any, where: str | None) -> str:
    choice = where or phase.launch.where
    if choice != "auto":
        return choice
    # Default to the container when its image exists, as users train inside it; else run on the host.
    try:
        from bevctl import container

        return "container" if container.image_status(phase.container.image) in ("present", "stale") else "local"
    except Exception:
        return "local"


def trainer_command(phase: Any, run_dir: str, nproc: int, python: str | None = None,
                    torchrun: list[str] | None = None) -> list[str]:
    """The trainer under torchrun (several processes or nodes) or as one plain process. `torchrun` is the launcher
    prefix: `python -m torch.distributed.run` of this interpreter by default, `torchrun` inside the image."""
    python = python or sys.executable
    launch = phase.launch
    if nproc == 1 and launch.nnodes == 1:
        return [python, *TRAINER, "--run-dir", run_dir]
    cmd = [*(torchrun or [python, "-m", "torch.distributed.run"]), f"--nproc-per-node={nproc}", f"--nnodes={launch.nnodes}"]
    if launch.nnodes > 1:
        cmd += [f"--node-rank={launch.node_rank}", "--rdzv-backend=c10d"]
        if launch.rdzv_endpoint:
            cmd.append(f"--rdzv-endpoint={launch.rdzv_endpoint}")
    else:
        cmd += ["--standalone"]
    return cmd + [*TRAINER, "--run-dir", run_dir]


def _checkpoint_findings(plan: RunPlan) -> list[Finding]:
    phase = plan.phase
    if plan.resuming or not phase.load_from:
        return []
    path = Path(phase.load_from)
    if not path.is_file():
        return [Finding("fail", "load_from", f"{phase.load_from} not found",
                        "train the earlier phase first, or fix load_from (--set load_from=PATH)")]
    report = _load_report(plan)
    plan.kept_params = report.summary.get("matched_params", 0)
    plan.new_params = {g.name: g.missing_params for g in report.groups if g.missing_params}
    if report.ok:
        missing = report.summary.get("missing_globs") or []
        detail = f"{report.summary.get('matched_keys', 0)} keys match"
        if missing:
            detail += f"; expected missing: {', '.join(missing)}"
        return [Finding("ok", "load_from", f"{phase.load_from}: {detail}")]
    return [Finding("fail", "load_from", f"{phase.load_from}: {report.headline()}", report.fix() or "")]


def _load_report(plan: RunPlan) -> Any:
    """`bevctl.ckpt`'s report on load_from under the phase's expectations, computed once per plan."""
    if plan.load_report is None:
        from bevctl import ckpt

        plan.load_report = ckpt.check(Path(plan.phase.load_from), phase=plan.phase)
    return plan.load_report


def _pretrained_findings(plan: RunPlan) -> list[Finding]:
    phase = plan.phase
    findings = []
    covered = _covered_prefixes(plan)
    for prefix, file in phase.pretrained.items():
        if any(prefix == c or prefix.startswith(c + ".") or c.startswith(prefix + ".") for c in covered):
            findings.append(Finding("ok", f"pretrained {prefix}", f"not needed: load_from already covers {prefix}"))
        elif Path(file).is_file():
            findings.append(Finding("ok", f"pretrained {prefix}", file))
        else:
            findings.append(Finding("fail", f"pretrained {prefix}", f"{file} not found",
                                    f"put the file there, or drop it with --set pretrained={{}} if {prefix} may start from scratch"))
    return findings


def _covered_prefixes(plan: RunPlan) -> list[str]:
    """Module groups that load_from (or resume) fills completely."""
    if plan.resuming:  # a resumed run restores every module from its own checkpoint
        return ["encoders", "fuser", "decoder", "heads", "task_gca"]
    if not plan.phase.load_from or not Path(plan.phase.load_from).is_file():
        return []
    report = _load_report(plan)
    return [g.name for g in report.groups if g.matched_keys and not g.missing_keys and not g.mismatched_keys]


def _data_findings(plan: RunPlan) -> list[Finding]:
    data = plan.phase.data
    root = Path(data.root)
    if (root / data.version).is_dir():
        return [Finding("ok", "data", f"{data.root} ({data.version})")]
    if data.synthetic:
        return [Finding("info", "data", f"synthetic nuScenes-format data will be generated at {data.root}")]
    if plan.where == "container":
        return [Finding("info", "data", f"{data.root} is checked inside the container")]
    return [Finding("fail", "data", f"{data.root} holds no {data.version} tables",
                    "point data.root at your nuScenes folder (--set data.root=PATH), or generate one: bevctl data synth")]


def _environment_findings(plan: RunPlan) -> list[Finding]:
    """The doctor checks that matter for this launch."""
    try:
        from bevctl import doctor
    except ImportError:
        return []
    report = doctor.run_checks(plan.phase, categories=_doctor_categories(plan), where=plan.where)
    findings = []
    for result in report.results:
        if result.status in ("fail", "warn"):
            findings.append(Finding(result.status, f"doctor {result.id}", result.message, result.fix or ""))
    if not findings:
        findings.append(Finding("ok", "doctor", f"{len(report.results)} environment checks passed"))
    return findings


def _doctor_categories(plan: RunPlan) -> list[str]:
    # Data and weights are checked above; inside a container the image brings python and the launcher.
    return ["docker", "disk"] if plan.where == "container" else ["python", "gpu", "launcher", "disk"]


# --------------------------------------------------------------------------------------------- launch


def prepare_run_dir(plan: RunPlan, command_line: list[str]) -> dict[str, Any]:
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    config = plan.phase.model_dump(mode="json")
    previous = runs.read_manifest(plan.run_dir) if plan.resuming else None
    manifest = runs.new_manifest(
        plan.name, plan.phase.name, config,
        command=plan.command, bevctl_command=command_line, where=plan.where, git_commit=gitinfo.commit(_project_root()),
        image=plan.phase.container.image if plan.where == "container" else None,
        nproc_per_node=plan.nproc, nnodes=plan.phase.launch.nnodes,
    )
    if previous:
        manifest["previous_attempts"] = previous.get("previous_attempts", []) + [
            {k: previous.get(k) for k in ("started_at", "ended_at", "status", "exit_code", "pid", "container_id")}]
    runs.write_manifest(plan.run_dir, manifest)
    return manifest


def launch(plan: RunPlan, command_line: list[str]) -> dict[str, Any]:
    """Start the run detached; returns the manifest (pid or container id recorded)."""
    prepare_run_dir(plan, command_line)
    if plan.where == "container":
        return _launch_container(plan)
    return _launch_local(plan)


def _launch_local(plan: RunPlan) -> dict[str, Any]:
    out = open(plan.run_dir / CONSOLE, "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    project = _project_root()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(project), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bevctl.supervise", "--run-dir", str(plan.run_dir), "--", *plan.command],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        cwd=os.getcwd(),
    )
    out.close()
    return runs.update_manifest(plan.run_dir, pid=proc.pid, status="running", where="local")


def _launch_container(plan: RunPlan) -> dict[str, Any]:
    from bevctl import container

    phase = plan.phase
    container.require_image(phase.container.image)
    # Not the default `bevfusion` name: that one is the interactive container of `bevctl shell`.
    spec = container.run_spec(phase, plan.command, run_name=plan.name, name=f"{phase.container.name}-{plan.name}",
                              runs_dir=plan.run_dir.parent.resolve(), network_mode=phase.container.network)
    container_id = container.run_detached(spec)
    return runs.update_manifest(plan.run_dir, container_id=container_id, status="running", where="container")


def _project_root() -> Path:
    return Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------- describe


def describe_run(run_dir: Path) -> dict[str, Any]:
    """Name, phase, honest status, progress and last loss of one run directory."""
    manifest = runs.read_manifest(run_dir) or {}
    last_train, run_end, last_ckpt = _tail_events(run_dir / runs.EVENTS)
    started = manifest.get("started_at")
    if run_end and isinstance(started, (int, float)) and run_end.get("time", 0) < started:
        run_end = {}  # the end of an earlier attempt; this one (resumed) has not written its run_start yet
    status = manifest.get("status") or ("finished" if run_end else "unknown")
    exit_code = manifest.get("exit_code")
    if run_end:
        status = run_end.get("status", status)
        exit_code = run_end.get("exit_code", exit_code)
    elif status in ("created", "running"):
        alive = _alive(manifest)
        if alive is False:
            status = "crashed"
            if exit_code is None and manifest.get("where") == "container":
                exit_code = _container_exit_code(manifest.get("container_id"))
    info = {
        "name": manifest.get("name", run_dir.name),
        "run_dir": str(run_dir),
        "phase": manifest.get("phase"),
        "status": status,
        "exit_code": exit_code,
        "where": manifest.get("where"),
        "pid": manifest.get("pid"),
        "container_id": manifest.get("container_id"),
        "started_at": manifest.get("started_at"),
        "ended_at": manifest.get("ended_at"),
        "epoch": last_train.get("epoch") if last_train else None,
        "iter": last_train.get("iter") if last_train else None,
        "iters_per_epoch": last_train.get("iters_per_epoch") if last_train else None,
        "epochs": (manifest.get("config") or {}).get("train", {}).get("epochs"),
        "loss": last_train.get("loss") if last_train else None,
        "last_checkpoint": last_ckpt.get("path") if last_ckpt else None,
    }
    if status == "crashed":
        info["last_log_lines"] = last_log_lines(run_dir)
    return info


def _alive(manifest: dict[str, Any]) -> bool | None:
    """True/False when we can tell, None when we cannot (another host, docker unreachable)."""
    if manifest.get("where") == "container" and manifest.get("container_id"):
        try:
            from bevctl import container

            state = container.state(manifest["container_id"])
        except UsageError:  # no such container any more
            return False
        except Exception:  # docker unreachable: we cannot tell
            return None
        return state.get("status") in ("running", "restarting", "paused", "created")
    pid = manifest.get("pid")
    if not pid or manifest.get("host") not in (None, socket.gethostname()):
        return None
    return pid_alive(int(pid))


def _container_exit_code(container_id: str | None) -> int | None:
    try:
        from bevctl import container

        return container.state(container_id)["exit_code"]
    except Exception:
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _tail_events(path: Path, chunk: int = 256 * 1024) -> tuple[dict, dict, dict]:
    """The last train, run_end and checkpoint_saved events, reading only the end of a long file."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chunk))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return {}, {}, {}
    last_train: dict = {}
    run_end: dict = {}
    last_ckpt: dict = {}
    for line in text.splitlines():
        event = runs.parse_event(line)
        if not event:
            continue
        kind = event.get("kind")
        if kind == "train":
            last_train = event
        elif kind == "run_end":
            run_end = event
        elif kind == "checkpoint_saved":
            last_ckpt = event
        elif kind == "run_start":
            run_end = {}
    return last_train, run_end, last_ckpt


def last_log_lines(run_dir: Path, count: int = 5) -> list[str]:
    """The last lines of the trainer's console (a traceback, usually), else of the text log."""
    logs = sorted(run_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
    for path in [run_dir / CONSOLE, *reversed(logs)]:
        if not path.is_file():
            continue
        lines = path.read_text(errors="replace").splitlines()
        if lines:
            return lines[-count:]
    return []


# --------------------------------------------------------------------------------------------- stop


def stop_run(run_dir: Path, grace: float | None = None) -> dict[str, Any]:
    """SIGTERM the run, wait up to the grace period for its final checkpoint, report what it saved."""
    info = describe_run(run_dir)
    if info["status"] in FINAL:
        raise UsageError(f"run {info['name']} is not running (status: {info['status']})",
                         fix=f"continue it with: bevctl start {info['phase']} --resume auto")
    manifest = runs.read_manifest(run_dir) or {}
    if grace is None:
        grace = float((manifest.get("config") or {}).get("train", {}).get("grace_seconds", 300)) + 10
    if manifest.get("where") == "container" and manifest.get("container_id"):
        from bevctl import container

        # SIGTERM to tini (PID 1), which forwards it; docker sends SIGKILL only after the grace period.
        container.stop(manifest["container_id"], int(grace))
        return describe_run(run_dir)
    else:
        pid = manifest.get("pid")
        if not pid or manifest.get("host") not in (None, socket.gethostname()):
            raise UsageError(f"run {info['name']} was started on {manifest.get('host')}", fix="run bevctl stop on that host")
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        info = describe_run(run_dir)
        if info["status"] in FINAL and _manifest_final(run_dir, manifest):
            break
        time.sleep(0.5)
    return describe_run(run_dir)


def _manifest_final(run_dir: Path, manifest: dict[str, Any]) -> bool:
    """The supervisor (local) has recorded the exit, or the container has exited."""
    current = runs.read_manifest(run_dir) or {}
    if manifest.get("where") == "container":
        return _alive(current) is not True
    pid = current.get("pid")
    return current.get("exit_code") is not None or not pid or not pid_alive(int(pid))


def shell_join(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
