"""``yolo_tiny``: a YOLO-style single-stage detector, with box decoding, NMS and a training loss.

The backbone (3x3 conv-BN-LeakyReLU layers and five 2x2 max-pools, like YOLOv2-tiny) turns an
image into a grid with one cell per ``stride`` (32) pixels. A 1x1 convolution predicts, for each
cell and each of ``A`` anchor boxes, ``5 + C`` numbers: ``tx, ty, tw, th, objectness`` and ``C``
class logits. :meth:`YoloTiny.forward` returns these raw predictions as ``(N, A, H, W, 5 + C)``.

Decoding (YOLOv2/v3): centre ``((sigmoid(tx) + col) * stride, (sigmoid(ty) + row) * stride)``,
size ``(anchor_w * exp(tw), anchor_h * exp(th))`` in input pixels; score = ``sigmoid(obj) *
sigmoid(class logit)``. :func:`non_max_suppression` removes same-class duplicates.

:func:`yolo_loss` assigns each ground-truth box to the cell holding its centre and the anchor whose
shape fits it best (IoU of widths/heights), then adds a GIoU box loss, objectness BCE (predictions
that already overlap a ground truth by more than ``ignore_thresh`` are not punished as background)
and a per-class BCE.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.errors import DataError
from cnnlab.layers.conv_bn_act import ConvBNAct
from cnnlab.models._base import ClassifierMixin, DefaultCfg
from cnnlab.models._registry import register_model

# Anchor (width, height) in input pixels for the stride-32 grid at 416 px: small, medium, large.
DEFAULT_ANCHORS: tuple[tuple[float, float], ...] = ((24.0, 32.0), (72.0, 84.0), (192.0, 180.0))
DEFAULT_STRIDE = 32


def _leaky() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


def _grid_boxes(
    preds: torch.Tensor, anchors: torch.Tensor, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode raw ``(N, A, H, W, 5+C)`` predictions to xyxy pixel boxes ``(N, A, H, W, 4)``.

    Also returns the (cx, cy, w, h) form. ``tw``/``th`` are clamped so a wild logit cannot overflow.
    """
    _, _, h, w, _ = preds.shape
    ys = torch.arange(h, device=preds.device, dtype=preds.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, device=preds.device, dtype=preds.dtype).view(1, 1, 1, w)
    cx = (preds[..., 0].sigmoid() + xs) * stride
    cy = (preds[..., 1].sigmoid() + ys) * stride
    aw = anchors[:, 0].view(1, -1, 1, 1)
    ah = anchors[:, 1].view(1, -1, 1, 1)
    bw = aw * preds[..., 2].clamp(max=8.0).exp()
    bh = ah * preds[..., 3].clamp(max=8.0).exp()
    xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)
    return xyxy, torch.stack([cx, cy, bw, bh], dim=-1)


def _anchor_tensor(
    anchors: Sequence[Sequence[float]] | torch.Tensor, like: torch.Tensor
) -> torch.Tensor:
    return torch.as_tensor(anchors, dtype=like.dtype, device=like.device).reshape(-1, 2)


def non_max_suppression(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    iou_thresh: float = 0.45,
    max_det: int = 300,
) -> torch.Tensor:
    """Indices of the boxes to keep, best score first.

    A box is dropped when a higher-scoring box *of the same class* overlaps it with IoU above
    ``iou_thresh``; boxes of different classes never suppress each other.
    """
    from torchvision.ops import batched_nms  # lazy: keeps `import cnnlab` fast

    keep = batched_nms(boxes.float(), scores.float(), labels, iou_thresh)
    return keep[:max_det]


def decode_predictions(
    preds: torch.Tensor,
    anchors: Sequence[Sequence[float]] | torch.Tensor = DEFAULT_ANCHORS,
    stride: int = DEFAULT_STRIDE,
    conf_thresh: float = 0.25,
    iou_thresh: float = 0.45,
    max_det: int = 300,
    image_size: tuple[int, int] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Turn raw predictions into detections, one dict per image.

    Each dict holds ``boxes`` (K, 4) xyxy in input pixels, ``scores`` (K,) and ``labels`` (K,),
    sorted by score, after dropping scores below ``conf_thresh`` and running NMS. ``image_size``
    (H, W) clips boxes to the image.
    """
    if preds.dim() != 5:
        raise DataError(
            f"expected raw predictions of shape (N, A, H, W, 5 + C); got {tuple(preds.shape)}"
        )
    preds = preds.detach()  # decoding is for inference; no gradient flows through NMS
    anchors_t = _anchor_tensor(anchors, preds)
    boxes, _ = _grid_boxes(preds, anchors_t, stride)
    obj = preds[..., 4].sigmoid()
    if preds.shape[-1] > 5:
        cls_prob, labels = preds[..., 5:].sigmoid().max(dim=-1)
    else:  # class-agnostic detector: objectness is the score
        cls_prob, labels = torch.ones_like(obj), torch.zeros_like(obj, dtype=torch.long)
    scores = obj * cls_prob
    n = preds.shape[0]
    boxes, scores, labels = boxes.reshape(n, -1, 4), scores.reshape(n, -1), labels.reshape(n, -1)
    out = []
    for b in range(n):
        sel = scores[b] > conf_thresh
        bx, sc, lb = boxes[b][sel], scores[b][sel], labels[b][sel]
        if image_size is not None:
            bx = torch.stack(
                [
                    bx[:, 0].clamp(0, image_size[1]),
                    bx[:, 1].clamp(0, image_size[0]),
                    bx[:, 2].clamp(0, image_size[1]),
                    bx[:, 3].clamp(0, image_size[0]),
                ],
                dim=-1,
            )
        keep = non_max_suppression(bx, sc, lb, iou_thresh, max_det)
        out.append({"boxes": bx[keep], "scores": sc[keep], "labels": lb[keep]})
    return out


# Long by design: the YOLO loss is one derivation (assign targets to anchors, then box,
# objectness and class terms); split up, the tensor shapes between the steps would be lost.
def yolo_loss(
    preds: torch.Tensor,
    targets: Sequence[torch.Tensor],
    *,
    anchors: Sequence[Sequence[float]] | torch.Tensor = DEFAULT_ANCHORS,
    stride: int = DEFAULT_STRIDE,
    ignore_thresh: float = 0.5,
    box_weight: float = 5.0,
    obj_weight: float = 1.0,
    noobj_weight: float = 1.0,
    cls_weight: float = 1.0,
    return_parts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]:
    """YOLO training loss for raw predictions ``(N, A, H, W, 5 + C)``.

    ``targets`` holds one tensor per image of shape ``(K, 5)``: ``class, x1, y1, x2, y2`` in input
    pixels (``K`` may be 0). Returns the scalar loss (and the parts as floats when ``return_parts``):
    ``box_weight * mean(1 - GIoU)`` over assigned predictions, objectness BCE averaged separately over
    positives and negatives, and per-class BCE over positives.
    """
    from torchvision.ops import (  # lazy: keeps `import cnnlab` fast
        box_iou,
        generalized_box_iou_loss,
    )

    n, a, gh, gw, d = preds.shape
    num_classes = d - 5
    if len(targets) != n:
        raise DataError(f"yolo_loss got {len(targets)} target tensors for a batch of {n} images")
    anchors_t = _anchor_tensor(anchors, preds)
    if anchors_t.shape[0] != a:
        raise DataError(
            f"predictions have {a} anchors but {anchors_t.shape[0]} anchor sizes were given"
        )
    pred_boxes, _ = _grid_boxes(preds, anchors_t, stride)

    pos = torch.zeros(n, a, gh, gw, dtype=torch.bool, device=preds.device)
    ignore = torch.zeros_like(pos)
    tbox = torch.zeros(n, a, gh, gw, 4, dtype=preds.dtype, device=preds.device)
    tcls = torch.zeros(n, a, gh, gw, max(num_classes, 1), dtype=preds.dtype, device=preds.device)
    for b, t in enumerate(targets):
        t = torch.as_tensor(t, dtype=preds.dtype, device=preds.device)
        if t.numel() == 0:
            continue
        if t.dim() != 2 or t.shape[1] != 5:
            raise DataError(
                f"targets[{b}] must have shape (K, 5) = class, x1, y1, x2, y2; got {tuple(t.shape)}"
            )
        labels = t[:, 0].long()
        if num_classes and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(
                f"targets[{b}] has class ids outside 0..{num_classes - 1}: {labels.unique().tolist()}"
            )
        gt = t[:, 1:]
        # Predictions already overlapping some ground truth well are not pushed towards background.
        with torch.no_grad():
            best = box_iou(pred_boxes[b].reshape(-1, 4), gt).max(dim=1).values
            ignore[b] = (best > ignore_thresh).view(a, gh, gw)
        cx, cy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
        bw, bh = (gt[:, 2] - gt[:, 0]).clamp(min=1e-6), (gt[:, 3] - gt[:, 1]).clamp(min=1e-6)
        # Shape-only IoU between each box and each anchor (both centred at the origin).
        inter = torch.min(bw[:, None], anchors_t[None, :, 0]) * torch.min(
            bh[:, None], anchors_t[None, :, 1]
        )
        union = (bw * bh)[:, None] + (anchors_t[:, 0] * anchors_t[:, 1])[None] - inter
        best_anchor = (inter / union).argmax(dim=1)
        gi = (cx / stride).long().clamp(0, gw - 1)
        gj = (cy / stride).long().clamp(0, gh - 1)
        pos[b, best_anchor, gj, gi] = True
        tbox[b, best_anchor, gj, gi] = gt
        if num_classes:
            tcls[b, best_anchor, gj, gi] = F.one_hot(labels, num_classes).to(preds.dtype)

    obj_logits = preds[..., 4]
    neg = ~pos & ~ignore
    zero = preds.sum() * 0.0  # keeps the graph connected when a batch has no boxes
    num_pos = int(pos.sum())
    if num_pos:
        box = generalized_box_iou_loss(pred_boxes[pos], tbox[pos], reduction="mean")
        obj_pos = F.binary_cross_entropy_with_logits(
            obj_logits[pos], torch.ones_like(obj_logits[pos])
        )
        cls = (
            F.binary_cross_entropy_with_logits(preds[..., 5:][pos], tcls[pos][:, :num_classes])
            if num_classes
            else zero
        )
    else:
        box = obj_pos = cls = zero
    obj_neg = (
        F.binary_cross_entropy_with_logits(obj_logits[neg], torch.zeros_like(obj_logits[neg]))
        if bool(neg.any())
        else zero
    )
    loss = box_weight * box + obj_weight * obj_pos + noobj_weight * obj_neg + cls_weight * cls
    if return_parts:
        parts = {
            "box": float(box.detach()),
            "obj": float(obj_pos.detach()),
            "noobj": float(obj_neg.detach()),
            "cls": float(cls.detach()),
            "num_pos": float(num_pos),
        }
        return loss, parts
    return loss


class YoloTiny(ClassifierMixin, nn.Module):
    """YOLOv2-tiny-shaped detector: 6 conv stages, 5 max-pools (stride 32), 1x1 prediction head.

    ``width`` (16) is the first stage's channel count; each stage doubles it up to ``32 * width``.
    ``anchors`` are (w, h) pairs in input pixels; ``num_classes`` is C. ``stride`` (32, or 16 or 8)
    is the grid cell in pixels: a smaller stride drops the last max-pools, so small images (a
    128 px canvas is a 4x4 grid at stride 32) get a grid fine enough to separate nearby objects,
    for more compute in the later stages.
    """

    task = "detection"
    classifier_name = "head"

    def __init__(
        self,
        num_classes: int = 20,
        in_chans: int = 3,
        width: int = 16,
        anchors: Sequence[Sequence[float]] = DEFAULT_ANCHORS,
        stride: int = DEFAULT_STRIDE,
    ) -> None:
        super().__init__()
        if stride not in (8, 16, 32):
            raise ValueError(f"yolo_tiny stride must be 8, 16 or 32, got {stride!r}")
        self.in_chans, self.num_classes = in_chans, num_classes
        self.anchors = tuple((float(w), float(h)) for w, h in anchors)
        self.num_anchors = len(self.anchors)
        self.stride = int(stride)
        pools = self.stride.bit_length() - 1  # 32 -> 5 max-pools, 16 -> 4, 8 -> 3
        self.default_cfg = DefaultCfg(
            input_size=(3, 416, 416),
            min_size=self.stride,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
        ).for_chans(in_chans)
        chans = [width * 2**i for i in range(6)]  # 16, 32, 64, 128, 256, 512
        layers: list[nn.Module] = []
        cin = in_chans
        for i, c in enumerate(chans):
            layers.append(ConvBNAct(cin, c, 3, act_layer=_leaky))
            if i < pools:
                layers.append(nn.MaxPool2d(2, 2))
            cin = c
        layers.append(ConvBNAct(cin, 2 * cin, 3, act_layer=_leaky))
        self.backbone = nn.Sequential(*layers)
        self.neck = ConvBNAct(2 * cin, cin, 3, act_layer=_leaky)
        self.num_features = cin
        self.head = nn.Conv2d(cin, self.num_anchors * (5 + num_classes), 1)
        self._init_head()

    def _init_head(self) -> None:
        # Start with low objectness (~1 %) so the many background cells do not swamp early training.
        nn.init.normal_(self.head.weight, std=0.01)
        bias = self.head.bias.detach().view(self.num_anchors, -1)
        bias.zero_()
        bias[:, 4] = -4.6

    def reset_classifier(self, num_classes: int) -> None:
        """Rebuild the prediction head for ``num_classes`` classes (anchors unchanged)."""
        old = self.head
        self.head = nn.Conv2d(self.num_features, self.num_anchors * (5 + num_classes), 1).to(
            old.weight.device, old.weight.dtype
        )
        self.num_classes = num_classes
        self._init_head()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return x
        p = self.head(x)
        n, _, h, w = p.shape
        return p.view(n, self.num_anchors, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw predictions ``(N, A, H/stride, W/stride, 5 + C)``; see :meth:`decode`, :meth:`loss`."""
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def decode(
        self,
        preds: torch.Tensor,
        conf_thresh: float = 0.25,
        iou_thresh: float = 0.45,
        max_det: int = 300,
        image_size: tuple[int, int] | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image: ``boxes`` (xyxy, input pixels), ``scores``, ``labels``."""
        return decode_predictions(
            preds, self.anchors, self.stride, conf_thresh, iou_thresh, max_det, image_size
        )

    def loss(self, preds: torch.Tensor, targets: Sequence[torch.Tensor], **kwargs) -> torch.Tensor:
        """:func:`yolo_loss` with this model's anchors and stride."""
        return yolo_loss(preds, targets, anchors=self.anchors, stride=self.stride, **kwargs)


@register_model
def yolo_tiny(*, num_classes: int = 20, in_chans: int = 3, **kwargs) -> YoloTiny:
    """A YOLOv2-tiny-style detector (3 anchors); options ``width`` (16), ``stride`` (32) and ``anchors``."""
    return YoloTiny(num_classes=num_classes, in_chans=in_chans, **kwargs)
