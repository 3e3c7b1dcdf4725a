"""The data half of bevctl's BEVFusion: synthetic nuScenes generation and the nuScenes loader.

- `model.data.synth.ensure_dataset(root, scenes=, samples_per_scene=, seed=, sweeps=)`: synthetic dataset (once).
- `model.data.nuscenes_dataset.NuScenesDataset` (`.from_config(model_cfg, data_spec, split, train)`): one key frame
  per item, geometry from the model config.
- `model.data.collate.collate`: the batch of DEVELOPERS.md.
- `model.data.loader.build_loader(dataset, batch_size, workers, ...)`: a DataLoader wired for all of the above.
"""
