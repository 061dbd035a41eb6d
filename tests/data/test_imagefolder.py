"""Messy folders, the decoded cache, splits and bad input."""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import class_weights, load_dataset
from cnnlab.data.cache import decode_files
from cnnlab.data.decode import decode_image
from cnnlab.errors import DataError


def _img(path, color, mode="RGB", size=(20, 16), fmt=None, **save):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new(mode, size, color)
    im.save(path, format=fmt, **save)
    return path


def _messy(root):
    """Good images in many formats and modes, plus five broken files."""
    good = [
        _img(root / "cat" / "a.jpg", (200, 10, 10)),
        _img(root / "cat" / "B.JPEG", (190, 20, 20), fmt="JPEG"),
        _img(root / "cat" / "nested" / "deeper" / "c.PNG", 120, mode="L"),
        _img(root / "cat" / "d.webp", (10, 200, 10, 128), mode="RGBA"),
        _img(root / "dog" / "e.Bmp", (10, 10, 200), fmt="BMP"),
        _img(root / "dog" / "f.gif", 3, mode="P"),
        _img(root / "dog" / "g.TIF", (50, 60, 70), fmt="TIFF"),
        _img(root / "dog" / "h.png", (0, 0, 255, 0), mode="RGBA"),  # fully transparent → white
        _img(root / "dog" / "i.jpg", (1, 2, 3)),
    ]
    bad = [root / "cat" / "empty.jpg", root / "dog" / "truncated.jpg", root / "dog" / "text.png"]
    bad[0].write_bytes(b"")
    full = (root / "cat" / "a.jpg").read_bytes()
    _img(root / "dog" / "big.jpg", (5, 5, 5), size=(64, 64), quality=95)
    bad[1].write_bytes((root / "dog" / "big.jpg").read_bytes()[:200])
    (root / "dog" / "big.jpg").unlink()
    bad[2].write_text("this is not a PNG")
    (root / "dog" / "notes.txt").write_text("ignored: not an image extension")
    (root / "dog" / ".hidden.png").write_bytes(full)  # hidden files are ignored
    return good, bad


def test_messy_folder_loads_every_good_image_and_reports_each_bad_one(tmp_path):
    good, bad = _messy(tmp_path / "photos")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_dataset(
            "imagefolder", data_dir=tmp_path / "photos", image_size=8, cache_dir=tmp_path / "c",
            val_fraction=0.25,
        )  # fmt: skip
    train, test = splits.train, splits.test
    assert train.classes == ["cat", "dog"]
    assert sorted(train.paths + test.paths) == sorted(str(p) for p in good)
    assert train.images.shape[1:] == (3, 8, 8) and train.images.dtype == torch.uint8
    assert sorted(p for p, _ in train.skipped) == sorted(str(p) for p in bad)
    assert all(why for _, why in train.skipped)
    msgs = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(msgs) == 1 and "skipped 3 of 12" in msgs[0]
    by_path = dict(zip(train.paths + test.paths, torch.cat([train.images, test.images])))
    assert by_path[str(good[7])].min() == 255  # transparent pixels composited on white
    gray = by_path[str(good[2])]
    assert torch.equal(gray[0], gray[1]) and int(gray[0, 0, 0]) == 120  # grayscale → RGB


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    arr = decode_image(tmp_path / "r.jpg", (40, 20), 3)  # (C, H=40, W=20) after rotation
    assert arr.shape == (3, 40, 20)
    assert arr[2, 5, 10] > 200 and arr[0, 35, 10] > 200  # blue on top, red below


def test_decompression_bombs_are_refused(tmp_path):
    _img(tmp_path / "huge.png", 0, mode="L", size=(300, 300))
    with pytest.raises(ValueError, match="pixel limit"):
        decode_image(tmp_path / "huge.png", 8, 1, max_pixels=10_000)
    out = decode_files([tmp_path / "huge.png"], 8, 1, cache=False, max_pixels=10_000)
    assert out.ok == [] and "pixel limit" in out.skipped[0][1]


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    arr = np.full((6, 6), 32768, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "x.png")
    assert abs(int(decode_image(tmp_path / "x.png", 6, 1)[0, 0, 0]) - 128) <= 1


def test_cache_is_reused_when_nothing_changed_and_rebuilt_when_a_file_changes(tmp_path):
    files = [_img(tmp_path / "d" / f"{i}.png", (i * 20, 0, 0)) for i in range(5)]
    cache = tmp_path / "cache"
    first = decode_files(files, 4, 3, cache_dir=cache, workers=0)
    assert (first.decoded, first.reused) == (5, 0)
    assert isinstance(first.images, np.memmap)
    again = decode_files(files, 4, 3, cache_dir=cache, workers=0)
    assert (again.decoded, again.reused) == (0, 5)
    assert np.array_equal(again.images, first.images)
    time.sleep(0.01)
    _img(files[2], (0, 250, 0))
    st = os.stat(files[2])
    os.utime(files[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse-mtime filesystems
    changed = decode_files(files, 4, 3, cache_dir=cache, workers=0)
    assert (changed.decoded, changed.reused) == (1, 4)
    assert changed.images[2, 1].min() > 200 and np.array_equal(changed.images[3], first.images[3])
    other_size = decode_files(files, 6, 3, cache_dir=cache, workers=0)
    assert other_size.decoded == 5 and other_size.images.shape == (5, 3, 6, 6)


def test_interrupted_cache_update_is_rebuilt(tmp_path):
    files = [_img(tmp_path / f"{i}.png", (i, i, i)) for i in range(3)]
    out = decode_files(files, 4, 3, cache_dir=tmp_path / "c", workers=0)
    out.cache_file.with_suffix(".json").unlink()  # as if the process died mid-update
    assert decode_files(files, 4, 3, cache_dir=tmp_path / "c", workers=0).decoded == 3


def test_parallel_decoding_matches_serial(tmp_path, monkeypatch):
    import cnnlab.data.cache as cache_mod

    monkeypatch.setattr(cache_mod, "CHUNK", 4)
    g = np.random.default_rng(0)
    files = []
    for i in range(12):
        p = tmp_path / "p" / f"{i}.jpg"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(g.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(p)
        files.append(p)
    (tmp_path / "p" / "5.jpg").write_bytes(b"junk")
    serial = decode_files(files, 10, 3, cache=False, workers=0)
    parallel = decode_files(files, 10, 3, cache_dir=tmp_path / "c", workers=2)
    assert np.array_equal(serial.images, parallel.images)
    assert serial.ok == parallel.ok and len(parallel.skipped) == 1


def test_explicit_validation_folder_and_class_weights(tmp_path):
    for split, counts in (("train", {"a": 6, "b": 2, "c": 1}), ("val", {"a": 2, "c": 1})):
        for cls, n in counts.items():
            for i in range(n):
                _img(tmp_path / split / cls / f"{i}.png", (i * 30, 0, 0))
    splits = load_dataset("imagefolder", data_dir=tmp_path, image_size=4, cache_dir=tmp_path / "c")
    assert splits.train.classes == ["a", "b", "c"] and splits.train.class_counts() == [6, 2, 1]
    assert splits.test.class_counts() == [2, 0, 1]  # the validation folder lacks class b
    w = class_weights(splits.train)
    assert torch.allclose(w, torch.tensor([9 / 18, 9 / 6, 9 / 3]))
    via_arg = load_dataset(
        "imagefolder", data_dir=tmp_path / "train", val_dir=tmp_path / "val", image_size=4,
        cache_dir=tmp_path / "c",
    )  # fmt: skip
    assert torch.equal(via_arg.test.labels, splits.test.labels)


def test_stratified_split_is_seeded_and_keeps_every_class(tmp_path):
    for cls, n in (("x", 10), ("y", 5)):
        for i in range(n):
            _img(tmp_path / "r" / cls / f"{i}.png", (i, 0, 0))
    kw = dict(data_dir=tmp_path / "r", image_size=4, cache_dir=tmp_path / "c", val_fraction=0.2)
    a = load_dataset("imagefolder", seed=1, **kw)
    b = load_dataset("imagefolder", seed=1, **kw)
    c = load_dataset("imagefolder", seed=2, **kw)
    assert a.test.class_counts() == [2, 1] and a.train.class_counts() == [8, 4]
    assert a.test.paths == b.test.paths and a.test.paths != c.test.paths


@pytest.mark.parametrize("case", ["empty", "one_class", "missing", "no_images"])
def test_bad_folders_are_one_line_errors(tmp_path, case):
    root = tmp_path / "r"
    root.mkdir()
    if case == "one_class":
        _img(root / "only" / "a.png", 1)
        _img(root / "only" / "b.png", 2)
    elif case == "missing":
        root = tmp_path / "nope"
    elif case == "no_images":
        (root / "a").mkdir()
        (root / "a" / "x.txt").write_text("x")
    with pytest.raises(DataError) as exc:
        load_dataset("imagefolder", data_dir=root, cache_dir=tmp_path / "c")
    msg = str(exc.value)
    assert "\n" not in msg and str(root) in msg
    if case == "one_class":
        assert "only one class" in msg


def test_all_files_broken_is_an_error(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="could be decoded"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_dataset("imagefolder", data_dir=tmp_path, cache_dir=tmp_path / "c")
