"""Weight compatibility with torchvision for the classic families.

For each architecture torchvision also has: our model loads torchvision's state dict strictly, gives
the same eval-mode outputs (within 1e-5) on the same input, and has exactly as many parameters at
1000 classes. torchvision models are built with ``weights=None``: nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from cnnlab.models import get_model

# Run in CI; every other name runs with `-m slow`.
FAST = {"resnet50", "vgg16_bn", "densenet121", "googlenet"}
TV_NAMES = [
    "alexnet",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "googlenet",
    "inception_v3",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "resnext50_32x4d",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
]
# Parameter counts torchvision publishes for its ImageNet weights (1000 classes, aux heads included).
TV_NUM_PARAMS = {
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "googlenet": 13_004_888,
    "inception_v3": 27_161_264,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "wide_resnet50_2": 68_883_240,
    "resnext50_32x4d": 25_028_904,
    "densenet121": 7_978_856,
    "densenet161": 28_681_000,
}


def _tv_model(name: str, num_classes: int) -> torch.nn.Module:
    kwargs: dict = {"weights": None, "num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = True  # silences torchvision's FutureWarning; same init
    return getattr(torchvision.models, name)(**kwargs)


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in TV_NAMES]
)
def test_matches_torchvision(name: str) -> None:
    torch.manual_seed(0)
    tv = _tv_model(name, num_classes=1000)
    ours = get_model(name, num_classes=1000)
    assert _num_params(ours) == _num_params(tv)
    if name in TV_NUM_PARAMS:
        assert _num_params(ours) == TV_NUM_PARAMS[name]
    assert list(ours.state_dict()) == list(tv.state_dict())  # same keys, same order

    # Randomise BN statistics so the comparison exercises them (fresh ones are 0 and 1).
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours.load_state_dict(tv.state_dict(), strict=True)
    ours.eval()
    tv.eval()
    size = {"inception_v3": 107, "alexnet": 79}.get(
        name, 67
    )  # odd sizes exercise ceil/floor pooling
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = tv(x)
        got = ours(x)
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
