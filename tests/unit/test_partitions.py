"""Partition-key ranges: splitting a range among pollers, and a replica's slice of the keys."""

from __future__ import annotations

import itertools

import pytest

from notifi.partitions import replica_range, split


def test_partition_split_covers_the_range() -> None:
    assert split(0, 1023, 2) == [(0, 511), (512, 1023)]
    parts = split(0, 1023, 3)
    assert parts[0][0] == 0 and parts[-1][1] == 1023
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(parts))
    assert split(5, 6, 4) == [(5, 5), (6, 6)]


@pytest.mark.parametrize(("count", "partitions"), [(1, 1024), (3, 1024), (4, 1024), (7, 7)])
def test_replica_ranges_cover_the_key_space_once(count: int, partitions: int) -> None:
    ranges = [replica_range(i, count, partitions) for i in range(count)]
    assert ranges[0][0] == 0 and ranges[-1][1] == partitions - 1
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))
    assert all(lo <= hi for lo, hi in ranges)


def test_replica_range_matches_the_flags_arithmetic() -> None:
    assert replica_range(1, 4, 1024) == (256, 511)
    assert replica_range(2, 3, 1024) == (682, 1023)


@pytest.mark.parametrize(("index", "count"), [(2, 2), (-1, 2), (0, 0), (0, 2000)])
def test_replica_range_refuses_impossible_slices(index: int, count: int) -> None:
    with pytest.raises(ValueError):
        replica_range(index, count, 1024)
