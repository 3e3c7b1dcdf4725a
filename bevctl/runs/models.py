"""The run contract as types (pydantic v2): `RunManifest` for run.json and one model per event kind.

Every model keeps fields it does not declare (`extra="allow"`): a newer writer's fields survive an older reader,
and a `train` event's flat metrics (`loss/map/divider/dice`) ride along as extras. Declared fields are optional
where an older run may lack them, so a reader never rejects a run for what it did not write.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from bevctl.runs.layout import SCHEMA_VERSION

Status = Literal["created", "running", "finished", "stopped", "failed", "crashed"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ProcessIdentity(_Open):
    """A process as /proc knows it: a pid alone may be reused by an unrelated process after the run ends."""

    pid: int
    start_time: Optional[int] = None  # clock ticks after boot (/proc/<pid>/stat field 22)
    cmdline: list[str] = Field(default_factory=list)


class Attempt(_Open):
    started_at: Optional[float] = None
    ended_at: Optional[float] = None
    status: Optional[str] = None
    exit_code: Optional[int] = None
    pid: Optional[int] = None
    container_id: Optional[str] = None


class RunManifest(_Open):
    schema_: int = Field(SCHEMA_VERSION, alias="schema")
    name: str
    phase: Optional[str] = None
    config: dict[str, Any] = Field(default_factory=dict)  # the resolved phase (bevctl.phases.Phase as a dict)
    command: Optional[list[str]] = None  # the trainer command
    bevctl_command: Optional[list[str]] = None
    cwd: Optional[str] = None
    git_commit: Optional[str] = None
    image: Optional[str] = None
    container_id: Optional[str] = None
    pid: Optional[int] = None  # the supervisor's (local) or the trainer's (development runs)
    trainer_pid: Optional[int] = None
    trainer: Optional[ProcessIdentity] = None  # the supervisor's child, or a trainer started by hand (its rank 0)
    supervisor: Optional[ProcessIdentity] = None
    job_id: Optional[str] = None  # a Slurm job
    launcher: Optional[str] = None  # torchrun | torchpack | slurm ...
    host: Optional[str] = None
    where: Optional[str] = None  # local | container | slurm
    started_at: Optional[float] = None
    ended_at: Optional[float] = None
    status: Status = "created"
    exit_code: Optional[int] = None
    nproc_per_node: Optional[int] = None
    nnodes: Optional[int] = None
    resumed_from: Optional[str] = None  # the checkpoint a run started from when it lay outside the runs folder
    saved_checkpoints: list[str] = Field(default_factory=list)  # file names this run wrote (pruning deletes no other)
    previous_attempts: list[Attempt] = Field(default_factory=list)

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------------------------- events


class Event(_Open):
    schema_: int = Field(SCHEMA_VERSION, alias="schema")
    time: float
    kind: str

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True) | {"schema": self.schema_}


class RunStart(Event):
    kind: Literal["run_start"] = "run_start"
    phase: Optional[str] = None
    world_size: Optional[int] = None
    epochs: Optional[int] = None
    iters_per_epoch: Optional[int] = None
    start_epoch: Optional[int] = None
    start_iter: Optional[int] = None
    precision: Optional[str] = None
    model: Optional[str] = None
    gca: Optional[str] = None


class GcaEnabled(Event):
    kind: Literal["gca_enabled"] = "gca_enabled"
    mode: Optional[str] = None
    params: dict[str, int] = Field(default_factory=dict)
    total: Optional[int] = None


class CheckpointLoaded(Event):
    kind: Literal["checkpoint_loaded"] = "checkpoint_loaded"
    path: Optional[str] = None
    how: Optional[str] = None  # load_from | resume | pretrained:<module>
    matched: Optional[int] = None
    missing: list[str] = Field(default_factory=list)
    unexpected: list[str] = Field(default_factory=list)
    mismatched: list[str] = Field(default_factory=list)
    missing_globs: list[str] = Field(default_factory=list)
    ok: Optional[bool] = None


class Train(Event):
    """Bookkeeping fields are declared; `loss`, `grad_norm` and every `loss/...`, `stats/...` value are extras."""

    kind: Literal["train"] = "train"
    epoch: Optional[int] = None
    iter: Optional[int] = None
    iters_per_epoch: Optional[int] = None
    global_step: Optional[int] = None
    lr: Optional[float] = None
    step_time: Optional[float] = None
    data_time: Optional[float] = None
    memory: Optional[float] = None


class Val(Event):
    kind: Literal["val"] = "val"
    epoch: Optional[int] = None


class CheckpointSaved(Event):
    kind: Literal["checkpoint_saved"] = "checkpoint_saved"
    path: Optional[str] = None
    epoch: Optional[int] = None
    iter: Optional[int] = None
    global_step: Optional[int] = None
    reason: Optional[Literal["epoch", "signal", "nonfinite", "final"]] = None


class Alert(Event):
    kind: Literal["alert"] = "alert"
    level: Literal["warning", "error"] = "warning"
    message: str = ""
    metric: Optional[str] = None
    value: Optional[float] = None


class RunEnd(Event):
    kind: Literal["run_end"] = "run_end"
    status: Literal["finished", "stopped", "failed"]
    exit_code: Optional[int] = None
    message: str = ""


EVENT_MODELS: dict[str, type[Event]] = {
    "run_start": RunStart,
    "gca_enabled": GcaEnabled,
    "checkpoint_loaded": CheckpointLoaded,
    "train": Train,
    "val": Val,
    "checkpoint_saved": CheckpointSaved,
    "alert": Alert,
    "run_end": RunEnd,
}

AnyEvent = Union[RunStart, GcaEnabled, CheckpointLoaded, Train, Val, CheckpointSaved, Alert, RunEnd, Event]


def event_model(data: dict[str, Any]) -> Event:
    """A raw event dict as its kind's model (an unknown kind from a newer writer as a plain `Event`)."""
    return EVENT_MODELS.get(str(data.get("kind")), Event).model_validate(data)
