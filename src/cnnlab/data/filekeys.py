"""What a file's cached pixels are keyed on: its inode change time, size and a hash of its bytes.

Size and modification time are not enough: ``mtime`` can be restored (``touch -r``, ``os.utime``,
``rsync -t``, ``tar x``), so a file rewritten with the same size looks unchanged and the cache serves
its old pixels. The inode change time (``ctime``) cannot be set by a user, so any rewrite changes
it — on filesystems that keep it, at their resolution. The hash covers the rest (coarse or missing
``ctime``, a network filesystem that fakes it): SHA-256 (hardware-accelerated on most x86 and ARM
CPUs) of the whole file when it is at most :data:`FULL_HASH_BYTES`, else of its size plus three
:data:`SAMPLE_BYTES` slices (start, middle, end). ``BENCHMARKS.md`` has the cost.

A cached row is reused when the whole key matches, or when only the stat fields changed but the
hash covered every byte and still matches (a ``chmod``, a copy back into place: same content).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm.auto import tqdm

SAMPLE_BYTES = 16 * 1024
FULL_HASH_BYTES = 3 * SAMPLE_BYTES  # files up to this size are hashed whole
PARALLEL_FROM = 512  # files; below this a thread pool costs more than it saves
TASK_FILES = 256  # files per thread task: a million files must not mean a million futures

# A key: [size, mtime_ns, ctime_ns, inode, hash hex, hash covers the whole file (0/1)]
FileKey = list


def file_key(path: str, sample_bytes: int | None = SAMPLE_BYTES) -> FileKey | None:
    """The content key of ``path``, or None when it cannot be opened or read (it is then decoded,
    which reports why). ``sample_bytes=None`` hashes every byte; ``0`` hashes nothing (stat only)."""
    if sample_bytes == 0:  # stat fields only: no need to open the file
        try:
            st = os.stat(path)
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, "", 0]
    try:
        # O_NONBLOCK: a FIFO put where an image was must not hang the run (no effect on files)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        size = st.st_size
        h = hashlib.sha256(size.to_bytes(8, "little"))
        whole = sample_bytes is None or size <= 3 * sample_bytes
        if whole:
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
        else:
            for offset in (0, (size - sample_bytes) // 2, size - sample_bytes):
                h.update(os.pread(fd, sample_bytes, offset))
    except OSError:
        return None
    finally:
        os.close(fd)
    return [size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, h.hexdigest()[:32], int(whole)]


def file_keys(
    paths: Sequence[str],
    sample_bytes: int | None = SAMPLE_BYTES,
    *,
    workers: int = 1,
    progress: bool = False,
) -> list[FileKey | None]:
    """:func:`file_key` of every path, in order; threads help when the files are not in memory
    (each read releases the GIL)."""
    bar = tqdm(
        total=len(paths),
        desc="checking cached images",
        unit="file",
        disable=None if progress else True,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    )
    with bar:
        if workers <= 1 or len(paths) < PARALLEL_FROM:
            keys = []
            for p in paths:
                keys.append(file_key(p, sample_bytes))
                bar.update()
            return keys
        chunks = [paths[i : i + TASK_FILES] for i in range(0, len(paths), TASK_FILES)]
        keys = []
        with ThreadPoolExecutor(workers) as pool:
            for part in pool.map(lambda c: [file_key(p, sample_bytes) for p in c], chunks):
                keys.extend(part)
                bar.update(len(part))
        return keys


def same_content(old: FileKey | None, new: FileKey | None) -> bool:
    """True when a row cached under ``old`` holds the pixels of the file now keyed ``new``."""
    if old is None or new is None or len(old) != 6:
        return False
    if old == new:
        return True
    # Only the stat fields moved, and the hash read every byte both times: same content.
    return bool(old[5] and new[5]) and old[4] == new[4] and old[0] == new[0]
