import asyncio

import pytest

from service.core.keyed_locks import KeyedLocks


def test_writers_to_one_key_take_turns_in_arrival_order():
    locks = KeyedLocks(patience=5)
    events: list[tuple[str, int]] = []

    async def writer(index: int) -> None:
        async with locks.turn("session") as acquired:
            assert acquired
            events.append(("in", index))
            await asyncio.sleep(0.001)
            events.append(("out", index))

    async def run() -> None:
        await asyncio.gather(*(writer(index) for index in range(20)))

    asyncio.run(run())

    assert events == [(kind, index) for index in range(20) for kind in ("in", "out")]
    assert len(locks) == 0


def test_other_keys_do_not_wait():
    locks = KeyedLocks(patience=5)

    async def run() -> bool:
        async with locks.turn("a"), locks.turn("b") as acquired:
            return acquired

    assert asyncio.run(run()) is True


def test_a_writer_goes_ahead_without_its_turn_once_patience_runs_out():
    locks = KeyedLocks(patience=0.05)

    async def run() -> list[bool]:
        holder_in = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> bool:
            async with locks.turn("k") as acquired:
                holder_in.set()
                await release.wait()
                return acquired

        task = asyncio.create_task(holder())
        await holder_in.wait()
        async with locks.turn("k") as impatient:
            release.set()
        return [await task, impatient]

    assert asyncio.run(run()) == [True, False]
    assert len(locks) == 0


def test_a_cancelled_waiter_leaves_nothing_behind():
    locks = KeyedLocks(patience=5)

    async def run() -> None:
        async with locks.turn("k"):
            waiter = asyncio.create_task(locks.turn("k").__aenter__())
            await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        async with locks.turn("k") as acquired:
            assert acquired

    asyncio.run(run())
    assert len(locks) == 0


def test_a_waiter_cancelled_as_its_turn_comes_passes_the_turn_on():
    locks = KeyedLocks(patience=5)

    async def run() -> list[str]:
        order: list[str] = []

        async def waiter(name: str) -> None:
            async with locks.turn("k") as acquired:
                assert acquired
                order.append(name)

        holder = locks.turn("k")
        assert holder.ready and holder.acquired
        first = asyncio.create_task(waiter("first"))
        second = asyncio.create_task(waiter("second"))
        await asyncio.sleep(0.01)  # both wait
        holder.leave()  # hands the turn to `first`...
        first.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(first, second, return_exceptions=True)
        async with locks.turn("k") as acquired:
            order.append(f"then {acquired}")
        return order

    assert asyncio.run(run()) == ["second", "then True"]
    assert len(locks) == 0
