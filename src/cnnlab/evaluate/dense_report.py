"""Evaluation and report sections of detection and segmentation runs.

:func:`evaluate_dense_run` scores a run directory's model on its test split with the task's own
metrics (pycocotools for boxes, the confusion matrix for masks), writes ``detections.json`` /
``coco_gt.json`` or ``seg_confusion.csv`` beside it, and returns the metrics with the report
sections. Each section is ``(id, title, html)`` — the shape ``report.html`` pages are made of — and
self-contained (pictures are base64 PNGs):

* detection: COCO summary, per-class AP table, precision–recall curves at IoU 0.5, sample
  predictions with predicted (red) and true (green) boxes, the worst images (most missed objects
  plus false positives at IoU 0.5, score >= 0.25);
* segmentation: mIoU / pixel accuracy / Dice, per-class IoU and Dice table, the normalised
  confusion matrix, sample mask overlays (truth | prediction), the worst images by per-image mIoU.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.data import load_dataset
from cnnlab.data.dense import DenseDataset, DenseLoader
from cnnlab.deploy.dense_predict import draw_boxes, overlay_mask
from cnnlab.errors import DataError, RunError
from cnnlab.run import MODEL_FILE, load_model_from_run
from cnnlab.run.load import data_classes
from cnnlab.runtime import resolve_device
from cnnlab.tasks.base import get_task
from cnnlab.tasks.detection import Detection, DetectionMetrics, ImageRecord
from cnnlab.tasks.segmentation import Segmentation, SegmentationMetrics, seg_logits

Section = tuple[str, str, str]
PR_FILE, CONFUSION_FILE = "pr_curves.png", "seg_confusion.png"
SHOW_SCORE = 0.25


def _e(v: Any) -> str:
    return html.escape(str(v))


def _png(arr: np.ndarray, alt: str) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fig(fig: Any, alt: str, save_to: Path | None = None) -> str:
    """The figure as an embedded ``<img>`` (and as a PNG file at ``save_to``), then closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    if save_to is not None:
        save_to.write_bytes(buf.getvalue())
    import matplotlib.pyplot as plt  # only for closing; imported by the caller already

    plt.close(fig)
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if (np.isnan(v) or v < 0) else f"{v:.4f}"
        return _e(v)

    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------------------- detection


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes ``a`` (M, 4) and ``b`` (K, 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


def image_errors(r: ImageRecord, score: float = SHOW_SCORE, iou: float = 0.5) -> tuple[int, int]:
    """(missed objects, false positives) of one image: greedy same-class matching at ``iou``."""
    keep = r.scores >= score
    boxes, labels = r.boxes[keep], r.labels[keep]
    matched = np.zeros(len(r.gt_boxes), bool)
    fp = 0
    ious = box_iou_np(boxes, r.gt_boxes)
    for i in np.argsort(-r.scores[keep]):
        cand = [j for j in range(len(r.gt_boxes)) if not matched[j] and r.gt_labels[j] == labels[i]]
        best = max(cand, key=lambda j: ious[i, j], default=None)
        if best is not None and ious[i, best] >= iou:
            matched[best] = True
        else:
            fp += 1
    return int((~matched).sum()), fp


def _det_picture(ds: DenseDataset, r: ImageRecord, classes: list[str]) -> np.ndarray:
    img = ds.images[r.image_id - 1].numpy()
    gt = draw_boxes(img, r.gt_boxes.tolist(), ["" for _ in r.gt_boxes], (64, 200, 64), scale=2)
    keep = r.scores >= SHOW_SCORE
    labels = [f"{classes[int(k)]} {s:.2f}" for k, s in zip(r.labels[keep], r.scores[keep])]
    from PIL import Image, ImageDraw

    im = Image.fromarray(gt)
    d = ImageDraw.Draw(im)
    for b, text in zip(r.boxes[keep].tolist(), labels):
        x1, y1, x2, y2 = (v * 2 for v in b)
        d.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=(255, 64, 64))
        d.text((x1 + 2, y1 + 1), text, fill=(255, 64, 64))
    return np.asarray(im)


def detection_sections(
    metrics: DetectionMetrics,
    records: list[ImageRecord],
    dataset: DenseDataset,
    classes: list[str],
    samples: int = 8,
    pictures: Path | None = None,
) -> list[Section]:
    """The report sections of a detection evaluation (see the module docstring); with
    ``pictures``, the precision-recall curves are also written there as ``pr_curves.png``."""
    s = metrics.stats
    summary = _table(
        ["metric", "value"],
        [
            ("AP@[.5:.95]", s["map"]), ("AP50", s["map50"]), ("AP75", s["map75"]),
            ("AP small", s["map_small"]), ("AP medium", s["map_medium"]),
            ("AP large", s["map_large"]), ("AR@100", s["ar100"]),
        ],
    ) + '<p class="note">pycocotools COCOeval; – = no object of that size in the test set.</p>'  # fmt: skip
    per_class = _table(
        ["class", "AP@[.5:.95]", "AP50"],
        [(c, metrics.per_class_ap[c], metrics.per_class_ap50[c]) for c in classes],
    )
    sections: list[Section] = [
        ("det-summary", "Detection: COCO metrics", summary),
        ("det-per-class", "Per-class AP", per_class),
    ]
    try:
        import matplotlib  # plots are optional: the tables above never need it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for c in classes:
            ax.plot(metrics.recall, metrics.precision50[c], label=c, lw=1)
        ax.set(
            xlabel="recall",
            ylabel="precision",
            title="Precision-recall at IoU 0.5",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        ax.legend(fontsize=7, ncol=2)
        sections.append(
            (
                "det-pr",
                "Precision-recall curves",
                _fig(fig, "PR curves", pictures and pictures / PR_FILE),
            )
        )
    except ImportError:
        pass
    by_id = sorted(records, key=lambda r: r.image_id)
    pics = "".join(
        _png(_det_picture(dataset, r, classes), f"image {r.image_id}") for r in by_id[:samples]
    )
    sections.append(
        ("det-samples", "Sample predictions", pics + '<p class="note">green: truth, red: predictions with score >= 0.25</p>')
    )  # fmt: skip
    errs = sorted(((sum(image_errors(r)), r) for r in records), key=lambda t: -t[0])
    worst = [(n, r) for n, r in errs if n > 0][:samples]
    rows = []
    for _n, r in worst:
        missed, fp = image_errors(r)
        rows.append(
            (dataset.paths[r.image_id - 1] if dataset.paths else f"#{r.image_id}", missed, fp)
        )
    body = _table(["image", "missed", "false positives"], rows) + "".join(
        _png(_det_picture(dataset, r, classes), f"image {r.image_id}") for _, r in worst
    )
    sections.append(
        (
            "det-worst",
            "Worst images",
            body if worst else "<p>No missed object and no false positive.</p>",
        )
    )
    return sections


# ------------------------------------------------------------------------------------ segmentation


def segmentation_sections(
    metrics: SegmentationMetrics,
    classes: list[str],
    dataset: DenseDataset | None = None,
    predictions: np.ndarray | None = None,
    samples: int = 6,
    pictures: Path | None = None,
) -> list[Section]:
    """The report sections of a segmentation evaluation; ``predictions`` (N, H, W) for pictures;
    with ``pictures``, the normalised confusion matrix is also written there as
    ``seg_confusion.png``."""
    m = metrics
    summary = _table(
        ["metric", "value"], [("mIoU", m.miou), ("pixel accuracy", m.pixel_acc), ("mean Dice", m.mean_dice)]
    )  # fmt: skip
    per_class = _table(
        ["class", "IoU", "Dice", "pixels"],
        [(c, float(m.iou[k]), float(m.dice[k]), int(m.confusion[k].sum())) for k, c in enumerate(classes)],
    )  # fmt: skip
    sections: list[Section] = [
        ("seg-summary", "Segmentation metrics", summary),
        ("seg-per-class", "Per-class IoU", per_class),
    ]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cm = m.confusion.double()
        norm = (cm / cm.sum(1, keepdim=True).clamp_min(1)).numpy()
        fig, ax = plt.subplots(figsize=(1.5 + 0.45 * len(classes), 1 + 0.45 * len(classes)))
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set(xlabel="predicted", ylabel="true", title="Confusion (rows sum to 1)")
        sections.append(
            (
                "seg-confusion",
                "Confusion matrix",
                _fig(fig, "confusion matrix", pictures and pictures / CONFUSION_FILE),
            )
        )
    except ImportError:
        pass
    if dataset is not None and predictions is not None and dataset.masks is not None:
        truth = dataset.masks.numpy()
        scores = [per_image_miou(truth[i], predictions[i]) for i in range(len(predictions))]

        def pic(i: int) -> str:
            img = dataset.images[i].numpy()
            both = np.concatenate(
                [overlay_mask(img, truth[i]), overlay_mask(img, predictions[i])], 1
            )
            return _png(np.kron(both, np.ones((2, 2, 1), np.uint8)), f"image {i}")

        note = '<p class="note">left: truth, right: prediction</p>'
        sections.append(
            (
                "seg-samples",
                "Sample masks",
                "".join(pic(i) for i in range(min(samples, len(predictions)))) + note,
            )
        )
        worst = np.argsort(scores)[:samples]
        rows = [(dataset.paths[i] if dataset.paths else f"#{i + 1}", scores[i]) for i in worst]
        sections.append(("seg-worst", "Worst images", _table(["image", "mIoU"], rows) + "".join(pic(int(i)) for i in worst) + note))  # fmt: skip
    return sections


def per_image_miou(truth: np.ndarray, pred: np.ndarray, ignore: int = 255) -> float:
    """Mean IoU over the classes present in one image's truth or prediction."""
    valid = truth != ignore
    t, p = truth[valid], pred[valid]
    ious = []
    for c in np.union1d(np.unique(t), np.unique(p)):
        inter = np.sum((t == c) & (p == c))
        union = np.sum((t == c) | (p == c))
        ious.append(inter / union)
    return float(np.mean(ious)) if ious else 1.0


# ---------------------------------------------------------------------------------- a run directory


@dataclass
class DenseEvaluation:
    """What :func:`evaluate_dense_run` found: the task, metrics (``test_*``), per-class scores
    (``{class: {"ap": …, "ap50": …}}`` or ``{class: {"iou": …, "dice": …, "pixels": …}}``), the
    task's full metrics object, report sections and the files written."""

    task: str
    metrics: dict[str, float]
    sections: list[Section]
    files: list[Path]
    classes: list[str] = field(default_factory=list)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    details: DetectionMetrics | SegmentationMetrics | None = None
    num_images: int = 0

    def summary(self) -> dict[str, Any]:
        """Plain data for ``eval.json``: task, images, metrics and per-class scores."""
        out: dict[str, Any] = {
            "task": self.task,
            "samples": self.num_images,
            "metrics": self.metrics,
            "per_class": self.per_class,
        }
        if isinstance(self.details, DetectionMetrics):
            out["coco_stats"] = self.details.stats
        return out


def _run_dataset(
    cfg: dict[str, Any], data: str | None = None, data_dir: str | None = None
) -> DenseDataset:
    tc = cfg.get("train_config", {})
    d = tc.get("data", {})
    name = data or d.get("name") or cfg.get("dataset", {}).get("name")
    if not name:
        raise DataError("the run does not record its data source; pass --data")
    if data_dir is None and (data is None or data == d.get("name")):
        data_dir = d.get("data_dir")
    splits = load_dataset(
        name,
        data_dir=data_dir,
        image_size=d.get("image_size") or cfg["input_size"][1],
        val_fraction=d.get("val_fraction", 0.2),
        seed=tc.get("seed", 0),
    )
    test = splits.test
    if not isinstance(test, DenseDataset):
        raise DataError(
            f"'{name}' is a classification dataset; a {cfg.get('task')} run is evaluated on "
            "detection/segmentation data (digits-scenes, fashion-scenes, coco, yolo, masks)"
        )
    want = data_classes(cfg)
    if list(test.classes) != want:
        missing = sorted(set(want) - set(test.classes))
        extra = sorted(set(test.classes) - set(want))
        raise DataError(
            f"the data's classes differ from the run's: missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}"
            + ("" if missing or extra else " (same names, different order)")
        )
    if test.image_shape[0] != cfg["input_size"][0]:
        raise DataError(
            f"the data has {test.image_shape[0]} channel(s) but the run's model expects "
            f"{cfg['input_size'][0]}"
        )
    if tuple(test.image_shape) != tuple(cfg["input_size"]):
        test = test.resized(int(cfg["input_size"][1]))
    return test


@torch.no_grad()
def _predict_masks(model: nn.Module, loader: DenseLoader) -> np.ndarray:
    out = []
    for x, _t in loader:
        out.append(seg_logits(model(x), tuple(x.shape[-2:])).argmax(1).to(torch.uint8).cpu())
    return torch.cat(out).numpy()


def _rounded(v: float) -> float:
    return round(float(v), 6) if np.isfinite(v) else float("nan")


def evaluate_dense_run(
    run_dir: str | Path,
    *,
    device: str = "cpu",
    batch_size: int = 64,
    dataset: DenseDataset | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    write: bool = True,
    weights: str = MODEL_FILE,
    samples: int | None = None,
) -> DenseEvaluation:
    """Score a detection or segmentation run on its test split; see the module docstring.

    ``data``/``data_dir`` evaluate on another dense source with the same classes (resized to the
    model's input); ``write`` puts ``eval.json`` and the task's files in the run directory;
    ``weights`` is the weights file inside the run (a checkpoint's, for the best epoch).

    Example::

        ev = evaluate_dense_run("runs/yolo_tiny-digits-scenes")
        ev.metrics["test_map"], ev.per_class["3"]["ap50"]
    """
    run_dir = Path(run_dir)
    model, cfg = load_model_from_run(run_dir, weights)
    task_name = cfg.get("task")
    if task_name not in ("detection", "segmentation"):
        raise RunError(f"{run_dir} is a {task_name} run, not a detection/segmentation one")
    test = dataset if dataset is not None else _run_dataset(cfg, data, data_dir)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    task = get_task(task_name)
    task.setup(test, dev)
    loader = task.make_loader(test, batch_size, mean=cfg["mean"], std=cfg["std"], device=dev)
    metrics = task.evaluate(model, loader)
    files: list[Path] = []
    details: DetectionMetrics | SegmentationMetrics
    n = len(test) if samples is None else samples
    if isinstance(task, Detection):
        assert task.last_metrics is not None
        details = task.last_metrics
        classes = list(test.classes)
        pictures = run_dir if write else None
        sections = detection_sections(
            details, task.last_records, test, classes, min(n, 8), pictures
        )
        per_class = {
            c: {
                "ap": _rounded(details.per_class_ap[c]),
                "ap50": _rounded(details.per_class_ap50[c]),
            }
            for c in classes
        }
        if write:
            files = task.write_artifacts(run_dir)
    else:
        assert isinstance(task, Segmentation) and task.last_metrics is not None
        details = task.last_metrics
        preds = _predict_masks(model, loader)
        classes = Segmentation.class_names(test)
        pictures = run_dir if write else None
        sections = segmentation_sections(details, classes, test, preds, min(n, 6), pictures)
        per_class = {
            c: {
                "iou": _rounded(details.iou[k]),
                "dice": _rounded(details.dice[k]),
                "pixels": int(details.confusion[k].sum()),
            }
            for k, c in enumerate(classes)
        }
        if write:
            path = run_dir / "seg_confusion.csv"
            cm = details.confusion.tolist()
            path.write_text(
                "true\\pred," + ",".join(classes) + "\n"
                + "".join(f"{c}," + ",".join(map(str, row)) + "\n" for c, row in zip(classes, cm))
            )  # fmt: skip
            files = [path]
    ev = DenseEvaluation(
        task_name, metrics, sections, files, classes, per_class, details, len(test)
    )
    if write:
        png = run_dir / (PR_FILE if task_name == "detection" else CONFUSION_FILE)
        files += [png] if png.exists() else []
        path = run_dir / "eval.json"
        path.write_text(json.dumps(_json_safe(ev.summary()), indent=1))
        files.append(path)
    return ev


def _json_safe(v: Any) -> Any:
    """NaN (a class that never occurs) as ``null``: strict JSON has no NaN."""
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v
