"""One exception type for every failure a user can fix, carrying the exit code the CLI returns.

Exit codes (documented in `bevctl --help`): 0 ok, 1 a check failed, 2 usage or input error,
3 environment unusable (docker/GPU/data unreachable).
"""

from __future__ import annotations

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


class NotAvailableYet(BevctlError):
    """A registered command whose implementation has not landed."""

    code = USAGE
