"""A frozen first layer that whitens image patches, computed from the training images.

The speed-run trick of airbench / hlb-CIFAR10: instead of learning the first convolution, set its
filters to the ZCA-like basis of the k x k input patches (eigenvectors of their covariance, each
scaled by 1/sqrt(eigenvalue)). Every output channel then has unit variance and none correlates with
another, so the first *learnt* layer starts on decorrelated inputs and the early steps are not spent
discovering edges. Each filter is kept with both signs (``+w`` and ``-w``), so a following ReLU
loses nothing. The filters are buffers: saved with the weights, never trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchWhitening(nn.Module):
    """k x k patch whitening with stride ``stride``; ``2 * in_chans * k * k`` output channels.

    Call :meth:`fit` once with (a sample of) the normalised training images before training. Until
    then the filters pick out the patch's pixels one by one (an identity basis), so an unfitted
    layer is still a valid, if unwhitened, feature extractor — and a loaded checkpoint brings its
    own fitted filters.

    Example::

        w = PatchWhitening(1, kernel_size=2, stride=2)
        w.fit(train_images)          # (N, 1, 28, 28) float, normalised like the model's input
        y = w(x)                     # (N, 8, 14, 14): channels 0..3 have identity covariance
    """

    def __init__(
        self,
        in_chans: int,
        kernel_size: int = 2,
        stride: int = 2,
        padding: int = 0,
        eps: float = 5e-4,
    ):
        super().__init__()
        if kernel_size < 1 or stride < 1 or padding < 0:
            raise ValueError(
                f"kernel_size and stride must be >= 1 and padding >= 0; got {kernel_size}, "
                f"{stride}, {padding}"
            )
        self.in_chans, self.kernel_size = in_chans, kernel_size
        self.stride, self.padding, self.eps = stride, padding, eps
        d = in_chans * kernel_size * kernel_size
        self.out_chans = 2 * d
        # the identity basis with both signs, built from in-place fills only: under a meta-device
        # context (the registry's parameter counts) eye and cat go through torch._refs, which
        # imports torch._dynamo (~1 s)
        weight = torch.zeros(2 * d, d)
        weight[:d].diagonal().fill_(1.0)
        weight[d:].diagonal().fill_(-1.0)
        self.register_buffer("weight", weight.view(2 * d, in_chans, kernel_size, kernel_size))
        self.register_buffer("bias", torch.zeros(2 * d))

    @torch.no_grad()
    def fit(self, images: torch.Tensor, max_patches: int = 2_000_000) -> None:
        """Set the filters from the patches of ``images`` (N, C, H, W float, model-normalised).

        Uses every stride-1 patch of the images, subsampled to at most ``max_patches`` so the
        covariance costs a fraction of a second whatever the dataset size.
        """
        if images.dim() != 4 or images.shape[1] != self.in_chans:
            raise ValueError(
                f"PatchWhitening.fit needs (N, {self.in_chans}, H, W) images; got "
                f"{tuple(images.shape)}"
            )
        k = self.kernel_size
        x = images.float()
        if self.padding:
            x = F.pad(x, [self.padding] * 4)
        per_image = (x.shape[-2] - k + 1) * (x.shape[-1] - k + 1)
        keep = max(1, min(len(x), max_patches // max(per_image, 1)))
        if keep < len(x):  # an even spread over the data, no randomness needed
            x = x[torch.linspace(0, len(x) - 1, keep).long()]
        patches = F.unfold(x, k).transpose(1, 2).reshape(-1, self.in_chans * k * k).double()
        mean = patches.mean(0)
        cov = torch.cov(patches.T)
        eigval, eigvec = torch.linalg.eigh(cov)
        w = (eigvec / torch.sqrt(eigval.clamp_min(0) + self.eps)).T  # rows: whitening filters
        d = w.shape[0]
        filters = w.float().view(d, self.in_chans, k, k)
        self.weight.copy_(torch.cat([filters, -filters]))
        b = -(w @ mean).float()
        self.bias.copy_(torch.cat([b, -b]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.stride, self.padding
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_chans}, {self.out_chans}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, frozen"
        )
