"""The TensorBoard command `bevctl tb` runs: the runs folder as its logdir, or the named runs' `tb/` folders."""

from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path

from bevctl.errors import EnvironmentUnusable, UsageError
from bevctl.observe import TB_DIR


def tensorboard_command(names: list[str], port: int, host: str, runs_root: Path | None) -> list[str]:
    from bevctl import runs

    if importlib.util.find_spec("tensorboard") is None:
        raise EnvironmentUnusable("TensorBoard is not installed in this environment",
                                  fix="pip install tensorboard (it comes with: pip install 'bevctl[train]')")
    root = Path(runs_root) if runs_root else runs.runs_root()
    base = [sys.executable, "-m", "tensorboard.main", "--port", str(port), "--host", host]
    if not names:
        if not root.is_dir():
            raise UsageError(f"no runs folder {root}/", fix="start a run first, or pass --runs-root DIR")
        return base + ["--logdir", str(root)]
    specs = []
    for name in names:
        run_dir = Path(name) if Path(name).is_dir() else root / name
        if not run_dir.is_dir():
            known = [p.name for p in runs.list_run_dirs(root)]
            close = difflib.get_close_matches(name, known, n=1)
            raise UsageError(f"no run named {name!r} under {root}/" + (f"; did you mean {close[0]!r}?" if close else ""),
                             fix="`bevctl runs` lists runs; a run folder path works too")
        if not (run_dir / TB_DIR).is_dir():
            raise UsageError(f"run {run_dir.name} has no TensorBoard files ({run_dir / TB_DIR}/)",
                             fix="runs write them when the tensorboard package is installed where they train")
        specs.append(f"{run_dir.name}:{run_dir / TB_DIR}")
    return base + ["--logdir_spec", ",".join(specs)]
