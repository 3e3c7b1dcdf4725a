"""The data half of bevctl's BEVFusion: synthetic nuScenes generation and the nuScenes loader.

- `model.data.synth.ensure_dataset(root, scenes=, samples_per_scene=, seed=, sweeps=)`: synthetic dataset (once).
- `model.data.build_dataset(model_cfg, data_spec, split, train)`: a `NuScenesDataset` (one key frame per item)
  with the geometry of the model config and the root/version/sweeps/info_pkl of the phase's `DataSpec`.
- `model.data.collate`: the batch of DEVELOPERS.md; `model.data.loader.build_loader(...)`: a DataLoader using it.
"""


def build_dataset(cfg, data, split: str, train: bool, **kw):
    from model.data.nuscenes_dataset import NuScenesDataset

    return NuScenesDataset.from_config(cfg, data, split, train, **kw)


def collate(items):
    from model.data.batch import collate as _collate

    return _collate(items)
