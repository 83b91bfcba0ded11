"""A small DataLoader: every ``load`` issued in one tick of the event loop
becomes one call of the batch function (one SQL statement).

A key's value is one future, shared by every resolver that asks for it while it
is on its way; each gets it through a shield, so that a resolver cancelled while
it waits (graphql-core cancels a failed field's siblings) does not cancel it for
the others. A key asked again once its value has arrived (a type inside itself:
a class's students, then each student's classes, then their students) is read
again in the next batch, like any other key of that level, rather than answered
at once: so every level completes in the order it was asked, breadth first,
which is the order the compiled reads note their audit in (schema/compiled.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

BatchFn = Callable[[list[K]], Awaitable[Sequence[V]]]


class Loader(Generic[K, V]):
    __slots__ = ("_batch", "_cache", "_fn", "_loop", "_tasks")

    def __init__(self, fn: BatchFn[K, V]) -> None:
        self._fn = fn
        # Strong references to running batches (the loop keeps only weak ones).
        self._tasks: set[asyncio.Task[None]] = set()
        self._cache: dict[K, asyncio.Future[V]] = {}
        self._batch: list[K] = []
        self._loop = asyncio.get_running_loop()

    def load(self, key: K) -> asyncio.Future[V]:
        future = self._cache.get(key)
        if future is None or future.done():
            future = self._loop.create_future()
            self._cache[key] = future
            if not self._batch:
                self._loop.call_soon(self._dispatch)
            self._batch.append(key)
        return asyncio.shield(future)

    def _dispatch(self) -> None:
        keys, self._batch = self._batch, []
        task = self._loop.create_task(self._run(keys))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
