"""Batches straight from preloaded uint8 tensors: shuffle, slice, move, normalise on the device.

This replaces torch's DataLoader + per-image transforms for in-memory data: one index permutation per
epoch, one tensor slice per batch, and the uint8→float conversion and normalisation done on the whole
batch on the training device (transferring uint8 also moves 4x fewer bytes to a GPU).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from cnnlab.data.base import ImageDataset

BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def normalize_batch(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 (or float 0..255) (N, C, H, W) → float ``(x / 255 - mean) / std``.

    A float input is never modified in place.
    """
    mean_t = torch.tensor(mean, dtype=dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=dtype, device=images.device).view(1, -1, 1, 1)
    scale = 1.0 / (255.0 * std_t)
    x = images.to(dtype)
    x = x * scale if x is images else x.mul_(scale)
    return x.sub_(mean_t / std_t)


class BatchLoader:
    """Iterate over an :class:`ImageDataset` in (images, labels) batches on ``device``.

    ``transform`` (optional, e.g. :func:`cnnlab.data.augment.build_batch_transform`) receives the
    uint8 batch and labels on the device and returns them augmented — uint8, or float in the 0..255
    range; labels may become soft, e.g. Mixup — and normalisation happens after it.
    The shuffle order depends only on ``seed`` and the epoch number, which is what makes CPU runs
    reproducible and resumable.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        transform: BatchTransform | None = None,
        channels_last: bool = False,
        indices: torch.Tensor | None = None,
    ):
        self.dataset, self.batch_size = dataset, batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.device = torch.device(device)
        self.transform = transform
        self.channels_last = channels_last
        self.indices = indices  # a shard of the dataset (distributed training) or None for all
        self.epoch = 0
        pin = self.device.type == "cuda"
        self._images = dataset.images.pin_memory() if pin else dataset.images
        self._labels = dataset.labels

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle order (and augmentation draws) the next iteration uses."""
        self.epoch = epoch
        reseed = getattr(self.transform, "set_epoch", None)
        if reseed is not None:  # a resumed run then sees the same augmentations as an unbroken one
            reseed(epoch)

    def _order(self) -> torch.Tensor:
        n = len(self.dataset)
        base = self.indices if self.indices is not None else torch.arange(n)
        if not self.shuffle:
            return base
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return base[torch.randperm(len(base), generator=g)]

    def __len__(self) -> int:
        n = len(self.indices) if self.indices is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self._images[idx].to(self.device, non_blocking=True)
            y = self._labels[idx].to(self.device, non_blocking=True)
            if getattr(self.transform, "uses_indices", False):
                x, y = self.transform(x, y, indices=idx)
            elif self.transform is not None:
                x, y = self.transform(x, y)
            x = normalize_batch(x, self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
