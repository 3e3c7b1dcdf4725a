from typing import Annotated, List, Optional

import typer


def build(
    tag: Annotated[Optional[str], typer.Option("--tag", "-t", metavar="TAG", help="Image tag [default: bevctl:latest].")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Build without the layer cache.")] = False,
    build_arg: Annotated[List[str], typer.Option(
        "--build-arg", metavar="KEY=VALUE",
        help="Build argument (repeatable), e.g. TORCH_INDEX_URL, BASE_IMAGE, INSTALL_MMDET3D=1.")] = [],
    network: Annotated[Optional[str], typer.Option("--network", metavar="MODE", help="Network for RUN steps (host, none, ...).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the equivalent docker build command and exit.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Build the training image from docker/Dockerfile.

    Shows the build's progress (step N/M, the current step, pulled layers) and keeps the whole log in
    runs/.build/<time>.log; a failing step prints its last lines and exits 1. The image is labelled with a hash of
    docker/, pyproject.toml and .dockerignore plus the version and git commit, so `bevctl shell` and `bevctl start`
    can tell when it is stale. The image's user gets your uid/gid.

    Examples: `bevctl build`, `bevctl build --dry-run`,
    `bevctl build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126`.
    """
    import shlex

    from bevctl import docker
    from bevctl.console import err, print_json
    from bevctl.errors import UsageError

    args = {}
    for item in build_arg:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--build-arg {item!r} is not KEY=VALUE", fix="write e.g. --build-arg INSTALL_MMDET3D=1")
        args[key.strip()] = value
    root = docker.project_root()
    tag = tag or docker.DEFAULT_IMAGE

    if dry_run:
        argv = docker.docker_build_cmd(tag, root, args, no_cache, network)
        if json_out:
            print_json({"schema": 1, "tag": tag, "command": argv, "shell": shlex.join(argv)})
        else:
            typer.echo(shlex.join(argv))
        return

    cli = docker.client()
    try:
        with _Progress(err()) as progress:
            result = docker.build_image(tag, root, args, no_cache, network, on_event=progress.update, cli=cli)
    except docker.BuildFailed as exc:
        console = err()
        if exc.tail:
            console.print("[bold]last lines of the failing step:[/]")
            for line in exc.tail:
                console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        raise
    if json_out:
        print_json(
            {
                "schema": 1,
                "tag": result.tag,
                "image_id": result.image_id,
                "steps": result.steps,
                "seconds": round(result.seconds, 1),
                "log": str(result.log_path),
                "labels": result.labels,
            }
        )
    else:
        err().print(
            f"[green]built[/] {result.tag} ({result.image_id[:19]}) in {result.seconds:.0f} s; log: {result.log_path}\n"
            f"next: `bevctl shell` or `bevctl start <phase>`",
            soft_wrap=True,
        )


class _Progress:
    """Live progress on a terminal (Rich); one plain line per step elsewhere (CI logs)."""

    def __init__(self, console):
        self.console = console
        self.live = console.is_terminal
        self.progress = None

    def __enter__(self):
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.fields[label]}", style="bold"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("{task.description}", markup=False),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.steps = self.progress.add_task("", total=None, label="step")
            self.layers = None
            self.step_text = ""
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False

    def update(self, event) -> None:
        if not self.live:
            if event.kind == "step":
                self.console.print(f"step {event.step}/{event.total}: {event.text}", markup=False, highlight=False, soft_wrap=True)
            return
        width = max(20, self.console.width - 60)
        if event.kind == "step":
            self.step_text = " ".join(event.text.split())[: width // 2]
            self.progress.update(self.steps, completed=event.step - 1, total=event.total, description=self.step_text)
        elif event.kind == "output":
            # The step's latest output line, after the instruction, so a long RUN visibly makes progress.
            latest = " ".join(event.text.split())[: max(10, width - len(self.step_text) - 3)]
            self.progress.update(self.steps, description=f"{self.step_text} | {latest}")
        elif event.kind == "pull":
            if self.layers is None:
                self.layers = self.progress.add_task("", total=event.layers_total, label="layers")
            self.progress.update(self.layers, completed=event.layers_done, total=event.layers_total, description="pulled")
        elif event.kind == "done":
            self.progress.update(self.steps, completed=event.total, total=event.total)
