"""Group commit: concurrent writers share one database transaction (one fsync for many).

Callers `submit` an operation and wait; one writer task takes everything queued, hands the
batch to the backend's `apply_batch` (one transaction), and answers each caller with its own
result or error. A caller never waits for more than the batch in flight plus its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

Op = TypeVar("Op")

Result = tuple[BaseException | None, Any]
"""Per operation: its error, or None and its value."""

ApplyBatch = Callable[[list[Op]], Awaitable[list[Result]]]


class GroupCommitter(Generic[Op]):
    def __init__(self, apply_batch: ApplyBatch[Op]) -> None:
        self._apply_batch = apply_batch
        self._queue: list[tuple[Op, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, op: Op) -> Any:
        """Queue `op`, wait until its transaction committed, and return its value (or raise
        its error)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        # The writer owns the transaction: a caller that is cancelled must not cancel it.
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Wait for queued operations to be written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await self._apply_batch([op for op, _ in batch])
            except BaseException as exc:  # the whole transaction failed
                results = [(exc, None)] * len(batch)
            answer(batch, results)


def answer(batch: list[tuple[Any, asyncio.Future[Any]]], results: list[Result]) -> None:
    """Give each waiter of `batch` its own result or error (skipping waiters cancelled
    meanwhile: their operations were applied all the same)."""
    for (_, future), (error, value) in zip(batch, results, strict=True):
        if future.done():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
