"""An existing BEVFusion checkout as the trainer, through the real parts: a checkout layout whose tools/train.py
takes the original's command line (config, --run-dir, --load_from) over mmengine's Runner, started by
`bevctl start` for a few CPU steps; load_from is checked against the user's key manifest first; `bevctl watch`
follows the mmengine log in the run directory. mmengine comes from tests/setup_extras.sh; without it the test skips."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import BIN, run_cli

pytestmark = [pytest.mark.slow]

TRAIN_PY = '''\
"""Train a detector: the original BEVFusion's command line (a config, --run-dir, any `--key value` applied to the
config such as --load_from W) over mmengine's Runner, with a toy model small enough for a CPU test."""

import argparse
import ast

import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn


class ToyDetector(BaseModel):
    def __init__(self, width):
        super().__init__()
        self.encoder = nn.Linear(4, width)
        self.head = nn.Linear(width, 1)

    def forward(self, inputs, labels, mode="tensor"):
        out = self.head(torch.relu(self.encoder(inputs)))
        if mode == "loss":
            return {"loss": ((out - labels) ** 2).mean()}
        return out


class ToyDataset(torch.utils.data.Dataset):
    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        x = torch.randn(4, generator=torch.Generator().manual_seed(i))
        return {"inputs": x, "labels": x.sum(0, keepdim=True)}


def literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--run-dir", required=True)
    args, opts = parser.parse_known_args()
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict({k.lstrip("-"): literal(v) for k, v in zip(opts[::2], opts[1::2])})
    resume_from = cfg.get("resume_from")
    runner = Runner(
        model=ToyDetector(cfg.width),
        work_dir=args.run_dir,
        train_dataloader=dict(dataset=ToyDataset(cfg.samples), batch_size=cfg.batch_size,
                              sampler=dict(type="DefaultSampler", shuffle=True), collate_fn=dict(type="default_collate")),
        train_cfg=dict(by_epoch=True, max_epochs=cfg.max_epochs),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=cfg.lr)),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=1), checkpoint=dict(type="CheckpointHook", interval=1)),
        load_from=resume_from or cfg.get("load_from"),
        resume=bool(resume_from),
        randomness=dict(seed=0),
    )
    runner.train()


if __name__ == "__main__":
    main()
'''

CONFIG = "width = 8\nsamples = 16\nbatch_size = 4\nmax_epochs = 2\nlr = 0.01\n"
KEYS = {"encoder.weight": [8, 4], "encoder.bias": [8], "head.weight": [1, 8], "head.bias": [1]}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """The checkout, a load_from checkpoint of its model and the key manifest the user wrote for it."""
    if subprocess.run([sys.executable, "-c", "import mmengine.runner"], capture_output=True).returncode != 0:
        pytest.skip("mmengine is not installed (tests/setup_extras.sh installs it with the mmdet stack)")
    import torch

    base = tmp_path_factory.mktemp("checkout")
    repo = base / "bevfusion"
    (repo / "tools").mkdir(parents=True)
    (repo / "configs").mkdir()
    (repo / "tools" / "train.py").write_text(TRAIN_PY)
    (repo / "configs" / "toy.py").write_text(CONFIG)
    weights = base / "pretrained.pth"
    torch.save({"state_dict": {k: torch.full(shape, 0.01) for k, shape in KEYS.items()}}, weights)
    manifest = base / "toy-keys.json"
    manifest.write_text(json.dumps({"schema": 1, "config": "toy", "gca": "none", "heads": [], "keys": [
        {"name": k, "shape": shape, "dtype": "float32", "group": k.split(".")[0], "kind": "param"}
        for k, shape in KEYS.items()]}))
    return repo, weights, manifest


def _args(repo, weights, manifest, name):
    return ["demo", "--local", "--name", name, "--set", f"trainer.repo={repo}", "--set", "trainer.script=tools/train.py",
            "--set", "trainer.config=configs/toy.py", "--set", f"trainer.manifest={manifest}",
            "--set", f"load_from={weights}", "--set", "expect_missing=[]",
            "--set", "model.gca=none",  # the phase describes the checkout's model: watch checks no GCA line
            "--set", "launch.cpu_processes=1"]


def test_checkout_trains_and_watch_follows_its_mmengine_log(tmp_path, checkout):
    repo, weights, manifest = checkout
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # the checkout's env: this venv's python
    result = run_cli("start", *_args(repo, weights, manifest, "co"), "--yes", "--wait", cwd=tmp_path, env=env, timeout=300)
    run_dir = tmp_path / "runs" / "co"
    console = (run_dir / "console.out").read_text()[-3000:] if (run_dir / "console.out").exists() else ""
    assert result.returncode == 0, (result.stderr[-2000:], console)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["command"] == ["python", "tools/train.py", "configs/toy.py", "--load_from", str(weights),
                              "--run-dir", str(run_dir)]
    assert run["status"] == "finished" and run["exit_code"] == 0
    assert (run_dir / "epoch_2.pth").is_file()  # written by the checkout's own runner into the run directory
    logs = list(run_dir.glob("*/*.log"))
    assert logs and f"Load checkpoint from {weights}" in logs[0].read_text()

    watched = run_cli("watch", str(run_dir), "--json", cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    snap = json.loads(watched.stdout)["runs"][0]
    assert snap["run"]["status"] == "finished"
    assert snap["progress"]["global_step"] == 8 and snap["metrics"]["loss"]["count"] == 8
    checks = {c["check"]: c for c in snap["verification"]}
    assert checks["checkpoint loaded"]["status"] == "ok" and "pretrained.pth" in checks["checkpoint loaded"]["detail"]


def test_preflight_checks_load_from_against_the_users_manifest(tmp_path, checkout):
    repo, weights, manifest = checkout
    wider = tmp_path / "wider.json"
    data = json.loads(manifest.read_text())
    data["keys"][0]["shape"] = [16, 4]  # the user's model changed: the checkpoint no longer fits
    wider.write_text(json.dumps(data))
    result = run_cli("start", *_args(repo, weights, wider, "co2"), "--dry-run", "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "preflight failed: load_from" in result.stderr and "1 shape mismatch" in result.stderr
    checks = {c["label"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["load_from"]["status"] == "fail" and checks["trainer"]["status"] == "ok"
    ok = run_cli("start", *_args(repo, weights, manifest, "co3"), "--dry-run", "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    checks = {c["label"]: c for c in json.loads(ok.stdout)["checks"]}
    assert checks["load_from"]["status"] == "ok"
    missing = run_cli("start", "demo", "--dry-run", "--set", f"trainer.repo={tmp_path}/nope",
                      "--set", "trainer.config=configs/toy.py", cwd=tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "preflight failed: trainer.repo" in missing.stderr and "is not a folder" in missing.stderr
