"""A small DataLoader: every ``load`` issued in one tick of the event loop
becomes one call of the batch function (one SQL statement)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

BatchFn = Callable[[list[K]], Awaitable[Sequence[V]]]


class LoadsClosed(RuntimeError):
    """A load after the request's reads were settled: its transaction is ending."""


class Batches:
    """The batch tasks of one request, so the request can wait for every one of
    them before it writes its audit and commits: graphql-core stops awaiting
    sibling fields when a non-null field fails, but their queries still run on
    the request's connection."""

    __slots__ = ("closed", "tasks")

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def add(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        """Let running batches finish, then refuse new loads."""
        for _ in range(100):
            await asyncio.sleep(0)
            pending = [t for t in self.tasks if not t.done()]
            if not pending:
                break
            await asyncio.gather(*pending, return_exceptions=True)
        self.closed = True


class Loader(Generic[K, V]):
    __slots__ = ("_batch", "_batches", "_cache", "_fn", "_loop")

    def __init__(self, fn: BatchFn[K, V], batches: Batches | None = None) -> None:
        self._fn = fn
        self._batches = batches or Batches()
        self._cache: dict[K, asyncio.Future[V]] = {}
        self._batch: list[K] = []
        self._loop = asyncio.get_running_loop()

    def load(self, key: K) -> asyncio.Future[V]:
        future = self._cache.get(key)
        if future is not None:
            return future
        future = self._loop.create_future()
        if self._batches.closed:
            future.set_exception(LoadsClosed("This request's reads are finished"))
            return future
        self._cache[key] = future
        if not self._batch:
            self._loop.call_soon(self._dispatch)
        self._batch.append(key)
        return future

    def _dispatch(self) -> None:
        keys, self._batch = self._batch, []
        if self._batches.closed:
            for key in keys:
                self._cache[key].set_exception(LoadsClosed("This request's reads are finished"))
            return
        self._batches.add(self._loop.create_task(self._run(keys)))

    async def _run(self, keys: list[K]) -> None:
        try:
            values = await self._fn(keys)
            if len(values) != len(keys):
                raise RuntimeError("A batch function returned a different number of values than keys")
        except BaseException as error:
            for key in keys:
                future = self._cache[key]
                if not future.done():
                    future.set_exception(error)
            return
        for key, value in zip(keys, values, strict=True):
            future = self._cache[key]
            if not future.done():
                future.set_result(value)
