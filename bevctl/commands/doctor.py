import os
from typing import Annotated, List, Optional

import typer


def doctor(
    phase: Annotated[Optional[str], typer.Option("--phase", "-p", metavar="PHASE", help="Tune the checks to this phase (name or YAML path).")] = None,
    set_: Annotated[List[str], typer.Option("--set", metavar="KEY=VALUE", help="Override a phase value, key.path=value (repeatable).")] = [],
    check: Annotated[List[str], typer.Option("--check", "-c", metavar="ID", help="Run only this check id, category or glob (repeatable).")] = [],
    in_container: Annotated[bool, typer.Option("--in-container", help="Run the checks inside the project container (docker exec).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON (schema 1) on stdout.")] = False,
    list_checks: Annotated[bool, typer.Option("--list-checks", help="List the checks and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show skipped checks, check ids and timings.")] = False,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=0.1, metavar="SECONDS", help="Time limit per check in seconds.")] = None,
) -> None:
    """Check the environment for a phase: Python and torch, GPUs and CUDA, launcher, docker, data, weights, disk.

    Every check reports ok, warn, fail or skipped in one line, with a fix when it is not ok. With --phase the checks follow the phase: a GPU phase fails without GPUs (a CPU phase only warns), torchpack, OpenMPI and mpi4py are checked when the phase launches with torchpack, docker fails only when the phase runs in the container (launch.where) and warns for auto.

    Examples:

      bevctl doctor --phase demo

      bevctl doctor --phase phase4a --in-container

      bevctl doctor --check docker --check weights --json

    Exit codes: 0 ready (warnings allowed), 1 a check failed, 2 usage error, 3 environment unusable (no training dependencies where the phase trains, or docker needed but unreachable).
    """
    from bevctl import doctor as doc

    if list_checks:
        _list(doc, json_out)
        return
    from bevctl.doctor.core import in_project_container

    if in_container and not in_project_container(dict(os.environ)):  # already inside: just run the checks here
        report = _container_report(phase, set_, check, timeout)
    else:
        report = doc.run_checks(phase, ids=check, overrides=set_, timeout=timeout)
    if json_out:
        from bevctl.console import print_json

        print_json(report.to_dict())
    else:
        doc.render(report, verbose=verbose)
    raise typer.Exit(report.exit_code)


def _list(doc, json_out: bool) -> None:
    rows = [{"id": c.id, "category": c.category, "title": c.title, "timeout": c.timeout} for c in doc.CHECKS]
    if json_out:
        from bevctl.console import print_json

        print_json({"schema": doc.SCHEMA, "kind": "doctor-checks", "checks": rows})
        return
    width = max(len(r["id"]) for r in rows)
    for row in rows:
        typer.echo(f"{row['id']:<{width}}  {row['title']}")


def _container_report(phase: Optional[str], overrides: List[str], ids: List[str], timeout: Optional[float]):
    """Run `bevctl doctor --json` in the phase's container and rebuild its report here."""
    import json

    from bevctl.doctor import Context, Report
    from bevctl.doctor.checks_docker import connect
    from bevctl.errors import EnvironmentUnusable
    from bevctl.phases import load_phase, phase_from_dict, shipped_phases

    spec = load_phase(phase, overrides) if phase else phase_from_dict({"name": "default"})
    name = spec.container.name
    try:
        client = connect(Context(spec, where="container", in_container=False))
    except ConnectionError as exc:
        raise EnvironmentUnusable(exc.args[0], fix=exc.args[1]) from None
    from bevctl import docker

    target = docker.find(name, cli=client)
    if target is None:
        raise EnvironmentUnusable(f"container {name!r} does not exist", fix="start it: bevctl shell (or set container.name)")
    if target.status != "running":
        raise EnvironmentUnusable(f"container {name!r} is {target.status}", fix=f"docker start {name} (or bevctl shell)")
    # `env` because exec_in takes no environment; the variable tells the inner doctor it is in the project container.
    argv = ["env", "BEVCTL_IN_CONTAINER=1", "bevctl", "doctor", "--json"]
    if phase:
        argv += ["--phase", phase if phase in shipped_phases() else _copy_phase_in(target, phase)]
        for item in overrides:
            argv += ["--set", item]
    for item in ids:
        argv += ["--check", item]
    if timeout:
        argv += ["--timeout", str(timeout)]
    code, output = _exec(client, target, argv)
    start = output.find("{")
    try:
        report = Report.from_dict(json.JSONDecoder().raw_decode(output[start:])[0] if start >= 0 else {})
    except ValueError:
        tail = (output.strip().splitlines() or ["no output"])[-1][:200]
        raise EnvironmentUnusable(f"`bevctl doctor` did not run in container {name!r} (exit {code}): {tail}",
                                  fix="rebuild the image so it contains this bevctl: bevctl build") from None
    report.where = f"container {name}"
    return report


def _exec(client, target, argv: List[str]):
    """(exit code, stdout+stderr) of a command in the container."""
    from bevctl import docker

    return docker.exec_in(target, argv, cli=client)


def _copy_phase_in(target, phase: str) -> str:
    """The container cannot see host paths outside its mounts: copy the phase file to /tmp inside it."""
    import io
    import tarfile
    import time

    from bevctl.phases import resolve_phase_file

    data = resolve_phase_file(phase).read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("bevctl-doctor-phase.yaml")
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(data))
    try:
        target.put_archive("/tmp", buffer.getvalue())
    except Exception as exc:
        from bevctl.errors import EnvironmentUnusable

        raise EnvironmentUnusable(f"cannot copy {phase} into container {target.name}: {str(exc)[:160]}",
                                  fix="put the phase file in the mounted checkout and run from there, or use a shipped phase") from None
    return "/tmp/bevctl-doctor-phase.yaml"
