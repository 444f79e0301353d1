"""The offset tracker: what a consumer may commit while some records are still in flight."""

from __future__ import annotations

from notifi.offsets import OffsetTracker


def test_offsets_commit_below_the_oldest_in_flight() -> None:
    t = OffsetTracker()
    acks = {o: t.track(("t", 0), o) for o in range(5)}
    acks[1]()
    acks[2]()
    assert t.committable() == {}  # 0 still in flight
    acks[0]()
    assert t.committable() == {("t", 0): 3}
    acks[4]()
    assert t.committable() == {}
    acks[3]()
    assert t.committable() == {("t", 0): 5}
    assert t.in_flight() == 0


def test_offsets_per_partition() -> None:
    t = OffsetTracker()
    t.track(("t", 0), 10)()
    pending = t.track(("t", 1), 7)
    assert t.committable() == {("t", 0): 11}
    pending()
    assert t.committable() == {("t", 1): 8}
