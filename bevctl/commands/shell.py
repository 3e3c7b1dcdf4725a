from typing import Annotated, List, Optional

import typer


def shell(
    run: Annotated[Optional[str], typer.Option("--run", metavar="RUN", help="Open the shell in this run's container.")] = None,
    print_cmd: Annotated[bool, typer.Option("--print-cmd", help="Print the equivalent docker run (and exec) line.")] = False,
    phase: Annotated[Optional[str], typer.Option("--phase", metavar="PHASE", help="Mount the dataset and runs folder of this phase.")] = None,
    gpus: Annotated[str, typer.Option("--gpus", metavar="GPUS", help="GPUs for a new container: auto, all, none, N or device=0,1.")] = "auto",
    image: Annotated[Optional[str], typer.Option("--image", metavar="IMAGE", help="Image [default: the phase's, bevctl:latest].")] = None,
    name: Annotated[Optional[str], typer.Option("--name", metavar="NAME", help="Container name [default: the phase's, bevfusion].")] = None,
    mount: Annotated[List[str], typer.Option("--mount", metavar="HOST:CONTAINER[:ro]", help="Extra bind mount (repeatable).")] = [],
    network: Annotated[Optional[str], typer.Option("--network", metavar="MODE", help="Container network (host, none, ...).")] = None,
    env: Annotated[List[str], typer.Option("--env", metavar="KEY=VALUE", help="Extra environment for a new container, KEY=VALUE or KEY (this host's value; repeatable); NCCL_*, WANDB_*, TORCH_* pass through by default.")] = [],
    command: Annotated[str, typer.Option("--command", "-c", metavar="CMD", help="Program to run instead of bash.")] = "bash",
) -> None:
    """Open an interactive shell in the project container (started if needed).

    The container is named `bevfusion` by default, so `docker exec -it bevfusion bash` keeps working. It runs as
    your uid:gid with the project at /workspace/bevfusion, runs/ read-write, the dataset read-only, GPUs (when
    present or asked for), 16g shared memory and unlimited memlock. A running container is reused; leaving the
    shell leaves it running (`docker rm -f bevfusion` removes it). `--run NAME` enters a training run's container.

    Examples: `bevctl shell`, `bevctl shell --phase phase4a`, `bevctl shell --print-cmd`.
    """
    import os
    import shlex

    from bevctl import docker
    from bevctl.console import err
    from bevctl.errors import UsageError

    argv_cmd = shlex.split(command)
    if run:
        if print_cmd:
            typer.echo(shlex.join(docker.exec_argv(f"<container of run {run}>", argv_cmd, interactive=True)))
            return
        found = [c for c in docker.find_containers({docker.LABEL_RUN: run}) if c["status"] == "running"]
        if not found:
            raise UsageError(
                f"no running container for run {run}",
                fix="`bevctl runs` lists runs; containers exist only while a `bevctl start --container` run trains",
            )
        target = found[0]["name"]
    else:
        from bevctl.launchers.container_env import parse_env_args

        spec = docker.run_spec(
            phase, ["sleep", "infinity"], extra_mounts=mount, env=parse_env_args(env), name=name, image=image,
            gpus=gpus, role="shell", network_mode=network,
        )
        if print_cmd:
            typer.echo(shlex.join(docker.docker_run_cmd(spec)))
            typer.echo(shlex.join(docker.exec_argv(spec["name"], argv_cmd, interactive=True)))
            return
        cli = docker.client()
        docker.docker_cli()  # checked before a container is started for nothing
        if docker.require_image(spec["image"], allow_stale=True, cli=cli) == "stale":
            err().print(f"[yellow]warning:[/] image {spec['image']} is stale (docker/ changed since the build); "
                        "run `bevctl build` to refresh it", soft_wrap=True)
        for note in spec.notes:
            err().print(f"note: {note}", soft_wrap=True, highlight=False)
        _, how = docker.ensure_running(spec, cli)
        err().print(f"{how} container {spec['name']} ({spec['image']})", highlight=False)
        target = spec["name"]
    argv = docker.exec_argv(target, argv_cmd)
    docker_bin = docker.docker_cli()
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    # The SDK has no terminal bridge: hand this process over to the docker CLI (terminal, resize, exit code).
    os.execv(docker_bin, argv)
