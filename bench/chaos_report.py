"""What a chaos scenario measured, computed from its records alone (pure functions): what was
accepted and what arrived, lost, twice, early, how long the pipeline was silent, how late,
which processes exited; and which of issue 10's promises the numbers break."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from bench.chaos_cluster import Exit
from bench.chaos_load import Arrival, Post

IN_FLIGHT_WINDOW_S = 5.0  # a re-send of what was in flight at a crash must come this soon
RECOVERY_BOUND_S = 5.0  # first new arrival after the fault's end
LATENESS_P99_BOUND_S = 5.0


@dataclass(frozen=True)
class Fault:
    """When the fault began and when its process or service was started again (epoch s)."""

    start: float
    end: float


@dataclass
class Summary:
    accepted: int
    refused: int  # POSTs without a 202: an error status or no answer at all
    refused_by: dict[str, int]
    delivered: int  # accepted (notification, destination) pairs that arrived at least once
    missing: int
    missing_sample: list[str]
    duplicates: int  # pairs that arrived more than once
    extra_arrivals: int
    duplicates_same_webhook_id: int
    duplicates_in_flight: int  # same webhook-id, every re-send within 5 s of the fault's end
    duplicates_sample: list[dict]  # marker and arrival times, seconds after the fault's end
    early: int  # arrivals before the scheduled_at the client asked for
    unacked_arrivals: int  # arrivals of notifications whose POST was answered, not with a 202
    unanswered_arrivals: int  # arrivals whose POST got no answer: committed, then the API died
    recovery_s: float | None  # fault's end -> first arrival of work accepted after it began
    longest_silence_s: float | None
    longest_silence_at_s: float | None  # when that silence began, seconds into the load
    lateness_p50_s: float | None
    lateness_p99_s: float | None
    lateness_max_s: float | None
    immediate_p99_s: float | None
    accept_p99_s: float | None  # from the send to the 202, over the accepted POSTs
    all_in_after_fault_s: float | None  # fault's end -> last first-arrival (None: some missing)
    exits: list[dict] = field(default_factory=list)  # exits nobody asked for, or bad SIGTERMs

    def to_json(self) -> dict:
        return asdict(self)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def longest_silence(times: list[float], start: float, end: float) -> tuple[float, float] | None:
    """The longest gap between arrivals within [start, end], counting the edges as arrivals
    only at the end (the load starts before anything can arrive). Returns (gap, gap start)."""
    inside = sorted(t for t in times if start <= t <= end)
    if not inside:
        return (end - start, start) if end > start else None
    points = [*inside, end]
    best = (0.0, inside[0])
    for a, b in itertools.pairwise(points):
        if b - a > best[0]:
            best = (b - a, a)
    return best


def reportable_exits(exits: list[Exit]) -> list[Exit]:
    """Exits that count against the run: on its own, or a SIGTERM that did not end in 0."""
    return [e for e in exits if not e.expected or (e.how.startswith("sigterm") and e.code != 0)]


def summarize(
    posts: list[Post],
    arrivals: list[Arrival],
    fault: Fault | None,
    exits: list[Exit],
) -> Summary:
    accepted = {(p.notification_id, p.path): p for p in posts if p.accepted}
    refused_by: dict[str, int] = defaultdict(int)
    for p in posts:
        if not p.accepted:
            refused_by[str(p.status) if p.status is not None else (p.error or "none")] += 1
    by_key: dict[tuple[str, str], list[Arrival]] = defaultdict(list)
    for a in sorted(arrivals, key=lambda a: a.at):
        by_key[(a.notification_id, a.path)].append(a)
    accepted_ids = {nid for nid, _ in accepted}
    # A POST that got no answer at all was in flight when the API went away: it may have been
    # committed (at least once, as a client that retries with its Idempotency-Key expects). One
    # answered with an error must have written nothing.
    unanswered_markers = {p.marker for p in posts if p.status is None}
    unacked_arrivals = [a for a in arrivals if a.notification_id not in accepted_ids]
    unanswered = sum(1 for a in unacked_arrivals if a.marker in unanswered_markers)
    unacked = len(unacked_arrivals) - unanswered

    delivered = [k for k in accepted if k in by_key]
    missing = [accepted[k].marker for k in accepted if k not in by_key]
    dups = {k: v for k, v in by_key.items() if len(v) > 1}
    same_id = sum(1 for v in dups.values() if len({a.webhook_id for a in v}) == 1)
    in_flight = sum(
        1
        for v in dups.values()
        if fault is not None
        and len({a.webhook_id for a in v}) == 1
        and all(fault.start <= a.at <= fault.end + IN_FLIGHT_WINDOW_S for a in v[1:])
    )
    # Early is judged against the time the client asked for; the body's copy only where the
    # POST got no 202 (so its request is not matched to an id).
    asked = {p.notification_id: p.scheduled_at for p in posts if p.accepted}
    early = 0
    for a in arrivals:
        due = asked.get(a.notification_id, a.scheduled_at)
        early += due is not None and a.at < due

    lateness, immediate = [], []
    for k, p in accepted.items():
        if k not in by_key:
            continue
        first = by_key[k][0].at
        assert p.done_at is not None
        late = first - max(p.scheduled_at or 0.0, p.done_at)
        lateness.append(late)
        if p.scheduled_at is None:
            immediate.append(late)

    recovery = None
    if fault is not None:
        after = [
            a.at - fault.end
            for k, v in by_key.items()
            if k in accepted and (a := v[0]).at >= fault.end and accepted[k].done_at >= fault.start
        ]
        recovery = min(after) if after else None

    silence = None
    if posts:
        load_start = min(p.sent_at for p in posts)
        load_end = max(p.sent_at for p in posts)
        first_arrival = min((a.at for a in arrivals), default=load_end)
        silence = longest_silence([a.at for a in arrivals], first_arrival, load_end)
    all_in = None
    if fault is not None and not missing and delivered:
        all_in = max(by_key[k][0].at for k in delivered) - fault.end

    answer_s = [p.done_at - p.sent_at for p in accepted.values() if p.done_at is not None]
    return Summary(
        accepted=len(accepted),
        refused=sum(refused_by.values()),
        refused_by=dict(refused_by),
        delivered=len(delivered),
        missing=len(missing),
        missing_sample=missing[:10],
        duplicates=len(dups),
        extra_arrivals=sum(len(v) - 1 for v in dups.values()),
        duplicates_same_webhook_id=same_id,
        duplicates_in_flight=in_flight,
        duplicates_sample=[
            {
                "marker": v[0].marker,
                "webhook_ids": sorted({a.webhook_id for a in v}),
                "after_fault_end_s": [round(a.at - (fault.end if fault else 0.0), 3) for a in v],
            }
            for v in list(dups.values())[:10]
        ],
        early=early,
        unacked_arrivals=unacked,
        unanswered_arrivals=unanswered,
        recovery_s=recovery,
        longest_silence_s=silence[0] if silence else None,
        longest_silence_at_s=(silence[1] - load_start) if silence else None,
        lateness_p50_s=percentile(lateness, 0.50),
        lateness_p99_s=percentile(lateness, 0.99),
        lateness_max_s=max(lateness, default=None),
        immediate_p99_s=percentile(immediate, 0.99),
        accept_p99_s=percentile(answer_s, 0.99),
        all_in_after_fault_s=all_in,
        exits=[asdict(e) for e in reportable_exits(exits)],
    )


def broken_promises(s: Summary, *, heal_bound_s: float | None = None) -> list[str]:
    """Issue 10's bounds that this scenario's numbers break (empty: it held)."""
    broken = []
    if s.missing:
        broken.append(f"missing {s.missing}")  # not in by the bound: lost or very late
    unexplained = s.duplicates - s.duplicates_in_flight
    if unexplained > 0:
        broken.append(f"{unexplained} duplicates not an in-flight re-send")
    if s.early:
        broken.append(f"early {s.early}")
    if s.unacked_arrivals:
        broken.append(f"{s.unacked_arrivals} arrived without a 202")
    if s.exits:
        broken.append("process exits")
    if s.recovery_s is not None and s.recovery_s > RECOVERY_BOUND_S:
        broken.append(f"first new arrival {s.recovery_s:.1f} s after the fault")
    if s.lateness_p99_s is not None and s.lateness_p99_s > LATENESS_P99_BOUND_S:
        broken.append(f"lateness p99 {s.lateness_p99_s:.1f} s")
    healed_in = s.all_in_after_fault_s
    if heal_bound_s is not None and healed_in is not None and healed_in > heal_bound_s:
        broken.append(f"all in {s.all_in_after_fault_s:.0f} s after the fault")
    return broken
