"""One exception type for every failure a user can fix, carrying the exit code the CLI returns.

Exit codes (documented in `bevctl --help`): 0 ok, 1 a check failed, 2 usage or input error,
3 environment unusable (docker/GPU/data unreachable).
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional

OK = 0
CHECK_FAILED = 1
USAGE = 2
ENVIRONMENT = 3


class BevctlError(Exception):
    """A problem the user can fix: printed as one line (plus the fix), never as a traceback."""

    code = USAGE

    def __init__(self, message: str, fix: str | None = None, code: int | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix
        if code is not None:
            self.code = code

    def one_line(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


class UsageError(BevctlError):
    code = USAGE


class CheckFailed(BevctlError):
    code = CHECK_FAILED


class EnvironmentUnusable(BevctlError):
    code = ENVIRONMENT


def guarded(run: Callable[[], Optional[int]]) -> None:
    """Run a command: user errors become one line and their exit code, never a traceback (unless --debug)."""
    debug = bool(os.environ.get("BEVCTL_DEBUG"))
    try:
        code = run()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug and not isinstance(exc, BevctlError):
            raise
        from bevctl.console import error_line

        if isinstance(exc, BevctlError):
            error_line(exc.one_line())
            sys.exit(exc.code)
        error_line(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        sys.exit(1)
    sys.exit(code or 0)
