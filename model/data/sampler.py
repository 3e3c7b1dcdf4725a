"""The order of training samples: a resumable distributed sampler and class-balanced grouping and sampling (CBGS).

CBGS is mmdet3d's `CBGSDataset` (the original nuScenes configs wrap the train split in it): for each class the
samples showing it are listed (a sample with k classes is listed k times), and each class's list is resampled with
replacement to `len(list) * (1 / C) / (len(list) / D)` entries, C the number of classes, D the total length of the
lists. Each class then holds about 1 / C of the resampled set, whose length is about D: an epoch holds D samples
instead of the split's N (nuScenes train: about 4.4 N). Classes without any sample (a synthetic split) are left out,
where mmdet3d would divide by zero.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, DistributedSampler


def cbgs_indices(class_ids: list[set[int]], num_classes: int, seed: int) -> list[int]:
    """The resampled sample indices; `class_ids[i]` is the set of classes sample i shows."""
    per_class: list[list[int]] = [[] for _ in range(num_classes)]
    for index, ids in enumerate(class_ids):
        for c in sorted(ids):
            per_class[c].append(index)
    duplicated = sum(len(v) for v in per_class)
    if duplicated == 0:
        return list(range(len(class_ids)))
    rng = np.random.default_rng(seed)
    frac = 1.0 / num_classes
    out: list[int] = []
    for members in per_class:
        if not members:
            continue
        ratio = frac / (len(members) / duplicated)
        out += rng.choice(members, int(len(members) * ratio)).tolist()
    return out


class ClassBalanced(Dataset):
    """A dataset seen through `cbgs_indices`; each copy of a sample draws its own augmentation."""

    def __init__(self, dataset, num_classes: int, seed: int = 0):
        self.dataset = dataset
        self.indices = cbgs_indices([dataset.class_ids(i) for i in range(len(dataset))], num_classes, seed)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        index = int(index)
        return self.dataset.item(self.indices[index], aug_key=index)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded per epoch) that can start part-way through an epoch's order."""

    def __init__(self, dataset, rank: int, world_size: int, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        order = list(super().__iter__())
        return iter(order[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip
