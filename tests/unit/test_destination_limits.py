"""The shared rate limit's slot arithmetic (notifi.destination_limits): evenly spaced slots, a
queue that runs dry, and the spacing of a rate."""

from __future__ import annotations

import itertools

import pytest

from notifi.destination_limits import Slot, interval_us, next_slot


@pytest.mark.parametrize(
    ("rate_per_s", "spacing_us"),
    [(5, 200_000), (1, 1_000_000), (0.5, 2_000_000), (3, 333_334), (1e9, 1)],
)
def test_spacing_of_a_rate(rate_per_s: float, spacing_us: int) -> None:
    assert interval_us(rate_per_s) == spacing_us


@pytest.mark.parametrize(
    ("tat_us", "now_us", "expected"),
    [
        (None, 1_000, Slot(1_000, 201_000)),  # nothing queued: now
        (500, 1_000, Slot(1_000, 201_000)),  # the queue ran dry: now, never in the past
        (1_000, 1_000, Slot(1_000, 201_000)),
        (401_000, 1_000, Slot(401_000, 601_000)),  # behind two others: its own future slot
    ],
)
def test_next_slot(tat_us: int | None, now_us: int, expected: Slot) -> None:
    assert next_slot(tat_us, now_us, 200_000) == expected


def test_a_burst_is_spread_one_spacing_apart() -> None:
    tat, slots = None, []
    for _ in range(100):
        slot = next_slot(tat, 0, interval_us(5))
        slots.append(slot.wait_s(0))
        tat = slot.tat_us
    assert slots[0] == 0 and slots[-1] == pytest.approx(19.8)
    assert all(b - a == pytest.approx(0.2) for a, b in itertools.pairwise(slots))
