import errno
import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Datasets: generate synthetic nuScenes-format data.", no_args_is_help=True)

SAMPLES_MAX = 100  # key frames per scene; a real nuScenes scene has about 40 (same cap as data.synth in a phase)
SEED_MAX = 2**32 - 1


@app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", metavar="FOLDER", help="Folder to write the dataset into (absent or empty).")],
    scenes: Annotated[int, typer.Option("--scenes", metavar="N", help="Number of scenes: 2-10 for v1.0-mini, 2-120 for v1.0-trainval.")] = 10,
    samples_per_scene: Annotated[int, typer.Option("--samples-per-scene", metavar="N", help=f"Key frames per scene (2 Hz), 1-{SAMPLES_MAX}.")] = 4,
    seed: Annotated[int, typer.Option("--seed", metavar="SEED", help="Seed: the same seed gives the same dataset.")] = 0,
    sweeps: Annotated[int, typer.Option("--sweeps", metavar="N", help="LiDAR sweeps (20 Hz) stored before each key frame, 0-9.")] = 2,
    version: Annotated[str, typer.Option("--version", metavar="VERSION", help="v1.0-mini (splits mini_train / mini_val) or v1.0-trainval (train / val): official scene names of that version.")] = "v1.0-mini",
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
) -> None:
    """Generate a synthetic dataset in the real nuScenes layout (tables, LiDAR, six cameras, map expansion).

    Objects are boxes of the ten detection classes seen by a simulated LiDAR and painted into the camera images
    with the real nuScenes calibration, so a model can learn from it. A folder that already holds a dataset is
    left as it is; a folder with anything else in it is refused, never written into. While it runs, the target is
    locked: a second `data synth` into the same folder refuses at once.
    """
    from bevctl.errors import EnvironmentUnusable, UsageError
    from bevctl.phases import SYNTH_SCENES_MAX

    if version not in SYNTH_SCENES_MAX:
        raise UsageError(f"--version must be one of {', '.join(SYNTH_SCENES_MAX)}, got {version!r}",
                         fix="pass --version v1.0-mini or --version v1.0-trainval")
    if not 2 <= scenes <= SYNTH_SCENES_MAX[version]:
        raise UsageError(f"--scenes must be between 2 and {SYNTH_SCENES_MAX[version]} for {version}, got {scenes}",
                         fix="pass e.g. --scenes 10" + (", or --version v1.0-trainval for more scenes"
                                                        if version == "v1.0-mini" else ""))
    if not 1 <= samples_per_scene <= SAMPLES_MAX:
        raise UsageError(f"--samples-per-scene must be between 1 and {SAMPLES_MAX}, got {samples_per_scene}",
                         fix="pass e.g. --samples-per-scene 4")
    if not 0 <= sweeps <= 9:
        raise UsageError(f"--sweeps must be between 0 and 9, got {sweeps}", fix="pass e.g. --sweeps 2")
    if not 0 <= seed <= SEED_MAX:
        raise UsageError(f"--seed must be between 0 and {SEED_MAX}, got {seed}", fix="pass e.g. --seed 0")
    out = out.expanduser().absolute()
    try:
        _refuse_non_folder(out)  # before the generator's imports (torch: seconds)
    except OSError as exc:  # e.g. a name too long for the file system
        raise _write_error(out, exc) from None
    try:
        from model.data import synth as synth_mod
    except ImportError as exc:
        raise EnvironmentUnusable(f"the data generator needs the training packages ({exc.name} is missing)",
                                  fix="pip install -e '.[train]'") from None

    try:
        if synth_mod.dataset_exists(out):  # also where the folder is read-only to us: no lock needed to read
            return _report_existing(out, synth_mod, json_out)
        _refuse_foreign(out)
    except OSError as exc:  # e.g. a name too long for the file system
        raise _write_error(out, exc) from None
    with _TargetLock(out):
        if synth_mod.dataset_exists(out):
            return _report_existing(out, synth_mod, json_out)
        _refuse_foreign(out)
        try:
            summary = synth_mod.generate(out, scenes=scenes, samples_per_scene=samples_per_scene, seed=seed,
                                         sweeps=sweeps, progress=None, version=version)
        except OSError as exc:
            if synth_mod.dataset_exists(out):  # a trainer generated it at the same moment (it takes no lock)
                return _report_existing(out, synth_mod, json_out)
            raise _write_error(out, exc) from None
    _report_generated(out, summary, json_out)


def _refuse_non_folder(out: Path) -> None:
    """A target that can never become a dataset folder: a file, a broken link, a path under a file."""
    from bevctl.errors import UsageError

    if out.is_symlink() and not out.exists():
        raise UsageError(f"--out {_shown(out)} is a broken symbolic link", fix="remove the link or give another folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {_shown(out)} is a file", fix="give a folder path")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"--out {_shown(out)}: a parent of it is a file, not a folder",
                                 fix="give a path under folders only")
            break


def _refuse_foreign(out: Path) -> None:
    from bevctl.errors import UsageError

    _refuse_non_folder(out)
    try:
        has_content = out.is_dir() and any(out.iterdir())
    except PermissionError:
        raise UsageError(f"--out {_shown(out)} is not readable (permission denied)", fix="choose a folder you own") from None
    if has_content:
        raise UsageError(f"--out {_shown(out)} is not empty and holds no nuScenes dataset",
                         fix="choose a new folder or empty this one")


def _shown(path: Path, width: int = 120) -> str:
    text = repr(str(path))[1:-1]  # control characters escaped: the message stays one line
    return text if len(text) <= width else text[: width // 2 - 2] + "..." + text[-(width // 2 - 1):]


def _write_error(out: Path, exc: OSError) -> Exception:
    from bevctl.errors import EnvironmentUnusable, UsageError

    reason = exc.strerror or str(exc)
    out = _shown(out)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return EnvironmentUnusable(f"no space left while writing {out} (nothing was left behind)",
                                   fix="free some disk space or choose a folder on another disk")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UsageError(f"cannot write {out}: {reason}", fix="choose a folder you can write to")
    return UsageError(f"cannot write {out}: {reason}", fix="choose another folder for --out")


class _TargetLock:
    """An exclusive, non-blocking flock on `<parent>/.<name>.synth-lock`, beside the target (a file in the target
    would make it non-empty). The file holds the pid of the holder, for the refusal message, and is removed on
    release; after locking, the path must still name the locked file (else a releaser removed it: try again)."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out.parent / f".{out.name}.synth-lock"
        self.fd = -1

    def __enter__(self) -> "_TargetLock":
        import fcntl

        from bevctl.errors import UsageError

        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UsageError(f"--out {_shown(self.out)}: a parent of it is a file, not a folder",
                             fix="give a path under folders only") from None
        except OSError as exc:
            raise _write_error(self.out.parent, exc) from None
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise _write_error(self.out.parent, exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise UsageError(f"{_shown(self.out)} is being generated by another `bevctl data synth`{who}",
                                 fix="wait for it to finish (a second run then reports the dataset), or choose "
                                     "another --out") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self.fd = fd
                return self
            os.close(fd)
        raise UsageError(f"could not lock {_shown(self.out)}", fix="try again")

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            try:
                os.unlink(self.path)  # while still holding the lock: a waiter re-checks the path after locking
            except OSError:
                pass
            os.close(self.fd)
            self.fd = -1


def _report_existing(out: Path, synth_mod, json_out: bool) -> None:
    import json

    from bevctl.console import err, escape, print_json

    summary = {"root": str(out), "generated": False}
    marker = out / synth_mod.MARKER
    try:
        if marker.is_file() and marker.stat().st_size < 1 << 20:
            recorded = json.loads(marker.read_text(encoding="utf-8"))
            if isinstance(recorded, dict):
                summary = {**recorded, **summary}
    except (OSError, ValueError):
        pass  # an unreadable or foreign marker: report the folder without its recorded settings
    if json_out:
        print_json({"schema": 1, **summary})
    else:
        err().print(f"{escape(str(out))} already holds a nuScenes dataset; left unchanged")


def _report_generated(out: Path, summary: dict, json_out: bool) -> None:
    from bevctl.console import err, escape, print_json
    from bevctl.phases import SYNTH_SPLITS

    summary["generated"] = True
    if json_out:
        print_json({"schema": 1, **summary})
    else:
        err().print(
            f"wrote synthetic nuScenes to {escape(str(out))}: {summary['scenes']} scenes, {summary['samples']} samples, "
            f"{summary['annotations']} boxes in {summary['seconds']:.1f} s\n"
            f"use it with data.root={escape(str(out))}, data.version={summary['version']}, "
            f"splits {' / '.join(SYNTH_SPLITS[summary['version']])}"
        )
