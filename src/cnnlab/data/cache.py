"""The decoded cache: decode and resize every image file once, keep the pixels in a memory-mapped array.

Decoding JPEGs costs far more than training a small CNN on them, so it should happen once, not every
epoch and not every run. :func:`decode_files` decodes a list of files at one size into a uint8
``(N, C, H, W)`` ``.npy`` file under the cache directory (``$CNNLAB_CACHE``, else
``~/.cache/cnnlab``), using several worker processes and a progress bar. The next call with the same
files and size maps that array instead of decoding.

The cache heals itself rather than trusting what it finds:

- each file's pixels are keyed on its content (:mod:`cnnlab.data.filekeys`: inode change time,
  size and a SHA-256 of its bytes), so a rewrite that kept the size and restored the modification
  time is still decoded again (only that file);
- an entry is an index ``KEY.json`` naming a pixel file ``KEY.GEN.npy`` with its byte size and
  modification time. A new or updated entry is written to a temporary file, synced and renamed, and
  only then does the index — renamed into place in one step — point at it: a killed writer leaves the
  previous entry (or none), never half of one, and a published pixel file is never written again, so
  a process training from it never sees its pixels change;
- a truncated, rewritten or unreadable entry is detected before it is mapped, rebuilt, and reported
  in one log line;
- the cache stays within ``$CNNLAB_CACHE_MAX`` (:mod:`cnnlab.data.cache_limit`), least recently
  used entries evicted first.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cnnlab.data.cache_limit import ENV_VAR as CACHE_MAX_VAR
from cnnlab.data.cache_limit import cache_max_bytes, enforce_limit
from cnnlab.data.decode import MAX_PIXELS, decode_image
from cnnlab.data.filekeys import SAMPLE_BYTES, file_keys, same_content
from cnnlab.data.skipped import escape_path
from cnnlab.errors import DataError

CACHE_VERSION = 2
CHUNK = 64  # files per worker task: large enough to amortise the task overhead
log = logging.getLogger(__name__)


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
        index_file: the entry's index (``KEY.json``), or None when caching was off.
    """

    images: np.ndarray
    ok: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    decoded: int = 0
    reused: int = 0
    cache_file: Path | None = None
    index_file: Path | None = None


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
        except FileNotFoundError:
            out[row] = 0
            status.append((row, "no such file (deleted, or a broken symlink)"))
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


def _stale_rows(index: dict, keys: list) -> list[int]:
    """Rows to decode again: those whose file's content key changed. A file that could not be read
    then and still cannot (key None both times) is not retried on every run — its reason stands."""
    return [
        i
        for i, (old, new) in enumerate(zip(index["keys"], keys, strict=True))
        if not (same_content(old, new) or (old is None and new is None and index["reasons"][i]))
    ]


class _Damaged(Exception):
    """An entry that exists but cannot be trusted; the message says why, in a few words."""

    def __init__(self, why: str, npy: Path | None = None):
        super().__init__(why)
        self.npy = npy  # the damaged pixel file, deleted once the entry is rebuilt


def _npy_layout(npy: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, expected file size) from a ``.npy`` header, without mapping the data."""
    with open(npy, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if fortran:
            raise ValueError("Fortran order")
        return tuple(shape), dtype, f.tell() + int(np.prod(shape)) * dtype.itemsize


def _read_index(index_file: Path, key: str, shape: tuple[int, ...]) -> dict | None:
    """The entry's index when it and its pixel file are intact; None when there is no usable entry
    (none yet, an older format, pixels deleted or evicted); raises :class:`_Damaged` otherwise."""
    try:
        text = index_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise _Damaged(
            f"its index cannot be read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    try:
        index = json.loads(text)
    except ValueError:
        raise _Damaged("its index is not valid JSON") from None
    if not isinstance(index, dict) or index.get("version") != CACHE_VERSION:
        return None
    n = shape[0]
    name = index.get("npy")
    if (
        index.get("shape") != list(shape)
        or not isinstance(name, str)
        or not (name.startswith(key + ".") and name.endswith(".npy") and "/" not in name)
        or not isinstance(index.get("keys"), list)
        or len(index["keys"]) != n
        or not isinstance(index.get("reasons"), list)
        or len(index["reasons"]) != n
        or not all(isinstance(r, str) for r in index["reasons"])
        or not all(k is None or (isinstance(k, list) and len(k) == 6) for k in index["keys"])
    ):
        raise _Damaged("its index does not describe these files")
    npy = index_file.parent / name
    try:
        st = npy.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Damaged(f"its pixel file cannot be read: {exc.strerror}", npy) from None
    want = index.get("npy_size")
    if isinstance(want, int) and st.st_size < want:
        raise _Damaged(f"its pixel file is truncated ({st.st_size:,} of {want:,} bytes)", npy)
    if st.st_size != want or st.st_mtime_ns != index.get("npy_mtime_ns"):
        raise _Damaged("its pixel file was modified after it was written", npy)
    try:
        got_shape, dtype, expected = _npy_layout(npy)
    except (OSError, ValueError, SyntaxError) as exc:
        raise _Damaged(f"its pixel file is not a valid .npy ({str(exc)[:80]})", npy) from None
    if got_shape != shape or dtype != np.uint8 or expected != st.st_size:
        raise _Damaged(f"its pixel file is truncated or malformed ({st.st_size:,} bytes)", npy)
    index["_npy"] = npy
    return index


def _write_failed(path: Path, exc: OSError) -> DataError:
    return DataError(
        f"cannot write the decoded cache {escape_path(path)}: {exc.strerror or exc}; free space, "
        f"lower {CACHE_MAX_VAR}, set CNNLAB_CACHE to another folder or turn the cache off"
    )


def _new_pixels(tmp: Path, shape: tuple[int, ...], copy_from: Path | None) -> None:
    """Create ``tmp``: a copy of the previous pixels (an update) or zeros, with its disk space
    allocated now — a full disk is an error here, not a SIGBUS when a mapped page is written."""
    if copy_from is not None:
        shutil.copyfile(copy_from, tmp)
        return
    np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape).flush()
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # unsupported: fine
            raise
    except AttributeError:  # not on Linux
        pass
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_index(index_file: Path, index: dict) -> None:
    """Publish ``index`` in one rename (after syncing it), so readers see the old or the new one."""
    tmp = index_file.with_name(f"{index_file.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(index, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, index_file)
    finally:
        tmp.unlink(missing_ok=True)


def _map(npy: Path) -> np.ndarray:
    # Copy-on-write mapping: torch can wrap it (it wants a writable array) and nothing a caller
    # does in memory can change the cache file.
    return np.load(npy, mmap_mode="c")


def _decode_uncached(
    abs_paths: list[str], shape: tuple[int, ...], decode_args: tuple
) -> tuple[np.ndarray, list[str]]:
    tmp_dir = tempfile.mkdtemp(prefix="cnnlab-decode-")
    try:
        npy = Path(tmp_dir) / "decoded.npy"
        _new_pixels(npy, shape, None)
        status = _decode_rows(npy, list(enumerate(abs_paths)), *decode_args)
        reasons = [status.get(i, "") for i in range(len(abs_paths))]
        mm = _map(npy)
        images = np.array(mm[[i for i, why in enumerate(reasons) if not why]])
        del mm
        return images, reasons
    except OSError as exc:
        raise _write_failed(Path(tmp_dir), exc) from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _usable_folder(cache_dir: str | Path | None) -> Path | None:
    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "decoded"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        log.warning(
            "decoded cache %s unavailable (%s); decoding without it (set CNNLAB_CACHE to a "
            "writable folder to keep decoded images between runs)",
            escape_path(folder),
            exc.strerror or exc,
        )
        return None
    return folder


# Long by design: the cache's lookup, validation, rebuild and publish steps share one lock and
# one entry; kept together so the crash-safety order (write, sync, rename) is visible.
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
    sample_bytes: int | None = SAMPLE_BYTES,
) -> DecodedFiles:
    """Decode ``paths`` at ``size`` into a uint8 (N, C, H, W) array, through the decoded cache.

    Files that cannot be decoded are left out of ``images`` and listed in ``skipped`` (raw paths).
    With ``cache=False`` the pixels are decoded into a temporary file and returned in memory.
    ``sample_bytes`` is how much of each large file the content key hashes
    (:func:`cnnlab.data.filekeys.file_key`; None: every byte). Writing the cache fails with a
    one-line :class:`~cnnlab.errors.DataError` naming the path (a full disk, a read-only folder).

    Example::

        out = decode_files(sorted(Path("photos").rglob("*.jpg")), 128)
        print(out.images.shape, out.decoded, out.reused, len(out.skipped))
    """
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    abs_paths = [os.path.abspath(p) for p in paths]
    workers = default_workers() if workers is None else workers
    n = len(abs_paths)
    shape = (n, channels, *hw)
    if n == 0:
        return DecodedFiles(images=np.zeros(shape, np.uint8), ok=[])
    decode_args = (hw, channels, max_pixels, workers, progress, desc)
    folder = _usable_folder(cache_dir) if cache else None
    if folder is None:
        images, reasons = _decode_uncached(abs_paths, shape, decode_args)
        ok = [i for i in range(n) if not reasons[i]]
        skipped = [(str(paths[i]), reasons[i]) for i in range(n) if reasons[i]]
        return DecodedFiles(images=images, ok=ok, skipped=skipped, decoded=n)
    max_bytes = cache_max_bytes()  # a bad CNNLAB_CACHE_MAX fails before any work
    key = _cache_key(abs_paths, hw, channels, max_pixels)
    index_file = folder / f"{key}.json"
    keys = file_keys(abs_paths, sample_bytes, workers=workers, progress=progress)
    mm, index, damaged = None, None, None
    try:
        index = _read_index(index_file, key, shape)
        if index is not None and not _stale_rows(index, keys):
            mm = _map(index["_npy"])
    except (_Damaged, ValueError, OSError) as exc:
        if isinstance(exc, _Damaged):
            why, damaged = str(exc), exc.npy
        else:
            why = f"its pixel file cannot be mapped: {exc}"
            damaged = index["_npy"] if index is not None else None
        log.warning(
            "decoded cache entry %s was damaged (%s); rebuilding it", escape_path(index_file), why
        )
        index, mm = None, None
    if mm is not None:  # a hit: every row is current
        todo: list[int] = []
        reasons = list(index["reasons"])
        npy = index["_npy"]
        try:
            if index["keys"] != keys:  # stat fields moved, content did not: remember the new ones
                _write_index(index_file, {**_public(index), "keys": keys})
            else:
                os.utime(index_file)  # marks the entry as recently used, for eviction
        except OSError:
            pass  # a read-only cache is still a valid cache
    else:
        old = index["_npy"] if index is not None else None
        if index is None:
            todo, reasons = list(range(n)), [""] * n
        else:
            todo = _stale_rows(index, keys)
            reasons = list(index["reasons"])
        npy, mm = _build(folder, key, shape, old, todo, abs_paths, reasons, decode_args)
        st = npy.stat()
        entry = {
            "version": CACHE_VERSION,
            "shape": list(shape),
            "npy": npy.name,
            "npy_size": st.st_size,
            "npy_mtime_ns": st.st_mtime_ns,
            "keys": keys,
            "reasons": reasons,
        }
        try:
            _write_index(index_file, entry)
        except OSError as exc:
            raise _write_failed(index_file, exc) from None
        for stale in {old, damaged} - {None, npy}:
            stale.unlink(missing_ok=True)  # superseded pixels; a process mapping them keeps them
    enforce_limit(folder, key, max_bytes)
    ok = [i for i in range(n) if not reasons[i]]
    skipped = [(str(paths[i]), reasons[i]) for i in range(n) if reasons[i]]
    images = mm if len(ok) == n else mm[ok]  # the failed rows are dropped, which needs a copy
    return DecodedFiles(
        images=images,
        ok=ok,
        skipped=skipped,
        decoded=len(todo),
        reused=n - len(todo),
        cache_file=npy,
        index_file=index_file,
    )


def _public(index: dict) -> dict:
    return {k: v for k, v in index.items() if not k.startswith("_")}


def _build(
    folder: Path,
    key: str,
    shape: tuple[int, ...],
    old: Path | None,
    todo: list[int],
    abs_paths: list[str],
    reasons: list[str],
    decode_args: tuple,
) -> tuple[Path, np.ndarray]:
    """Write a new pixel file (the old one's rows, with ``todo`` decoded again) and map it."""
    gen = os.urandom(4).hex()
    tmp = folder / f"{key}.{gen}.{os.getpid()}.tmp"
    npy = folder / f"{key}.{gen}.npy"
    try:
        try:
            _new_pixels(tmp, shape, old)
        except OSError as exc:
            raise _write_failed(tmp, exc) from None
        status = _decode_rows(tmp, [(i, abs_paths[i]) for i in todo], *decode_args)
        for i, why in status.items():
            reasons[i] = why
        try:
            _fsync(tmp)
            os.replace(tmp, npy)
        except OSError as exc:
            raise _write_failed(npy, exc) from None
        # Mapped before the index is published: once mapped, a sweeping process may delete it.
        return npy, _map(npy)
    finally:
        tmp.unlink(missing_ok=True)  # an interrupted build leaves no stray file behind
