"""`bevctl check-ckpt`: its options (defined once, here) and what it does once they are parsed.

`OPTIONS` is the single definition: the Typer command (bevctl/commands/check_ckpt.py) is built from it, and the
Typer-free fast path (bevctl/entry.py) parses plain arguments with the tables derived from it, so both accept
the same options and call `run_check_ckpt` with the same keyword arguments. Typer-free and torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Option:
    flag: str
    name: str  # run_check_ckpt's keyword
    kind: str  # "flag" (bool), "value" (str or None), "list" (repeatable str)
    help: str
    metavar: str | None = None


OPTIONS = (
    Option("--phase", "phase", "value", "Take model config, GCA mode and expectations from this phase."),
    Option("--model-config", "model_config", "value",
           "full, tiny, a model-config YAML (built live, needs torch) or a key manifest .json. "
           "Default: inferred from the checkpoint's metadata or shapes."),
    Option("--gca", "gca", "value", "GCA mode of the model: none, shared or task."),
    Option("--expect-missing", "expect_missing", "list",
           "Model keys allowed to be missing (new modules), e.g. 'task_gca.*'.", "GLOB"),
    Option("--allow-unexpected", "allow_unexpected", "list",
           "Checkpoint keys the model does not have that are fine to drop.", "GLOB"),
    Option("--remap", "remap", "list",
           r"Rename checkpoint keys first (re.sub, in order), e.g. '^backbone\.=encoders.camera.backbone.'.",
           "REGEX=REPL"),
    Option("--mmdet3d", "mmdet3d", "flag",
           "Map mmdetection3d 1.x BEVFusion key names even when fewer than half the keys carry them "
           "(done automatically otherwise)."),
    Option("--live", "live", "flag",
           "Build the model on the meta device instead of using a shipped manifest (needs torch)."),
    Option("--trust", "trust", "flag",
           "Load with torch.load(weights_only=False): runs the file's pickle. Only for files you trust."),
    Option("--no-finite-check", "no_finite_check", "flag",
           "Do not read the weights' bytes for NaN/inf (saves time on very large files)."),
    Option("--json", "json_out", "flag", "Print the result as JSON (schema 1)."),
)
FLAGS = {o.flag: o.name for o in OPTIONS if o.kind == "flag"}
VALUES = {o.flag: o.name for o in OPTIONS if o.kind == "value"}
LISTS = {o.flag: o.name for o in OPTIONS if o.kind == "list"}
CHECKPOINT_HELP = "Checkpoint file (.pth or .safetensors). Default with --phase: the phase's load_from."


def run_check_ckpt(checkpoint: Path | None = None, phase: str | None = None, model_config: str | None = None,
                   gca: str | None = None, expect_missing: list[str] = (), allow_unexpected: list[str] = (),
                   remap: list[str] = (), mmdet3d: bool = False, live: bool = False, trust: bool = False,
                   no_finite_check: bool = False, json_out: bool = False) -> int:
    from bevctl.ckpt import check
    from bevctl.console import err, print_json
    from bevctl.errors import BevctlError, UsageError

    if trust:
        err().print("[bold yellow]warning:[/] --trust: loading with torch.load(weights_only=False); "
                    "the checkpoint's pickle can run arbitrary code", soft_wrap=True)
    try:
        if gca is not None and gca not in ("none", "shared", "task"):
            raise UsageError(f"--gca {gca!r} is not a GCA mode", fix="use none, shared or task")
        report = check(
            checkpoint, phase=phase, model_config=model_config, gca=gca, expect_missing=list(expect_missing),
            allow_unexpected=list(allow_unexpected), remap=list(remap), mmdet3d=mmdet3d, trust=trust, live=live,
            finite=not no_finite_check,
        )
    except BevctlError as exc:
        if json_out:
            print_json({"schema": 1, "ok": False, "exit_code": exc.code, "error": exc.message, "fix": exc.fix})
        raise
    if json_out:
        print_json(report.to_json())
    else:
        report.render()
    return report.exit_code
