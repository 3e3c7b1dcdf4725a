from pathlib import Path
from typing import List, Optional

import typer


def check_ckpt(
    checkpoint: Optional[Path] = typer.Argument(
        None, help="Checkpoint file (.pth or .safetensors). Default with --phase: the phase's load_from.", show_default=False
    ),
    phase: Optional[str] = typer.Option(None, "--phase", help="Take model config, GCA mode and expectations from this phase."),
    model_config: Optional[str] = typer.Option(
        None, "--model-config", help="full, tiny, a model-config YAML (built live, needs torch) or a key manifest .json."
    ),
    gca: Optional[str] = typer.Option(None, "--gca", help="GCA mode of the model: none, shared or task."),
    expect_missing: List[str] = typer.Option(
        [], "--expect-missing", metavar="GLOB", help="Model keys allowed to be missing (new modules), e.g. 'task_gca.*'."
    ),
    allow_unexpected: List[str] = typer.Option(
        [], "--allow-unexpected", metavar="GLOB", help="Checkpoint keys the model does not have that are fine to drop."
    ),
    remap: List[str] = typer.Option(
        [], "--remap", metavar="REGEX=REPL", help=r"Rename checkpoint keys first (re.sub, in order), e.g. '^backbone\.=encoders.camera.backbone.'."
    ),
    mmdet3d: bool = typer.Option(False, "--mmdet3d", help="Rename mmdetection3d BEVFusion keys to this model's names."),
    live: bool = typer.Option(False, "--live", help="Build the model on the meta device instead of using a shipped manifest (needs torch)."),
    trust: bool = typer.Option(
        False, "--trust", help="Load with torch.load(weights_only=False): runs the file's pickle. Only for files you trust."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON (schema 1)."),
) -> None:
    """Validate a checkpoint against the model's keys before launch.

    Reads only the checkpoint's index (the pickle inside the .pth zip, never executed; or the safetensors header), so it is fast and needs no torch and no GPU. Reports per module group what keeps its training, what is new, missing, mismatched or unexpected.

    Exit codes: 0 compatible under the expectations; 1 incompatible (prints the --expect-missing globs that would accept the missing keys); 2 unreadable, unsafe or not a checkpoint.

    Example: bevctl check-ckpt runs/phase3/epoch_5.pth --phase phase4a
    """
    from bevctl.ckpt.command import run_check_ckpt

    code = run_check_ckpt(checkpoint, phase, model_config, gca, expect_missing, allow_unexpected, remap, mmdet3d,
                          live, trust, json_out)
    if code:
        raise typer.Exit(code)
