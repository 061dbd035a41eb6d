"""GoogLeNet and Inception v3: the auxiliary-classifier convention the training engine relies on."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from cnnlab.errors import ConfigError
from cnnlab.models import get_model


@pytest.mark.parametrize(
    "name,size,n_aux,weight", [("googlenet", 64, 2, 0.3), ("inception_v3", 75, 1, 0.4)]
)
def test_train_mode_returns_logits_then_aux_logits(
    name: str, size: int, n_aux: int, weight: float
) -> None:
    torch.manual_seed(0)
    model = get_model(name, num_classes=5, in_chans=1)
    assert model.aux_weight == weight
    model.train()
    out = model(torch.randn(2, 1, size, size))
    assert isinstance(out, tuple) and len(out) == 1 + n_aux
    assert all(o.shape == (2, 5) for o in out)
    # What the engine computes; every aux head must receive gradient from it.
    y = torch.tensor([0, 4])
    loss = F.cross_entropy(out[0], y) + model.aux_weight * sum(
        F.cross_entropy(a, y) for a in out[1:]
    )
    loss.backward()
    aux_names = [n.split(".")[0] for n in model.aux_classifier_names]
    for aux in aux_names:
        grads = [p.grad for p in getattr(model, aux).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), aux

    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)


@pytest.mark.parametrize("name,size", [("googlenet", 32), ("inception_v3", 75)])
def test_without_aux_heads(name: str, size: int) -> None:
    model = get_model(name, num_classes=3, aux_logits=False).train()
    assert not any(k.startswith(("aux", "AuxLogits")) for k in model.state_dict())
    out = model(torch.randn(2, 3, size, size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)


def test_reset_classifier_resets_aux_heads_too() -> None:
    model = get_model("googlenet", num_classes=10)
    model.reset_classifier(4)
    assert model.fc.out_features == model.aux1.fc2.out_features == model.aux2.fc2.out_features == 4
    model.train()
    assert all(o.shape == (2, 4) for o in model(torch.randn(2, 3, 32, 32)))
    model.reset_classifier(0)
    assert model.aux1 is None and not model.aux_logits
    assert model.train()(torch.randn(2, 3, 32, 32)).shape == (2, 1024)


@torch.no_grad()
def test_transform_input_matches_torchvision() -> None:
    torch.manual_seed(0)
    tv = torchvision.models.googlenet(weights=None, transform_input=True, init_weights=True).eval()
    ours = get_model("googlenet", transform_input=True).eval()
    ours.load_state_dict(tv.state_dict())
    x = torch.randn(2, 3, 40, 40)
    torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="3 input channels"):
        get_model("googlenet", in_chans=1, transform_input=True)


@pytest.mark.slow
def test_inception_v3_aux_head_matches_torchvision_at_299() -> None:
    torch.manual_seed(0)
    tv = torchvision.models.inception_v3(weights=None, init_weights=True, num_classes=10)
    ours = get_model("inception_v3", num_classes=10)
    ours.load_state_dict(tv.state_dict())
    x = torch.randn(2, 3, 299, 299)
    tv.train()
    ours.train()
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[1], tv(x).aux_logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,min_size", [("googlenet", 15), ("inception_v3", 75)])
@torch.no_grad()
def test_min_size_is_tight(name: str, min_size: int) -> None:
    model = get_model(name, num_classes=3).eval()
    assert model.default_cfg.min_size == min_size
    assert model(torch.randn(1, 3, min_size, min_size)).shape == (1, 3)
    with pytest.raises(RuntimeError):
        model.forward_features(torch.randn(1, 3, min_size - 1, min_size - 1))
