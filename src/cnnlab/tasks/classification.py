"""Image classification: one label (or a soft Mixup/CutMix label) per image, cross-entropy, accuracy.

The first task of the engine, and the behaviour cnnlab always had: the loss handles auxiliary heads
(GoogLeNet, Inception v3), label smoothing and per-class weights; training logs loss and accuracy;
evaluation reports test loss and accuracy summed over torchrun processes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data import BatchLoader, DatasetSplits, ImageDataset, build_batch_transform
from cnnlab.errors import DataError
from cnnlab.runtime import all_reduce_sum, main_logits, predict_logits
from cnnlab.tasks.base import register_task


def classification_loss(
    output: Any,
    target: torch.Tensor,
    model: nn.Module,
    label_smoothing: float = 0.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy for hard or soft (Mixup/CutMix) targets, plus weighted auxiliary-head losses.

    Models with auxiliary classifiers (GoogLeNet, Inception v3) return ``(logits, *aux)`` in training
    mode and carry ``aux_weight``. ``weight`` holds per-class weights (``data.class_weights``).
    """

    def ce(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), target, weight=weight, label_smoothing=label_smoothing
        )

    if isinstance(output, (tuple, list)):
        main, aux = output[0], [a for a in output[1:] if a is not None]
        loss = ce(main)
        w = getattr(getattr(model, "module", model), "aux_weight", 0.3)
        for a in aux:
            loss = loss + w * ce(a)
        return loss
    return ce(output)


def inverse_frequency_weights(train: ImageDataset) -> torch.Tensor:
    """Per-class weights ``n / (K * count)`` (1 for every class when balanced)."""
    counts = torch.tensor(train.class_counts(), dtype=torch.float32).clamp_min(1)
    return counts.sum() / (len(counts) * counts)


class Classification:
    """The classification task; see :class:`cnnlab.tasks.Task` for what each method is for."""

    name = "classification"
    metric_names = ("test_loss", "test_acc")
    train_metric_names = ("train_loss", "train_acc")
    default_monitor = "test_acc"

    def __init__(self, label_smoothing: float = 0.0, class_weights: bool = False):
        self.label_smoothing = label_smoothing
        self.use_class_weights = class_weights
        self.class_weight: torch.Tensor | None = None

    def metric_mode(self, metric: str) -> str:
        return "min" if "loss" in metric else "max"

    def check_data(self, splits: DatasetSplits) -> None:
        if not isinstance(splits.train, ImageDataset):
            raise DataError(
                f"the classification task needs a labelled image dataset; got "
                f"{type(splits.train).__name__}"
            )

    def setup(self, train: ImageDataset, device: torch.device) -> None:
        if self.use_class_weights:
            self.class_weight = inverse_frequency_weights(train).to(device)

    def model_kwargs(self, train: ImageDataset) -> dict[str, Any]:
        return {"num_classes": train.num_classes, "in_chans": train.image_shape[0]}

    def check_model(self, model: nn.Module, train: ImageDataset) -> None:
        check = getattr(model, "check_input", None)
        if check is None:
            return
        try:
            check(torch.zeros(1, *train.image_shape))
        except Exception as exc:  # each family words its own size limit
            raise DataError(f"{exc}; resize the data with --image-size") from None

    def train_transform(self, config: Any, train: ImageDataset, generator: torch.Generator) -> Any:
        d = config.data
        if not d.augment and d.mixup_alpha <= 0 and d.cutmix_alpha <= 0:
            return None
        return build_batch_transform(
            d.augment,
            image_size=None,
            num_classes=train.num_classes,
            mixup_alpha=d.mixup_alpha,
            cutmix_alpha=d.cutmix_alpha,
            generator=generator,
        )

    def make_loader(self, dataset: ImageDataset, batch_size: int, **options: Any) -> BatchLoader:
        return BatchLoader(dataset, batch_size, **options)

    def loss(self, output: Any, target: torch.Tensor, model: nn.Module) -> torch.Tensor:
        return classification_loss(output, target, model, self.label_smoothing, self.class_weight)

    def batch_stats(self, output: Any, target: torch.Tensor) -> dict[str, torch.Tensor]:
        hard = target.argmax(1) if target.dim() == 2 else target
        return {"train_acc": (main_logits(output).detach().argmax(1) == hard).sum()}

    def evaluate(self, model: nn.Module, loader: BatchLoader) -> dict[str, float]:
        logits, labels = predict_logits(model, loader)
        n = len(labels)
        loss_sum = F.cross_entropy(logits, labels, reduction="sum").item() if n else 0.0
        correct = (logits.argmax(1) == labels).sum().item() if n else 0
        loss_sum, correct, n = all_reduce_sum([loss_sum, float(correct), float(n)], loader.device)
        return {"test_loss": loss_sum / max(n, 1), "test_acc": correct / max(n, 1)}

    def run_config(self, train: ImageDataset) -> dict[str, Any]:
        return {
            "task": self.name,
            "classes": list(train.classes),
            "input_size": list(train.image_shape),
            "dataset": {
                "name": train.name,
                "train_size": len(train),
                "class_counts": train.class_counts(),
            },
        }


@register_task("classification")
def _classification(config: Any = None) -> Classification:
    if config is None:
        return Classification()
    return Classification(config.label_smoothing, config.data.class_weights)
