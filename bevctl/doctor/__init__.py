"""`bevctl doctor`: environment checks for a phase, as a library the launcher's preflight also calls.

    from bevctl import doctor
    report = doctor.run_checks("phase4a")                      # or a Phase object; ids=/categories= to narrow
    report = doctor.run_checks(phase, categories=["docker"], where="container")
    report.ok, report.failed, report.exit_code, report.to_json()
    doctor.render(report, verbose=False)                       # the human report (rich), to stdout

Every check is a plain function `fn(ctx) -> (status, message, fix)` listed in `runner.CHECKS`; the runner
(`core.run_many`) isolates each in a thread with a time limit. stdlib only at import time.
"""

from __future__ import annotations

from bevctl.doctor.core import CATEGORIES, SCHEMA, Check, Context, Report, Result, select
from bevctl.doctor.runner import CHECKS, resolve_auto, run_checks

__all__ = ["CATEGORIES", "CHECKS", "SCHEMA", "Check", "Context", "Report", "Result", "render", "resolve_auto",
           "run_checks", "select"]

def render(report: Report, verbose: bool = False, console=None) -> None:
    """Print the human report (imports rich)."""
    from bevctl.doctor.render import render as _render

    _render(report, verbose=verbose, console=console)


__all__ = ["CHECKS", "CATEGORIES", "SCHEMA", "Check", "Context", "Report", "Result", "render", "run_checks", "select"]
