"""Partition-key ranges: how a range splits among poller actors, and which slice of the key
space a poller replica owns. Pure arithmetic, shared by the supervisor's flags and the tree."""

from __future__ import annotations

Range = tuple[int, int]  # inclusive: (lo, hi)


def split(lo: int, hi: int, parts: int) -> list[Range]:
    """Splits [lo, hi] into `parts` contiguous ranges of near-equal size (fewer when the range
    holds fewer keys than parts)."""
    size = hi - lo + 1
    parts = max(1, min(parts, size))
    bounds = [lo + size * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(parts)]


def replica_range(index: int, count: int, partitions: int) -> Range:
    """The slice of [0, partitions) that replica `index` of `count` owns; the slices of all
    replicas cover the key space once. Needs 0 <= index < count <= partitions."""
    if not 0 <= index < count <= partitions:
        raise ValueError(f"replica {index} of {count} over {partitions} partitions")
    return split(0, partitions - 1, count)[index]
