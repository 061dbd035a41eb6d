"""Dynamic micro-batching: concurrent requests share forward passes.

A batch of 16 costs far less than 16 batches of one, so one worker task takes the first waiting
image, gathers more until ``max_batch`` or until ``max_wait_ms`` has passed, and runs the batch on a
dedicated inference thread, leaving the event loop free to accept (and refuse) requests meanwhile.
Anything else that must touch the model (a Grad-CAM, which hooks its layers) runs on that same
thread through :meth:`MicroBatcher.exclusive`, so it can never interleave with a forward pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from cnnlab.deploy.metrics import Metrics
from cnnlab.deploy.predictor import AnyPredictor
from cnnlab.deploy.uploads import QueueFullError

T = TypeVar("T")


class MicroBatcher:
    """Groups normalised (C, H, W) float images from concurrent requests into forward passes."""

    def __init__(
        self,
        predictor: AnyPredictor,
        metrics: Metrics,
        max_batch: int,
        max_wait_ms: float,
        queue_size: int,
    ):
        self.predictor, self.metrics = predictor, metrics
        self.max_batch, self.max_wait_s = max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnlab-infer")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        self.task = asyncio.get_running_loop().create_task(self._run())

    @property
    def alive(self) -> bool:
        """Whether the worker task is running (the health probe's answer)."""
        return self.task is not None and not self.task.done()

    async def stop(self) -> None:
        """Stop the worker (called after in-flight requests have been answered)."""
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, images: list[torch.Tensor]) -> torch.Tensor:
        """The predictor's :meth:`batch_outputs` for ``images``, stacked: probabilities
        (len(images), K) for a classifier, raw box predictions or logits for a dense model. All
        of a request's images are queued or none is."""
        if self.queue.maxsize - self.queue.qsize() < len(images):
            raise QueueFullError()
        loop = asyncio.get_running_loop()
        futures = []
        for im in images:
            fut = loop.create_future()
            self.queue.put_nowait((im, fut))
            futures.append(fut)
        return torch.stack(await asyncio.gather(*futures))

    async def exclusive(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the inference thread, between forward passes."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _gather(self) -> list[tuple[torch.Tensor, asyncio.Future]]:
        loop = asyncio.get_running_loop()
        items = [await self.queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(items) < self.max_batch:
            try:
                items.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            # not wait_for(queue.get()): a get completing as the timeout fires would lose an image
            getter = asyncio.ensure_future(self.queue.get())
            done, _ = await asyncio.wait({getter}, timeout=left)
            if getter not in done:
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    items.append(await getter)
                break
            items.append(getter.result())
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._gather()
            live = [(im, f) for im, f in items if not f.done()]  # drop cancelled requests
            if not live:
                continue
            batch = torch.stack([im for im, _ in live])
            try:
                probs = await loop.run_in_executor(
                    self.executor, self.predictor.batch_outputs, batch
                )
            except Exception as exc:  # noqa: BLE001 - a failed batch must not kill the worker
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                continue
            self.metrics.batch(len(live))
            for (_, f), p in zip(live, probs):
                if not f.done():
                    f.set_result(p)
