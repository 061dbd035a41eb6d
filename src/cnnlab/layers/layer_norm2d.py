"""LayerNorm over the channel dimension of an NCHW feature map (ConvNeXt's downsampling norm)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LayerNorm2d(nn.LayerNorm):
    """``nn.LayerNorm(C)`` applied at every pixel of an ``(N, C, H, W)`` tensor.

    Permuting to NHWC and back (rather than normalising with hand-written mean/var) keeps the
    parameter names ``weight`` / ``bias`` of ``nn.LayerNorm`` and is free when the tensor is already
    stored channels-last.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
