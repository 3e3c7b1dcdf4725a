"""`bevctl check-ckpt`, built from the one option table in `bevctl.ckpt.command` (the fast entry path uses it too)."""

import inspect
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from bevctl.ckpt import command
from bevctl.ckpt.command import CHECKPOINT_HELP, OPTIONS

_TYPES = {"flag": bool, "value": Optional[str], "list": List[str]}
_DEFAULTS = {"flag": False, "value": None, "list": []}


def check_ckpt(**kwargs) -> None:
    """Validate a checkpoint against the model's keys before launch.

    Reads only the checkpoint's index (the pickle inside the .pth zip, never executed; or the safetensors header) and, for NaN/inf, the bytes of the weights that would load; it needs no torch and no GPU. Unwraps {'state_dict'|'model'|'module'|'ema': ...} and module. prefixes, maps mmdetection3d 1.x names and spconv 1.x kernels exactly as the trainer will, and reports per module group what keeps its training, what is new, missing, mismatched, unexpected or non-finite. Without --phase or --model-config the model is inferred from the checkpoint.

    Exit codes: 0 compatible under the expectations; 1 incompatible (prints the --expect-missing globs that would accept the missing keys); 2 unreadable, unsafe or not a checkpoint.

    Example: bevctl check-ckpt runs/phase3/epoch_5.pth --phase phase4a
    """
    code = command.run_check_ckpt(**kwargs)
    if code:
        raise typer.Exit(code)


def _signature() -> inspect.Signature:
    params = [inspect.Parameter("checkpoint", inspect.Parameter.KEYWORD_ONLY, default=None,
                                annotation=Annotated[Optional[Path], typer.Argument(help=CHECKPOINT_HELP,
                                                                                     show_default=False)])]
    for o in OPTIONS:
        params.append(inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=_DEFAULTS[o.kind],
                                        annotation=Annotated[_TYPES[o.kind], typer.Option(o.flag, help=o.help,
                                                                                         metavar=o.metavar)]))
    return inspect.Signature(params)


check_ckpt.__signature__ = _signature()
check_ckpt.__annotations__ = {p.name: p.annotation for p in check_ckpt.__signature__.parameters.values()}
