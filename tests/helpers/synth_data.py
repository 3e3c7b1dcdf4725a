"""One small synthetic nuScenes tree per test session, shared by the data and training tests."""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

SMALL = dict(scenes=2, samples_per_scene=3, seed=0, sweeps=1)


@functools.lru_cache(maxsize=None)
def small_dataset() -> Path:
    from model.data.synth import ensure_dataset

    tmp = Path(tempfile.mkdtemp(prefix="bevctl-synth-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return ensure_dataset(tmp / "nuscenes", **SMALL, progress=False)
