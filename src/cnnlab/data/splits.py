"""Splitting a dataset and weighting its classes: seeded, stratified, and safe for tiny classes.

A random split of an imbalanced folder can leave a rare class out of the validation set entirely;
splitting each class separately keeps the class proportions in both parts. Class weights
(inverse frequency) let the loss count a rare class as much as a common one.
"""

from __future__ import annotations

import torch

from cnnlab.data.base import ImageDataset


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held out) holding out ``fraction`` of every class (at least one image each).

    A class with a single image stays entirely in the training part. The result depends only on
    ``labels``, ``fraction`` and ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    train, held = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n = min(len(idx) - 1, max(1, round(len(idx) * fraction))) if len(idx) > 1 else 0
        if fraction <= 0:
            n = 0
        held.append(idx[:n])
        train.append(idx[n:])
    return torch.cat(train).sort().values, torch.cat(held).sort().values


def class_weights(ds: ImageDataset) -> torch.Tensor:
    """Inverse-frequency weights, one per class, averaging 1 over the classes present.

    ``weight[c] = N / (K * count[c])`` (scikit-learn's "balanced"); a class with no images gets 0.
    Pass it to the loss: ``F.cross_entropy(logits, y, weight=class_weights(train))``.

    Example::

        >>> class_weights(ImageDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8),
        ...                            torch.tensor([0, 0, 0, 1]), ["a", "b"], "toy"))
        tensor([0.6667, 2.0000])
    """
    counts = torch.bincount(ds.labels, minlength=ds.num_classes).to(torch.float32)
    present = counts > 0
    k = int(present.sum())
    weights = torch.zeros_like(counts)
    weights[present] = counts.sum() / (k * counts[present])
    return weights
