"""Exact effects of the batch operations, checked against torchvision's per-image functions."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from cnnlab.data import batch_ops as ops


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (6, 3, 12, 10), dtype=torch.uint8, generator=g)


def test_flip_twice_is_identity(batch):
    mask = torch.tensor([True, False, True, True, False, True])
    once = ops.hflip_where(batch, mask)
    assert torch.equal(once[0], batch[0].flip(-1)) and torch.equal(once[1], batch[1])
    assert torch.equal(ops.hflip_where(once, mask), batch)
    assert torch.equal(ops.vflip_where(ops.vflip_where(batch, mask), mask), batch)


def test_pad_crop_matches_torchvision(batch):
    pad = 3
    top, left = torch.tensor([0, 6, 3, 1, 5, 2]), torch.tensor([6, 0, 3, 4, 2, 1])
    flip = torch.tensor([False, True, False, True, True, False])
    out = ops.pad_crop(batch, pad, top, left)
    fused = ops.pad_crop(batch, pad, top, left, flip=flip)
    for i in range(len(batch)):
        ref = TF.crop(TF.pad(batch[i], [pad]), int(top[i]), int(left[i]), 12, 10)
        assert torch.equal(out[i], ref)
        assert torch.equal(fused[i], TF.horizontal_flip(ref) if flip[i] else ref)
    assert out.dtype == torch.uint8


def test_resized_crop_identity_box_and_region(batch):
    full = torch.tensor([[0, 0, 12, 10]] * 6)
    assert torch.allclose(ops.resized_crop(batch, full, (12, 10)), batch.float(), atol=1e-4)
    # a box crop at its own size is an exact crop
    box = torch.tensor([[2, 3, 5, 4]] * 6)
    out = ops.resized_crop(batch, box, (5, 4))
    assert torch.allclose(out, batch[:, :, 2:7, 3:7].float(), atol=1e-4)


def test_resized_crop_matches_torchvision_and_roi_align_with_flip():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (5, 3, 40, 36), dtype=torch.uint8, generator=g)
    boxes = torch.tensor(
        [[0, 0, 40, 36], [3, 5, 20, 17], [10, 0, 30, 36], [0, 20, 9, 16], [7, 7, 25, 25]]
    )
    flip = torch.tensor([False, True, False, True, True])
    size = (32, 30)  # no box is twice the output size: the grid_sample path
    out = ops.resized_crop(x, boxes, size)
    flipped = ops.resized_crop(x, boxes, size, flip=flip)
    from torchvision.ops import roi_align

    b = boxes.float()
    rois = torch.cat([torch.arange(5.0)[:, None], b[:, [1, 0]], b[:, [1, 0]] + b[:, [3, 2]]], 1)
    ref_roi = roi_align(x.float(), rois, size, 1.0, 1, True)
    assert torch.allclose(out, ref_roi, atol=1e-3)
    # torchvision crops first, so within half a source pixel of the crop's edge it clamps to the
    # crop's own border pixels where we (like roi_align) read the real neighbours: compare inside.
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        ref = TF.resized_crop(x[i].float(), top, left, h, w, list(size), antialias=False)
        ry, rx = math.ceil(size[0] / h / 2) + 1, math.ceil(size[1] / w / 2) + 1
        inner = (..., slice(ry, -ry), slice(rx, -rx))
        assert torch.allclose(out[i][inner], ref[inner], atol=1e-3), i
        assert torch.allclose(flipped[i], out[i].flip(-1) if flip[i] else out[i], atol=1e-3), i


def test_warp_affine_identity_and_quarter_turn():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    ident = ops.affine_matrices(torch.zeros(2), torch.zeros(2, 2), torch.ones(2), torch.zeros(2, 2))
    assert torch.allclose(ops.warp_affine(x, ident), x, atol=1e-3)
    quarter = ops.affine_matrices(
        torch.full((2,), 90.0), torch.zeros(2, 2), torch.ones(2), torch.zeros(2, 2)
    )
    out = ops.warp_affine(x, quarter, mode="nearest")
    assert torch.equal(out, torch.rot90(x, 1, (2, 3))) or torch.equal(
        out, torch.rot90(x, -1, (2, 3))
    )


def test_erase_changes_only_the_box(batch):
    boxes = torch.tensor(
        [[1, 2, 4, 3], [0, 0, 0, 0], [5, 5, 7, 5], [0, 0, 12, 10], [3, 1, 1, 1], [2, 2, 2, 2]]
    )
    out = ops.erase_boxes(batch, boxes, 7)
    for i, (t, left, h, w) in enumerate(boxes.tolist()):
        inside = torch.zeros(12, 10, dtype=torch.bool)
        inside[t : t + h, left : left + w] = True
        assert (out[i][:, inside] == 7).all()
        assert torch.equal(out[i][:, ~inside], batch[i][:, ~inside])


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (lambda x, f: ops.adjust_brightness(x, f), TF.adjust_brightness),
        (lambda x, f: ops.adjust_contrast(x, f), TF.adjust_contrast),
        (lambda x, f: ops.adjust_saturation(x, f), TF.adjust_saturation),
        (lambda x, f: ops.sharpness(x, f), TF.adjust_sharpness),
    ],
)
def test_colour_ops_match_torchvision(batch, ours, theirs):
    factors = torch.tensor([0.0, 0.5, 1.0, 1.3, 1.9, 0.7])
    out = ours(batch, factors)
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 255
    for i in range(len(batch)):
        ref = theirs(batch[i].float() / 255, float(factors[i])) * 255
        assert torch.allclose(out[i], ref, atol=0.05), i


def test_histogram_ops_match_torchvision(batch):
    assert torch.equal(
        ops.equalize(batch).to(torch.uint8), torch.stack([TF.equalize(b) for b in batch])
    )
    bits = torch.tensor([1, 2, 4, 6, 8, 3])
    post = ops.posterize(batch, bits).to(torch.uint8)
    thr = torch.tensor([0, 64, 128, 200, 255, 17])
    sol = ops.solarize(batch, thr).to(torch.uint8)
    for i in range(len(batch)):
        assert torch.equal(post[i], TF.posterize(batch[i], int(bits[i])))
        assert torch.equal(sol[i], TF.solarize(batch[i], float(thr[i])))
    ac = ops.autocontrast(batch)
    ref = torch.stack([TF.autocontrast(b.float() / 255) * 255 for b in batch])
    assert torch.allclose(ac, ref, atol=1e-3)


def test_hue_zero_is_identity_and_shift_keeps_luma(batch):
    x = batch.float()
    assert torch.allclose(ops.adjust_hue(x, torch.zeros(6)), x, atol=1e-2)
    mid = torch.full((1, 3, 4, 4), 128.0)
    mid[:, 0] = 160  # a reddish grey that stays in range when rotated
    shifted = ops.adjust_hue(mid, torch.tensor([0.25]))
    assert not torch.allclose(shifted, mid, atol=1)
    assert torch.allclose(ops.grayscale(shifted), ops.grayscale(mid), atol=0.5)


def test_grayscale_one_channel_passthrough():
    x = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    assert torch.equal(ops.grayscale(x), x.float())
    assert torch.equal(ops.adjust_saturation(x, torch.zeros(2)), x.float())


def test_fused_colour_transform_equals_the_sequential_ops_without_clipping():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(90, 160, (5, 3, 6, 6), generator=g).float()
    b, c, s = (
        torch.tensor([0.9, 1.1, 1.0, 0.8, 1.2]),
        torch.tensor([1.2, 0.8, 1.0, 1.1, 0.9]),
        torch.tensor([0.5, 1.3, 1.0, 0.0, 1.1]),
    )
    hue = torch.tensor([0.0, 0.05, -0.1, 0.0, 0.02])
    ref = ops.adjust_hue(
        ops.adjust_saturation(ops.adjust_contrast(ops.adjust_brightness(x, b), c), s), hue
    )
    assert torch.allclose(ops.color_transform(x, b, c, s, hue), ref, atol=1e-2)
    one = x[:, :1]
    ref1 = ops.adjust_contrast(ops.adjust_brightness(one, b), c)
    assert torch.allclose(ops.color_transform(one, b, c, s, hue), ref1, atol=1e-2)


def test_resized_crop_antialiases_strong_downscaling():
    x = torch.zeros(1, 1, 64, 64)
    x[..., ::2] = 255  # a 1-pixel stripe pattern: plain bilinear at 1/8 scale would alias
    out = ops.resized_crop(x, torch.tensor([[0, 0, 64, 64]]), (8, 8))
    assert torch.allclose(out, torch.full_like(out, 127.5), atol=1)
