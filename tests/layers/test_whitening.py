"""The whitening stem whitens: on the patches it was fitted to, its outputs have identity
covariance; it is frozen, keeps both signs, and survives a state-dict round trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.data import load_dataset
from cnnlab.data.loader import normalize_batch
from cnnlab.layers.whitening import PatchWhitening


def _correlated_images(n: int = 400, seed: int = 0) -> torch.Tensor:
    """Smooth random images: neighbouring pixels strongly correlated, as in real pictures."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 32, 32, generator=g)
    return F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), 5, 1)[:, :, :28, :28] * 3 + 1


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (2, 1, 0)])
def test_outputs_have_identity_covariance_on_the_training_patches(kernel, stride, padding):
    x = _correlated_images()
    w = PatchWhitening(1, kernel, stride, padding, eps=1e-6)
    raw = F.unfold(F.pad(x, [padding] * 4), kernel).transpose(1, 2).reshape(-1, kernel * kernel)
    assert torch.corrcoef(raw.T)[0, 1] > 0.5  # the input patches really are correlated
    w.fit(x)
    # every stride-1 patch position of the fitting data: run the layer at stride 1 over them
    dense = PatchWhitening(1, kernel, 1, padding)
    dense.load_state_dict(w.state_dict())
    y = dense(x)
    d = kernel * kernel
    # the + half (the - half mirrors it); with padding, border patches included, as in fit
    feats = y[:, :d].permute(0, 2, 3, 1).reshape(-1, d)
    cov = torch.cov(feats.T.double())
    assert torch.allclose(cov, torch.eye(d, dtype=cov.dtype), atol=0.05)
    assert feats.mean(0).abs().max() < 0.05
    assert torch.allclose(y[:, d:], -y[:, :d], atol=1e-5)


def test_whitens_real_fashion_like_digits_and_is_frozen():
    s = load_dataset("digits").train
    mean, std = s.mean_std()
    x = normalize_batch(s.images[:500], mean, std)
    w = PatchWhitening(1, 2, 1, eps=1e-6)
    w.fit(x)
    feats = w(x)[:, :4].permute(0, 2, 3, 1).reshape(-1, 4).double()
    assert torch.allclose(torch.cov(feats.T), torch.eye(4, dtype=torch.float64), atol=0.05)
    # the default eps damps directions of tiny variance (noise) but still decorrelates
    w = PatchWhitening(1, 2, 1)
    w.fit(x)
    cov = torch.cov(w(x)[:, :4].permute(0, 2, 3, 1).reshape(-1, 4).double().T)
    assert (cov - torch.diag(cov.diag())).abs().max() < 1e-3 and cov.diag().max() < 1.01
    assert list(dict(w.named_parameters())) == []  # nothing to train
    assert {"weight", "bias"} <= set(w.state_dict())


def test_unfitted_layer_extracts_the_patch_pixels_and_fit_checks_its_input():
    w = PatchWhitening(1, 2, 2)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = w(x)
    assert y.shape == (1, 8, 2, 2)
    assert y[0, :4, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]  # the top-left patch, pixel by pixel
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        w.fit(torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match="kernel_size"):
        PatchWhitening(1, 0)
