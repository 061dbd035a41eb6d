"""Dense augmentation: transformed boxes and masks are checked against the transformed pixels."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data.dense import IGNORE_INDEX, DenseTarget
from cnnlab.data.dense_augment import (
    build_dense_transform,
    clip_boxes,
    parse_dense_spec,
    transform_boxes,
)
from cnnlab.errors import ConfigError, UnknownNameError

SIZE = 64


def _scene(n: int = 8) -> tuple[torch.Tensor, DenseTarget]:
    """Bright rectangles of class 0/1 on black; boxes and masks are exactly the rectangles."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, SIZE, SIZE, dtype=torch.uint8)
    masks = torch.zeros(n, SIZE, SIZE, dtype=torch.long)
    boxes, labels = [], []
    for i in range(n):
        bx, lb = [], []
        for j, (x1, y1) in enumerate([(6, 8), (34, 30)]):
            w, h = [int(v) for v in torch.randint(10, 22, (2,), generator=g)]
            x[i, 0, y1 : y1 + h, x1 : x1 + w] = 200 + 40 * j
            masks[i, y1 : y1 + h, x1 : x1 + w] = j + 1
            bx.append([x1, y1, x1 + w, y1 + h])
            lb.append(j)
        boxes.append(torch.tensor(bx, dtype=torch.float32))
        labels.append(torch.tensor(lb))
    return x, DenseTarget(boxes, labels, masks, torch.arange(n))


def _pixel_box(region: torch.Tensor) -> list[float]:
    rows = torch.nonzero(region.any(1)).flatten()
    cols = torch.nonzero(region.any(0)).flatten()
    return [cols[0].item(), rows[0].item(), cols[-1].item() + 1, rows[-1].item() + 1]


@pytest.mark.parametrize(
    "spec",
    ["flip:1", "vflip:1", "scale:0.6:1.4", "translate:0.2", "rrc:0.4:0.9", "flip,scale,translate"],
)
def test_boxes_and_masks_follow_the_pixels(spec: str) -> None:
    x, t = _scene()
    tf = build_dense_transform(spec, seed=3)
    out, t2 = tf(x, t)
    assert out.shape == x.shape and t2.masks is not None and t2.boxes is not None
    for i in range(len(x)):
        img = out[i, 0]
        valid = t2.masks[i] != IGNORE_INDEX
        # the mask says "object" exactly where the resampled pixels are bright (off the edges)
        bright = img > 100
        agree = ((t2.masks[i] > 0) == bright)[valid].float().mean()
        assert agree > 0.97, f"{spec}: mask agrees with pixels on {agree:.3f} only"
        for b, lb in zip(t2.boxes[i], t2.labels[i]):
            # draw the box: the object's bright pixels lie inside it and touch all four sides
            region = bright & (t2.masks[i] == lb + 1)
            assert region.any()
            px = _pixel_box(region)
            assert torch.allclose(b, torch.tensor(px, dtype=b.dtype), atol=1.01), (spec, b, px)
            inside = torch.zeros_like(region)
            x1, y1, x2, y2 = b.round().long().tolist()
            inside[y1:y2, x1:x2] = True
            assert (region & ~inside).sum() <= 2 * (region.sum() ** 0.5)


def test_flip_is_exact_and_boxes_move() -> None:
    x, t = _scene(2)
    out, t2 = build_dense_transform("flip:1")(x, t)
    assert torch.equal(out.round().to(torch.uint8), x.flip(-1))
    assert torch.equal(t2.masks, t.masks.flip(-1))
    b = t.boxes[0]
    expect = torch.stack([SIZE - b[:, 2], b[:, 1], SIZE - b[:, 0], b[:, 3]], 1)
    assert torch.equal(t2.boxes[0], expect)


def test_boxes_leaving_the_image_are_clipped_or_dropped() -> None:
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    moved = transform_boxes(b, 1.0, 1.0, -8.0, 0.0, (64, 64))  # first box 80 % out of the image
    clipped, keep = clip_boxes(moved, (64, 64), min_visible=0.25)
    assert keep.tolist() == [False, True]
    moved = transform_boxes(b, 1.0, 1.0, 8.0, 0.0, (64, 64))  # second box partly out on the right
    clipped, keep = clip_boxes(moved, (64, 64), min_visible=0.25)
    assert keep.tolist() == [True, True] and clipped[1].tolist() == [58.0, 50.0, 64.0, 60.0]


def test_padding_is_ignored_not_background() -> None:
    x, t = _scene(4)
    _, t2 = build_dense_transform("scale:0.5:0.5")(x, t)
    assert (t2.masks[:, 0, 0] == IGNORE_INDEX).all() and (t2.masks[:, 32, 32] != IGNORE_INDEX).all()


def test_jitter_changes_pixels_only_and_epochs_reproduce() -> None:
    x, t = _scene(4)
    tf = build_dense_transform("jitter:0.5,flip", seed=1)
    tf.set_epoch(2)
    a, ta = tf(x, t)
    tf.set_epoch(2)
    b, tb = tf(x, t)
    assert torch.equal(a, b) and torch.equal(ta.masks, tb.masks)
    assert all(torch.equal(p, q) for p, q in zip(ta.boxes, tb.boxes))


def test_bad_specs_are_one_line_errors() -> None:
    with pytest.raises(UnknownNameError, match="flip"):
        parse_dense_spec("mixup")
    with pytest.raises(ConfigError, match="MIN"):
        parse_dense_spec("scale:2:1")
    assert build_dense_transform("") is None
