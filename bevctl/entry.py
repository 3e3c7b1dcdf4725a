"""The `bevctl` console entry point.

`bevctl check-ckpt` runs before every launch, from scripts and the launcher, so it starts without Typer when its
arguments are plain: Typer builds pydantic adapters to coerce parameters, which costs more than the check itself.
Anything else (another command, --help, completion, an option this parser does not know, a malformed value) goes
to the Typer app in `bevctl.cli`, which owns every message. Both read check-ckpt's options from the one table in
`bevctl.ckpt.command`; tests/ckpt/test_check_ckpt.py checks that both parse alike.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from bevctl.errors import guarded  # user errors become one line there (also for the Typer app)


def parse_check_ckpt(args: list[str]) -> Optional[dict]:
    """check-ckpt's arguments as the command function's keyword arguments, or None to leave them to Typer."""
    # imported here: every other command starts without bevctl.ckpt
    from bevctl.ckpt.command import FLAGS as CHECK_CKPT_FLAGS
    from bevctl.ckpt.command import LISTS as CHECK_CKPT_LISTS
    from bevctl.ckpt.command import VALUES as CHECK_CKPT_VALUES

    kw: dict = {"checkpoint": None}
    kw.update({name: False for name in CHECK_CKPT_FLAGS.values()})
    kw.update({name: None for name in CHECK_CKPT_VALUES.values()})
    kw.update({name: [] for name in CHECK_CKPT_LISTS.values()})
    tokens = iter(args)
    for token in tokens:
        if token.startswith("-") and token != "-":
            option, has_value, value = token.partition("=")
            if option in CHECK_CKPT_FLAGS and not has_value:
                kw[CHECK_CKPT_FLAGS[option]] = True
                continue
            if option not in CHECK_CKPT_VALUES and option not in CHECK_CKPT_LISTS:
                return None  # --help, --, an unknown or misspelt option: Typer explains
            if not has_value:
                value = next(tokens, None)
                if value is None:
                    return None
            if option in CHECK_CKPT_VALUES:
                kw[CHECK_CKPT_VALUES[option]] = value
            else:
                kw[CHECK_CKPT_LISTS[option]].append(value)
        elif kw["checkpoint"] is None:
            kw["checkpoint"] = Path(token)
        else:
            return None
    return kw


def main(argv: Optional[list[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["check-ckpt"] and "_BEVCTL_COMPLETE" not in os.environ:
        kw = parse_check_ckpt(args[1:])
        if kw is not None:
            from bevctl.ckpt.command import run_check_ckpt

            guarded(lambda: run_check_ckpt(**kw))
    from bevctl.cli import main as typer_main

    typer_main(args)


if __name__ == "__main__":
    main()
