"""The service's garbage-collection tuning (supervisor.tune_gc): start-up's objects frozen out
of later collections, the young generation collected after 20,000 net allocations."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from supervisor import tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    gc.unfreeze()
    tune_gc()
    assert gc.get_freeze_count() > 1000  # the modules imported so far, at least
    assert gc.get_threshold() == (20_000, 10, 10)
    # Cycles are still collected: a collection finds one made now.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
