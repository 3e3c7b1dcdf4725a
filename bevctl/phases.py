"""A phase: one training stage as plain typed data (pydantic v2), loaded from YAML.

`resolve_phase("phase4a")` finds a shipped phase (package data in `bevctl/shipped_phases/`) or a YAML path.
Unknown keys and wrong types are rejected with the file, the line and a did-you-mean, as one line.
Import this module only inside commands: pydantic costs ~150 ms of start-up.
"""

from __future__ import annotations

import difflib
import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bevctl.errors import UsageError

Precision = Literal["fp32", "bf16", "fp16"]
GcaMode = Literal["none", "shared", "task"]
TASKS = ("object", "map")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(_Strict):
    config: str = "full"  # "full", "tiny", or a path to a model-config YAML
    gca: GcaMode = "task"
    heads: list[Literal["object", "map"]] = Field(default_factory=lambda: ["object", "map"])


class SynthSpec(_Strict):
    scenes: int = Field(10, ge=2, le=10)
    samples_per_scene: int = Field(4, ge=1)
    seed: int = 0


class DataSpec(_Strict):
    root: str = "data/nuscenes"
    version: str = "v1.0-trainval"
    synthetic: bool = False
    synth: SynthSpec = Field(default_factory=SynthSpec)
    train_split: str = "train"
    val_split: str = "val"
    info_pkl: Optional[str] = None  # mmdet3d-style infos users already have (nuscenes_infos_train.pkl)
    workers: int = Field(4, ge=0)
    sweeps: int = Field(9, ge=0)


class OptimSpec(_Strict):
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: Optional[float] = Field(35.0, gt=0)
    schedule: Literal["cosine", "cyclic", "constant"] = "cosine"
    warmup_iters: int = Field(500, ge=0)
    warmup_ratio: float = Field(1.0 / 3, gt=0, le=1)
    min_lr_ratio: float = Field(1e-3, ge=0, le=1)


class TrainSpec(_Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(4, ge=1)  # per GPU (samples_per_gpu)
    precision: Precision = "fp32"
    seed: int = 0
    log_interval: int = Field(50, ge=1)
    checkpoint_interval: int = Field(1, ge=1)
    max_keep: int = Field(1, ge=1)
    eval_interval: int = Field(1, ge=0)  # epochs; 0 = no evaluation during training
    nonfinite_limit: int = Field(10, ge=1)  # consecutive non-finite losses before the run stops
    grace_seconds: int = Field(300, ge=1)  # SIGTERM to final checkpoint
    max_iters_per_epoch: Optional[int] = Field(None, ge=1)  # cap for demos and smoke tests
    device: Literal["auto", "cpu", "cuda"] = "auto"


class SlurmSpec(_Strict):
    """`launch.where: slurm`: the sbatch job bevctl writes (bevctl.launchers.slurm)."""

    partition: Optional[str] = None
    account: Optional[str] = None
    time: Optional[str] = None  # Slurm's time limit, e.g. "2-00:00:00"
    gpus_per_node: Optional[int] = Field(None, ge=0)  # default: launch.gpus
    cpus_per_task: Optional[int] = Field(None, ge=1)
    extra_sbatch: list[str] = Field(default_factory=list)  # more `#SBATCH` options, e.g. "--qos=high"
    container_runtime: Literal["none", "pyxis", "apptainer"] = "none"
    container_image: Optional[str] = None  # pyxis image or apptainer .sif; default: container.image
    rdzv_port: int = Field(29500, ge=1, le=65535)

    @field_validator("time", mode="before")
    @classmethod
    def _time_text(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError('write the time limit as a quoted Slurm time such as "2-00:00:00" or "48:00:00"')
        return value


class LaunchSpec(_Strict):
    launcher: Literal["torchrun", "torchpack"] = "torchrun"
    gpus: int = Field(1, ge=0)  # processes per node; 0 = CPU
    nnodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    rdzv_endpoint: Optional[str] = None  # HOST:PORT for multi-node
    where: Literal["auto", "local", "container", "slurm"] = "auto"
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)


class TrainerSpec(_Strict):
    """An existing BEVFusion checkout as the trainer (bevctl.launchers.checkout) instead of the bundled model/."""

    repo: str  # the checkout's folder
    script: str = "tools/train.py"  # relative to repo
    config: str  # relative to repo, e.g. configs/nuscenes/.../convfuser.yaml
    args: list[str] = Field(default_factory=list)  # appended as given, e.g. ["--model.encoders.camera..."]
    manifest: Optional[str] = None  # key manifest (bevctl/manifests format) load_from is checked against


class ContainerSpec(_Strict):
    image: str = "bevctl:latest"
    name: str = "bevfusion"
    workdir: str = "/workspace/bevfusion"
    shm_size: str = "16g"
    ipc_host: bool = False
    dataset_mount: str = "/data/nuscenes"
    runs_mount: str = "/workspace/bevfusion/runs"
    network: Optional[str] = None  # docker network mode: default bridge; "host" for multi-node NCCL; "none"
    env: dict[str, str] = Field(default_factory=dict)  # extra environment of the container (bevctl.launchers.container_env)


class RunSpec(_Strict):
    root: str = "runs"
    name: Optional[str] = None  # default: <phase>-<YYYYmmdd-HHMMSS>


class Band(_Strict):
    """An expectation from the phase's plan: `metric` goes from `start` to `end` over `epochs`, ± tolerance."""

    metric: str
    epochs: tuple[int, int]
    start: float
    end: float
    tolerance: float = Field(0.02, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> "Band":
        if self.epochs[1] <= self.epochs[0]:
            raise ValueError(f"epochs must increase, got {list(self.epochs)}")
        return self


class Phase(_Strict):
    name: str
    description: str = ""
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    load_from: Optional[str] = None  # partial load (weights only), mismatching keys reported
    resume: Optional[str] = None  # "auto" (latest.pth of the run) or a checkpoint path
    expect_missing: list[str] = Field(default_factory=list)  # key globs allowed to be missing from load_from
    allow_unexpected: list[str] = Field(default_factory=list)
    pretrained: dict[str, str] = Field(default_factory=dict)  # module prefix -> checkpoint path
    train: TrainSpec = Field(default_factory=TrainSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    launch: LaunchSpec = Field(default_factory=LaunchSpec)
    container: ContainerSpec = Field(default_factory=ContainerSpec)
    run: RunSpec = Field(default_factory=RunSpec)
    expectations: list[Band] = Field(default_factory=list)
    trainer: Optional[TrainerSpec] = None  # None: the bundled trainer (python -m model.train)

    @field_validator("pretrained")
    @classmethod
    def _known_prefixes(cls, value: dict[str, str]) -> dict[str, str]:
        for prefix in value:
            if not prefix.startswith(("encoders.", "fuser", "decoder.", "heads.", "task_gca")):
                raise ValueError(f"pretrained key {prefix!r} is not a model module prefix (e.g. encoders.camera.backbone)")
        return value

    @model_validator(mode="after")
    def _resume_or_load(self) -> "Phase":
        if self.resume and self.load_from:
            raise ValueError("set either resume (continue a run) or load_from (start from weights), not both")
        return self


# --------------------------------------------------------------------------------------------- loading


def shipped_phases() -> dict[str, Path]:
    """Names of the phases shipped with bevctl and their files."""
    folder = resources.files("bevctl") / "shipped_phases"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_phase_file(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not path.is_file():
            raise UsageError(f"phase file {name_or_path} not found", fix="give a shipped phase name or an existing YAML path")
        return path
    shipped = shipped_phases()
    if name_or_path in shipped:
        return shipped[name_or_path]
    close = difflib.get_close_matches(name_or_path, list(shipped), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(
        f"unknown phase {name_or_path!r}",
        fix=f"{hint}shipped phases: {', '.join(sorted(shipped))}; or give a path to a phase YAML",
    )


def load_phase(name_or_path: str, overrides: list[str] | None = None) -> Phase:
    """Resolve, parse and validate a phase; `overrides` are `key.path=value` strings (values parsed as YAML)."""
    path = resolve_phase_file(name_or_path)
    text = path.read_text(encoding="utf-8")
    data, lines = _load_yaml_with_lines(text, path)
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a phase file must be a YAML mapping", fix="see bevctl/shipped_phases/demo.yaml")
    data.setdefault("name", path.stem)
    for item in overrides or []:
        _apply_override(data, item)
        lines.pop(tuple(item.split("=", 1)[0].split(".")), None)
    try:
        return Phase.model_validate(data)
    except ValidationError as exc:
        raise UsageError(_explain(exc, path, lines)) from None


def phase_from_dict(data: dict[str, Any]) -> Phase:
    """A phase from a resolved config (e.g. the `config` of run.json)."""
    try:
        return Phase.model_validate(data)
    except ValidationError as exc:
        raise UsageError(_explain(exc, Path("<config>"), {})) from None


def _apply_override(data: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise UsageError(f"override {item!r} is not key=value", fix="write e.g. --set train.epochs=3")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise UsageError(f"override {item!r} has an empty key", fix="write e.g. --set train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UsageError(f"override {item!r}: {part} is not a section", fix="check the key path against the phase file")
        node = child
    node[parts[-1]] = value


def _load_yaml_with_lines(text: str, path: Path) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML and remember the line of every mapping key, by its key path."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{where}: not valid YAML: {problem}", fix="fix the YAML syntax at that line") from None
    lines: dict[tuple, int] = {}

    def walk(node: Any, prefix: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = prefix + (key_node.value,)
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[prefix + (i,)] = item.start_mark.line + 1
                walk(item, prefix + (i,))

    walk(root, ())
    return data, lines


def _explain(exc: ValidationError, path: Path, lines: dict[tuple, int]) -> str:
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    line = None
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            line = lines[loc[:n]]
            break
    where = f"{path}:{line}" if line else str(path)
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        fields = list(_model_at(Phase, loc[:-1]).model_fields)
        close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{where}: unknown key {dotted!r}{hint}{more}"
    message = error["msg"]
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {dotted}: {message} (got {error.get('input')!r}){more}"


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel]:
    for step in loc:
        if isinstance(step, int) or step not in model.model_fields:
            continue
        annotation = model.model_fields[step].annotation
        found = _submodel(annotation)
        if found is None:
            return model
        model = found
    return model


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, Union, Optional) or get_args(annotation):
        for arg in get_args(annotation):
            found = _submodel(arg)
            if found is not None:
                return found
    return None
