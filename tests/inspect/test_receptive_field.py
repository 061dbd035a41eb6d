"""Receptive fields checked against an independent measurement: the extent of the input gradient of
one output unit, with every weight positive (so no contribution cancels) and max-pooling replaced by
average pooling of the same geometry (max-pooling routes the gradient to one pixel only)."""

import copy

import pytest
import torch
from torch import nn

from cnnlab.inspect import receptive_field, receptive_field_layers
from cnnlab.models import get_model


def test_course_vgg_like_stack_is_16_not_11():
    steps = receptive_field_layers([(3, 1), (3, 1), (2, 2), (3, 1), (3, 1), (2, 2)])
    assert [s.rf for s in steps] == [3, 5, 6, 10, 14, 16]
    assert steps[-1].jump == 4
    assert receptive_field_layers([(3, 1, 2), (3, 1, 4)])[-1].rf == 1 + 4 + 8


class _Stop(Exception):
    pass


def _positive_copy(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model).double().eval()
    for mod in list(m.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(
                    mod,
                    child_name,
                    nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode),
                )
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                mod.weight.fill_(1.0 / mod.weight[0].numel())
                if mod.bias is not None:
                    mod.bias.fill_(0.1)
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight.fill_(1.0)
                mod.bias.fill_(0.1)
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
    return m


def _measured_extent(m: nn.Module, layer: str, size, unit):
    """Rows and columns of the input with a non-zero gradient of ``layer``'s unit (i, j) in the
    positive copy ``m``."""
    grabbed = []

    def hook(mod, i, o):
        grabbed.append(o)
        raise _Stop  # the rest of the network is not needed

    handle = dict(m.named_modules())[layer].register_forward_hook(hook)
    x = torch.rand(1, *size, dtype=torch.float64) + 0.5
    x.requires_grad_(True)
    with pytest.raises(_Stop):
        m(x)
    handle.remove()
    out = grabbed[0]
    out[0, :, unit[0], unit[1]].sum().backward()
    nz = (x.grad[0].abs().sum(0) > 0).nonzero()
    return (nz[:, 0].min().item(), nz[:, 0].max().item()), (
        nz[:, 1].min().item(),
        nz[:, 1].max().item(),
    )


def _check(model, size, layers, measure_on=None, prefix=""):
    """Compare traced extents with measured ones; ``measure_on`` is a sub-network holding the layers
    (named without ``prefix``) to keep the float64 copy small."""
    rep = receptive_field(model, size)
    positive = _positive_copy(measure_on or model)
    for layer in layers:
        lr = rep[layer]
        assert not lr.is_global
        # Pick a unit near the centre whose field lies inside the image.
        i = max(0, round((size[1] / 2 - lr.start[0]) / lr.jump[0]))
        j = max(0, round((size[2] / 2 - lr.start[1]) / lr.jump[1]))
        (top, bottom), (left, right) = lr.extent(i, j)
        assert top >= 0 and left >= 0 and bottom < size[1] and right < size[2], (layer, lr)
        measured = _measured_extent(positive, layer.removeprefix(prefix), size, (i, j))
        assert measured == ((top, bottom), (left, right)), (layer, lr)
    return rep


def test_simplecnn_matches_gradient():
    rep = _check(get_model("simplecnn"), (1, 28, 28), ["conv1", "conv2"])
    assert rep.largest_local().rf == (10, 10)
    assert rep["fc2"].is_global


def test_dilated_stack_matches_gradient():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(2, 2, 3, padding=2, dilation=2),
        nn.Conv2d(2, 2, 3, stride=2, padding=4, dilation=4),
        nn.Conv2d(2, 1, 3, dilation=2),
    )
    rep = _check(model, (1, 64, 64), ["0", "2", "3", "4"])
    assert rep["4"].rf == (3 + 4 + 8 + 8, 3 + 4 + 8 + 8)
    assert rep["4"].jump == (2, 2)


def test_vgg11_matches_gradient():
    model = get_model("vgg11", num_classes=10)
    rep = _check(model, (3, 96, 96), ["features.2", "features.7"], model.features, "features.")
    assert rep["features.7"].rf == (18, 18)  # 3, 4 (pool), 8, 10 (pool), 18


@pytest.mark.slow
def test_vgg11_deep_layers_match_gradient():
    model = get_model("vgg11", num_classes=10)
    _check(model, (3, 224, 224), ["features.12", "features.17"], model.features, "features.")


def test_resnet18_matches_gradient():
    model = get_model("resnet18", num_classes=10)
    rep = _check(model, (3, 96, 96), ["maxpool", "layer1.1.bn2", "layer2.0.bn2"])
    # The residual add takes the union of the shortcut and the residual branch.
    assert rep["layer2.0.downsample.1"].rf[0] < rep["layer2.0.bn2"].rf[0]


@pytest.mark.slow
def test_resnet18_deep_layers_match_gradient():
    _check(get_model("resnet18", num_classes=10), (3, 512, 512), ["layer3.1.bn2", "layer4.0.bn2"])


@pytest.mark.slow
def test_googlenet_matches_gradient():
    model = get_model("googlenet", num_classes=10)
    names = [n for n, m in model.named_modules() if n.endswith("inception3b")]
    model_layers = [
        n
        for n, m in model.named_modules()
        if n.startswith(names[0] + ".branch") and isinstance(m, nn.BatchNorm2d)
    ]
    _check(model, (3, 224, 224), model_layers[-1:])


def test_googlenet_block_matches_gradient():
    # The output of a whole Inception block: the union of four branches (concat).
    model = get_model("googlenet", num_classes=10)
    block = next(n for n, _ in model.named_modules() if n.endswith("inception3a"))
    rep = receptive_field(model, (3, 160, 160))
    leaf_rows = [lr for lr in rep.layers if lr.name.startswith(block + ".")]
    biggest = max(leaf_rows, key=lambda lr: lr.rf[0])
    _check(model, (3, 160, 160), [biggest.name])


def test_functional_ops_and_channels_last_are_followed():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            x = torch.nn.functional.max_pool2d(self.conv(x), 2)
            x = self.lin(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # ConvNeXt-style channel MLP
            return torch.cat([x, x[:, :, :, :]], 1)

    rep = receptive_field(Net(), (3, 20, 20))
    assert rep["max_pool2d"].rf == (4, 4)
    assert rep["lin"].rf == (4, 4) and not rep["lin"].is_global
    assert rep.output.rf == (4, 4)


def test_squeeze_excitation_gate_keeps_window_and_flags_global_context():
    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Conv2d(4, 4, 1)
            self.out = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            x = self.conv(x)
            gate = torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))
            return self.out(x * gate)

    rep = receptive_field(SE(), (3, 16, 16))
    assert rep["conv"].rf == (3, 3) and not rep["conv"].global_context
    assert rep["out"].rf == (5, 5) and rep["out"].global_context and not rep["out"].is_global
    # The exact (gradient) field of a gated unit is the whole image, which the flag says.
    m = _positive_copy(SE())
    x = (torch.rand(1, 3, 16, 16, dtype=torch.float64) + 0.5).requires_grad_(True)
    m(x)[0, :, 8, 8].sum().backward()
    assert (x.grad[0].abs().sum(0) > 0).all()
