"""ResNet family: small-input stem, zero-init residuals, variants, overfitting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.models import get_model
from cnnlab.models.resnet import BasicBlock, Bottleneck


def test_small_input_stem_keeps_resolution() -> None:
    model = get_model("resnet18", num_classes=10, in_chans=1, small_input=True).eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model.default_cfg.input_size == (1, 32, 32)
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 1, 32, 32)).shape == (1, 512, 4, 4)
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # The ImageNet stem shrinks the same image to 1x1 before global pooling.
    big = get_model("resnet18", num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        assert big.forward_features(torch.randn(1, 1, 32, 32)).shape == (1, 512, 1, 1)


def test_small_input_keeps_every_other_key() -> None:
    small = get_model("resnet50", small_input=True).state_dict()
    normal = get_model("resnet50").state_dict()
    assert list(small) == list(normal)
    assert [k for k in small if small[k].shape != normal[k].shape] == ["conv1.weight"]


@pytest.mark.parametrize("name,block", [("resnet18", BasicBlock), ("resnet50", Bottleneck)])
def test_zero_init_residual_makes_blocks_start_as_identity(name: str, block: type) -> None:
    model = get_model(name, num_classes=4, zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, block)]
    last_bn = "bn2" if block is BasicBlock else "bn3"
    assert all(float(getattr(b, last_bn).weight.detach().abs().max()) == 0.0 for b in blocks)
    b = blocks[1]  # no downsample: output = relu(0 + x)
    x = torch.randn(1, b.conv1.in_channels, 8, 8).relu()
    with torch.no_grad():
        torch.testing.assert_close(b(x), x)
    default = get_model(name, num_classes=4)
    assert float(getattr(default.layer1[0], last_bn).weight.detach().min()) == 1.0


def test_variant_widths() -> None:
    wide = get_model("wide_resnet50_2")
    assert wide.layer1[0].conv2.out_channels == 128  # twice resnet50's 64
    resnext = get_model("resnext50_32x4d")
    assert resnext.layer1[0].conv2.groups == 32 and resnext.layer1[0].conv2.out_channels == 128
    assert wide.num_features == resnext.num_features == 2048


def test_dropout_before_the_classifier_is_optional() -> None:
    model = get_model("resnet18", num_classes=3, drop_rate=0.5)
    assert model.drop.p == 0.5 and model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_resnet18_small_input_overfits_two_batches(overfit) -> None:
    torch.manual_seed(0)
    model = get_model("resnet18", num_classes=10, in_chans=1, small_input=True)
    batches = [(torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))) for _ in range(2)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # Judged in train mode (batch statistics), i.e. the loss being minimised: 24 steps are too few
    # for BN running averages (momentum 0.1) to settle, which is not what this test is about.
    losses = overfit(model, batches, opt, 12, eval_mode=False)
    assert max(losses) < 0.05, losses


def test_basic_block_dilation_widens_the_receptive_field_at_the_same_resolution():
    from cnnlab.models.resnet import BasicBlock

    x = torch.zeros(1, 8, 17, 17)
    x[0, :, 8, 8] = 1.0
    plain, dilated = BasicBlock(8, 8).eval(), BasicBlock(8, 8, dilation=2).eval()
    dilated.load_state_dict(plain.state_dict())
    with torch.no_grad():
        reach = [
            ((b(x) - b(torch.zeros_like(x))).abs().sum((0, 1)) > 0).nonzero()
            for b in (plain, dilated)
        ]
    assert dilated(x).shape == plain(x).shape == x.shape
    span = [int(r[:, 0].max() - r[:, 0].min()) + 1 for r in reach]
    assert span == [5, 9]  # two 3x3 convs: 5 pixels; dilated by 2: 9
