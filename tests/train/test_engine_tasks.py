"""The engine is task-generic: a per-pixel task defined only here trains through the real ``fit``.

The task (foreground segmentation of digits: is each pixel ink?) has its own targets, loss, metrics
and loader; the loop is not told anything about it. It must learn, log its own metric columns,
checkpoint, and resume bit-identically.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tests.train.conftest import tiny_cfg
from torch import nn

from cnnlab.data import BatchLoader
from cnnlab.run import load_checkpoint, read_metrics
from cnnlab.runtime import all_reduce_sum
from cnnlab.tasks import list_tasks, register_task
from cnnlab.train import Callback, fit, resume_config


class ForegroundLoader(BatchLoader):
    """Batches of (normalised image, per-pixel ink mask): the target comes from the raw pixels."""

    def __iter__(self):
        for x, _ in super().__iter__():
            ink = (
                x * torch.tensor(self.std).view(1, -1, 1, 1)
                + torch.tensor(self.mean).view(1, -1, 1, 1)
            ) > 0.5
            yield x, ink[:, 0].float()


class Foreground:
    name = "test-foreground"
    metric_names = ("test_loss", "test_iou")
    train_metric_names = ("train_loss",)
    default_monitor = "test_iou"

    def metric_mode(self, metric: str) -> str:
        return "min" if "loss" in metric else "max"

    def check_data(self, splits: Any) -> None: ...

    def setup(self, train: Any, device: torch.device) -> None: ...

    def model_kwargs(self, train: Any) -> dict[str, Any]:
        return {"num_classes": 1, "in_chans": train.image_shape[0]}

    def check_model(self, model: nn.Module, train: Any) -> None: ...

    def train_transform(self, config: Any, train: Any, generator: torch.Generator) -> Any:
        return None

    def make_loader(self, dataset: Any, batch_size: int, **options: Any) -> ForegroundLoader:
        return ForegroundLoader(dataset, batch_size, **options)

    def loss(self, output: torch.Tensor, target: torch.Tensor, model: nn.Module) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output[:, 0].float(), target)

    def batch_stats(self, output: Any, target: Any) -> dict[str, torch.Tensor]:
        return {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, float]:
        model.eval()
        loss = inter = union = n = 0.0
        for x, y in loader:
            out = model(x)[:, 0].float()
            loss += (
                F.binary_cross_entropy_with_logits(out, y, reduction="sum").item() / y[0].numel()
            )
            pred = out > 0
            inter += (pred & (y > 0)).sum().item()
            union += (pred | (y > 0)).sum().item()
            n += len(x)
        loss, inter, union, n = all_reduce_sum([loss, inter, union, n], loader.device)
        return {"test_loss": loss / max(n, 1), "test_iou": inter / max(union, 1)}

    def run_config(self, train: Any) -> dict[str, Any]:
        return {
            "task": self.name,
            "classes": ["background", "ink"],
            "input_size": list(train.image_shape),
        }


if "test-foreground" not in list_tasks():
    register_task("test-foreground")(lambda config: Foreground())


def _cfg(tmp_path, **kw):
    return tiny_cfg(
        tmp_path,
        task="test-foreground",
        model="unet",
        model_kwargs={"base_channels": 4, "depth": 2},
        monitor="test_iou",
        optim={"lr": 1e-2},
        **kw,
    )


def test_a_task_defined_outside_the_library_trains_checkpoints_and_resumes(tmp_path, digits_small):
    full = fit(_cfg(tmp_path, epochs=3, name="full"), splits=digits_small)
    rows = read_metrics(full.run_dir / "metrics.csv")
    assert list(rows[0]) == [
        "epoch",
        "train_loss",
        "test_loss",
        "test_iou",
        "lr",
        "epoch_s",
        "elapsed_s",
    ]
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.7 * losses[0]  # it learns
    assert float(rows[-1]["test_iou"]) > 0.5
    _, ck = load_checkpoint(full.run_dir)
    assert ck["epoch"] == 3 and ck["best"]["epoch"] >= 1

    class Killed(Exception):
        pass

    class KillAtEpoch3(Callback):
        def on_epoch_start(self, state):
            if state.epoch == 2:
                raise Killed

    with pytest.raises(Killed):
        fit(_cfg(tmp_path, epochs=3, name="part"), [KillAtEpoch3()], splits=digits_small)
    part = tmp_path / "part"
    assert json.loads((part / "summary.json").read_text())["status"] == "interrupted"
    resumed = fit(resume_config(part), splits=digits_small, resume=part)
    assert resumed.metrics["epoch"] == 3
    again = read_metrics(part / "metrics.csv")
    assert [r["epoch"] for r in again] == ["1", "2", "3"]
    for a, b in zip(rows, again):  # bit-identical to the uninterrupted run
        assert a["train_loss"] == b["train_loss"] and a["test_iou"] == b["test_iou"]
