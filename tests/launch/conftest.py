import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="session")
def launch_synth(tmp_path_factory):
    """A small synthetic nuScenes-format dataset shared by the launcher tests (~20 s to generate)."""
    root = tmp_path_factory.mktemp("launch-data") / "nuscenes-synth"
    result = run_cli("data", "synth", "--out", str(root), "--version", "v1.0-trainval", "--scenes", "10", "--samples-per-scene", "2", timeout=600)
    assert result.returncode == 0, result.stderr
    return root
