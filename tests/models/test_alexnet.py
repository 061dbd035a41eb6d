"""AlexNet: torchvision's variant and the original with local response normalisation."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

from cnnlab.layers.lrn import LocalResponseNorm
from cnnlab.models import get_model


def _naive_lrn(x: torch.Tensor, n: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The paper's formula, written out channel by channel."""
    c = x.shape[1]
    out = torch.empty_like(x)
    for i in range(c):
        lo, hi = max(0, i - n // 2), min(c - 1, i + (n - 1) // 2)  # n channels, zero-padded
        s = (x[:, lo : hi + 1] ** 2).sum(1)
        out[:, i] = x[:, i] / (k + alpha * s) ** beta
    return out


@pytest.mark.parametrize(
    "size,alpha,k", [(5, 1e-4, 2.0), (5, 0.5, 1.0), (4, 0.5, 1.0), (1, 0.3, 1.0)]
)
def test_lrn_matches_the_paper_formula(size: int, alpha: float, k: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 9, 4, 5) * 3
    got = LocalResponseNorm(size=size, alpha=alpha, beta=0.75, k=k)(x)
    torch.testing.assert_close(got, _naive_lrn(x, size, alpha, 0.75, k), rtol=1e-5, atol=1e-6)


def test_lrn_exports_to_onnx_with_known_shapes() -> None:
    # torch's own LocalResponseNorm hides its output shape from the TorchScript ONNX exporter, which
    # then cannot export AlexNet's adaptive pooling; ours keeps it.
    model = nn.Sequential(LocalResponseNorm(), nn.AdaptiveAvgPool2d(2)).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 8, 4, 4),), buf, dynamo=False)
    assert buf.getvalue()


def test_lrn_differs_from_torch_layer_with_the_same_constants() -> None:
    # nn.LocalResponseNorm averages the squares: with the paper's alpha it normalises 5x less.
    x = torch.randn(1, 8, 3, 3) * 10
    ours = LocalResponseNorm(5, 0.5, 0.75, 1.0)(x)
    torchs = nn.LocalResponseNorm(5, 0.5, 0.75, 1.0)(x)
    assert not torch.allclose(ours, torchs)


def test_alexnet_lrn_is_the_original_architecture() -> None:
    model = get_model("alexnet_lrn")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert convs[0].kernel_size == (11, 11) and convs[0].stride == (4, 4)
    lrns = [m for m in model.features if isinstance(m, LocalResponseNorm)]
    assert [(m.size, m.alpha, m.beta, m.k) for m in lrns] == [(5, 1e-4, 0.75, 2.0)] * 2
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(
        p.kernel_size == 3 and p.stride == 2 for p in pools
    )  # overlapping
    # 224 px gives the paper's 55x55 first-layer map.
    assert convs[0](torch.randn(1, 3, 224, 224)).shape == (1, 96, 55, 55)
    # Documented count: single-tower AlexNet (the paper's two-GPU split has ~61 M).
    assert sum(p.numel() for p in model.parameters()) == 62_378_344
    # The paper's initialisation: biases 1 in conv2, conv4, conv5 and the hidden FC layers.
    assert [float(c.bias.detach().mean()) for c in convs] == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert abs(float(convs[2].weight.detach().std()) - 0.01) < 1e-3


def test_alexnet_parameter_count_and_min_size() -> None:
    model = get_model("alexnet", num_classes=10).eval()
    assert model.default_cfg.min_size == 63
    with torch.no_grad():
        assert model(torch.randn(1, 3, 63, 63)).shape == (1, 10)
        # 63 is tight: one pixel less and the last max-pool has nothing left to pool.
        with pytest.raises(RuntimeError):
            model.forward_features(torch.randn(1, 3, 62, 62))
