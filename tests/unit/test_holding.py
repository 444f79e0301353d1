"""The one timer that holds jobs loaded ahead of their due time: released at their time, in
due order, in batches, never early; dropped or cleared on demand."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from notifi.holding import Holder

pytestmark = pytest.mark.timeout(10)


async def test_items_are_released_at_their_due_time_in_due_order_never_early() -> None:
    released: list[tuple[datetime, list[str]]] = []
    holder: Holder[str] = Holder(lambda items: released.append((datetime.now(UTC), items)))
    now = datetime.now(UTC)
    due = {"c": now + timedelta(milliseconds=150), "a": now + timedelta(milliseconds=50)}
    due["b"] = due["a"]  # two due at once leave together, in arrival order
    for name in ("c", "a", "b"):
        holder.hold(due[name], name)
    assert len(holder) == 3
    await asyncio.sleep(0.3)
    assert [items for _, items in released] == [["a", "b"], ["c"]]
    for at, items in released:
        assert all(at >= due[name] for name in items)
    assert len(holder) == 0


async def test_an_earlier_item_rearms_the_timer_and_past_ones_leave_at_once() -> None:
    released: list[str] = []
    holder: Holder[str] = Holder(released.extend)
    now = datetime.now(UTC)
    holder.hold(now + timedelta(seconds=5), "late")
    holder.hold(now + timedelta(milliseconds=30), "soon")
    holder.hold(now - timedelta(seconds=1), "past")
    await asyncio.sleep(0.1)
    assert released == ["past", "soon"]
    assert holder.clear() == ["late"]
    assert len(holder) == 0


async def test_dropped_and_cleared_items_are_never_released() -> None:
    released: list[int] = []
    holder: Holder[int] = Holder(released.extend)
    now = datetime.now(UTC)
    for i in range(6):
        holder.hold(now + timedelta(milliseconds=40 + i), i)
    assert holder.drop(lambda i: i % 2 == 0) == 3
    assert holder.drop(lambda i: i > 100) == 0
    await asyncio.sleep(0.15)
    assert released == [1, 3, 5]
    holder.hold(datetime.now(UTC) + timedelta(milliseconds=30), 9)
    assert holder.clear() == [9]
    await asyncio.sleep(0.08)
    assert released == [1, 3, 5]


async def test_a_release_that_raises_keeps_the_rest_on_time() -> None:
    released: list[str] = []

    def release(items: list[str]) -> None:
        released.extend(items)
        if "bad" in items:
            raise RuntimeError("a release failed")

    holder: Holder[str] = Holder(release)
    loop = asyncio.get_running_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    now = datetime.now(UTC)
    holder.hold(now + timedelta(milliseconds=20), "bad")
    holder.hold(now + timedelta(milliseconds=60), "good")
    await asyncio.sleep(0.15)
    loop.set_exception_handler(None)
    assert released == ["bad", "good"] and len(errors) == 1
