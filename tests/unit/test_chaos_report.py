"""The chaos run's arithmetic: what counts as lost, sent twice (and when that is the allowed
in-flight re-send), early, silent, late, and which exits count."""

from __future__ import annotations

from bench.chaos_cluster import Exit
from bench.chaos_load import Arrival, Post
from bench.chaos_report import (
    Fault,
    broken_promises,
    longest_silence,
    percentile,
    summarize,
)

T0 = 1_000_000.0


def post(i: int, sent: float, *, scheduled: float | None = None, status: int | None = 202) -> Post:
    return Post(
        marker=f"m-{i}",
        path="d0",
        sent_at=T0 + sent,
        scheduled_at=None if scheduled is None else T0 + scheduled,
        done_at=T0 + sent + 0.01,
        status=status,
        notification_id=f"n{i}" if status == 202 else None,
    )


def arrival(i: int, at: float, *, scheduled: float | None = None, wid: str = "") -> Arrival:
    return Arrival("d0", wid or f"n{i}", T0 + at, f"n{i}", f"m-{i}", scheduled and T0 + scheduled)


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.99) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0


def test_longest_silence_counts_the_gap_up_to_the_end_of_the_load() -> None:
    assert longest_silence([1.0, 2.0, 2.5], 1.0, 9.0) == (6.5, 2.5)
    assert longest_silence([1.0, 5.0, 5.5], 1.0, 6.0) == (4.0, 1.0)
    assert longest_silence([], 1.0, 3.0) == (2.0, 1.0)


def test_a_clean_run() -> None:
    posts = [post(0, 0), post(1, 1, scheduled=4)]
    arrivals = [arrival(0, 0.2), arrival(1, 4.1, scheduled=4)]
    s = summarize(posts, arrivals, None, [])
    assert (s.accepted, s.delivered, s.missing, s.duplicates, s.early) == (2, 2, 0, 0, 0)
    assert s.recovery_s is None
    assert round(s.lateness_max_s or 0, 2) == 0.19  # from the 202, not from the send
    assert round(s.accept_p99_s or 0, 2) == 0.01  # the send to the 202
    assert broken_promises(s) == []


def test_lost_early_refused_and_unacked() -> None:
    posts = [post(0, 0), post(1, 0, scheduled=5), post(2, 0), post(3, 0, status=503)]
    arrivals = [arrival(1, 4.9, scheduled=5), arrival(2, 1), arrival(3, 1)]
    s = summarize(posts, arrivals, None, [])
    assert s.missing == 1 and s.missing_sample == ["m-0"]
    assert s.early == 1
    assert s.refused == 1 and s.refused_by == {"503": 1}
    assert s.unacked_arrivals == 1  # written although the API said 503
    assert {"missing 1", "early 1", "1 arrived without a 202"} <= set(broken_promises(s))


def test_a_post_in_flight_when_the_api_died_may_arrive() -> None:
    """No answer at all: committed before the kill, the 202 lost with the process. Arriving is
    right (a retry with its Idempotency-Key would be answered with it); not a broken promise."""
    posts = [post(0, 0), post(1, 0, status=None)]
    arrivals = [arrival(0, 1), arrival(1, 1)]
    s = summarize(posts, arrivals, None, [])
    assert (s.unacked_arrivals, s.unanswered_arrivals) == (0, 1)
    assert broken_promises(s) == []


def test_an_in_flight_resend_is_allowed_a_late_or_renamed_one_is_not() -> None:
    fault = Fault(T0 + 10, T0 + 12)
    posts = [post(i, 9) for i in range(3)]
    arrivals = [
        arrival(0, 9.98),
        arrival(0, 13, wid="n0"),  # same id, within 5 s of the restart: in flight at the kill
        arrival(1, 9.99),
        arrival(1, 80),  # same id, after the claim ran out: not allowed
        arrival(2, 9.99),
        arrival(2, 13, wid="other"),  # a new webhook-id: the receiver cannot dedupe it
    ]
    s = summarize(posts, arrivals, fault, [])
    assert (s.duplicates, s.extra_arrivals) == (3, 3)
    assert s.duplicates_same_webhook_id == 2
    assert s.duplicates_in_flight == 1
    assert "2 duplicates not an in-flight re-send" in broken_promises(s)


def test_recovery_is_measured_on_work_accepted_after_the_fault_began() -> None:
    fault = Fault(T0 + 10, T0 + 12)
    posts = [post(0, 5), post(1, 11), post(2, 13)]
    # n0 (accepted before the fault) arrives first after the end, but is not "new" work.
    arrivals = [arrival(0, 12.1), arrival(1, 19), arrival(2, 19.5)]
    s = summarize(posts, arrivals, fault, [])
    assert s.recovery_s == 7.0
    assert "first new arrival 7.0 s after the fault" in broken_promises(s)
    assert s.all_in_after_fault_s == 7.5
    assert any("all in" in b for b in broken_promises(s, heal_bound_s=5))


def test_only_exits_nobody_asked_for_and_bad_sigterms_count() -> None:
    exits = [
        Exit("delivery", -9, T0, True, "sigkill"),
        Exit("router", 0, T0, True, "sigterm", 1.0),
        Exit("api", -9, T0, True, "sigterm-timeout", 20.0),
        Exit("poller0", 1, T0, False, "own"),
    ]
    s = summarize([post(0, 0)], [arrival(0, 1)], None, exits)
    assert [(e["name"], e["code"]) for e in s.exits] == [("api", -9), ("poller0", 1)]
    assert "process exits" in broken_promises(s)
