"""`cnnlab models` prints recorded figures at once; the records must equal a fresh count."""

from __future__ import annotations

import pytest

from cnnlab.inspect._model_facts import FACTS
from cnnlab.inspect.model_table import iter_model_rows, model_info
from cnnlab.models import list_models


def test_every_shipped_model_has_recorded_figures():
    # a model added without `python -m cnnlab.inspect.model_table --write` fails here
    assert sorted(FACTS) == list_models()


@pytest.mark.parametrize("name", ["simplecnn", "lenet5", "resnet18", "mobilenet_v3_small"])
def test_recorded_figures_equal_a_fresh_count(name):
    assert model_info(name) == model_info(name, recorded=False)


@pytest.mark.slow
def test_all_recorded_figures_equal_a_fresh_count():
    for name in list_models():
        assert model_info(name) == model_info(name, recorded=False), name


def test_rows_come_one_at_a_time_header_first():
    rows = iter_model_rows(["simplecnn", "resnet18"])
    assert next(rows).split()[:3] == ["model", "params", "MACs"]
    next(rows)  # the rule
    first = next(rows)
    assert first.startswith("simplecnn") and "421,642" in first
    assert next(rows).startswith("resnet18")


def test_a_model_registered_later_is_counted_live():
    from torch import nn

    from cnnlab.models import register_model
    from cnnlab.models._registry import _MODELS

    @register_model(name="tiny_test_net_for_table")
    def tiny(*, num_classes=10, in_chans=1, **kwargs):
        """A two-layer test net."""
        return nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    try:
        info = model_info("tiny_test_net_for_table")
        assert info.summary == "A two-layer test net." and info.params > 0
    finally:
        _MODELS.pop("tiny_test_net_for_table")
