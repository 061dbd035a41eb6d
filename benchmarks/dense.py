"""Detection and segmentation at equal training time: cnnlab's models vs torchvision's.

Every model trains on ``fashion-scenes`` for the same wall-clock budget (evaluation time excluded)
from scratch (torchvision: ``weights=None, weights_backbone=None`` and its own losses), and every
detector is scored by the same pycocotools evaluation (:func:`cnnlab.tasks.detection.coco_evaluate`),
every segmenter by the same confusion matrix (:func:`cnnlab.tasks.segmentation.segmentation_metrics`).
The metric is recorded at a few points of the budget, so the curves (metric vs seconds) come out too.
Finally batch-1 latency: cnnlab's best model exported to ONNX (onnxruntime) vs the torchvision
model's eager forward.

    python benchmarks/dense.py --budget 300            # the issue's 5 minutes per model
    python benchmarks/dense.py --budget 60 --eval-images 200 --out dense.json   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data import load_dataset
from cnnlab.data.dense import DenseDataset, DenseLoader
from cnnlab.data.dense_augment import build_dense_transform
from cnnlab.layers.memory_format import prefers_channels_last, prepare_model
from cnnlab.models import get_model
from cnnlab.tasks.detection import (
    Detection,
    ImageRecord,
    coco_evaluate,
    coco_ground_truth,
    coco_results,
    detect_batch,
)
from cnnlab.tasks.segmentation import confusion_matrix, seg_logits, segmentation_metrics

NUM_CLASSES = 10


# -------------------------------------------------------------------------------------- adapters


class Runner:
    """One model: how to train a batch and how to predict, on uint8 (N, 1, H, W) scenes."""

    name: str
    model: torch.nn.Module

    def train_step(self, x: torch.Tensor, t: Any) -> float:
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> Any:
        raise NotImplementedError


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255).sub(0.2).div(0.3)


def _as_model_wants(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """cnnlab's models run in the memory format ``cnnlab train`` gives them (channels-last where
    ``default_cfg`` says it was measured faster); torchvision's as torchvision builds them."""
    if prefers_channels_last(model):
        return x.contiguous(memory_format=torch.channels_last)
    return x


class CnnlabDetector(Runner):
    def __init__(self, name: str, train: DenseDataset, **kw: Any):
        from cnnlab.train.config import TrainConfig

        task = Detection(TrainConfig(model=name))
        self.name, self.task = f"cnnlab {name}", task
        self.model = prepare_model(get_model(name, **task.model_kwargs(train), **kw))
        self.opt = torch.optim.AdamW(self.model.parameters(), 2e-3, weight_decay=1e-4)

    def _in(self, x):
        return _as_model_wants(self.model, _norm(x))

    def train_step(self, x, t):
        self.model.train()
        loss = self.task.loss(self.model(self._in(x)), t, self.model)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def predict(self, x):
        self.model.eval()
        dets = detect_batch(self.model, self.model(self._in(x)), tuple(x.shape[-2:]))
        return [(d["boxes"], d["scores"], d["labels"]) for d in dets]


class TorchvisionDetector(Runner):
    def __init__(self, name: str):
        import torchvision

        builder = getattr(torchvision.models.detection, name)
        self.name = f"torchvision {name}"
        self.model = builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, 1e-3, weight_decay=1e-4)

    @staticmethod
    def _images(x):
        return list(x.float().div(255).expand(-1, 3, -1, -1))

    def train_step(self, x, t):
        self.model.train()
        targets = [
            {"boxes": b, "labels": lb + 1} for b, lb in zip(t.boxes, t.labels)
        ]  # torchvision: 0 is the background
        losses = self.model(self._images(x), targets)
        loss = sum(losses.values())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def predict(self, x):
        self.model.eval()
        out = self.model(self._images(x))
        return [(o["boxes"], o["scores"], o["labels"] - 1) for o in out]


class CnnlabSegmenter(Runner):
    def __init__(self, name: str, **kw: Any):
        self.name = f"cnnlab {name}"
        self.model = prepare_model(get_model(name, num_classes=NUM_CLASSES + 1, in_chans=1, **kw))
        self.opt = torch.optim.AdamW(self.model.parameters(), 2e-3, weight_decay=1e-4)

    def logits(self, x):
        return seg_logits(self.model(_as_model_wants(self.model, _norm(x))), tuple(x.shape[-2:]))

    def train_step(self, x, t):
        self.model.train()
        loss = F.cross_entropy(self.logits(x), t.masks, ignore_index=255)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def predict(self, x):
        self.model.eval()
        return self.logits(x).argmax(1)


class TorchvisionSegmenter(CnnlabSegmenter):
    def __init__(self, name: str):
        import torchvision

        builder = getattr(torchvision.models.segmentation, name)
        self.name = f"torchvision {name}"
        self.model = builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1)
        self.opt = torch.optim.AdamW(self.model.parameters(), 1e-3, weight_decay=1e-4)

    def logits(self, x):
        out = self.model(x.float().div(255).sub(0.2).div(0.3).expand(-1, 3, -1, -1))["out"]
        return seg_logits(out, tuple(x.shape[-2:]))


# ------------------------------------------------------------------------------------- evaluation


def score_detector(r: Runner, test: DenseDataset, classes: list[str]) -> float:
    recs = []
    loader = DenseLoader(test, 32, mean=(0.0,), std=(1.0 / 255,))  # raw 0..255 floats
    for x, t in loader:
        for i, (b, s, lb) in enumerate(r.predict(x.round().to(torch.uint8))):
            recs.append(
                ImageRecord(
                    int(t.index[i]) + 1, x.shape[-2], x.shape[-1],
                    t.boxes[i].numpy(), t.labels[i].numpy(),
                    b.numpy(), s.numpy(), lb.numpy(),
                )
            )  # fmt: skip
    m = coco_evaluate(coco_ground_truth(recs, classes), coco_results(recs), classes)
    return m.stats["map"]


def score_segmenter(r: Runner, test: DenseDataset) -> float:
    cm = torch.zeros(NUM_CLASSES + 1, NUM_CLASSES + 1, dtype=torch.int64)
    loader = DenseLoader(test, 32, mean=(0.0,), std=(1.0 / 255,))
    for x, t in loader:
        cm += confusion_matrix(r.predict(x.round().to(torch.uint8)), t.masks, NUM_CLASSES + 1)
    return segmentation_metrics(cm).miou


def train_for(
    r: Runner,
    train: DenseDataset,
    budget: float,
    score: Callable[[], float],
    points: int,
    bs: int,
    schedule: str = "poly",
) -> list[tuple[float, float]]:
    """Train ``r`` for ``budget`` seconds of training time, scoring at ``points`` even steps.

    ``schedule="poly"`` decays every model's learning rate by ``(1 - spent / budget) ** 0.9``
    over the training seconds (torchvision's segmentation reference recipe decays the same way
    over its iterations), so each model ends the budget annealed rather than mid-step.
    """
    base = [g["lr"] for g in r.opt.param_groups]
    tf = build_dense_transform("flip,scale:0.8:1.2", seed=0)
    loader = DenseLoader(train, bs, mean=(0.0,), std=(1.0 / 255,), shuffle=True, drop_last=True)
    curve, spent, epoch = [], 0.0, 0
    marks = [budget * (i + 1) / points for i in range(points)]
    while marks:
        loader.set_epoch(epoch)
        tf.set_epoch(epoch)
        for x, t in loader:
            t0 = time.perf_counter()
            if schedule == "poly":
                factor = max(0.0, 1.0 - spent / budget) ** 0.9
                for g, lr in zip(r.opt.param_groups, base):
                    g["lr"] = lr * factor
            xb, tb = tf(x.round().to(torch.uint8), t)
            r.train_step(xb.round().clamp(0, 255).to(torch.uint8), tb)
            spent += time.perf_counter() - t0
            if spent >= marks[0]:
                marks.pop(0)
                value = score()
                curve.append((round(spent, 1), round(value, 4)))
                print(f"  {r.name}: {spent:7.1f}s  {value:.4f}", flush=True)
                if not marks:
                    break
        epoch += 1
    return curve


# ---------------------------------------------------------------------------------------- latency


def latency_ms(fn: Callable[[], Any], reps: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def onnx_latency(model: torch.nn.Module, size: int, path: Path) -> float:
    import onnxruntime as ort

    model.eval()
    x = torch.randn(1, 1, size, size)
    torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    feed = {name: x.numpy()}
    return latency_ms(lambda: sess.run(None, feed))


def eager_latency(model: torch.nn.Module, size: int, det: bool) -> float:
    model.eval()
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        return latency_ms(lambda: model(list(x)) if det else model(x))


# ------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds per model")
    ap.add_argument("--points", type=int, default=4, help="evaluations along the budget")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--eval-images", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["detection", "segmentation"], default=None)
    ap.add_argument(
        "--schedule", choices=["poly", "constant"], default="poly",
        help="learning rate over the budget, the same for every model",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("dense_benchmark.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    splits = load_dataset("fashion-scenes", image_size=args.image_size)
    train = splits.train
    test = splits.test.subset(torch.arange(min(args.eval_images, len(splits.test))))
    classes = list(train.classes)
    result: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "load_avg": os.getloadavg(),
        },
        "budget_s": args.budget,
        "schedule": args.schedule,
        "image_size": args.image_size,
        "train_canvases": len(train),
        "eval_canvases": len(test),
        "detection": {},
        "segmentation": {},
    }
    tasks = [args.only] if args.only else ["detection", "segmentation"]
    if "detection" in tasks:
        runners = [
            CnnlabDetector("yolo_tiny", train, width=8, stride=16),
            TorchvisionDetector("ssdlite320_mobilenet_v3_large"),
            TorchvisionDetector("fasterrcnn_mobilenet_v3_large_320_fpn"),
        ]
        for r in runners:
            print(f"detection: {r.name}", flush=True)
            curve = train_for(
                r, train, args.budget, lambda r=r: score_detector(r, test, classes), args.points, 16,
                args.schedule,
            )  # fmt: skip
            result["detection"][r.name] = {"curve": curve, "map": curve[-1][1]}
        ours = runners[0].model
        onnx = onnx_latency(ours, args.image_size, Path("/tmp/cnnlab_dense_det.onnx"))
        tv = min(eager_latency(r.model, args.image_size, True) for r in runners[1:])
        result["detection"]["latency_ms"] = {
            "cnnlab_onnx": round(onnx, 2),
            "torchvision_eager_best": round(tv, 2),
        }
    if "segmentation" in tasks:
        runners = [
            CnnlabSegmenter("unet", base_channels=16, depth=3),
            CnnlabSegmenter("deeplab_mobilenet_v2"),
            TorchvisionSegmenter("lraspp_mobilenet_v3_large"),
            TorchvisionSegmenter("fcn_resnet50"),
        ]
        for r in runners:
            print(f"segmentation: {r.name}", flush=True)
            curve = train_for(
                r, train, args.budget, lambda r=r: score_segmenter(r, test), args.points, 16,
                args.schedule,
            )  # fmt: skip
            result["segmentation"][r.name] = {"curve": curve, "miou": curve[-1][1]}
        best = max(runners[:2], key=lambda r: result["segmentation"][r.name]["miou"])
        onnx = onnx_latency(best.model, args.image_size, Path("/tmp/cnnlab_dense_seg.onnx"))
        tv = min(eager_latency(r.model, args.image_size, False) for r in runners[2:])
        result["segmentation"]["latency_ms"] = {
            "cnnlab_onnx": round(onnx, 2),
            "torchvision_eager_best": round(tv, 2),
        }
    for task, key in (("detection", "map"), ("segmentation", "miou")):
        rows = {k: v for k, v in result[task].items() if isinstance(v, dict) and key in v}
        if not rows:
            continue
        ours = max(v[key] for k, v in rows.items() if k.startswith("cnnlab"))
        theirs = max(v[key] for k, v in rows.items() if k.startswith("torchvision"))
        result[task]["ratio_best_cnnlab_over_best_torchvision"] = (
            round(ours / theirs, 2) if theirs > 0 else None
        )
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
