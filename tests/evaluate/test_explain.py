"""Grad-CAM, Grad-CAM++ and saliency: they point at the evidence, and work for the whole zoo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.errors import ConfigError, UnknownNameError
from cnnlab.evaluate.explain import explain, find_target_layer, overlay

SIZE, PATCH = 24, 5


def bright_patch_batch(
    n: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise images with one bright square; the class is the quadrant it lies in.

    Returns images (n, 1, SIZE, SIZE) roughly normalised, labels, and the patch corners (n, 2).
    """
    x = torch.rand(n, 1, SIZE, SIZE, generator=gen) * 0.3
    y = torch.randint(0, 4, (n,), generator=gen)
    half = SIZE // 2
    top = torch.randint(0, half - PATCH + 1, (n,), generator=gen) + (y // 2) * half
    left = torch.randint(0, half - PATCH + 1, (n,), generator=gen) + (y % 2) * half
    for i in range(n):
        x[i, 0, top[i] : top[i] + PATCH, left[i] : left[i] + PATCH] = 1.0
    return (x - 0.2) / 0.3, y, torch.stack([top, left], 1)


class TinyCNN(nn.Module):
    """Three convolutions, global average pooling and a linear head (the usual CNN shape).

    Two coordinate channels gated by brightness are appended to the input (a CoordConv variant),
    so that a translation-equivariant network with a global-pooling head can tell the quadrants
    apart at all, while dark background stays position-free.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        n, _, h, w = x.shape
        yy = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(n, 1, h, w)
        xx = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(n, 1, h, w)
        gate = torch.relu(x)
        x = torch.cat([x, gate * xx, gate * yy], 1)
        x = self.pool(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        x = torch.relu(self.conv3(x))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        x, y, _ = bright_patch_batch(32, gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y, corners = bright_patch_batch(64, torch.Generator().manual_seed(1))
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() > 0.9, "the tiny CNN did not learn the task"
    return model, x, y, corners


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cam_peak_falls_inside_the_bright_patch(trained, method):
    model, x, y, corners = trained
    e = explain(model, x, target=y, method=method)
    assert e.maps.shape == (len(x), SIZE, SIZE) and e.layer == "conv3"
    assert e.maps.min() >= 0 and e.maps.max() <= 1 + 1e-6
    inside = 0
    for m, (top, left) in zip(e.maps, corners.tolist()):
        r, c = np.unravel_index(m.argmax(), m.shape)
        # one pixel of slack: the 12x12 CAM is upsampled bilinearly to 24x24
        inside += top - 1 <= r <= top + PATCH and left - 1 <= c <= left + PATCH
    assert inside / len(x) >= 0.8, f"{method}: peak inside the patch for {inside}/{len(x)} images"


def test_saliency_concentrates_on_the_bright_patch(trained):
    model, x, y, corners = trained
    e = explain(model, x, target=y, method="saliency")
    assert e.maps.shape == (len(x), SIZE, SIZE) and e.layer is None
    hits = 0
    for m, (top, left) in zip(e.maps, corners.tolist()):
        mask = np.zeros_like(m, dtype=bool)
        mask[max(top - 1, 0) : top + PATCH + 1, max(left - 1, 0) : left + PATCH + 1] = True
        hits += m[mask].mean() > m[~mask].mean()
    # input gradients are noisy (every background pixel gets some): ask for a majority only
    assert hits / len(x) >= 0.7, f"saliency concentrated on the patch for {hits}/{len(x)} images"


def test_named_layer_and_bad_names(trained):
    model, x, _, _ = trained
    e = explain(model, x[:2], method="gradcam", layer="conv2")
    assert e.layer == "conv2" and e.maps.shape == (2, SIZE, SIZE)
    with pytest.raises(UnknownNameError, match="conv3"):
        explain(model, x[:2], layer="conv9")
    with pytest.raises(ConfigError, match="feature map"):
        explain(model, x[:2], layer="fc")
    with pytest.raises(UnknownNameError):
        explain(model, x[:2], method="lime")


def test_explaining_keeps_training_mode_and_frozen_weights(trained):
    model, x, _, _ = trained
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    try:
        e = explain(model, x[:3])
        assert e.maps.max() > 0 and model.training
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()


@pytest.mark.parametrize(
    "name,size,expected",
    [("simplecnn", 28, "conv2"), ("fastnet", 28, "features"), ("resnet18", 64, "layer4")],
)
def test_last_conv_layer_is_found_in_zoo_models(name, size, expected):
    from cnnlab.models import get_model

    chans = 1 if name in ("simplecnn", "fastnet") else 3
    model = get_model(name, num_classes=3, in_chans=chans)
    x = torch.randn(2, chans, size, size)
    assert find_target_layer(model, x) == expected
    assert explain(model, x, method="gradcam++").maps.shape == (2, size, size)


def test_non_classifiers_are_refused():
    from cnnlab.models import get_model

    unet = get_model("unet", num_classes=2, in_chans=1)
    with pytest.raises(ConfigError, match="classifiers"):
        find_target_layer(unet, torch.randn(1, 1, 32, 32))


def test_overlay_shapes():
    heat = np.linspace(0, 1, 16).reshape(4, 4)
    for img in (np.zeros((4, 4), np.uint8), np.zeros((1, 4, 4)), np.ones((4, 4, 3))):
        out = overlay(img, heat)
        assert out.shape == (4, 4, 3) and out.min() >= 0 and out.max() <= 1


def _zoo_classifiers():
    from cnnlab.models import list_models

    return [m for m in list_models() if m not in ("unet", "yolo_tiny")]


@pytest.mark.slow
@pytest.mark.parametrize("name", _zoo_classifiers())
def test_every_zoo_classifier_can_be_explained(name):
    from cnnlab.models import get_model

    model = get_model(name, num_classes=3, in_chans=3)
    size = max(64, model.default_cfg.min_size)
    if name.startswith("vit"):
        size = model.default_cfg.input_size[-1]
    x = torch.randn(1, 3, size, size)
    for method in ("gradcam", "gradcam++", "saliency"):
        e = explain(model, x, method=method)
        assert e.maps.shape == (1, size, size) and np.isfinite(e.maps).all()


def test_explain_module_reexports_the_cam_arithmetic():
    # the maths moved down to cnnlab.inspect.cam so the service can draw the same maps
    from cnnlab.evaluate import explain as evaluate_explain
    from cnnlab.inspect import cam

    for name in ("explain", "find_target_layer", "Explanation", "METHODS"):
        assert getattr(evaluate_explain, name) is getattr(cam, name)
