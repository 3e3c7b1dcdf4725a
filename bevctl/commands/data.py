from pathlib import Path

import typer

app = typer.Typer(help="Datasets: generate synthetic nuScenes-format data.", no_args_is_help=True)


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the dataset into (absent or empty)."),
    scenes: int = typer.Option(10, "--scenes", help="Number of scenes, 2-10 (official mini split names)."),
    samples_per_scene: int = typer.Option(4, "--samples-per-scene", help="Key frames per scene (2 Hz)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives the same dataset."),
    sweeps: int = typer.Option(2, "--sweeps", help="LiDAR sweeps (20 Hz) stored before each key frame, 0-9."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Generate a synthetic dataset in the real nuScenes layout (v1.0-mini tables, LiDAR, six cameras, map expansion).

    Objects are boxes of the ten detection classes seen by a simulated LiDAR and painted into the camera images
    with the real nuScenes calibration, so a model can learn from it. A folder that already holds a dataset is
    left as it is.
    """
    from bevctl.errors import EnvironmentUnusable, UsageError

    if not 2 <= scenes <= 10:
        raise UsageError(f"--scenes must be between 2 and 10 (the mini split has 10 scenes), got {scenes}",
                         fix="pass e.g. --scenes 10")
    if samples_per_scene < 1:
        raise UsageError(f"--samples-per-scene must be at least 1, got {samples_per_scene}", fix="pass e.g. --samples-per-scene 4")
    if not 0 <= sweeps <= 9:
        raise UsageError(f"--sweeps must be between 0 and 9, got {sweeps}", fix="pass e.g. --sweeps 2")
    try:
        from model.data import synth as synth_mod
    except ImportError as exc:
        raise EnvironmentUnusable(f"the data generator needs the training packages ({exc.name} is missing)",
                                  fix="pip install -e '.[train]'") from None
    from bevctl.console import err, print_json

    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file", fix="give a folder path")
    if synth_mod.dataset_exists(out):
        summary = {"root": str(out), "generated": False}
        marker = out / synth_mod.MARKER
        if marker.is_file():
            import json

            summary = {**json.loads(marker.read_text(encoding="utf-8")), **summary}
        if json_out:
            print_json({"schema": 1, **summary})
        else:
            err().print(f"{out} already holds a nuScenes dataset; left unchanged")
        return
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty and holds no nuScenes dataset",
                         fix="choose a new folder or empty this one")
    summary = synth_mod.generate(out, scenes=scenes, samples_per_scene=samples_per_scene, seed=seed, sweeps=sweeps,
                                 progress=None)
    summary["generated"] = True
    if json_out:
        print_json({"schema": 1, **summary})
    else:
        err().print(
            f"wrote synthetic nuScenes to {out}: {summary['scenes']} scenes, {summary['samples']} samples, "
            f"{summary['annotations']} boxes in {summary['seconds']:.1f} s\n"
            f"use it with data.root={out}, data.version={summary['version']}, splits mini_train / mini_val"
        )
