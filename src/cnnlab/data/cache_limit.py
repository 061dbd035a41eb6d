"""Keep the decoded cache within ``CNNLAB_CACHE_MAX``: least-recently-used entries go first.

Every folder or image size trained on leaves an entry (``KEY.json`` index + ``KEY.GEN.npy``
pixels) in ``decoded/``; without a bound they pile up forever. After each use, :func:`enforce_limit`
deletes whole entries, oldest use first (the index's modification time, refreshed on every use, so
``noatime`` mounts do not matter), until the folder fits. The entry just used is never deleted, even
when it alone is larger than the bound: re-decoding a big dataset on every run would be worse.
It also removes what crashed or superseded writers left behind: temporary files of processes that
no longer exist, pixel files no index refers to and indexes without pixels.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.errors import ConfigError

ENV_VAR = "CNNLAB_CACHE_MAX"
DEFAULT_MAX = "10G"
GRACE_S = 600.0  # an unreferenced file younger than this may belong to a writer about to publish
DEAD_TMP_S = 60.0  # a dead writer's file; the wait covers a pid seen from another host or container
STALE_TMP_S = 86_400.0  # a temporary file this old is abandoned even if its pid was reused
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.I)


def parse_size(text: str) -> int | None:
    """Bytes in ``"2G"``, ``"500M"``, ``"1.5GiB"``, ``"123456"``; None for ``unlimited``.

    Units are powers of 1024. Raises :class:`~cnnlab.errors.ConfigError` naming the variable.
    """
    if text.strip().lower() in ("unlimited", "none", "inf", "off"):
        return None
    m = _SIZE.fullmatch(text)
    if not m:
        raise ConfigError(
            f"{ENV_VAR}={text!r} is not a size; use e.g. 2G, 500M, 1.5GiB or unlimited"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def cache_max_bytes() -> int | None:
    """The bound from ``$CNNLAB_CACHE_MAX`` (default 10G); None means no bound."""
    return parse_size(os.environ.get(ENV_VAR) or DEFAULT_MAX)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(-1, 0) would ask about every process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


@dataclass
class _Entry:
    index: Path | None = None
    npys: list[Path] = field(default_factory=list)


def _referenced_npy(entry: _Entry) -> Path | None:
    """The pixel file the index names (read only when a key has several, which is rare)."""
    if entry.index is None or not entry.npys:
        return None
    if len(entry.npys) == 1:
        return entry.npys[0]
    try:
        name = json.loads(entry.index.read_text()).get("npy")
    except (OSError, ValueError, AttributeError):
        return None
    return next((p for p in entry.npys if p.name == name), None)


def _unlink(path: Path) -> int:
    try:
        size = path.stat().st_size
        path.unlink()
        return size
    except OSError:  # already gone (another process swept it) or not ours to delete
        return 0


def enforce_limit(folder: Path, keep: str, max_bytes: int | None) -> list[str]:
    """Delete leftovers, then least-recently-used entries until ``folder`` fits ``max_bytes``.

    ``keep`` is the key of the entry in use. Returns the keys of the evicted entries.
    """
    now = time.time()
    entries: dict[str, _Entry] = {}
    sizes: dict[Path, int] = {}
    mtimes: dict[Path, float] = {}
    try:
        listing = list(os.scandir(folder))
    except OSError:
        return []
    for de in listing:
        try:
            st = de.stat(follow_symlinks=False)
        except OSError:
            continue
        path = Path(de.path)
        parts = de.name.split(".")
        if de.name.endswith(".tmp"):
            # KEY.GEN.PID.tmp (pixels) or KEY.json.PID.tmp (index) of a writer
            pid = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else -1
            age = now - st.st_mtime
            if age > STALE_TMP_S or (age > DEAD_TMP_S and not _pid_alive(pid)):
                _unlink(path)
                continue
        elif de.name.endswith(".json") and len(parts) == 2:
            entries.setdefault(parts[0], _Entry()).index = path
        elif de.name.endswith(".npy"):
            entries.setdefault(parts[0], _Entry()).npys.append(path)
        sizes[path], mtimes[path] = st.st_size, st.st_mtime
    live: list[tuple[float, str, list[Path]]] = []
    for key, entry in entries.items():
        used = _referenced_npy(entry)
        for p in entry.npys:
            if p != used and now - mtimes[p] > GRACE_S:  # superseded, or a killed writer's
                _unlink(p)
                sizes.pop(p, None)
        if entry.index is not None and used is None and key != keep:
            if now - mtimes[entry.index] > GRACE_S:
                _unlink(entry.index)
                sizes.pop(entry.index, None)
            continue
        if entry.index is not None and used is not None:
            live.append((mtimes[entry.index], key, [entry.index, used]))
    total = sum(sizes.values())
    evicted = []
    if max_bytes is not None and total > max_bytes:
        for _, key, files in sorted(live):
            if total <= max_bytes:
                break
            if key == keep:
                continue
            for p in files:  # the index first: without it the entry is gone, whatever happens next
                _unlink(p)
                total -= sizes.pop(p, 0)
            evicted.append(key)
    return evicted
