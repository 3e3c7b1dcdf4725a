"""The one DataLoader factory: the trainer, evaluation and the data benchmark all load through `build_loader`."""

from __future__ import annotations

import signal
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, Sampler

from model.data.batch import collate as contract_collate


def _quiet_worker(_worker_id: int) -> None:
    # A stop signal goes to the whole process group; workers ignore it so the main process can finish the step
    # and save. Their RNGs are seeded by the DataLoader from its generator.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Each worker is one process among several on few cores: no OpenCV or torch thread pools inside them.
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def build_loader(dataset, batch_size: int, workers: int = 0, *, sampler: Optional[Sampler] = None,
                 shuffle: bool = False, collate: Callable = contract_collate,
                 generator: Optional[torch.Generator] = None, seed: int = 0, drop_last: bool = False,
                 persistent_workers: bool = False) -> DataLoader:
    """A DataLoader with the batch contract's collation and quiet workers.

    Give the trainer's `sampler` (it owns the order), or `shuffle`. `generator` seeds the workers (the trainer
    reseeds it per epoch); without one, a generator seeded with `seed`, so creating an iterator never draws from
    the global RNG (exact resume).
    """
    if generator is None:
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
        worker_init_fn=_quiet_worker if workers else None,
        persistent_workers=bool(workers) and persistent_workers,
        prefetch_factor=2 if workers else None,
        pin_memory=torch.cuda.is_available(),
    )
