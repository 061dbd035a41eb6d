"""yolo_tiny: raw prediction shape, decoding to pixel boxes, NMS, and a loss that trains."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab.errors import DataError, InputShapeError
from cnnlab.models import get_model
from cnnlab.models.yolo import DEFAULT_ANCHORS, decode_predictions, non_max_suppression, yolo_loss


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_forward_shape_is_anchors_by_grid_by_5_plus_c():
    m = get_model("yolo_tiny", num_classes=4, in_chans=1, width=4).eval()
    assert m.task == "detection"
    with torch.no_grad():
        assert m(torch.randn(2, 1, 128, 96)).shape == (2, 3, 4, 3, 9)
        assert m(torch.randn(1, 1, 100, 100)).shape == (1, 3, 3, 3, 9)
    with pytest.raises(InputShapeError):
        m(torch.randn(1, 3, 64, 64))
    m.reset_classifier(2)
    with torch.no_grad():
        assert m(torch.randn(1, 1, 64, 64)).shape == (1, 3, 2, 2, 7)


def test_decode_puts_a_known_box_at_the_right_pixels():
    c = 3
    preds = torch.full((1, 3, 4, 4, 5 + c), -12.0)
    preds[..., :4] = 0.0
    # Anchor 1 at row 2, column 1: centre offset (0.25, 0.75) of the cell, 2x the anchor width.
    cell = preds[0, 1, 2, 1]
    cell[0], cell[1] = _logit(0.25), _logit(0.75)
    cell[2], cell[3] = math.log(2.0), 0.0
    cell[4] = 6.0
    cell[5 + 2] = 6.0
    dets = decode_predictions(preds, DEFAULT_ANCHORS, 32, conf_thresh=0.5)
    assert len(dets) == 1
    d = dets[0]
    assert d["labels"].tolist() == [2]
    aw, ah = DEFAULT_ANCHORS[1]
    cx, cy, w, h = (1 + 0.25) * 32, (2 + 0.75) * 32, 2 * aw, ah
    expected = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
    torch.testing.assert_close(d["boxes"], expected, atol=1e-3, rtol=0)
    assert d["scores"].item() == pytest.approx(
        torch.sigmoid(torch.tensor(6.0)).item() ** 2, rel=1e-5
    )
    clipped = decode_predictions(preds, DEFAULT_ANCHORS, 32, conf_thresh=0.5, image_size=(128, 128))
    assert clipped[0]["boxes"].min() >= 0 and clipped[0]["boxes"].max() <= 128


def test_decode_threshold_and_model_method_agree():
    m = get_model("yolo_tiny", num_classes=2, width=4)
    preds = torch.full((2, 3, 2, 2, 7), -10.0)
    assert [len(d["boxes"]) for d in m.decode(preds)] == [0, 0]
    preds[1, 0, 0, 0, 4] = preds[1, 0, 0, 0, 5] = 10.0
    out = m.decode(preds, conf_thresh=0.9)
    assert [len(d["boxes"]) for d in out] == [0, 1] and out[1]["labels"].item() == 0


def test_nms_suppresses_same_class_duplicates_but_keeps_other_classes():
    boxes = torch.tensor(
        [
            [10.0, 10.0, 50.0, 50.0],  # best, class 0
            [12.0, 12.0, 52.0, 52.0],  # duplicate of it, class 0 -> suppressed
            [11.0, 11.0, 51.0, 51.0],  # same place, class 1 -> kept
            [100.0, 100.0, 140.0, 140.0],  # elsewhere, class 0 -> kept
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 1, 0])
    assert non_max_suppression(boxes, scores, labels, iou_thresh=0.5).tolist() == [0, 2, 3]
    assert non_max_suppression(boxes, scores, labels, iou_thresh=0.5, max_det=2).tolist() == [0, 2]


def test_loss_decreases_on_a_toy_target():
    torch.manual_seed(0)
    m = get_model("yolo_tiny", num_classes=2, width=4)
    x = torch.zeros(2, 3, 96, 96)
    x[0, :, 16:56, 8:40] = 1.0
    x[1, 0, 40:90, 50:90] = 1.0
    targets = [torch.tensor([[0.0, 8, 16, 40, 56]]), torch.tensor([[1.0, 50, 40, 90, 90]])]
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = m.loss(m(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]
    _, parts = m.loss(m(x), targets, return_parts=True)
    assert parts["num_pos"] == 2


def test_loss_handles_empty_images_and_rejects_bad_targets():
    preds = torch.randn(2, 3, 2, 2, 7, requires_grad=True)
    loss = yolo_loss(preds, [torch.zeros(0, 5), torch.zeros(0, 5)])
    loss.backward()
    assert torch.isfinite(preds.grad).all() and loss.item() > 0
    with pytest.raises(DataError, match=r"\(K, 5\)"):
        yolo_loss(preds, [torch.zeros(1, 4), torch.zeros(0, 5)])
    with pytest.raises(DataError, match="class ids"):
        yolo_loss(preds, [torch.tensor([[5.0, 0, 0, 10, 10]]), torch.zeros(0, 5)])
    with pytest.raises(DataError, match="batch of 2"):
        yolo_loss(preds, [torch.zeros(0, 5)])


def test_stride_option_sets_the_grid_and_decode_scale():
    m = get_model("yolo_tiny", num_classes=2, in_chans=1, width=4, stride=16).eval()
    assert m.stride == 16 and m.default_cfg.min_size == 16
    with torch.no_grad():
        preds = m(torch.randn(1, 1, 128, 96))
    assert preds.shape == (1, 3, 8, 6, 7)
    # A confident box in cell (row 7, col 5) decodes inside the last 16 px cell, not 32 px ones.
    preds = torch.full((1, 3, 8, 6, 7), -12.0)
    preds[0, 0, 7, 5, :4] = 0.0
    preds[0, 0, 7, 5, 4] = preds[0, 0, 7, 5, 5] = 6.0
    (d,) = m.decode(preds, conf_thresh=0.5)
    cx = (d["boxes"][0, 0] + d["boxes"][0, 2]) / 2
    cy = (d["boxes"][0, 1] + d["boxes"][0, 3]) / 2
    assert (cx.item(), cy.item()) == pytest.approx((5.5 * 16, 7.5 * 16))
    with pytest.raises(ValueError, match="8, 16 or 32"):
        get_model("yolo_tiny", stride=12)
