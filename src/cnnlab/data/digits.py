"""scikit-learn's bundled handwritten digits (1,797 images of 8x8), the embedded demo data.

The images are upsampled to 28x28 (bilinear) so the MNIST-sized course networks take them unchanged,
and split with a fixed stratified 80/20 split so every run sees the same test set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.data.base import DatasetSplits, ImageDataset, register_dataset

DIGITS_SIZE = 28


@register_dataset("digits")
def load_digits_splits(
    *, image_size: int | None = None, seed: int = 0, **_: object
) -> DatasetSplits:
    """The digits as two :class:`ImageDataset` splits (1,437 train / 360 test), 1x28x28 uint8."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    size = image_size or DIGITS_SIZE
    x = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0  # values 0..16
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    # The split is fixed (not the run's seed) so test accuracy is comparable across runs.
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.2, stratify=labels.numpy(), random_state=0
    )
    classes = [str(i) for i in range(10)]
    full = ImageDataset(images, labels, classes, "digits")
    return DatasetSplits(
        full.subset(torch.from_numpy(train_idx)), full.subset(torch.from_numpy(test_idx))
    )
