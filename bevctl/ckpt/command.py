"""What `bevctl check-ckpt` does once its arguments are parsed, shared by the Typer command and the fast entry
path (bevctl/entry.py), so both behave the same. Returns the exit code."""

from __future__ import annotations

from pathlib import Path


def run_check_ckpt(checkpoint: Path | None, phase: str | None, model_config: str | None, gca: str | None,
                   expect_missing: list[str], allow_unexpected: list[str], remap: list[str], mmdet3d: bool,
                   live: bool, trust: bool, json_out: bool) -> int:
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
            checkpoint, phase=phase, model_config=model_config, gca=gca, expect_missing=expect_missing,
            allow_unexpected=allow_unexpected, remap=remap, mmdet3d=mmdet3d, trust=trust, live=live,
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
