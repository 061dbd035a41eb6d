"""The decoded cache under real faults: truncated and rewritten entries, stale files, a full cache,
writers killed at the worst moment."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.cache import decode_files
from cnnlab.data.cache_limit import DEAD_TMP_S, GRACE_S, parse_size
from cnnlab.data.filekeys import SAMPLE_BYTES, file_key
from cnnlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _bmp(path: Path, color, size=(8, 8)) -> Path:
    """An uncompressed BMP: its byte size depends only on its dimensions, never on the colour."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="BMP")
    return path


def _files(folder: Path, n: int = 4) -> list[Path]:
    return [_bmp(folder / f"{i}.bmp", (40 * i, 10, 200 - 40 * i)) for i in range(n)]


def _fresh(files, size=4) -> np.ndarray:
    return decode_files(files, size, 3, cache=False, workers=0, progress=False).images


def _decode(files, cache, size=4, **kw):
    return decode_files(files, size, 3, cache_dir=cache, workers=0, progress=False, **kw)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_truncated_entry_is_detected_rebuilt_and_reported_once(tmp_path, caplog):
    files = _files(tmp_path / "img")
    first = _decode(files, tmp_path / "c")
    npy = first.cache_file
    with open(npy, "r+b") as f:  # what a full disk or a killed copy leaves: the tail is gone
        f.truncate(npy.stat().st_size - 40)
    _bmp(files[1], (0, 255, 0))  # and a file changed meanwhile: the rebuild must see it
    with caplog.at_level(logging.WARNING):
        again = _decode(files, tmp_path / "c")
    msgs = _warnings(caplog)
    assert len(msgs) == 1 and "\n" not in msgs[0]
    assert "was damaged (its pixel file is truncated" in msgs[0]
    assert again.decoded == 4 and np.array_equal(again.images, _fresh(files))
    assert again.images[1, 1].min() == 255  # the new green pixels, not the old ones
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = _decode(files, tmp_path / "c")
    assert third.decoded == 0 and _warnings(caplog) == []  # healed: a plain hit, no message
    assert not npy.exists()  # the damaged pixels are gone, not left to the sweep


@pytest.mark.parametrize(
    "damage", ["garbage index", "wrong types", "flipped header", "rewritten pixels"]
)
def test_other_damage_is_rebuilt_too(tmp_path, caplog, damage):
    files = _files(tmp_path / "img")
    out = _decode(files, tmp_path / "c")
    if damage == "garbage index":
        out.index_file.write_bytes(b'{"version": 2, "shape": [4, \xff')
    elif damage == "wrong types":
        index = json.loads(out.index_file.read_text())
        index["reasons"][0], index["keys"][1] = 7, "abcdef"
        out.index_file.write_text(json.dumps(index))
    elif damage == "flipped header":
        data = bytearray(out.cache_file.read_bytes())
        data[0] ^= 0xFF  # no longer a .npy
        out.cache_file.write_bytes(bytes(data))
    else:  # same size, other bytes: caught by the pixel file's recorded mtime
        data = out.cache_file.read_bytes()
        out.cache_file.write_bytes(data[:-48] + bytes(48))
        st = out.cache_file.stat()
        os.utime(out.cache_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with caplog.at_level(logging.WARNING):
        again = _decode(files, tmp_path / "c")
    assert len(_warnings(caplog)) == 1 and "damaged" in _warnings(caplog)[0]
    assert again.decoded == 4 and np.array_equal(again.images, _fresh(files))


def test_same_size_rewrite_with_restored_mtime_gives_new_pixels(tmp_path):
    files = _files(tmp_path / "img")
    first = _decode(files, tmp_path / "c")
    old = os.stat(files[2])
    _bmp(files[2], (0, 255, 0))  # same dimensions, so the same byte size
    os.utime(files[2], ns=(old.st_atime_ns, old.st_mtime_ns))  # `touch -r`, `rsync -t`, `tar x`
    new = os.stat(files[2])
    assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    again = _decode(files, tmp_path / "c")
    assert (again.decoded, again.reused) == (1, 3)
    assert again.images[2, 1].min() == 255 and np.array_equal(again.images, _fresh(files))
    assert np.array_equal(again.images[0], first.images[0])


def test_the_hash_catches_a_rewrite_the_stat_fields_miss(tmp_path):
    """A filesystem whose change time did not move (coarse, or faked by a network mount): the
    index's stat fields are set to the rewritten file's, only the hash still differs."""
    files = _files(tmp_path / "img")
    out = _decode(files, tmp_path / "c")
    _bmp(files[3], (255, 255, 0))
    index = json.loads(out.index_file.read_text())
    fresh = file_key(str(files[3]))
    index["keys"][3][:4] = fresh[:4]  # size, mtime, ctime, inode all "unchanged"
    out.index_file.write_text(json.dumps(index))
    again = _decode(files, tmp_path / "c")
    assert again.decoded == 1 and np.array_equal(again.images, _fresh(files))


def test_a_metadata_only_change_reuses_the_pixels(tmp_path):
    files = _files(tmp_path / "img")
    _decode(files, tmp_path / "c")
    os.chmod(files[0], 0o600)  # moves the change time, not the bytes
    st = os.stat(files[1])
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = _decode(files, tmp_path / "c")
    assert (again.decoded, again.reused) == (0, 4)
    assert _decode(files, tmp_path / "c").decoded == 0  # the new stat fields were remembered


def test_sampled_hash_of_a_large_file_sees_its_start_middle_and_end(tmp_path):
    big = tmp_path / "big.bin"
    data = bytearray(os.urandom(10 * SAMPLE_BYTES))
    big.write_bytes(bytes(data))
    base = file_key(str(big))
    assert base[5] == 0  # sampled, not whole
    for offset in (10, len(data) // 2, len(data) - 10):
        changed = bytearray(data)
        changed[offset] ^= 1
        big.write_bytes(bytes(changed))
        assert file_key(str(big))[4] != base[4]
    assert file_key(str(big), None)[5] == 1  # sample_bytes=None hashes every byte


def _entries(cache: Path) -> dict[str, int]:
    folder = cache / "decoded"
    return {p.stem: p.stat().st_size for p in folder.glob("*.json")}


def test_a_full_cache_evicts_the_least_recently_used_entries(tmp_path, monkeypatch):
    files = _files(tmp_path / "img", 6)
    cache = tmp_path / "c"
    keys = {}
    for size in (8, 9, 10, 11):
        keys[size] = _decode(files, cache, size).index_file.stem
        time.sleep(0.02)  # file times are only as fine as the kernel's clock tick
    _decode(files, cache, 8)  # 8 is used again: now 9 is the least recently used
    time.sleep(0.02)
    one = sum(p.stat().st_size for p in (cache / "decoded").iterdir() if keys[11] in p.name)
    monkeypatch.setenv("CNNLAB_CACHE_MAX", str(int(2.5 * one)))
    out = _decode(files, cache, 12)  # a fifth entry, over the bound
    left = _entries(cache)
    assert out.index_file.stem in left and keys[8] in left
    assert keys[9] not in left and keys[10] not in left and keys[11] not in left
    total = sum(p.stat().st_size for p in (cache / "decoded").iterdir())
    assert total <= int(2.5 * one)
    assert not [p for p in (cache / "decoded").iterdir() if keys[9] in p.name]  # pixels gone too
    monkeypatch.setenv("CNNLAB_CACHE_MAX", "1")  # smaller than any entry: the one in use stays
    again = _decode(files, cache, 12)
    assert again.decoded == 0 and list(_entries(cache)) == [out.index_file.stem]


def test_cache_max_parses_sizes_and_refuses_nonsense(tmp_path, monkeypatch):
    assert parse_size("2G") == 2 << 30 and parse_size("500M") == 500 << 20
    assert parse_size("1.5GiB") == int(1.5 * (1 << 30)) and parse_size("123") == 123
    assert parse_size("unlimited") is None
    monkeypatch.setenv("CNNLAB_CACHE_MAX", "lots")
    with pytest.raises(ConfigError) as exc:
        _decode(_files(tmp_path / "img", 1), tmp_path / "c")
    assert "CNNLAB_CACHE_MAX" in str(exc.value) and "\n" not in str(exc.value)


_KILLER = """
import os, signal, sys
import cnnlab.data.cache as cache
real = os.replace
def replace(src, dst):
    name = os.path.basename(str(src))
    if name.endswith(".tmp") and (".json." in name) == (sys.argv[1] == "index"):
        os.kill(os.getpid(), signal.SIGKILL)  # the worst moment: just before this rename
    real(src, dst)
cache.os.replace = replace
cache.decode_files(sys.argv[3:], 4, 3, cache_dir=sys.argv[2], workers=0, progress=False)
"""


@pytest.mark.parametrize("rename", ["pixels", "index"])
def test_a_writer_killed_before_either_rename_leaves_the_old_entry_whole(tmp_path, rename):
    files = _files(tmp_path / "img")
    cache = tmp_path / "c"
    first = _decode(files, cache)
    _bmp(files[0], (255, 255, 255))  # an update is due
    proc = subprocess.run(
        [sys.executable, "-c", _KILLER, rename, str(cache), *map(str, files)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -9, proc.stderr
    folder = cache / "decoded"
    assert first.cache_file.exists()  # the published entry was never touched
    index = json.loads(first.index_file.read_text())
    assert index["npy"] == first.cache_file.name
    leftovers = [p for p in folder.iterdir() if p not in (first.cache_file, first.index_file)]
    assert leftovers  # the killed writer's file: a temporary (or an unpublished pixel file)
    for p in leftovers:  # once old enough, the next run sweeps them
        old = time.time() - max(DEAD_TMP_S, GRACE_S) - 5
        os.utime(p, (old, old))
    again = _decode(files, cache)
    assert again.decoded == 1 and np.array_equal(again.images, _fresh(files))
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [again.cache_file.name, again.index_file.name]
    )


def test_an_unusable_cache_folder_decodes_without_it_and_says_so_once(tmp_path, caplog):
    files = _files(tmp_path / "img", 2)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")  # CNNLAB_CACHE pointing at a file (root ignores permission bits)
    with caplog.at_level(logging.WARNING):
        out = _decode(files, blocker)
    msgs = _warnings(caplog)
    assert len(msgs) == 1 and "decoding without it" in msgs[0]
    assert out.cache_file is None and np.array_equal(out.images, _fresh(files))


def test_a_file_that_stays_unreadable_is_not_retried_every_run(tmp_path, caplog):
    files = _files(tmp_path / "img", 3)
    gone = tmp_path / "img" / "gone.bmp"
    os.symlink(tmp_path / "nowhere.bmp", gone)  # cannot be opened, so it has no content key
    paths = [*files, gone]
    first = _decode(paths, tmp_path / "c")
    assert first.ok == [0, 1, 2] and "no such file" in first.skipped[0][1]
    with caplog.at_level(logging.WARNING):
        again = _decode(paths, tmp_path / "c")
    assert (again.decoded, again.reused) == (0, 4) and _warnings(caplog) == []
    _bmp(tmp_path / "nowhere.bmp", (9, 9, 9))  # the link target appears: now it is decoded
    fixed = _decode(paths, tmp_path / "c")
    assert fixed.decoded == 1 and fixed.ok == [0, 1, 2, 3]
