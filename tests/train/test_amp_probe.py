"""``amp: fastest`` measures bf16 against float32 on the CPU instead of assuming either."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import UnknownNameError
from cnnlab.models import get_model
from cnnlab.train.amp_probe import amp_dtype, bf16_faster_on_cpu, cpu_bf16_supported
from cnnlab.train.config import TrainConfig

CPU = torch.device("cpu")


def test_probe_keeps_rng_state_and_model_untouched():
    model = get_model("fastnet", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    result = bf16_faster_on_cpu(model, (1, 28, 28), 10, batch_size=8, reps=1)
    assert torch.equal(torch.rand(3), expected)  # the seeded run continues as if no probe ran
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(result, bool)
    if not cpu_bf16_supported():
        assert result is False  # emulated bf16 is never chosen


def test_amp_modes_on_cpu():
    model = get_model("fastnet", num_classes=10)
    assert amp_dtype(TrainConfig(amp="auto"), CPU, model, (1, 28, 28), 10) is None
    assert amp_dtype(TrainConfig(amp="off"), CPU) is None
    assert amp_dtype(TrainConfig(amp="bf16"), CPU) is torch.bfloat16
    assert amp_dtype(TrainConfig(amp="fastest"), CPU, model, (1, 28, 28), 10) in (
        None,
        torch.bfloat16,
    )
    with pytest.raises(UnknownNameError, match="fastest"):
        amp_dtype(TrainConfig(amp="bf17"), CPU)


@pytest.mark.parametrize(
    "name,kwargs,shape",
    [
        ("fastnet", {"num_classes": 10}, (1, 28, 28)),
        ("yolo_tiny", {"num_classes": 3, "width": 4}, (3, 64, 64)),
        ("unet", {"num_classes": 3, "base_channels": 4, "depth": 2}, (3, 32, 32)),
    ],
)
def test_the_timed_step_works_for_every_task_in_both_precisions(name, kwargs, shape):
    # the probe's step must not assume class logits: a detector or segmenter is timed the same way
    from cnnlab.train.amp_probe import _step_time

    model = get_model(name, **kwargs).train()
    x = torch.randn(2, *shape)
    for dtype in (None, torch.bfloat16):
        assert _step_time(model, x, dtype, reps=1) > 0
