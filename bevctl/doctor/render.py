"""The human doctor report, flutter-doctor style: one glyph line per category, one line per check under it,
a fix under each problem, and a one-line verdict at the end ("am I good to go?")."""

from __future__ import annotations

from bevctl.doctor.core import CATEGORIES, Report, Result

GLYPH = {"ok": "✓", "warn": "!", "fail": "✗", "skipped": "-"}
STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "skipped": "dim"}
_WHERE = {"local": "locally", "container": "in the container", "inside": "here (inside the container)",
          "auto->local": "locally (launch.where auto: no project image)", "auto->container": "in the container (launch.where auto)",
          "auto": "where launch.where auto decides"}
RANK = {"skipped": 0, "ok": 1, "warn": 2, "fail": 3}


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _worst(results: list[Result]) -> str:
    return max((r.status for r in results), key=RANK.__getitem__, default="skipped")


def render(report: Report, verbose: bool = False, console=None) -> None:
    if console is None:
        from bevctl.console import out

        console = out()
    title = "bevctl doctor"
    if report.phase:
        title += f" · phase {report.phase}"
    if report.launch_where and report.launch_where != "inside":
        title += f" · trains {_WHERE.get(report.launch_where, report.launch_where)}"
    if report.where != "host":
        title += f" · inside {report.where}"
    hint = "" if verbose else " (-v shows skipped checks, ids and timings)"
    console.print(f"[bold]{_esc(title)}[/]{_esc(hint)}", soft_wrap=True)
    order = list(CATEGORIES) + sorted({r.category for r in report.results} - set(CATEGORIES))
    problem_categories = 0
    for category in order:
        results = [r for r in report.results if r.category == category]
        if not results:
            continue
        worst = _worst(results)
        problem_categories += worst in ("warn", "fail")
        name = CATEGORIES.get(category, category)
        shown = [r for r in results if verbose or r.status != "skipped"]
        note = ""
        if not shown:
            note = f" [dim]({_esc(results[0].message)})[/]" if len(results) == 1 or len({r.message for r in results}) == 1 \
                else " [dim](skipped)[/]"
        console.print(f"[{STYLE[worst]}][{GLYPH[worst]}][/] [bold]{_esc(name)}[/]{note}", soft_wrap=True)
        for r in shown:
            ident = f"[dim]{r.id}[/]  " if verbose else ""
            timing = f" [dim]\\[{r.seconds:.1f}s][/]" if verbose else ""
            console.print(f"    [{STYLE[r.status]}]{GLYPH[r.status]}[/] {ident}{_esc(r.message)}{timing}", soft_wrap=True)
            if r.fix:
                console.print(f"      [dim]fix:[/] {_esc(r.fix)}", soft_wrap=True)
    console.print()
    failed, warned = len(report.failed), len(report.warnings)
    if failed:
        verdict = "environment unusable" if report.unusable else "not ready"
        console.print(f"[red]✗[/] {verdict}: {failed} check(s) failed, {warned} warning(s) in {problem_categories} "
                      f"categor{'y' if problem_categories == 1 else 'ies'} (exit {report.exit_code})", soft_wrap=True)
    elif warned:
        console.print(f"[yellow]![/] ready, with {warned} warning(s) in {problem_categories} "
                      f"categor{'y' if problem_categories == 1 else 'ies'}", soft_wrap=True)
    else:
        console.print("[green]•[/] No issues found!", soft_wrap=True)
