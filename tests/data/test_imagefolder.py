"""Messy folders, the decoded cache, splits and bad input."""

from __future__ import annotations

import logging
import os
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import (
    class_weights,
    escape_path,
    format_skipped,
    load_dataset,
    parse_skipped,
    skipped_summary,
    unescape_path,
)
from cnnlab.data.cache import decode_files
from cnnlab.data.decode import decode_image
from cnnlab.data.imagefolder import scan_folder
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
    assert [str(w.message) for w in caught] == []  # skipped files are data, not warnings
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
    out.index_file.unlink()  # as if the process died before publishing the index
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


def _two_classes(root, n=3):
    for cls, color in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
        for i in range(n):
            _img(root / cls / f"{i}.png", tuple(c + i for c in color))


def _log_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_symlink_back_into_the_dataset_is_not_a_class(tmp_path, caplog):
    root = tmp_path / "photos"
    _two_classes(root)
    os.symlink(root, root / "all")  # top level, to the dataset root itself
    os.symlink(root / "cat", root / "dog" / "cats-too")  # nested, to another class
    os.symlink(root / "cat" / "0.png", root / "dog" / "linked.png")  # a file inside the root
    os.symlink(root / "dog" / "loop", root / "dog" / "loop")  # a link to itself
    with caplog.at_level(logging.WARNING):
        splits = load_dataset(
            "imagefolder", data_dir=root, image_size=4, cache_dir=tmp_path / "c",
            val_fraction=0.34,
        )  # fmt: skip
    assert splits.train.classes == ["cat", "dog"]
    assert len(splits.train) + len(splits.test) == 6  # no image counted twice
    lines = _log_lines(caplog)
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "ignored 3 symlink(s)" in lines[0] and "all" in lines[0]


def test_a_symlink_leading_out_of_the_dataset_is_followed_once(tmp_path, caplog):
    root, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    _two_classes(root)
    for i in range(2):
        _img(elsewhere / "birds" / f"{i}.png", (0, 200, 0))
    os.symlink(elsewhere / "birds", root / "bird")  # how datasets get assembled from parts
    os.symlink(elsewhere / "birds", root / "cat" / "also-birds")  # the same folder again
    os.symlink(elsewhere, elsewhere / "birds" / "up")  # and a cycle out there
    with caplog.at_level(logging.WARNING):
        classes, items = scan_folder(root)
    assert classes == ["bird", "cat", "dog"]
    assert [lab for _, lab in items].count(0) == 2 and len(items) == 8
    assert len(_log_lines(caplog)) == 1


def test_odd_file_names_are_skipped_and_listed_one_line_each(tmp_path):
    root = tmp_path / "photos"
    _two_classes(root)
    raw = os.fsencode(root / "cat") + b"/caf\xe9-latin1.png"  # not valid UTF-8
    with open(raw, "wb"):
        pass  # zero bytes
    tab = root / "dog" / "a\tb.png"
    newline = root / "dog" / "fake\nline.png"
    backslash = root / "cat" / "c:\\d.png"
    for p in (tab, newline, backslash):
        p.write_bytes(b"not an image")
    weird_good = _img(root / "dog" / "ok\t\u00e9.png", (0, 0, 100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing about these names may warn either
        splits = load_dataset(
            "imagefolder", data_dir=root, image_size=4, cache_dir=tmp_path / "c",
            val_fraction=0.3,
        )  # fmt: skip
    skipped = splits.train.skipped
    assert len(skipped) == 4
    text = format_skipped(skipped)
    text.encode("utf-8")  # writable as UTF-8: no lone surrogates left
    lines = text.splitlines()
    assert len(lines) == 4 and all(line.count("\t") == 1 for line in lines)
    back = {os.fsencode(unescape_path(p)) for p, _ in parse_skipped(text)}
    assert back == {raw, os.fsencode(tab), os.fsencode(newline), os.fsencode(backslash)}
    assert all(os.path.exists(unescape_path(p)) for p, _ in parse_skipped(text))
    assert dict(skipped)[escape_path(raw)] == "empty file"
    assert str(weird_good) in splits.train.paths + splits.test.paths  # decodable: kept
    summary = skipped_summary(len(skipped), tmp_path / "runs" / "r\nx" / "skipped.txt", 11)
    assert "\n" not in summary and summary.startswith("skipped 4 of 11 image files")


def test_format_skipped_makes_raw_entries_safe_too():
    raw = [("a\nb.png", "bad\tthing"), (os.fsdecode(b"\xff.png"), "empty file")]
    lines = format_skipped(raw).splitlines()
    assert len(lines) == 2 and lines[0] == "a\\nb.png\tbad\\tthing"
    assert lines[1] == "\\xff.png\tempty file"


def test_escaping_round_trips_every_name():
    names = [b"plain.png", b"a\\tb", b"\\x41", b"\xff\xfe", b"tab\there", b"nl\nx", b"\x7f\x1b",
             "猫 é".encode(), b"end\\"]  # fmt: skip
    for name in names:
        shown = escape_path(name)
        assert shown.isprintable() and unescape_path(shown) == os.fsdecode(name)
    assert escape_path("猫 é.png") == "猫 é.png"  # printable text stays readable


def test_a_validation_folder_linked_to_the_training_folder_is_refused(tmp_path):
    _two_classes(tmp_path / "d" / "train")
    os.symlink(tmp_path / "d" / "train", tmp_path / "d" / "val")
    with pytest.raises(DataError, match="same images"):
        load_dataset("imagefolder", data_dir=tmp_path / "d", cache_dir=tmp_path / "c")


def test_broken_links_and_fifos_never_hang_or_crash(tmp_path):
    root = tmp_path / "photos"
    _two_classes(root)
    os.symlink(root / "nowhere.png", root / "cat" / "broken.png")
    os.mkfifo(root / "dog" / "pipe.png")  # opening it to read would block forever
    splits = load_dataset(
        "imagefolder", data_dir=root, image_size=4, cache_dir=tmp_path / "c", val_fraction=0.34
    )
    assert [p.rsplit("/", 1)[-1] for p, _ in splits.train.skipped] == ["broken.png"]
    assert "no such file" in splits.train.skipped[0][1]
