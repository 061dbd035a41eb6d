"""The decoded cache: decode and resize every image file once, keep the pixels in a memory-mapped array.

Decoding JPEGs costs far more than training a small CNN on them, so it should happen once, not every
epoch and not every run. :func:`decode_files` decodes a list of files at one size into a uint8
``(N, C, H, W)`` ``.npy`` file under the cache directory (``$CNNLAB_CACHE``, else
``~/.cache/cnnlab``), using several worker processes and a progress bar; an index file beside it
records each file's size and modification time. The next call with the same files and size maps that
array instead of decoding; a file whose size or modification time changed is decoded again (only that
one), and the index is rewritten last so an interrupted update is rebuilt rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cnnlab.data.decode import MAX_PIXELS, decode_image

CACHE_VERSION = 1
CHUNK = 64  # files per worker task: large enough to amortise the task overhead


def default_cache_dir() -> Path:
    """``$CNNLAB_CACHE`` when set, else ``~/.cache/cnnlab`` (decoded arrays go in ``decoded/``)."""
    env = os.environ.get("CNNLAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cnnlab"


def default_workers() -> int:
    """One decoding process per available core, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


@dataclass
class DecodedFiles:
    """The result of :func:`decode_files`.

    Attributes:
        images: uint8 array (n_ok, C, H, W) of the decodable files, memory-mapped when possible.
        ok: indices (into the given paths) of the decoded files, in order.
        skipped: (path, reason) of each file that could not be decoded.
        decoded: how many files were decoded by this call (0 when the cache was fully reused).
        reused: how many rows were taken from the cache.
        cache_file: the ``.npy`` file, or None when caching was off.
    """

    images: np.ndarray
    ok: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    decoded: int = 0
    reused: int = 0
    cache_file: Path | None = None


def _stat(path: str) -> list[int]:
    try:
        st = os.stat(path)
    except OSError:
        return [-1, -1]
    return [st.st_size, st.st_mtime_ns]


def _decode_chunk(
    npy: str, rows: list[tuple[int, str]], size: tuple[int, int], channels: int, max_pixels: int
) -> list[tuple[int, str]]:
    """Decode ``rows`` straight into the memory-mapped ``npy``; returns (row, reason or '')."""
    out = np.load(npy, mmap_mode="r+")
    status = []
    for row, path in rows:
        try:
            out[row] = decode_image(path, size, channels, max_pixels=max_pixels)
            status.append((row, ""))
        except (ValueError, OSError) as exc:
            out[row] = 0
            status.append((row, (str(exc).splitlines() or [type(exc).__name__])[0][:200]))
    out.flush()
    del out
    return status


def _decode_rows(
    npy: Path,
    rows: list[tuple[int, str]],
    size: tuple[int, int],
    channels: int,
    max_pixels: int,
    workers: int,
    progress: bool,
    desc: str,
) -> dict[int, str]:
    chunks = [rows[i : i + CHUNK] for i in range(0, len(rows), CHUNK)]
    status: dict[int, str] = {}
    bar = tqdm(
        total=len(rows),
        desc=desc,
        unit="img",
        disable=None if progress else True,  # None: no bar when stderr is not a terminal
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    )
    with bar:
        if workers <= 1 or len(chunks) <= 1:
            for chunk in chunks:
                status.update(_decode_chunk(str(npy), chunk, size, channels, max_pixels))
                bar.update(len(chunk))
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
                futures = {
                    pool.submit(_decode_chunk, str(npy), c, size, channels, max_pixels): len(c)
                    for c in chunks
                }
                for fut in as_completed(futures):
                    status.update(fut.result())
                    bar.update(futures[fut])
    return status


def _cache_key(paths: Sequence[str], size: tuple[int, int], channels: int, max_pixels: int) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([CACHE_VERSION, list(size), channels, max_pixels]).encode())
    for p in paths:
        h.update(p.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:24]


def decode_files(
    paths: Sequence[str | Path],
    size: int | tuple[int, int],
    channels: int = 3,
    *,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    max_pixels: int = MAX_PIXELS,
    desc: str = "decoding images",
) -> DecodedFiles:
    """Decode ``paths`` at ``size`` into a uint8 (N, C, H, W) array, through the decoded cache.

    Files that cannot be decoded are left out of ``images`` and listed in ``skipped``. With
    ``cache=False`` the pixels are decoded into a temporary file and returned in memory.

    Example::

        out = decode_files(sorted(Path("photos").rglob("*.jpg")), 128)
        print(out.images.shape, out.decoded, out.reused, len(out.skipped))
    """
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    abs_paths = [os.path.abspath(p) for p in paths]
    workers = default_workers() if workers is None else workers
    n = len(abs_paths)
    shape = (n, channels, *hw)
    stats = [_stat(p) for p in abs_paths]
    tmp_dir = None
    if cache:
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        folder = root / "decoded"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise PermissionError(f"{folder} is not writable")
        except OSError as exc:
            warnings.warn(
                f"decoded cache unavailable ({exc}); decoding without it (set CNNLAB_CACHE to a "
                "writable folder to keep decoded images between runs)",
                stacklevel=2,
            )
            cache = False
    if cache:
        key = _cache_key(abs_paths, hw, channels, max_pixels)
    else:
        tmp_dir = tempfile.mkdtemp(prefix="cnnlab-decode-")
        folder, key = Path(tmp_dir), "decoded"
    npy, index_file = folder / f"{key}.npy", folder / f"{key}.json"
    target = npy
    try:
        index = json.loads(index_file.read_text()) if index_file.exists() else None
        if index is not None and (
            index.get("version") != CACHE_VERSION
            or index.get("shape") != list(shape)
            or len(index.get("stats", [])) != n
            or not npy.exists()
        ):
            index = None
        target = npy
        if index is None:
            # A full build goes to a private file renamed into place when complete, so a process
            # building the same cache at the same time never sees (or truncates) a half-written one.
            target = folder / f"{key}.{os.getpid()}.tmp.npy"
            np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=shape).flush()
            reasons = [""] * n
            todo = list(range(n))
        else:
            reasons = list(index["reasons"])
            todo = [i for i in range(n) if index["stats"][i] != stats[i]]
        if todo:
            # Invalidate first: if this update is interrupted, the next run rebuilds from scratch.
            index_file.unlink(missing_ok=True)
            status = _decode_rows(
                target,
                [(i, abs_paths[i]) for i in todo],
                hw,
                channels,
                max_pixels,
                workers,
                progress,
                desc,
            )
            for i, why in status.items():
                reasons[i] = why
            if target != npy:
                os.replace(target, npy)
            if cache:
                tmp = index_file.with_suffix(".json.tmp")
                tmp.write_text(
                    json.dumps(
                        {
                            "version": CACHE_VERSION,
                            "shape": list(shape),
                            "paths": abs_paths,
                            "stats": stats,
                            "reasons": reasons,
                        }
                    )
                )
                tmp.replace(index_file)
        ok = [i for i in range(n) if not reasons[i]]
        skipped = [(str(paths[i]), reasons[i]) for i in range(n) if reasons[i]]
        # Copy-on-write mapping: torch can wrap it (it wants a writable array) and nothing a caller
        # does in memory can change the cache file.
        mm = np.load(npy, mmap_mode="c")
        if not cache:
            images = np.array(mm[ok])
        elif len(ok) == n:
            images = mm
        else:
            images = mm[ok]  # the failed rows are dropped, which needs a copy
        del mm
        return DecodedFiles(
            images=images,
            ok=ok,
            skipped=skipped,
            decoded=len(todo),
            reused=n - len(todo),
            cache_file=npy if cache else None,
        )
    finally:
        if target != npy:  # an interrupted full build leaves no stray file behind
            target.unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
