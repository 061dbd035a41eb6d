"""Every registered model, tested from the registry: build, shapes, gradients, interface, bad input.

New models are covered the moment they are registered. Detectors and segmenters (``model.task`` other
than "classification") are checked by their own family tests.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import InputShapeError, UnknownNameError
from cnnlab.models import get_model, get_model_builder, list_models, register_model

# Models whose build + backward takes several seconds on one CPU core (VGG: two builds of ~130 M
# parameters; vgg16_bn still runs by default in the parity tests).
SLOW_MODELS = {
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "alexnet",
    "alexnet_lrn",
    "densenet161",
    "densenet201",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "inception_v3",
    "vit_b_16",
    "vit_b_32",
    "vit_l_16",
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
    "convnext_small",
    "convnext_base",
    "convnext_large",
}
NUM_CLASSES = 7


def _params() -> list:
    return [
        pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MODELS else n for n in list_models()
    ]


def _is_classifier(model: torch.nn.Module) -> bool:
    return getattr(model, "task", "classification") == "classification"


@pytest.mark.parametrize("name", _params())
def test_model_builds_runs_and_backpropagates(name: str) -> None:
    torch.manual_seed(0)

    # in_chans=1, eval mode: shapes, the classifier interface and bad-input errors (no gradients).
    model = get_model(name, num_classes=NUM_CLASSES, in_chans=1)
    if not _is_classifier(model):
        pytest.skip(f"{name} is a {model.task} model, tested by its family's tests")
    cfg = model.default_cfg
    size = cfg.min_size
    assert model.in_chans == 1 and cfg.input_size[0] == 1 and len(cfg.mean) == 1
    model.eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        out = model(x)
        assert isinstance(out, torch.Tensor), "eval-mode forward must return the logits tensor"
        assert out.shape == (2, NUM_CLASSES)
        assert torch.isfinite(out).all()
        feats = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(feats), out)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
        model.reset_classifier(3)
        assert model.num_classes == 3 and model(x).shape == (2, 3)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)

    for bad, expect in [
        (torch.randn(1, 3, size, size), "1 input channel"),
        (torch.randn(1, 1, size - 1, size - 1), f"at least {size}x{size}"),
        (torch.randn(1, size, size), "(N, 1, H, W)"),
    ]:
        with pytest.raises(InputShapeError) as err:
            model(bad)
        msg = str(err.value)
        assert expect in msg and "\n" not in msg, msg

    # in_chans=3, train mode: one forward + backward, every parameter gets a finite gradient.
    model = get_model(name, num_classes=NUM_CLASSES, in_chans=3)
    model.train()
    out = model(torch.randn(2, 3, size, size))
    outs = out if isinstance(out, tuple) else (out,)
    target = torch.tensor([0, NUM_CLASSES - 1])
    loss = torch.zeros(())
    for o in outs:
        assert o.shape == (2, NUM_CLASSES)
        assert torch.isfinite(o).all()
        loss = loss + F.cross_entropy(o, target)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters that got no gradient: {no_grad[:5]}"
    bad_grad = [
        n
        for n, p in model.named_parameters()
        if p.grad is not None and not torch.isfinite(p.grad).all()
    ]
    assert not bad_grad, f"non-finite gradients: {bad_grad[:5]}"


def test_every_builder_is_documented() -> None:
    for name in list_models():
        builder = get_model_builder(name)
        assert builder.__doc__, f"{name} builder has no docstring"


def test_duplicate_registration_is_refused() -> None:
    original = get_model_builder("resnet18")

    def resnet18(*, num_classes: int = 10, in_chans: int = 3, **kwargs):  # pragma: no cover
        raise AssertionError("must never be registered")

    with pytest.raises(ValueError, match="already registered"):
        register_model(resnet18)
    with pytest.raises(ValueError, match="already registered"):
        register_model(name="vgg16")(resnet18)
    assert get_model_builder("resnet18") is original


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownNameError) as err:
        get_model("resnet19")
    msg = str(err.value)
    assert "Did you mean" in msg and "resnet18" in msg and "\n" not in msg
    with pytest.raises(UnknownNameError, match="densenet121"):
        get_model("densnet121")


def test_list_models_filters_by_pattern() -> None:
    assert list_models("vgg1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert set(list_models("resnet*")) >= {
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
    }
