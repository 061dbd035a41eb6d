import inspect as pyinspect
import json

import pytest
import torch
from torch import nn

import cnnlab.inspect as ins
from cnnlab.inspect import count_macs, format_summary, layer_macs, summarize
from cnnlab.models import get_model


def test_macs_match_hand_count_on_small_model():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, groups=2),
        nn.Flatten(),
        nn.Linear(16 * 14 * 14, 10),
    )
    hand = 32 * 32 * 8 * 3 * 9 + 14 * 14 * 16 * 4 * 9 + 16 * 14 * 14 * 10
    assert count_macs(model, (3, 32, 32)) == hand
    per = {r.name: r.macs for r in layer_macs(model, (3, 32, 32))}
    assert per["0"] == ins.conv_macs(3, 8, 3, (32, 32)) and per["5"] == ins.linear_macs(3136, 10)


def test_functional_matmuls_are_counted():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(8, 24)

        def forward(self, x):
            t = x.flatten(2).transpose(1, 2)  # (1, 16, 8)
            q, k, v = self.qkv(t).chunk(3, -1)
            return torch.softmax(q @ k.transpose(1, 2), -1) @ v

    macs = count_macs(Attn(), (8, 4, 4))
    assert macs == 16 * 8 * 24 + 2 * 16 * 16 * 8
    s = summarize(Attn(), (8, 4, 4))
    assert any(not r.rf or r.rf.is_global for r in s.rows if r.kind.startswith("F."))


def test_summary_totals_equal_numel_and_simplecnn_numbers():
    model = get_model("simplecnn")
    s = summarize(model, (1, 28, 28))
    assert s.total_params == sum(p.numel() for p in model.parameters()) == 421_642
    assert sum(r.params for r in s.rows) == s.total_params
    assert s.total_macs == sum(r.macs for r in s.rows) == 225_792 + 3_612_672 + 401_408 + 1_280
    assert s.param_bytes == 4 * 421_642
    conv2 = next(r for r in s.rows if r.name == "conv2")
    assert conv2.output_shape == (1, 64, 14, 14) and conv2.rf_text == "8"
    model.conv1.requires_grad_(False)
    assert summarize(model, (1, 28, 28)).non_trainable_params == 320
    assert model.training  # the trace restores train mode


@pytest.mark.parametrize(
    "name,size",
    [
        ("resnet18", (3, 64, 64)),
        pytest.param("googlenet", (3, 96, 96), marks=pytest.mark.slow),
        ("vit_tiny", None),
        ("mobilenet_v2", (3, 64, 64)),
    ],
)
def test_summary_totals_on_zoo_models(name, size):
    model = get_model(name, num_classes=10)
    size = size or tuple(model.default_cfg.input_size)
    s = summarize(model, size)
    counted = sum(p.numel() for p in model.parameters())
    assert s.total_params == counted == sum(r.params for r in s.rows) + s.unused_params
    assert s.total_macs == sum(r.macs for r in s.rows) == count_macs(model, size) > 0


def test_formats():
    s = summarize(get_model("lenet_bn"), (3, 32, 32))
    text = format_summary(s)
    assert "Total params:" in text and "62,050" in text
    md = format_summary(s, "markdown")
    assert md.count("\n| conv1 |") == 1
    data = json.loads(format_summary(s, "json"))
    assert data["total_params"] == 62_050 and data["rows"][0]["rf"]["rf"] == [5, 5]
    csv_text = format_summary(s, "csv")
    assert csv_text.splitlines()[1].startswith("conv1,Conv2d,1x6x28x28,456,")
    with pytest.raises(ins.ConfigError if hasattr(ins, "ConfigError") else Exception):
        format_summary(s, "xml")


def test_every_public_function_has_a_docstring():
    for name in ins.__all__:
        obj = getattr(ins, name)
        if pyinspect.isfunction(obj) or pyinspect.isclass(obj):
            assert obj.__doc__ and obj.__doc__.strip(), name


def test_trace_leaves_model_and_buffers_untouched():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)
            self.register_buffer("acc", torch.zeros(1, 1, 3, 3))

        def forward(self, x):
            y = self.conv(x)
            self.acc.add_(y[:, :, :3, :3])  # an in-place op that would tag the buffer
            return y

    net = Net().train()
    s = summarize(net, (1, 5, 5))
    assert not hasattr(net.acc, "_cnnlab_geo") and net.training
    assert s.output_shape == (1, 1, 3, 3) and s.rows[0].rf.rf == (3, 3)
