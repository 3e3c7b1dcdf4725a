"""Everything `bevctl start` decides before anything starts: the phase (a resumed run's own recorded config), the
run directory (never a live run's, never a folder outside the runs root), where it runs, the trainer command, and
the checks (load_from against the model's keys, pretrained files, data, environment). Refusals raise one line
with a fix; findings are reported in the plan.

Data flows one way: phase → preflight (`plan_start`) → `bevctl.launch.launch` → run directory → `bevctl.runs`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from bevctl import runs
from bevctl.errors import UsageError
from bevctl.names import validate_run_name
from bevctl.trainer import trainer_command


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
    where: str  # local | container | slurm
    nproc: int
    command: list[str]
    resuming: bool
    findings: list[Finding] = dataclasses.field(default_factory=list)
    new_params: dict[str, int] = dataclasses.field(default_factory=dict)
    kept_params: int = 0
    load_report: Any = None  # bevctl.ckpt's report on load_from, shared by the preflight checks
    resumed_from: str | None = None  # a checkpoint outside the runs folder this new run starts from
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # `start --env`: the container's or job's extra env
    docker_gpus: str | int | None = None  # `start --gpus device=0,1`: the container's GPUs by id
    batch_script: str | None = None  # where: slurm, the job.sbatch bevctl submits (bevctl.launchers.slurm)

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
            "resumed_from": self.resumed_from,
            "command": self.command,
            "model": {"config": self.phase.model.config, "gca": self.phase.model.gca, "heads": self.phase.model.heads},
            "load_from": self.phase.load_from,
            "kept_params": self.kept_params,
            "new_params": self.new_params,
            "epochs": self.phase.train.epochs,
            "precision": self.phase.train.precision,
            "data": {"root": self.phase.data.root, "version": self.phase.data.version, "synthetic": self.phase.data.synthetic},
            "checks": [dataclasses.asdict(f) for f in self.findings],
            "launcher": self.phase.launch.launcher,
            **({"batch_script": self.batch_script} if self.batch_script else {}),
        }


# --------------------------------------------------------------------------------------------- preflight


def plan_start(
    phase_name: str,
    overrides: list[str] | None = None,
    where: str | None = None,
    gpus: int | str | None = None,
    nnodes: int | None = None,
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
    resume: str | None = None,
    name: str | None = None,
    run_checks: bool = True,
    env: list[str] | None = None,
) -> RunPlan:
    """Everything `bevctl start` decides before anything starts; refusals raise with one line and a fix.
    `gpus` is a count or, for containers, `device=0,1`/`all`; `env` holds `start --env KEY=VALUE` items."""
    from bevctl.launchers import container_env
    from bevctl.phases import load_phase

    docker_gpus = None
    if isinstance(gpus, str):
        gpus, docker_gpus = container_env.parse_gpus(gpus)
    env_vars = container_env.parse_env_args(env or [])
    extra = list(overrides or [])
    for key, value in (("launch.gpus", gpus), ("launch.nnodes", nnodes), ("launch.node_rank", node_rank),
                       ("launch.rdzv_endpoint", rdzv_endpoint), ("run.name", name)):
        if value is not None:
            extra.append(f"{key}={value}")
    phase = load_phase(phase_name, extra)
    # Under Slurm the rendezvous is the allocation's first node, known only when the job runs.
    if phase.launch.nnodes > 1 and not phase.launch.rdzv_endpoint and (where or phase.launch.where) != "slurm":
        raise UsageError("a multi-node run needs a rendezvous endpoint", fix="pass --rdzv-endpoint HOST:PORT (the same on every node)")

    root = runs.runs_root(phase.run.root)
    run_name, run_dir, resuming, resumed_from = _choose_run_dir(phase, root, resume)
    if resuming:
        if (run_dir / runs.MANIFEST).is_file():
            phase = _recorded_phase(run_dir, phase, extra)
        phase.resume = "auto" if resume in (None, "auto") or Path(resume).is_dir() else str(Path(resume).resolve())
        phase.load_from = None
    validate_run_name(run_name)
    chosen_where = _choose_where(phase, where)
    if chosen_where == "container" and os.environ.get("BEVCTL_EXTRA_MOUNTS"):
        from bevctl.names import validate_mounts

        validate_mounts(os.environ["BEVCTL_EXTRA_MOUNTS"], taken=[phase.container.workdir, phase.container.runs_mount])
    nproc = phase.launch.processes_per_node
    batch_script = None
    if chosen_where == "container":
        from bevctl import docker

        command = docker.train_command(phase, run_name)
    elif chosen_where == "slurm":
        from bevctl.launchers import slurm

        command = slurm.launch_command(phase, run_dir.resolve())
        batch_script = slurm.script(phase, run_name, run_dir, Path(__file__).resolve().parents[1],
                                    env={**phase.container.env, **env_vars})
    else:
        command = trainer_command(phase, str(run_dir), nproc)
    plan = RunPlan(phase=phase, name=run_name, run_dir=run_dir, where=chosen_where, nproc=nproc,
                   command=command, resuming=resuming, resumed_from=resumed_from, env=env_vars,
                   docker_gpus=docker_gpus, batch_script=batch_script)
    if run_checks:
        from bevctl import launchers

        plan.findings += [Finding(*row) for row in launchers.findings(phase, chosen_where)]
        plan.findings += _checkpoint_findings(plan)
        plan.findings += _pretrained_findings(plan)
        plan.findings += _data_findings(plan)
        plan.findings += _environment_findings(plan)
        plan.findings += _lr_findings(plan, phase_name, overrides)
    return plan


def _lr_findings(plan: RunPlan, phase_name: str, overrides: list[str] | None) -> list[Finding]:
    """A note when --gpus/--nnodes change the global batch the phase was written for: the lr the trainer uses."""
    from bevctl.phases import load_phase

    def processes(phase: Any) -> int:
        return phase.launch.processes_per_node * phase.launch.nnodes

    try:
        written = load_phase(phase_name, list(overrides or []))
    except UsageError:
        return []
    note = plan.phase.lr_note(processes(plan.phase), processes(written))
    return [Finding("info", "learning rate", note)] if note else []


def _choose_run_dir(phase: Any, root: Path, resume: str | None) -> tuple[str, Path, bool, str | None]:
    """(run name, run directory, resuming, resumed_from). A resume never takes over a live run, and a checkpoint
    outside the runs folder starts a new run directory (the folder it lies in is the user's, not a run's)."""
    if not resume:
        name = phase.run.name or f"{phase.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = root / name
        if run_dir.exists() and any(run_dir.iterdir()):
            if runs.run_status(run_dir).alive:
                raise runs.busy_error(run_dir)
            raise UsageError(f"run directory {run_dir} already holds a run",
                             fix=f"continue it with --resume auto --name {name}, or choose another name with --name {name}-2")
        return name, run_dir, False, None
    if resume == "auto":
        if phase.run.name:
            run_dir = root / phase.run.name
            if (run_dir / runs.MANIFEST).is_file():
                # A run killed before its first checkpoint restarts from scratch in its own directory.
                return _resumable(run_dir), run_dir, True, None
            candidates = [run_dir]
        else:
            candidates = [d for d in runs.list_run_dirs(root) if (runs.read_manifest(d) or {}).get("phase") == phase.name]
        for run_dir in candidates:
            if (run_dir / runs.LATEST).is_file():
                return _resumable(run_dir), run_dir, True, None
        raise UsageError(f"--resume auto found no {runs.LATEST} for phase {phase.name!r} under {root}",
                         fix="start it without --resume, or pass --resume PATH to a checkpoint")
    path = Path(resume)
    if path.is_dir() and (path / runs.MANIFEST).is_file():
        return _resumable(path), path, True, None
    if not path.is_file():
        raise UsageError(f"resume checkpoint {resume} not found", fix="pass --resume auto or an existing .pth file")
    parent = path.resolve().parent
    if parent.parent == root.resolve() and (parent / runs.MANIFEST).is_file():
        return _resumable(parent), root / parent.name, True, None
    name = phase.run.name or f"{phase.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = root / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(f"run directory {run_dir} already holds a run",
                         fix=f"choose a name for the new run with --name {name}-2")
    return name, run_dir, True, str(path.resolve())


def _resumable(run_dir: Path) -> str:
    """The run's name, after refusing a run that is still running (a second trainer would write over it)."""
    status = runs.run_status(run_dir)
    if status.alive:
        raise runs.busy_error(run_dir, status.reason)
    return run_dir.name


def _recorded_phase(run_dir: Path, phase: Any, overrides: list[str]) -> Any:
    """A resumed run continues with its own recorded config (plus this command's overrides), not the phase file's."""
    from bevctl import phases

    manifest = runs.read_manifest(run_dir) or {}
    config = manifest.get("config")
    if not isinstance(config, dict) or not config:
        return phase
    if config.get("name") not in (None, phase.name):
        raise UsageError(f"run {run_dir.name} was started from phase {config.get('name')!r}, not {phase.name!r}",
                         fix=f"continue it with: bevctl start {config.get('name')} --resume auto --name {run_dir.name}")
    data = dict(config, resume=None)
    from bevctl.overrides import apply_override

    for item in overrides:
        apply_override(data, item, phases.Phase)
    return phases.phase_from_dict(data)


def _choose_where(phase: Any, where: str | None) -> str:
    choice = where or phase.launch.where
    if choice != "auto":
        return choice
    # Default to the container when its image exists, as users train inside it; else run on the host.
    try:
        from bevctl import docker

        return "container" if docker.image_status(phase.container.image) in ("present", "stale") else "local"
    except Exception:
        return "local"


def _checkpoint_findings(plan: RunPlan) -> list[Finding]:
    phase = plan.phase
    if plan.resuming or not phase.load_from:
        return []
    path = Path(phase.load_from)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "not found"
        return [Finding("fail", "load_from", f"{phase.load_from} {what}",
                        "train the earlier phase first, or fix load_from (--set load_from=PATH to a .pth/.safetensors file)")]
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

        from bevctl.launchers.checkout import manifest_for

        # A checkout's load_from is compared with the user's key manifest when the phase names one.
        plan.load_report = ckpt.check(Path(plan.phase.load_from), phase=plan.phase, model_config=manifest_for(plan.phase))
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
    if plan.phase.trainer is not None:
        return [Finding("info", "data", f"the checkout's config ({plan.phase.trainer.config}) names the data")]
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
    # Data and weights are checked above; inside a container the image brings python and the launcher; a Slurm
    # login node has no GPUs of the job's (launchers.findings checks the Slurm tools).
    if plan.where == "slurm":
        return ["python", "disk"]
    return ["docker", "disk"] if plan.where == "container" else ["python", "gpu", "launcher", "disk"]
