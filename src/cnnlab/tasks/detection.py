"""Object detection: boxes per image, the model's own loss, COCO metrics by ``pycocotools``.

The metrics are the reference implementation's, not a home-made mAP: ground truth and detections
are converted to COCO dicts (image and category ids starting at 1, boxes ``[x, y, w, h]``) and
scored by ``COCOeval`` — AP@[.5:.95], AP50, AP75, AP small/medium/large, AR@100 and per-class AP
(the mean over IoU thresholds and recall points of ``eval["precision"]`` for that category). The
detections of the last evaluation are kept (:attr:`Detection.last_results`) and can be written as
a COCO results file (``detections.json``) beside the ground truth (``coco_gt.json``) so any tool
can re-score them.

Models: anything with ``task = "detection"``, a ``loss(output, targets)`` taking per-image
``(K, 5)`` ``class, x1, y1, x2, y2`` tensors and a ``decode(output, conf_thresh, iou_thresh,
max_det, image_size)`` returning per-image ``boxes``/``scores``/``labels`` — ``yolo_tiny``. For
anchor-based models the task fits the anchors to the training boxes (k-means on IoU, as YOLOv2),
since the defaults are for 416 px photos.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.data import DatasetSplits
from cnnlab.data.dense import DenseDataset, DenseLoader, DenseTarget
from cnnlab.data.dense_augment import build_dense_transform
from cnnlab.errors import ConfigError, DataError
from cnnlab.tasks.base import register_task

# COCOeval.stats order.
COCO_STATS = (
    "map", "map50", "map75", "map_small", "map_medium", "map_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)  # fmt: skip
EVAL_CONF_THRESH = 0.001  # COCO practice: score every plausible box; AP integrates over scores
EVAL_IOU_THRESH = 0.6
EVAL_MAX_DET = 100


def _inner(model: nn.Module) -> nn.Module:
    """The model inside DDP / torch.compile wrappers (its ``loss``/``decode`` live there)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def require_dense(splits: Any, task: str) -> None:
    """A one-line :class:`DataError` unless both splits are dense datasets that can serve ``task``."""
    for split in ("train", "test"):
        ds = getattr(splits, split)
        if not isinstance(ds, DenseDataset):
            raise DataError(
                f"the {task} task needs a {task} dataset (digits-scenes, fashion-scenes, coco, "
                f"yolo{', masks' if task == 'segmentation' else ''}); '{ds.name}' is a "
                f"{getattr(ds, 'task', 'classification')} dataset"
            )
        if task not in ds.tasks:
            need = "boxes" if task == "detection" else "masks"
            raise DataError(
                f"the {task} task needs {need}, and '{ds.name}' has none; it can serve: "
                f"{', '.join(ds.tasks)}"
            )
        if len(ds) == 0:
            raise DataError(f"the {split} split of '{ds.name}' is empty")


def check_model_task(model: nn.Module, task: str, train: DenseDataset) -> None:
    """A one-line error when ``model`` is not built for ``task`` or cannot take the images."""
    inner = _inner(model)
    has = getattr(inner, "task", "classification")
    if has != task:
        arch = getattr(inner, "cnnlab_arch", {}).get("name", type(inner).__name__)
        hint = {
            "detection": "yolo_tiny",
            "segmentation": "unet, unet_resnet18, unet_mobilenet_v2, fcn_resnet18",
        }[task]
        raise ConfigError(f"{arch} is a {has} model; the {task} task needs one of: {hint}")
    check = getattr(inner, "check_input", None)
    if check is not None:
        try:
            check(torch.zeros(1, *train.image_shape))
        except Exception as exc:  # each family words its own size limit
            raise DataError(f"{exc}; resize the data with --image-size") from None


def kmeans_anchors(wh: torch.Tensor, k: int, iters: int = 30) -> list[tuple[float, float]]:
    """``k`` anchor (w, h) pairs fitted to box sizes ``wh`` (M, 2) by k-means on 1 - IoU (YOLOv2).

    Deterministic: starts from the area quantiles; returned sorted by area.
    """
    wh = wh.float().clamp_min(1.0)
    if len(wh) == 0:
        raise DataError("the training split has no boxes to fit anchors to")
    order = (wh[:, 0] * wh[:, 1]).argsort()
    centres = wh[order[((torch.arange(k) + 0.5) / k * len(wh)).long().clamp_max(len(wh) - 1)]]
    for _ in range(iters):
        inter = torch.min(wh[:, None, 0], centres[None, :, 0]) * torch.min(
            wh[:, None, 1], centres[None, :, 1]
        )
        union = (wh[:, 0] * wh[:, 1])[:, None] + (centres[:, 0] * centres[:, 1])[None] - inter
        assign = (inter / union).argmax(1)
        new = torch.stack(
            [
                wh[assign == j].median(0).values if (assign == j).any() else centres[j]
                for j in range(k)
            ]
        )
        if torch.allclose(new, centres):
            break
        centres = new
    centres = centres[(centres[:, 0] * centres[:, 1]).argsort()]
    return [(round(float(w), 1), round(float(h), 1)) for w, h in centres]


# ------------------------------------------------------------------------------------ COCO metrics


@dataclass
class ImageRecord:
    """One image's ground truth and detections (xyxy pixels, 0-based class ids)."""

    image_id: int
    height: int
    width: int
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _xywh(b: np.ndarray) -> list[float]:
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def coco_ground_truth(records: list[ImageRecord], classes: list[str]) -> dict[str, Any]:
    """The COCO ground-truth dict of ``records`` (category ``k + 1`` is ``classes[k]``)."""
    images, anns = [], []
    for r in records:
        images.append({"id": r.image_id, "height": r.height, "width": r.width})
        for b, lb in zip(r.gt_boxes, r.gt_labels):
            xywh = _xywh(b)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": r.image_id,
                    "category_id": int(lb) + 1,
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": 0,
                }
            )
    cats = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_results(records: list[ImageRecord]) -> list[dict[str, Any]]:
    """The detections of ``records`` as a COCO results list (``detections.json``)."""
    out = []
    for r in records:
        for b, s, lb in zip(r.boxes, r.scores, r.labels):
            out.append(
                {
                    "image_id": r.image_id,
                    "category_id": int(lb) + 1,
                    "bbox": [round(v, 2) for v in _xywh(b)],
                    "score": round(float(s), 5),
                }
            )
    return out


@dataclass
class DetectionMetrics:
    """COCO scores: ``stats`` by :data:`COCO_STATS` name, per-class AP, PR curves at IoU 0.5.

    A value of -1 means "no ground truth to score" (COCO's convention), e.g. ``map_large`` when
    no object is larger than 96² pixels, or a class absent from the test set.
    """

    stats: dict[str, float]
    per_class_ap: dict[str, float]
    per_class_ap50: dict[str, float]
    recall: list[float]
    precision50: dict[str, list[float]]


def coco_evaluate(
    gt: dict[str, Any], results: list[dict[str, Any]], classes: list[str]
) -> DetectionMetrics:
    """Score COCO ``results`` against the ground-truth dict ``gt`` with ``pycocotools.COCOeval``."""
    # pycocotools is a C extension; imported here so `import cnnlab` stays fast.
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    k = len(classes)
    recall = [round(float(r), 2) for r in np.linspace(0, 1, 101)]
    if not gt["annotations"]:
        raise DataError("nothing to score: the test split has no boxes")
    if not results:  # COCO.loadRes cannot take an empty list; no detection scores 0
        stats = {name: 0.0 for name in COCO_STATS}
        zero = {c: 0.0 for c in classes}
        return DetectionMetrics(stats, zero, dict(zero), recall, {c: [0.0] * 101 for c in classes})
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress to stdout
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(json.loads(json.dumps(results)))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {name: float(v) for name, v in zip(COCO_STATS, ev.stats)}
    prec = ev.eval["precision"]  # (T IoUs, R recalls, K classes, A areas, M maxDets)
    per_class, per_class50, curves = {}, {}, {}
    for j, name in enumerate(classes[:k]):
        p = prec[:, :, j, 0, -1]
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
        p50 = p[0]
        per_class50[name] = float(p50[p50 > -1].mean()) if (p50 > -1).any() else -1.0
        curves[name] = [round(float(max(v, 0.0)), 4) for v in p50]
    return DetectionMetrics(stats, per_class, per_class50, recall, curves)


def _gather(obj: Any) -> list[Any]:
    """``obj`` from every torchrun process (``[obj]`` in a single process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


@torch.no_grad()
def detect_batch(
    model: nn.Module,
    output: Any,
    image_size: tuple[int, int],
    conf_thresh: float = EVAL_CONF_THRESH,
    iou_thresh: float = EVAL_IOU_THRESH,
    max_det: int = EVAL_MAX_DET,
) -> list[dict[str, torch.Tensor]]:
    """The model's raw output decoded to per-image ``boxes``/``scores``/``labels`` (after NMS)."""
    decode = getattr(_inner(model), "decode", None)
    if decode is None:
        raise ConfigError(f"{type(_inner(model)).__name__} has no decode(); it cannot detect")
    return decode(
        output.float(),
        conf_thresh=conf_thresh,
        iou_thresh=iou_thresh,
        max_det=max_det,
        image_size=image_size,
    )


# ---------------------------------------------------------------------------------------- the task


class Detection:
    """The detection task; see :class:`cnnlab.tasks.Task` for what each method is for."""

    name = "detection"
    metric_names = ("test_loss", "test_map", "test_map50", "test_map75", "test_ar100")
    train_metric_names = ("train_loss",)
    default_monitor = "test_map"

    def __init__(self, config: Any = None):
        self.config = config
        self.classes: list[str] = []
        self.last_metrics: DetectionMetrics | None = None
        self.last_records: list[ImageRecord] = []

    def metric_mode(self, metric: str) -> str:
        return "min" if "loss" in metric else "max"

    def check_data(self, splits: DatasetSplits) -> None:
        require_dense(splits, self.name)

    def setup(self, train: DenseDataset, device: torch.device) -> None:
        self.classes = list(train.classes)

    def model_kwargs(self, train: DenseDataset) -> dict[str, Any]:
        kw: dict[str, Any] = {"num_classes": train.num_classes, "in_chans": train.image_shape[0]}
        cfg = self.config
        model_name = getattr(cfg, "model", "")
        user = getattr(cfg, "model_kwargs", {}) or {}
        if model_name.startswith("yolo") and "anchors" not in user:
            assert train.boxes is not None
            boxes = torch.cat([torch.zeros(0, 4), *train.boxes])
            wh = boxes[:, 2:] - boxes[:, :2]
            kw["anchors"] = kmeans_anchors(wh, int(user.get("num_anchors", 3)))
        return kw

    def check_model(self, model: nn.Module, train: DenseDataset) -> None:
        check_model_task(model, self.name, train)
        if not callable(getattr(_inner(model), "loss", None)):
            raise ConfigError(f"{type(_inner(model)).__name__} has no loss(); it cannot be trained")

    def train_transform(self, config: Any, train: DenseDataset, generator: torch.Generator) -> Any:
        d = config.data
        if d.mixup_alpha > 0 or d.cutmix_alpha > 0:
            raise ConfigError("Mixup/CutMix mix labels per image and cannot mix boxes; drop them")
        if getattr(d, "sizes", ()):
            raise ConfigError("progressive resizing (data.sizes) does not move boxes; drop it")
        return build_dense_transform(d.augment, generator=generator)

    def make_loader(self, dataset: DenseDataset, batch_size: int, **options: Any) -> DenseLoader:
        return DenseLoader(dataset, batch_size, **options)

    def loss(self, output: Any, target: DenseTarget, model: nn.Module) -> torch.Tensor:
        return _inner(model).loss(output.float(), target.yolo_targets())

    def batch_stats(self, output: Any, target: DenseTarget) -> dict[str, torch.Tensor]:
        return {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DenseLoader) -> dict[str, float]:
        was_training = model.training
        model.eval()
        records: list[ImageRecord] = []
        loss_sum, n = 0.0, 0
        for x, t in loader:
            out = model(x)
            loss_sum += float(self.loss(out, t, model)) * len(t)
            n += len(t)
            h, w = x.shape[-2:]
            for i, det in enumerate(detect_batch(model, out, (h, w))):
                records.append(
                    ImageRecord(
                        int(t.index[i]) + 1,
                        h,
                        w,
                        t.boxes[i].cpu().numpy(),  # type: ignore[index]
                        t.labels[i].cpu().numpy(),  # type: ignore[index]
                        det["boxes"].cpu().numpy(),
                        det["scores"].cpu().numpy(),
                        det["labels"].cpu().numpy(),
                    )
                )
        model.train(was_training)
        gathered = _gather((records, loss_sum, n))
        records = sorted((r for g in gathered for r in g[0]), key=lambda r: r.image_id)
        loss_sum, n = sum(g[1] for g in gathered), sum(g[2] for g in gathered)
        classes = self.classes or list(loader.dataset.classes)
        metrics = coco_evaluate(coco_ground_truth(records, classes), coco_results(records), classes)
        self.last_metrics, self.last_records = metrics, records
        s = metrics.stats
        return {
            "test_loss": loss_sum / max(n, 1),
            "test_map": s["map"],
            "test_map50": s["map50"],
            "test_map75": s["map75"],
            "test_ar100": s["ar100"],
        }

    def write_artifacts(self, run_dir: str | Path) -> list[Path]:
        """``detections.json`` (COCO results) and ``coco_gt.json`` of the last evaluation."""
        if not self.last_records:
            return []
        run_dir = Path(run_dir)
        gt = coco_ground_truth(self.last_records, self.classes)
        paths = [run_dir / "detections.json", run_dir / "coco_gt.json"]
        paths[0].write_text(json.dumps(coco_results(self.last_records)))
        paths[1].write_text(json.dumps(gt))
        return paths

    def run_config(self, train: DenseDataset) -> dict[str, Any]:
        return {
            "task": self.name,
            "classes": list(train.classes),
            "input_size": list(train.image_shape),
            "dataset": {
                "name": train.name,
                "train_size": len(train),
                "class_counts": train.class_counts(),
            },
            "postprocess": {
                "conf_thresh": 0.25,
                "iou_thresh": 0.45,
                "max_det": EVAL_MAX_DET,
                "box_format": "xyxy pixels",
            },
        }


@register_task("detection")
def _detection(config: Any = None) -> Detection:
    return Detection(config)
