"""Notifi's metrics keep each label set's key once checked (notifi.metrics._KeyedOnce): what they
count and render must be what aioprometheus itself counts and renders, and a bad label name
must still be refused."""

from __future__ import annotations

import aioprometheus
import pytest
from aioprometheus import Registry
from aioprometheus.renderer import render

from notifi import metrics

CALLS = [
    ("counter", "inc", {"route": "/a", "status": "202"}, None),
    ("counter", "add", {"status": "202", "route": "/a"}, 4),  # the same series, other order
    ("counter", "inc", {"route": "/b", "status": "500"}, None),
    ("counter", "inc", {}, None),
    ("gauge", "set", {"group": "g"}, 7),
    ("gauge", "set", {"group": "g"}, 3),
    ("gauge", "inc", {"group": "h"}, None),
    ("histogram", "observe", {"route": "/a"}, 0.004),
    ("histogram", "observe", {"route": "/a"}, 0.2),
    ("histogram", "observe", {}, 12.0),
    # On a bucket's bound (counted in it), an int, zero, past the last bound.
    ("histogram", "observe", {"route": "/a"}, 0.1),
    ("histogram", "observe", {"route": "/b"}, 1),
    ("histogram", "observe", {"route": "/b"}, 0.0),
    ("histogram", "observe", {"route": "/b"}, 0.005),
    ("histogram", "observe", {"route": "/b"}, 1e9),
]


def _collectors(kinds: dict[str, type]) -> tuple[Registry, dict[str, object]]:
    registry = Registry()
    made = {
        "counter": kinds["counter"]("t_total", "t", registry=registry),
        "gauge": kinds["gauge"]("t_gauge", "t", registry=registry),
        "histogram": kinds["histogram"](
            "t_seconds", "t", registry=registry, buckets=(0.005, 0.1, 1.0)
        ),
    }
    return registry, made


def _play(made: dict[str, object]) -> None:
    for kind, method, labels, value in CALLS:
        call = getattr(made[kind], method)
        call(labels) if value is None else call(labels, value)


def test_counts_and_renders_what_aioprometheus_does() -> None:
    ours, ours_made = _collectors(
        {"counter": metrics.Counter, "gauge": metrics.Gauge, "histogram": metrics.Histogram}
    )
    theirs, theirs_made = _collectors(
        {
            "counter": aioprometheus.Counter,
            "gauge": aioprometheus.Gauge,
            "histogram": aioprometheus.Histogram,
        }
    )
    _play(ours_made)
    _play(theirs_made)
    assert render(ours, [])[0] == render(theirs, [])[0]
    counter = ours_made["counter"]
    assert counter.get({"status": "202", "route": "/a"}) == 5  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["le", "__name", "job"])
def test_a_reserved_label_name_is_still_refused(name: str) -> None:
    histogram = metrics.Histogram("t2_seconds", "t", registry=Registry(), buckets=(1.0,))
    for _ in range(2):  # and not let through the second time
        with pytest.raises(ValueError):
            histogram.observe({name: "x"}, 0.5)


def test_bad_values_are_refused_as_aioprometheus_refuses_them() -> None:
    counter = metrics.Counter("t3_total", "t", registry=Registry())
    histogram = metrics.Histogram("t3_seconds", "t", registry=Registry(), buckets=(1.0,))
    with pytest.raises(ValueError):
        counter.add({"route": "/a"}, -1)
    with pytest.raises(TypeError):
        histogram.observe({"route": "/a"}, "0.5")  # type: ignore[arg-type]
    with pytest.raises(KeyError):  # nothing was counted or observed
        counter.get({"route": "/a"})
    with pytest.raises(KeyError):
        histogram.get({"route": "/a"})


def test_a_histogram_series_counts_as_aioprometheus_counts_any_value() -> None:
    bounds = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    ours = metrics.Histogram("t4_seconds", "t", registry=Registry(), buckets=bounds)
    theirs = aioprometheus.Histogram("t4_seconds", "t", registry=Registry(), buckets=bounds)
    values = [*bounds, *(b * 0.999 for b in bounds), *(b * 1.001 for b in bounds), 0.0, 1e6]
    for value in values:
        ours.observe({"x": "1"}, value)
        theirs.observe({"x": "1"}, value)
    assert ours.get({"x": "1"}) == theirs.get({"x": "1"})


def test_buckets_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="sorted"):
        metrics.Histogram("t5_seconds", "t", registry=Registry(), buckets=(1.0, 0.5))
