"""Where output goes: data to stdout, messages and progress to stderr (clig.dev).

Rich already honours NO_COLOR, FORCE_COLOR, TERM=dumb and disables animation off a terminal,
so the consoles are created plainly and lazily (rich costs ~40 ms to import).
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=None)
def err():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@lru_cache(maxsize=None)
def out():
    from rich.console import Console

    return Console(highlight=False)


def print_json(data: Any) -> None:
    """Versioned, ANSI-free JSON on stdout for scripts (`--json`)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def error_line(message: str) -> None:
    err().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(text)
