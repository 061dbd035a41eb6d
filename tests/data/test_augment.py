"""The augmentation pipeline: grammar, and for every transform shape, dtype, range and determinism."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data import BatchLoader, ImageDataset
from cnnlab.data.augment import build_batch_transform, list_augmentations, parse_spec
from cnnlab.errors import ConfigError, UnknownNameError

SPECS = [
    "flip", "vflip:1", "crop:4", "crop:4,flip", "rrc", "rrc:0.35:0.9", "rotate:30",
    "affine:10:0.1:0.2:5", "jitter:0.4", "jitter:0.4:0.3:0.2:0.1", "gray:1", "erase:1",
    "randaugment", "randaugment:3:15", "trivialaugment", "rrc:0.35,flip,trivialaugment,erase:0.25",
]  # fmt: skip


def _batch(c=3, n=16, size=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)
    return x, torch.arange(n) % 5


def test_every_transform_name_is_covered():
    used = {name for spec in SPECS for name, _ in parse_spec(spec)} | {"mixup", "cutmix"}
    # altflip needs the images' indices (tested below); translate is crop by another name
    assert used | {"altflip", "translate"} == set(list_augmentations())


def test_translate_is_a_crop_with_a_two_pixel_default():
    assert parse_spec("translate") == [("crop", (2.0,))]
    assert parse_spec("translate:3,flip") == [("crop", (3.0,)), ("flip", (0.5,))]


def test_alternating_flip_shows_every_image_both_ways_once_per_two_epochs():
    n = 1000
    x = torch.randint(
        0, 256, (n, 1, 3, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    idx = torch.arange(n)
    t = build_batch_transform("altflip", image_size=None, num_classes=5, seed=7)
    flipped = []
    for epoch in range(4):
        t.set_epoch(epoch)
        out, _ = t(x, idx % 5, indices=idx)
        f = (out == x.flip(-1)).flatten(1).all(1) & ~(out == x).flatten(1).all(1)
        assert ((out == x).flatten(1).all(1) | f).all()  # each image unchanged or mirrored
        flipped.append(f)
    assert torch.equal(flipped[0], ~flipped[1])  # epochs 0 and 1: each image once each way
    assert torch.equal(flipped[0], flipped[2]) and torch.equal(flipped[1], flipped[3])
    assert 0.4 < flipped[0].float().mean() < 0.6  # half the images start flipped
    # the coin is per image, not per batch position: a shuffled batch gives the same choice
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    t.set_epoch(0)
    out, _ = t(x[perm], idx[perm] % 5, indices=idx[perm])
    assert torch.equal(out, t(x, idx % 5, indices=idx)[0][perm])
    # another seed chooses another half
    u = build_batch_transform("altflip", image_size=None, num_classes=5, seed=8)
    assert not torch.equal(u(x, idx, indices=idx)[0], t(x, idx, indices=idx)[0])


def test_alternating_flip_through_the_loader_and_without_indices():
    n = 64
    ds = ImageDataset(
        torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8), torch.arange(n) % 2, ["a", "b"], "t"
    )
    t = build_batch_transform("altflip", image_size=None, num_classes=2, seed=0)
    loader = BatchLoader(ds, 16, mean=(0.0,), std=(1 / 255,), shuffle=True, transform=t)
    seen = {}
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        order = loader._order()
        got = torch.cat([x for x, _ in loader])
        seen[epoch] = (got == ds.images[order].float().flip(-1)).flatten(1).all(1)
    inv = {e: torch.empty(n, dtype=torch.bool) for e in seen}
    for e in seen:
        loader.epoch = e
        inv[e][loader._order()] = seen[e]
    assert torch.equal(inv[0] | inv[1], torch.ones(n, dtype=torch.bool))
    with pytest.raises(ConfigError, match="index"):
        t(ds.images[:4], ds.labels[:4])


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_range_and_determinism(spec, channels):
    x, y = _batch(channels)
    before = x.clone()
    a = build_batch_transform(spec, image_size=None, num_classes=5, seed=3)
    b = build_batch_transform(spec, image_size=None, num_classes=5, seed=3)
    xa, ya = a(x, y)
    xb, yb = b(x, y)
    assert torch.equal(x, before), "the input batch must not be modified"
    assert xa.shape == x.shape and xa.dtype in (torch.uint8, torch.float32)
    assert xa.float().min() >= 0 and xa.float().max() <= 255
    assert torch.equal(ya, y)
    assert torch.equal(xa, xb), "same seed, same output"
    if spec in ("vflip:1", "gray:1"):
        return  # nothing random left to vary
    c = build_batch_transform(spec, image_size=None, num_classes=5, seed=4)
    assert not torch.equal(c(x, y)[0], xa), "another seed, another output"
    assert not torch.equal(a(x, y)[0], xa), "the next batch draws new parameters"


@pytest.mark.parametrize("spec", ["flip", "crop:2,flip", "rrc:0.3", "jitter:0.2", "randaugment"])
def test_output_size_can_change_between_epochs(spec):
    x, y = _batch()
    t = build_batch_transform(spec, image_size=16, num_classes=5)
    assert t(x, y)[0].shape[-2:] == (16, 16)
    t.set_output_size(24)
    assert t(x, y)[0].shape[-2:] == (24, 24)
    t.set_output_size(None)
    assert t(x, y)[0].shape[-2:] == (20, 20)


def test_set_epoch_makes_epochs_reproducible():
    x, y = _batch()
    t = build_batch_transform("crop:4,flip,erase:0.5", image_size=None, num_classes=5, seed=1)
    t.set_epoch(2)
    first = t(x, y)[0]
    t.set_epoch(0)
    t(x, y)
    t.set_epoch(2)
    assert torch.equal(t(x, y)[0], first)


def test_generator_argument_is_used():
    x, y = _batch()
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    a = build_batch_transform("rrc,flip", image_size=None, num_classes=5, generator=g1)
    b = build_batch_transform("rrc,flip", image_size=None, num_classes=5, generator=g2)
    assert torch.equal(a(x, y)[0], b(x, y)[0])


def test_flip_probability_one_mirrors_every_image():
    x, y = _batch()
    out, _ = build_batch_transform("flip:1", image_size=None, num_classes=5)(x, y)
    assert torch.equal(out, x.flip(-1))
    out, _ = build_batch_transform("flip:0", image_size=None, num_classes=5)(x, y)
    assert torch.equal(out, x)


def test_crop_only_shifts_content():
    x = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    x[:, :, 3, 3] = 255  # one bright pixel
    out, _ = build_batch_transform("crop:2", image_size=None, num_classes=1)(
        x, torch.zeros(64).long()
    )
    pos = out.view(64, -1).argmax(1)
    dy, dx = pos // 8 - 3, pos % 8 - 3
    assert (out.view(64, -1).float().sum(1) <= 255).all()
    assert (
        dy.abs().max() <= 2 and dx.abs().max() <= 2 and len(set(zip(dy.tolist(), dx.tolist()))) > 5
    )


def test_erase_touches_one_box_per_image():
    x = torch.full((32, 3, 16, 16), 100, dtype=torch.uint8)
    out, _ = build_batch_transform("erase:1:0.3", image_size=None, num_classes=1)(
        x, torch.zeros(32).long()
    )
    for i in range(32):
        changed = (out[i] != 100).any(0)
        ys, xs = changed.nonzero(as_tuple=True)
        assert len(ys) > 0
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert box <= 0.3 * 256 + 16  # noise can equal 100 by chance, never extend the box


def test_gray_makes_channels_equal():
    x, y = _batch()
    out, _ = build_batch_transform("gray:1", image_size=None, num_classes=5)(x, y)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])


def _mix_batch(n=32, size=16, k=40):
    # every image is one constant value tied to its label, so mixed areas can be read back
    y = torch.randperm(k)[:n]
    x = (y.view(-1, 1, 1, 1) * 5 + 10).to(torch.uint8).expand(n, 3, size, size).contiguous()
    return x, y, k


@pytest.mark.parametrize("spec", ["mixup:0.4", "cutmix:1.0"])
def test_mix_labels_sum_to_one_and_match_the_mixed_area(spec):
    x, y, k = _mix_batch()
    t = build_batch_transform(spec, image_size=None, num_classes=k, seed=5)
    out, soft = t(x, y)
    assert soft.shape == (len(y), k) and soft.dtype == torch.float32
    assert torch.allclose(soft.sum(1), torch.ones(len(y)))
    own = soft[torch.arange(len(y)), y]
    value = y.float() * 5 + 10
    for i in range(len(y)):
        others = soft[i].clone()
        others[y[i]] = 0
        if others.sum() == 0:
            continue  # paired with itself
        j = int(others.argmax())
        vj = j * 5 + 10
        if spec.startswith("mixup"):
            expected = own[i] * value[i] + (1 - own[i]) * vj
            assert torch.allclose(out[i].float(), expected.expand_as(out[i]), atol=1e-3)
        else:
            frac_own = (out[i] == value[i]).float().mean()
            frac_other = (out[i] == vj).float().mean()
            assert frac_own == pytest.approx(float(own[i]), abs=1e-6)
            assert frac_other == pytest.approx(float(soft[i, j]), abs=1e-6)


def test_mixup_and_cutmix_together_and_as_arguments():
    x, y, k = _mix_batch()
    t = build_batch_transform(
        "flip", image_size=None, num_classes=k, mixup_alpha=0.2, cutmix_alpha=1.0
    )
    assert t.soft_labels
    kinds = set()
    for _ in range(12):
        out, soft = t(x, y)
        assert torch.allclose(soft.sum(1), torch.ones(len(y)))
        kinds.add(out.dtype)
    assert kinds == {torch.uint8, torch.float32}  # CutMix keeps uint8, Mixup blends to float
    assert build_batch_transform("", image_size=None, num_classes=k, mixup_alpha=0.2) is not None
    assert build_batch_transform("  ", image_size=None, num_classes=k) is None


def test_batch_loader_applies_the_transform_then_normalises():
    x, y = _batch(n=10)
    ds = ImageDataset(x, y, [str(i) for i in range(5)], "toy")
    t = build_batch_transform("jitter:0.3,cutmix", image_size=12, num_classes=5, seed=0)
    loader = BatchLoader(
        ds, 4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), transform=t, shuffle=True
    )
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(4, 3, 12, 12), (4, 3, 12, 12), (2, 3, 12, 12)]
    xb, yb = batches[0]
    assert xb.dtype == torch.float32 and xb.min() >= -2.01 and xb.max() <= 2.01
    assert yb.shape == (4, 5)
    loader.set_epoch(1)
    again = next(iter(loader))
    loader.set_epoch(1)
    assert torch.equal(next(iter(loader))[0], again[0])


@pytest.mark.parametrize(
    "spec,err,needle",
    [
        ("flip,blur", UnknownNameError, "Valid augmentations: affine"),
        ("fliip", UnknownNameError, "Did you mean: flip"),
        ("crop:4:5", ConfigError, "crop[:PAD]"),
        ("crop:x", ConfigError, "non-numeric"),
        ("flip:2", ConfigError, "probability"),
        ("rrc:0", ConfigError, "MIN_SCALE"),
        ("randaugment:2:40", ConfigError, "MAGNITUDE"),
        ("mixup:0", ConfigError, "ALPHA"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, err, needle):
    with pytest.raises(err) as exc:
        build_batch_transform(spec, image_size=None, num_classes=3)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_spec_grammar_defaults_aliases_and_case():
    assert parse_spec("Crop, HFLIP:0.3 ,ta") == [
        ("crop", (4.0,)),
        ("flip", (0.3,)),
        ("trivialaugment", ()),
    ]
    assert parse_spec("jitter:0.2") == [("jitter", (0.2, 0.2, 0.2, 0.0))]
    assert parse_spec("none") == [] and parse_spec("") == []
