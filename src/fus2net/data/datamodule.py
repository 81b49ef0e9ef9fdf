"""The LightningDataModule of one cross-validation fold, over the decoded-image cache.

Order of the paper's preprocessing per training item: balance flip -> (already resized in the
cache) -> augmentation -> per-image standardisation (or a pretrained network's mean and std).
Validation and test items are only normalised.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import albumentations as A
import numpy as np
import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler, get_worker_info

from fus2net.data.balance import AS_IS, apply_flip, balance_indices, class_weights
from fus2net.data.transforms import Normalization, normalize

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class CachedImageDataset(Dataset):
    """(record index, flip code) items over an (N, S, S, C) uint8 array.

    Yields (x float32 (C, S, S) normalised, label int64, record index int64).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        items: Sequence[tuple[int, int]],
        augmentation: A.BaseCompose | None = None,
        normalization: Normalization | None = None,
    ) -> None:
        self.images = images
        self.normalization = normalization
        self.labels = np.asarray(labels, dtype=np.int64)
        self.items = np.asarray(items, dtype=np.int64).reshape(-1, 2)
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        index, flip = (int(v) for v in self.items[i])
        image = apply_flip(self.images[index], flip)
        if self.augmentation is not None:
            image = self.augmentation(image=np.ascontiguousarray(image))["image"]
        x = normalize(image, self.normalization).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(x)), int(self.labels[index]), index


def _seed_worker_augmentation(worker_id: int) -> None:
    """Give each loader worker its own augmentation stream, derived from the loader's seed.

    Workers get copies of the pipeline with identical random state; torch.initial_seed() in a
    worker is (loader base seed + worker id), and the base seed is drawn from the loader's seeded
    generator each epoch, so streams differ by worker and epoch yet are reproducible.
    """
    info = get_worker_info()
    augmentation = getattr(info.dataset, "augmentation", None) if info else None
    if augmentation is not None:
        augmentation.set_random_seed(torch.initial_seed() % 2**32)


def _collate(samples: list[tuple[torch.Tensor, int, int]]) -> Batch:
    """Stack with numpy: torch.stack of 16 x 3x299x299 takes ~100 ms on a busy 2-core CPU
    (intra-op thread overhead), np.stack ~2 ms."""
    xs, ys, idx = zip(*samples, strict=True)
    x = torch.from_numpy(np.stack([t.numpy() for t in xs]))
    return x, torch.tensor(ys, dtype=torch.int64), torch.tensor(idx, dtype=torch.int64)


class FoldDataModule(L.LightningDataModule):
    """Train (the fold's training part, balanced and augmented), validation (the fold) and test
    (held-out set) loaders over one decoded-image array, reproducible from `seed`.

    balance: 'flip' adds the paper's flipped minority copies; 'none'; 'weighted' sets
    `class_weights` for the loss, or with sampler_weighting=True draws training items with a
    class-balanced WeightedRandomSampler instead (then class_weights stays None).
    num_workers=0 is the default: with images in RAM, a 2-core machine gains little from workers
    that compete with the model for the same cores.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        test_idx: np.ndarray,
        *,
        batch_size: int,
        augmentation: A.BaseCompose | None = None,
        balance: str = "flip",
        sampler_weighting: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        normalization: Normalization | None = None,
    ) -> None:
        super().__init__()
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(
                f"images must be (N, S, S, C) uint8, got {images.shape} {images.dtype}"
            )
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if balance not in ("flip", "none", "weighted"):
            raise ValueError(f"balance must be flip, none or weighted, got {balance!r}")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.train_idx = np.asarray(train_idx, dtype=np.int64)
        self.val_idx = np.asarray(val_idx, dtype=np.int64)
        self.test_idx = np.asarray(test_idx, dtype=np.int64)
        if np.intersect1d(self.train_idx, np.union1d(self.val_idx, self.test_idx)).size:
            raise ValueError("training indices overlap validation or test indices")
        self.batch_size = batch_size
        # A private copy, seeded here: folds sharing one pipeline object stay independent.
        self.augmentation = copy.deepcopy(augmentation)
        self.balance = balance
        self.sampler_weighting = balance == "weighted" and sampler_weighting
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.normalization = normalization
        num_classes = int(self.labels.max()) + 1
        self.train_items = balance_indices(
            self.train_idx, self.labels, balance, np.random.default_rng(seed)
        )
        self.class_weights: torch.Tensor | None = None
        if balance == "weighted" and not self.sampler_weighting:
            weights = class_weights(self.labels[self.train_idx], num_classes)
            self.class_weights = torch.from_numpy(weights)
        if self.augmentation is not None:
            self.augmentation.set_random_seed(seed)  # the main-process stream (num_workers=0)

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            collate_fn=_collate,
            **kwargs,
        )

    def _eval_items(self, indices: np.ndarray) -> list[tuple[int, int]]:
        return [(int(i), AS_IS) for i in indices]

    def train_dataloader(self) -> DataLoader:
        dataset = CachedImageDataset(
            self.images, self.labels, self.train_items, self.augmentation, self.normalization
        )
        generator = torch.Generator().manual_seed(self.seed)
        if self.sampler_weighting:
            item_labels = self.labels[dataset.items[:, 0]]
            per_item = class_weights(item_labels, int(self.labels.max()) + 1)[item_labels]
            sampler = WeightedRandomSampler(
                torch.from_numpy(per_item).double(), len(dataset), generator=generator
            )
            return self._loader(
                dataset,
                sampler=sampler,
                generator=generator,
                worker_init_fn=_seed_worker_augmentation,
            )
        return self._loader(
            dataset, shuffle=True, generator=generator, worker_init_fn=_seed_worker_augmentation
        )

    def predict_dataloader(self, indices: np.ndarray | None = None) -> DataLoader:
        """Loader over any record indices (default: the test set), unaugmented, in order."""
        items = self._eval_items(self.test_idx if indices is None else np.asarray(indices))
        dataset = CachedImageDataset(self.images, self.labels, items, None, self.normalization)
        return self._loader(dataset, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self.predict_dataloader(self.val_idx)

    def test_dataloader(self) -> DataLoader:
        return self.predict_dataloader(self.test_idx)
