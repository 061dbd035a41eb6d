"""Turning uploaded bytes into model inputs, off the event loop.

Decoding a large PNG takes hundreds of milliseconds of CPU; done inside an ``async`` handler it
freezes every other client and the health probe with it. :class:`Preprocessor` runs
:func:`decode_upload` on a small thread pool (Pillow releases the GIL while it inflates and
resizes) behind a bounded admission count, so a flood of big images gets 503 instead of a stall or
unbounded memory.
"""

from __future__ import annotations

import asyncio
import io
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cnnlab.data.decode import pil_to_array
from cnnlab.data.loader import normalize_batch


class HTTPError(Exception):
    """An input problem answered with ``status`` and a one-line ``detail``; ``reason`` is the
    metrics label (a fixed word, never user text)."""

    def __init__(self, status: int, detail: str, reason: str):
        super().__init__(detail)
        self.status, self.detail, self.reason = status, detail, reason


class QueueFullError(HTTPError):
    """503: a bounded queue is full; clients should retry later."""

    def __init__(self, what: str = "request queue") -> None:
        super().__init__(503, f"server busy: the {what} is full, retry later", "queue_full")


def decode_upload(data: bytes, input_size: tuple[int, int, int], max_pixels: int) -> torch.Tensor:
    """Image bytes → uint8 (C, H, W) at ``input_size``, or an :class:`HTTPError` (415 / 400).

    Example::

        decode_upload(open("a.png", "rb").read(), (3, 224, 224), 40_000_000).shape  # (3, 224, 224)
    """
    if not data:
        raise HTTPError(400, "empty image", "empty")
    c, h, w = input_size
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise HTTPError(
                415, "not an image (or an unsupported image format)", "not_image"
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise HTTPError(400, f"image too large: {exc}", "bomb") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt headers
            raise HTTPError(400, f"corrupt image header ({exc})", "corrupt") from None
        if im.width * im.height > max_pixels:
            raise HTTPError(
                400,
                f"image of {im.width}x{im.height} exceeds the {max_pixels:,}-pixel limit "
                "(decompression bomb guard)",
                "bomb",
            )
        try:
            arr = pil_to_array(im, (h, w), c)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise HTTPError(400, f"image too large: {exc}", "bomb") from None
        except Exception as exc:  # noqa: BLE001 - truncated data surfaces as OSError/SyntaxError/...
            raise HTTPError(400, f"truncated or corrupt image ({exc})", "truncated") from None
    # np.asarray(PIL image) is read-only; torch warns on every such from_numpy, so copy (small)
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True))


class Preprocessor:
    """Decodes and normalises uploads on ``workers`` threads; at most ``queue`` images at once.

    :meth:`run` answers one normalised float (C, H, W) tensor or one :class:`HTTPError` per
    payload, in order, so one bad file never hides the others' answers.
    """

    def __init__(
        self,
        input_size: tuple[int, int, int],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        max_pixels: int,
        workers: int,
        queue: int,
    ):
        self.input_size, self.mean, self.std = input_size, mean, std
        self.max_pixels, self.capacity = max_pixels, queue
        self.pending = 0
        self.lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cnnlab-decode")

    def _one(self, data: bytes) -> torch.Tensor | HTTPError:
        try:
            img = decode_upload(data, self.input_size, self.max_pixels)
        except HTTPError as exc:
            return exc
        return normalize_batch(img[None], self.mean, self.std)[0]

    async def run(self, payloads: list[bytes]) -> list[torch.Tensor | HTTPError]:
        """Decode every payload off the event loop; 503 when too many images are waiting."""
        with self.lock:
            if self.pending + len(payloads) > self.capacity:
                raise QueueFullError("decoding queue")
            self.pending += len(payloads)
        loop = asyncio.get_running_loop()
        try:
            jobs = [loop.run_in_executor(self.executor, self._one, d) for d in payloads]
            return list(await asyncio.gather(*jobs))
        finally:
            with self.lock:
                self.pending -= len(payloads)

    def shutdown(self) -> None:
        """Stop the threads (queued work is dropped: its clients are gone at shutdown)."""
        self.executor.shutdown(wait=False, cancel_futures=True)
