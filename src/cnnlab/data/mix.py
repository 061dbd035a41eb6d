"""Mixup and CutMix on a batch, with soft labels that match what was mixed.

Mixup (Zhang et al. 2018) blends each image with a partner: ``lam * x_i + (1 - lam) * x_j``.
CutMix (Yun et al. 2019) pastes a box of the partner into the image. In both, the label becomes
``lam * onehot(y_i) + (1 - lam) * onehot(y_j)`` — for CutMix ``lam`` is recomputed from the box
actually pasted (after clipping at the border), so the label weights equal the pixel areas exactly.
Each sample draws its own ``lam``; partners are a random permutation of the batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data.batch_ops import erase_boxes, to_float


def soft_targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N,) class indices → (N, K) float one-hot; (N, K) soft labels pass through."""
    if y.dim() == 2:
        return y.to(torch.float32)
    return F.one_hot(y, num_classes).to(torch.float32)


def _beta(alpha: float, n: int, g: torch.Generator) -> torch.Tensor:
    # torch's Beta sampler takes no generator; a NumPy one seeded from ours keeps runs reproducible.
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=g)))
    return torch.from_numpy(rng.beta(alpha, alpha, size=n)).to(torch.float32)


def mixup(
    x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend sample ``i`` with ``perm[i]`` by ``lam[i]``; ``y`` is (N, K) soft. Returns float images."""
    dev = x.device
    lam, perm = lam.to(dev), perm.to(dev)
    lx = lam.view(-1, 1, 1, 1)
    xf = to_float(x)
    out = (xf * lx + xf[perm] * (1 - lx)).clamp_(0, 255)
    ly = lam.view(-1, 1)
    return out, y * ly + y[perm] * (1 - ly)


def cutmix_boxes(lam: torch.Tensor, size: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """Boxes (N, 4: top, left, height, width) of area ≈ (1 - lam), centred uniformly, clipped."""
    h, w = size
    n = len(lam)
    r = torch.sqrt(1 - lam)
    ch, cw = (h * r).long(), (w * r).long()
    cy = torch.randint(h, (n,), generator=g)
    cx = torch.randint(w, (n,), generator=g)
    y1, y2 = (cy - ch // 2).clamp(0, h), (cy + ch - ch // 2).clamp(0, h)
    x1, x2 = (cx - cw // 2).clamp(0, w), (cx + cw - cw // 2).clamp(0, w)
    return torch.stack([y1, x1, y2 - y1, x2 - x1], 1)


def cutmix(
    x: torch.Tensor, y: torch.Tensor, boxes: torch.Tensor, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``perm[i]``'s box into sample ``i``; the labels weigh by the pasted area exactly."""

    n, _, h, w = x.shape
    dev = x.device
    perm = perm.to(dev)
    out = erase_boxes(x, boxes, x[perm])
    area = (boxes[:, 2] * boxes[:, 3]).to(dev, torch.float32) / (h * w)
    lam = (1 - area).view(-1, 1)
    return out, y * lam + y[perm] * (1 - lam)


class MixBatch:
    """Mixup and/or CutMix for every batch; with both, each batch uses one of them at random."""

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        switch_prob: float = 0.5,
    ):
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha, self.switch_prob = (
            mixup_alpha,
            cutmix_alpha,
            switch_prob,
        )

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(x)
        soft = soft_targets(y, self.num_classes)
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or float(torch.rand((), generator=g)) < self.switch_prob
        )
        perm = torch.randperm(n, generator=g)
        if use_cutmix:
            lam = _beta(self.cutmix_alpha, n, g)
            boxes = cutmix_boxes(lam, tuple(x.shape[-2:]), g)
            return cutmix(x, soft, boxes, perm)
        return mixup(x, soft, _beta(self.mixup_alpha, n, g), perm)
