"""DenseNet: torchvision key names, growth arithmetic, memory-efficient mode, legacy checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.models import get_model
from cnnlab.models.pretrained import load_pretrained


def test_torchvision_key_names_and_channel_arithmetic() -> None:
    model = get_model("densenet121")
    keys = model.state_dict()
    assert "features.denseblock1.denselayer1.norm1.weight" in keys
    assert "features.transition3.conv.weight" in keys and "features.norm5.weight" in keys
    # 64 + 6*32 = 256 -> 128; 128 + 12*32 = 512 -> 256; 256 + 24*32 = 1024 -> 512; 512 + 16*32 = 1024
    assert keys["features.transition1.conv.weight"].shape[:2] == (128, 256)
    assert keys["features.transition3.conv.weight"].shape[:2] == (512, 1024)
    assert model.num_features == 1024
    assert get_model("densenet161").num_features == 2208


def test_min_size_is_tight() -> None:
    model = get_model("densenet121", num_classes=3).eval()
    assert model.default_cfg.min_size == 29
    with torch.no_grad():
        assert model(torch.randn(1, 3, 29, 29)).shape == (1, 3)
        with pytest.raises(RuntimeError):
            model.forward_features(torch.randn(1, 3, 28, 28))


def test_memory_efficient_mode_gives_the_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    plain = get_model("densenet121", num_classes=5)
    efficient = get_model("densenet121", num_classes=5, memory_efficient=True)
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    y = torch.tensor([1, 4])
    grads = []
    for model in (plain, efficient):
        model.train()
        F.cross_entropy(model(x), y).backward()
        grads.append(model.features.conv0.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_legacy_torchvision_key_names_load(tmp_path) -> None:
    # torchvision's published DenseNet files use "denselayer1.norm.1.weight" for "norm1.weight".
    source = get_model("densenet121", num_classes=10)
    legacy = {}
    for k, v in source.state_dict().items():
        for part in ("norm1", "norm2", "conv1", "conv2", "relu1", "relu2"):
            k = k.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.")
        legacy[k] = v
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    path = tmp_path / "densenet121-legacy.pth"
    torch.save(legacy, path)
    target = get_model("densenet121", num_classes=10)
    load_pretrained(target, path)
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
