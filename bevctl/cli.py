"""The `bevctl` command line. Each command lives in `bevctl/commands/<name>.py` as one typed function whose
docstring is its help; those modules import only typer and the standard library at module level, so
`bevctl --help` starts fast. Heavy imports (pydantic, docker, torch) happen inside the command that needs them.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from bevctl import __version__
from bevctl.commands import build, check_ckpt, data, doctor, runs_cmd, shell, start, stop, tb, watch
from bevctl.errors import guarded

EXIT_CODES = "Exit codes: 0 ok, 1 check failed, 2 usage or input error, 3 environment unusable."

app = typer.Typer(
    name="bevctl",
    help="Build, check, start and watch BEVFusion training runs.\n\n" + EXIT_CODES,
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    # Plain help text: rich markup would eat the bracketed words help relies on ("[y/N]", "[default: ...]",
    # "[:ro]") and label every flag "<bool>". Colour stays where it earns its keep: tables, panels, errors.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _argument_type_hidden_under_its_metavar() -> None:
    """Typer's plain help prints an argument as `RUN <list[str]>`: the metavar we chose already says what to give,
    and the Python type is noise to a user. Arguments without a metavar keep Typer's label."""
    from typer.core import TyperArgument

    shown = TyperArgument.display_type_rich
    TyperArgument.display_type_rich = lambda self, ctx: None if self.metavar else shown(self, ctx)


_argument_type_hidden_under_its_metavar()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bevctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for unexpected errors."),
) -> None:
    if debug:
        os.environ["BEVCTL_DEBUG"] = "1"


app.command("build")(build.build)
app.command("shell")(shell.shell)
app.command("doctor")(doctor.doctor)
app.command("check-ckpt")(check_ckpt.check_ckpt)
app.command("start")(start.start)
app.command("stop")(stop.stop)
app.command("runs")(runs_cmd.runs)
app.command("watch")(watch.watch)
app.command("tb")(tb.tb)
app.add_typer(data.app, name="data")


def main(argv: Optional[list[str]] = None) -> None:
    """Run the Typer app (bevctl/entry.py is the console entry point and calls this)."""
    if "--debug" in (argv if argv is not None else sys.argv):
        os.environ["BEVCTL_DEBUG"] = "1"  # before parsing: an error while parsing should show its traceback too
    guarded(lambda: _run(argv))


def _run(argv: Optional[list[str]]) -> Optional[int]:
    """Click's own usage errors (unknown option, a value of the wrong type) become one line with a fix, like ours."""
    try:  # Typer 0.2x vendors click as typer._click; older ones use click itself
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc

    from bevctl.errors import UsageError

    try:
        code = app(args=argv, prog_name="bevctl", standalone_mode=False)
    except click_exc.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `bevctl` or `bevctl data` alone: the help, as click shows it
            typer.echo(exc.format_message(), err=True)
            return 2
        where = exc.ctx.command_path if exc.ctx else "bevctl"
        raise UsageError(" ".join(exc.format_message().split()), fix=f"see `{where} --help`") from None
    return code if isinstance(code, int) else None


if __name__ == "__main__":
    main()
