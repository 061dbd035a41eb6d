"""Shipped recipes: each one loads, names a real model, and that model takes the recipe's data."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import UnknownNameError
from cnnlab.models import get_model
from cnnlab.train import load_recipe
from cnnlab.train.config import list_recipes


def test_the_time_to_accuracy_recipes_are_shipped() -> None:
    assert {"fmnist-fast", "fmnist-medium", "fmnist-long"} <= set(list_recipes())


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_builds_its_model_for_its_data(name: str) -> None:
    cfg = load_recipe(name)
    assert cfg.epochs > 0 and cfg.batch_size > 0
    model = get_model(cfg.model, num_classes=10, **cfg.model_kwargs).eval()
    c, h, w = model.default_cfg.input_size
    with torch.no_grad():
        assert model(torch.zeros(2, c, h, w)).shape == (2, 10)


def test_unknown_recipe_names_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="fmnist-fast"):
        load_recipe("fmnist-fastest")
