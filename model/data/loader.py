"""A DataLoader set up for NuScenesDataset: contract collation, worker threads pinned, prefetching on."""

from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import DataLoader, Sampler

from model.data.batch import collate


def _worker_init(_worker_id: int) -> None:
    # Each worker is one process among several on few cores: keep OpenCV and torch from spawning thread pools.
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def build_loader(dataset, batch_size: int, workers: int = 2, shuffle: bool = True, sampler: Optional[Sampler] = None,
                 drop_last: bool = False, seed: int = 0, persistent_workers: bool = True) -> DataLoader:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=_worker_init if workers else None,
        persistent_workers=bool(workers) and persistent_workers,
        prefetch_factor=2 if workers else None,
        pin_memory=torch.cuda.is_available(),
    )
