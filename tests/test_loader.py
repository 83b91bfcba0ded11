"""The DataLoader: one batch per tick, and a key's value shared without sharing a waiter's cancellation."""

from __future__ import annotations

import asyncio

import pytest

from resolvers.loader import Loader


async def test_loads_in_one_tick_are_one_batch_a_key_once_and_again_in_a_later_batch() -> None:
    batches: list[list[int]] = []

    async def double(keys: list[int]) -> list[int]:
        batches.append(keys)
        return [k * 2 for k in keys]

    loader: Loader[int, int] = Loader(double)
    assert list(await asyncio.gather(loader.load(1), loader.load(2), loader.load(1))) == [2, 4, 2]
    assert batches == [[1, 2]]
    # Asked again once its value has arrived: read again with the next batch, in its turn
    # (a type inside itself completes breadth first, as the compiled reads note it).
    assert list(await asyncio.gather(loader.load(3), loader.load(2))) == [6, 4]
    assert batches == [[1, 2], [3, 2]]


async def test_a_waiter_cancelled_does_not_cancel_the_value_for_the_others() -> None:
    release = asyncio.Event()

    async def slow(keys: list[str]) -> list[str]:
        await release.wait()
        return [k.upper() for k in keys]

    loader: Loader[str, str] = Loader(slow)
    first = asyncio.ensure_future(loader.load("a"))
    second = asyncio.ensure_future(loader.load("a"))
    await asyncio.sleep(0.01)
    first.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == "A"
    assert await loader.load("a") == "A"


async def test_a_failed_batch_fails_each_of_its_keys() -> None:
    async def broken(keys: list[int]) -> list[int]:
        raise ValueError("no")

    loader: Loader[int, int] = Loader(broken)
    results = await asyncio.gather(loader.load(1), loader.load(2), return_exceptions=True)
    assert [type(r) for r in results] == [ValueError, ValueError]
