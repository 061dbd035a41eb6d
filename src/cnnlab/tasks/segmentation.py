"""Semantic segmentation: a class per pixel, cross-entropy, mIoU from a confusion matrix.

Classes are ``background`` followed by the dataset's object classes (mask value ``k`` is class
``k``); pixels marked :data:`~cnnlab.data.dense.IGNORE_INDEX` (255) count in neither the loss nor
the metrics. Every metric comes from one ``(K, K)`` confusion matrix (rows: truth, columns:
prediction) summed over the test set and over torchrun processes:

* IoU of class k = ``TP / (TP + FP + FN)``; **mIoU** is the mean over the classes that occur in the
  truth or the predictions (a class absent from both has no IoU, as in mmsegmentation's nanmean),
* pixel accuracy = ``trace / sum``, Dice of class k = ``2 TP / (2 TP + FP + FN)`` (mean Dice the
  same way as mIoU).

Models: anything with ``task = "segmentation"`` returning ``(N, K, h, w)`` logits (``unet``,
``unet_resnet18``…); logits smaller than the mask are upsampled bilinearly before the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data import DatasetSplits
from cnnlab.data.dense import IGNORE_INDEX, DenseDataset, DenseLoader, DenseTarget
from cnnlab.data.dense_augment import build_dense_transform
from cnnlab.errors import ConfigError
from cnnlab.runtime import main_logits
from cnnlab.tasks.base import register_task
from cnnlab.tasks.detection import check_model_task, require_dense


def seg_logits(output: Any, size: tuple[int, int]) -> torch.Tensor:
    """The main ``(N, K, H, W)`` float logits at the mask's size."""
    logits = main_logits(output).float()
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits


def confusion_matrix(
    pred: torch.Tensor, truth: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted; ignored pixels skipped."""
    valid = truth != ignore_index
    t, p = truth[valid].long(), pred[valid].long()
    ok = (t >= 0) & (t < num_classes)
    idx = t[ok] * num_classes + p[ok]
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


@dataclass
class SegmentationMetrics:
    """Scores from one confusion matrix; per-class values are NaN for classes that never occur."""

    confusion: torch.Tensor
    iou: torch.Tensor
    dice: torch.Tensor
    miou: float
    mean_dice: float
    pixel_acc: float


def segmentation_metrics(cm: torch.Tensor) -> SegmentationMetrics:
    """mIoU, per-class IoU, pixel accuracy and Dice of confusion matrix ``cm`` (see the module)."""
    cm = cm.double()
    tp = cm.diag()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    denom = tp + fp + fn
    present = denom > 0
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(present, tp / denom.clamp_min(1), nan)
    dice = torch.where(present, 2 * tp / (2 * tp + fp + fn).clamp_min(1), nan)
    total = cm.sum()
    return SegmentationMetrics(
        confusion=cm.long(),
        iou=iou,
        dice=dice,
        miou=float(iou[present].mean()) if bool(present.any()) else 0.0,
        mean_dice=float(dice[present].mean()) if bool(present.any()) else 0.0,
        pixel_acc=float(tp.sum() / total) if total > 0 else 0.0,
    )


class Segmentation:
    """The segmentation task; see :class:`cnnlab.tasks.Task` for what each method is for."""

    name = "segmentation"
    metric_names = ("test_loss", "test_miou", "test_pixel_acc", "test_dice")
    train_metric_names = ("train_loss", "train_pixel_acc")
    default_monitor = "test_miou"

    def __init__(self, config: Any = None):
        self.config = config
        self.classes: list[str] = []
        self.last_metrics: SegmentationMetrics | None = None

    @staticmethod
    def class_names(train: DenseDataset) -> list[str]:
        """``background`` then the object classes: the model's output channels, in order."""
        return ["background", *train.classes]

    def metric_mode(self, metric: str) -> str:
        return "min" if "loss" in metric else "max"

    def check_data(self, splits: DatasetSplits) -> None:
        require_dense(splits, self.name)

    def setup(self, train: DenseDataset, device: torch.device) -> None:
        self.classes = self.class_names(train)

    def model_kwargs(self, train: DenseDataset) -> dict[str, Any]:
        return {"num_classes": train.num_classes + 1, "in_chans": train.image_shape[0]}

    def check_model(self, model: nn.Module, train: DenseDataset) -> None:
        check_model_task(model, self.name, train)
        inner = getattr(model, "module", model)
        k = getattr(inner, "num_classes", None)
        if k is not None and k != train.num_classes + 1:
            raise ConfigError(
                f"the model predicts {k} classes but '{train.name}' has {train.num_classes + 1} "
                f"(background + {train.num_classes}); drop model_kwargs.num_classes"
            )

    def train_transform(self, config: Any, train: DenseDataset, generator: torch.Generator) -> Any:
        d = config.data
        if d.mixup_alpha > 0 or d.cutmix_alpha > 0:
            raise ConfigError("Mixup/CutMix mix labels per image and cannot mix masks; drop them")
        if getattr(d, "sizes", ()):
            raise ConfigError("progressive resizing (data.sizes) does not resize masks; drop it")
        return build_dense_transform(d.augment, generator=generator)

    def make_loader(self, dataset: DenseDataset, batch_size: int, **options: Any) -> DenseLoader:
        return DenseLoader(dataset, batch_size, **options)

    def loss(self, output: Any, target: DenseTarget, model: nn.Module) -> torch.Tensor:
        assert target.masks is not None
        logits = seg_logits(output, tuple(target.masks.shape[-2:]))
        loss = F.cross_entropy(logits, target.masks, ignore_index=IGNORE_INDEX)
        aux = [a for a in output[1:] if a is not None] if isinstance(output, (tuple, list)) else []
        w = getattr(getattr(model, "module", model), "aux_weight", 0.4)
        for a in aux:
            loss = loss + w * F.cross_entropy(
                seg_logits(a, tuple(target.masks.shape[-2:])),
                target.masks,
                ignore_index=IGNORE_INDEX,
            )
        return loss

    def batch_stats(self, output: Any, target: DenseTarget) -> dict[str, torch.Tensor]:
        assert target.masks is not None
        pred = seg_logits(output, tuple(target.masks.shape[-2:])).detach().argmax(1)
        valid = target.masks != IGNORE_INDEX
        correct = ((pred == target.masks) & valid).flatten(1).sum(1).float()
        per_image = correct / valid.flatten(1).sum(1).clamp_min(1).float()
        return {"train_pixel_acc": per_image.sum()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DenseLoader) -> dict[str, float]:
        was_training = model.training
        model.eval()
        k = len(self.classes) or loader.dataset.num_classes + 1
        cm = torch.zeros(k, k, dtype=torch.int64, device=loader.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=loader.device)
        pixels = torch.zeros((), dtype=torch.float64, device=loader.device)
        for x, t in loader:
            assert t.masks is not None
            logits = seg_logits(model(x), tuple(t.masks.shape[-2:]))
            loss_sum += F.cross_entropy(
                logits, t.masks, ignore_index=IGNORE_INDEX, reduction="sum"
            ).double()
            pixels += (t.masks != IGNORE_INDEX).sum()
            cm += confusion_matrix(logits.argmax(1), t.masks, k)
        model.train(was_training)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for v in (cm, loss_sum, pixels):
                torch.distributed.all_reduce(v)
        m = segmentation_metrics(cm.cpu())
        self.last_metrics = m
        return {
            "test_loss": float(loss_sum / pixels.clamp_min(1)),
            "test_miou": m.miou,
            "test_pixel_acc": m.pixel_acc,
            "test_dice": m.mean_dice,
        }

    def run_config(self, train: DenseDataset) -> dict[str, Any]:
        return {
            "task": self.name,
            "classes": self.class_names(train),
            "input_size": list(train.image_shape),
            "ignore_index": IGNORE_INDEX,
            "dataset": {
                "name": train.name,
                "train_size": len(train),
                "class_counts": train.class_counts(),
            },
        }


@register_task("segmentation")
def _segmentation(config: Any = None) -> Segmentation:
    return Segmentation(config)
