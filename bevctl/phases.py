"""A phase: one training stage as plain typed data (pydantic v2), loaded from YAML.

`resolve_phase("phase4a")` finds a shipped phase (package data in `bevctl/shipped_phases/`) or a YAML path.
Unknown keys and wrong types are rejected with the file, the line and a did-you-mean, as one line.
Import this module only inside commands: pydantic costs ~150 ms of start-up.
"""

from __future__ import annotations

import difflib
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bevctl.errors import UsageError
from bevctl.paths import RUNS_MOUNT, WORKDIR

Precision = Literal["fp32", "bf16", "fp16"]
GcaMode = Literal["none", "shared", "task"]
TASKS = ("object", "map")


SEED_MAX = 2**32 - 1  # numpy's seed range


class _Strict(BaseModel):
    # Inputs have limits (issue 15): no inf/nan anywhere, no string longer than a path can be.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, str_max_length=4096)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, data: Any) -> Any:
        # pydantic's lax mode reads `epochs: yes` as 1; in a phase that is a mistake, not a number
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if isinstance(value, bool) and field is not None and _number_field(field.annotation):
                    raise ValueError(f"{key} must be a number, not {str(value).lower()}")
        return data


def _number_field(annotation: Any) -> bool:
    args = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) is Union else [annotation]
    return bool(args) and all(a in (int, float) for a in args)


def _matches(pattern: str, rule: str) -> Any:
    """A field validator: the value fullmatches `pattern`, else the plain-language `rule` is the message."""
    compiled = re.compile(pattern)

    def check(cls: Any, value: Any) -> Any:
        if isinstance(value, str) and not compiled.fullmatch(value):
            raise ValueError(rule)
        return value

    return classmethod(check)


class ModelSpec(_Strict):
    config: str = "full"  # "full", "tiny", or a path to a model-config YAML
    gca: GcaMode = "task"
    heads: list[Literal["object", "map"]] = Field(default_factory=lambda: ["object", "map"])
    # Fill the detection heatmap's class bias with this (CenterPoint's -2.19 = prior 0.1); None keeps the
    # original's effective init (its init_weights is never called).
    heatmap_bias_init: Optional[float] = None


# The versions the generator writes: their (train, val) splits, and how many scenes fit (the mini split's 10; for
# trainval, the generator's free map cells)
SYNTH_SPLITS = {"v1.0-mini": ("mini_train", "mini_val"), "v1.0-trainval": ("train", "val")}
SYNTH_SCENES_MAX = {"v1.0-mini": 10, "v1.0-trainval": 120}


class SynthSpec(_Strict):
    scenes: int = Field(10, ge=2, le=SYNTH_SCENES_MAX["v1.0-trainval"])
    samples_per_scene: int = Field(4, ge=1, le=100)  # a real nuScenes scene has about 40
    seed: int = Field(0, ge=0, le=SEED_MAX)


Angle = Annotated[float, Field(ge=-3.1416, le=3.1416)]


class AugmentSpec(_Strict):
    """Training-time augmentation; the defaults are the original's nuScenes configs (GlobalRotScaleTrans,
    RandomFlip3D, ImageAug3D). A few-hundred-step demo learns faster with less of it."""

    global_rot: tuple[Angle, Angle] = (-0.785, 0.785)  # radians about z
    global_scale: tuple[Annotated[float, Field(gt=0, le=10)], Annotated[float, Field(gt=0, le=10)]] = (0.9, 1.1)
    global_translate_std: float = Field(0.5, ge=0, le=100)  # metres
    flip: bool = True  # BEV flips about x and y, each with probability 0.5
    image_rot_deg: tuple[Annotated[float, Field(ge=-180, le=180)], Annotated[float, Field(ge=-180, le=180)]] = (-5.4, 5.4)
    image_flip: bool = True


class DataSpec(_Strict):
    root: str = Field("data/nuscenes", min_length=1)  # "" would be the current folder
    version: str = "v1.0-trainval"
    synthetic: bool = False
    synth: SynthSpec = Field(default_factory=SynthSpec)
    train_split: str = "train"
    val_split: str = "val"
    info_pkl: Optional[str] = None  # mmdet3d-style infos users already have (nuscenes_infos_train.pkl)
    workers: int = Field(4, ge=0, le=256)
    sweeps: int = Field(9, ge=0, le=20)
    cbgs: bool = False  # class-balanced grouping and sampling of the train split (mmdet3d CBGSDataset)
    augment: AugmentSpec = Field(default_factory=AugmentSpec)

    @model_validator(mode="after")
    def _synth_fits_version(self):
        if not self.synthetic:
            return self
        if self.version not in SYNTH_SCENES_MAX:
            raise ValueError(f"synthetic data is generated as {' or '.join(SYNTH_SCENES_MAX)}, not {self.version}")
        most = SYNTH_SCENES_MAX[self.version]
        if self.synth.scenes > most:
            raise ValueError(f"data.synth.scenes is {self.synth.scenes}, but {self.version} has room for {most}"
                             + (" (use data.version v1.0-trainval with splits train / val for more)"
                                if self.version == "v1.0-mini" else ""))
        return self


class OptimSpec(_Strict):
    lr: float = Field(2e-4, gt=0, le=10)
    weight_decay: float = Field(0.01, ge=0, le=10)
    grad_clip: Optional[float] = Field(35.0, gt=0, le=1e6)
    schedule: Literal["cosine", "cyclic", "constant"] = "cosine"
    warmup_iters: int = Field(500, ge=0, le=10**7)
    warmup_ratio: float = Field(1.0 / 3, gt=0, le=1)
    min_lr_ratio: float = Field(1e-3, ge=0, le=1)
    by_epoch: bool = False  # cosine: lr changes once per epoch (the original fusion config) instead of per iteration
    momentum: Literal["constant", "cyclic"] = "constant"  # cyclic: AdamW beta1 0.9 -> 0.805 -> 0.9 (mmcv defaults)
    # linear: lr x global batch / reference_batch (the scale-by-GPU-count rule); none: lr as written
    scale_lr: Literal["none", "linear"] = "none"
    reference_batch: int = Field(32, ge=1)  # the global batch `lr` was tuned for (the original: 8 GPUs x 4)

    def effective_lr(self, global_batch: int) -> float:
        """The lr the trainer uses for this global batch (processes x batch_size)."""
        return self.lr * global_batch / self.reference_batch if self.scale_lr == "linear" else self.lr


class TrainSpec(_Strict):
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(4, ge=1, le=4096)  # per GPU (samples_per_gpu)
    precision: Precision = "fp32"
    seed: int = Field(0, ge=0, le=SEED_MAX)
    log_interval: int = Field(50, ge=1, le=10**7)
    checkpoint_interval: int = Field(1, ge=1, le=10_000)
    max_keep: int = Field(1, ge=1, le=10_000)
    eval_interval: int = Field(1, ge=0, le=10_000)  # epochs; 0 = no evaluation during training
    nonfinite_limit: int = Field(10, ge=1, le=10**7)  # consecutive non-finite losses before the run stops
    grace_seconds: int = Field(300, ge=1, le=86_400)  # SIGTERM to final checkpoint
    max_iters_per_epoch: Optional[int] = Field(None, ge=1, le=10**9)  # cap for demos and smoke tests
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precise_bn_batches: int = Field(0, ge=0)  # before each evaluation, recompute BN statistics on this many batches
    loss_scale_growth_interval: int = Field(2000, ge=1)  # fp16: steps without overflow before the scale doubles


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

    # Each of these becomes a `#SBATCH` line of the job script: a newline in one would start a shell line of the job.
    _names_rule = field_validator("partition", "account")(_matches(
        r"[A-Za-z0-9][A-Za-z0-9_.,:+@%-]*",
        "a Slurm partition or account is letters, digits and _ . , : + @ % - (first a letter or digit), one word"))
    _time_rule = field_validator("time")(_matches(
        r"\d+(?:-\d+)?(?::\d+){0,2}|UNLIMITED|unlimited|INFINITE|infinite",
        'a Slurm time limit is MINUTES, HH:MM:SS, DAYS-HH[:MM[:SS]] or UNLIMITED, e.g. "2-00:00:00"'))

    @field_validator("extra_sbatch")
    @classmethod
    def _one_line_options(cls, value: list[str]) -> list[str]:
        for option in value:
            if not option.strip() or re.search(r"[\x00-\x1f\x7f]", option):
                raise ValueError(f"each extra_sbatch entry is one non-empty sbatch option on one line (no newline or "
                                 f"control character), got {option!r}")
        return value

    @field_validator("time", mode="before")
    @classmethod
    def _time_text(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError('write the time limit as a quoted Slurm time such as "2-00:00:00" or "48:00:00"')
        return value


class LaunchSpec(_Strict):
    launcher: Literal["torchrun", "torchpack"] = "torchrun"
    gpus: int = Field(1, ge=0, le=1024)  # processes per node; 0 = CPU
    # CPU training (gpus 0): processes per node, joined over gloo. spconv's CPU kernels run on one thread, so on a
    # machine with N cores N single-threaded processes train faster than one process with N threads.
    cpu_processes: int = Field(1, ge=1, le=256)
    nnodes: int = Field(1, ge=1, le=100_000)
    node_rank: int = Field(0, ge=0, le=100_000)
    rdzv_endpoint: Optional[str] = None  # HOST:PORT for multi-node

    _rdzv_rule = field_validator("rdzv_endpoint")(_matches(
        r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)"  # host name, IPv4 or [IPv6]
        r"(?::(?:[1-9]\d{0,3}|[1-5]\d{4}|6[0-4]\d{3}|65[0-4]\d\d|655[0-2]\d|6553[0-5]))?",  # port 1-65535
        "write the rendezvous as HOST:PORT (a host name, IPv4 or [IPv6] address; port 1-65535), e.g. 10.0.0.1:29500"))
    where: Literal["auto", "local", "container", "slurm"] = "auto"
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)

    @property
    def processes_per_node(self) -> int:
        return self.gpus if self.gpus > 0 else self.cpu_processes

    @model_validator(mode="after")
    def _rank_in_range(self) -> "LaunchSpec":
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} is not below nnodes {self.nnodes} (ranks count from 0)")
        return self


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
    workdir: str = WORKDIR
    shm_size: str = "16g"
    ipc_host: bool = False
    dataset_mount: str = "/data/nuscenes"
    runs_mount: str = RUNS_MOUNT
    network: Optional[str] = None  # docker network mode: default bridge; "host" for multi-node NCCL; "none"
    env: dict[str, str] = Field(default_factory=dict)  # extra environment of the container (bevctl.launchers.container_env)

    _name_rule = field_validator("name")(_matches(
        r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", "a container name is 1-63 letters, digits, '_', '.', '-' (first a letter or digit)"))
    _shm_rule = field_validator("shm_size")(_matches(r"[0-9]{1,12}[bkmgBKMG]?", "write a size such as 16g or 512m"))
    _paths_rule = field_validator("workdir", "dataset_mount", "runs_mount")(_matches(
        r"/[^\x00-\x1f:]*", "a container path is absolute (starts with /), without ':' or control characters"))

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        from bevctl.launchers.container_env import ENV_NAME

        # names go unquoted into `export NAME=...` of a Slurm script and `NAME=value` of docker: shell names only
        for name, text in value.items():
            if not ENV_NAME.match(name) or len(name) > 128:
                raise ValueError(f"container.env name {name!r} is not an environment variable name (letters, digits, "
                                 "'_', first not a digit)")
            if "\x00" in text:
                raise ValueError(f"container.env {name} holds a NUL character, which no environment can")
        return value


class RunSpec(_Strict):
    root: str = Field("runs", min_length=1)
    name: Optional[str] = None  # default: <phase>-<YYYYmmdd-HHMMSS>

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, value: Optional[str]) -> Optional[str]:
        from bevctl.names import run_name_problem

        problem = None if value is None else run_name_problem(value)
        if problem:
            raise ValueError(f"run name {problem}" + ("" if "allowed" in problem else " (one folder name: letters, "
                                                      "digits, '.', '_', '-')"))
        return value


class Band(_Strict):
    """An expectation from the phase's plan: `metric` goes from `start` to `end` over `epochs`, ± tolerance."""

    metric: str
    epochs: tuple[Annotated[int, Field(ge=0, le=10_000)], Annotated[int, Field(ge=0, le=10_000)]]
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

    def lr_note(self, processes: int, phase_processes: int) -> str | None:
        """For the preflight: when the run's process count (e.g. from --gpus) changes the global batch the phase
        was written for, which lr the trainer will use (`optim.scale_lr`); None when the batch is unchanged."""
        batch, written = processes * self.train.batch_size, phase_processes * self.train.batch_size
        if batch == written:
            return None
        o = self.optim
        if o.scale_lr == "linear":
            return (f"global batch {batch} (phase: {written}): lr scaled linearly to {o.effective_lr(batch):.3g} "
                    f"(optim.lr {o.lr:g} for a batch of {o.reference_batch})")
        return (f"global batch {batch} (phase: {written}): lr stays {o.lr:g}; set optim.scale_lr=linear to scale it "
                f"with the batch (x{batch / written:g})")


# --------------------------------------------------------------------------------------------- loading


def shipped_phases() -> dict[str, Path]:
    """Names of the phases shipped with bevctl and their files."""
    folder = resources.files("bevctl") / "shipped_phases"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_phase_file(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    shown = _clip(name_or_path)
    if path.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        try:
            exists, regular = path.exists(), path.is_file()
        except OSError as exc:  # e.g. a name too long for the file system
            raise UsageError(f"phase file {shown}: {exc.strerror}", fix="give a shorter, existing YAML path") from None
        if not exists:
            raise UsageError(f"phase file {shown} not found", fix="give a shipped phase name or an existing YAML path")
        if not regular:
            raise UsageError(f"phase file {shown} is not a regular file", fix="give the path of a phase YAML file")
        return path
    shipped = shipped_phases()
    if name_or_path in shipped:
        return shipped[name_or_path]
    close = difflib.get_close_matches(name_or_path, list(shipped), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(
        f"unknown phase {shown!r}",
        fix=f"{hint}shipped phases: {', '.join(sorted(shipped))}; or give a path to a phase YAML",
    )


def load_phase(name_or_path: str, overrides: list[str] | None = None) -> Phase:
    """Resolve, parse and validate a phase; `overrides` are `key.path=value` strings (see bevctl.overrides).

    The YAML is read with bevctl.yamlsafe's limits (size, UTF-8, alias expansion, depth, duplicate keys)."""
    from bevctl.overrides import apply_override
    from bevctl.yamlsafe import load_file

    path = resolve_phase_file(name_or_path)
    data, lines = load_file(path)
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a phase file must be a YAML mapping", fix="see bevctl/shipped_phases/demo.yaml")
    data.setdefault("name", path.stem)
    applied = [apply_override(data, item, Phase) for item in overrides or []]
    try:
        return Phase.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, str(path), lines, applied) from None


def phase_from_dict(data: dict[str, Any]) -> Phase:
    """A phase from a resolved config (e.g. the `config` of run.json)."""
    try:
        return Phase.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, "<config>", {}, [], fix="the recorded config (run.json) is not a valid phase: start a "
                       "new run, or correct the config in run.json") from None


def _one_line(text: str) -> str:
    return repr(text)[1:-1]  # control characters escaped: the message stays one line


def _clip(text: str, width: int = 80, escape: bool = True) -> str:
    """`text` on one line, at most `width` characters; `escape=False` for text that is a repr already."""
    text = _one_line(text) if escape else text
    return text if len(text) <= width else text[: width - 3] + "..."


def _explain(exc: ValidationError, source: str, lines: dict[tuple, int], applied: list, fix: str | None = None
             ) -> UsageError:
    """The first validation error as one line, blamed on the --set argument or the file line that caused it."""
    from bevctl.overrides import blame

    error = exc.errors()[0]
    loc = tuple(error["loc"])
    culprit = blame(applied, loc, missing=error["type"] == "missing")
    line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
    if culprit is not None:
        where, place = f"--set {culprit.shown()}", "the --set value"
    else:
        where = f"{source}:{line}" if line else source
        place = f"{source}:{line}" if line else source
    key = ".".join(str(p) for p in loc) or "(top level)"
    dotted = _one_line(key)  # a key may hold a newline
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if error["type"] == "extra_forbidden":
        fields = list(_model_at(Phase, loc[:-1]).model_fields)
        close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return UsageError(f"{where}: unknown key '{_clip(key)}'{hint}{more}",
                          fix=fix or (f"rename it to {close[0]}" if close else f"remove it; known keys: {', '.join(fields)}"))
    message = error["msg"].removeprefix("Value error, ").replace("\n", "\\n")
    shown = "input" in error and error["type"] != "missing" and not isinstance(error["input"], (dict, list))
    got = f" (got {_clip(repr(error['input']), 60, escape=False)})" if shown else ""
    if error["type"] == "missing":
        return UsageError(f"{where}: {dotted}: {message}{more}",
                          fix=fix or (f"also set --set {dotted}=..." if culprit else f"add {dotted} in {place}"))
    return UsageError(f"{where}: {dotted}: {message}{got}{more}", fix=fix or f"correct {dotted} in {place}")


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
