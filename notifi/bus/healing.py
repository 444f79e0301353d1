"""Pure decisions of the Kafka bus's self-healing: what a look at the broker says (topics
missing, a log that went backwards), which instance id a consumer joins with, and how long to
wait before the next try. No I/O here; kafka.py does the looking and the acting."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from notifi.bus.base import TopicPartition


@dataclass(frozen=True, slots=True)
class Survey:
    """What one look at the broker found about the bus's own topics."""

    missing: tuple[str, ...]  # topics the broker does not have
    short: tuple[str, ...]  # topics with fewer partitions than configured
    went_back: tuple[TopicPartition, ...]  # partitions whose end offset is below the last seen

    @property
    def lost_data(self) -> bool:
        """The broker lost what it held: topics gone, or a log shorter than it was."""
        return bool(self.missing or self.went_back)

    def lost_logs(self, partitions: int) -> list[TopicPartition]:
        """Every partition whose log was lost (`partitions` per missing topic): consumers read
        these again from their beginning."""
        return [*self.went_back, *((t, p) for t in self.missing for p in range(partitions))]


def survey(
    wanted: Iterable[str],
    partitions_wanted: int,
    partitions_found: Mapping[str, int],
    ends_before: Mapping[TopicPartition, int],
    ends_now: Mapping[TopicPartition, int],
) -> Survey:
    """`partitions_found`: the broker's topics with their partition counts; `ends_*`: end
    offsets per partition from the previous look and this one (only valid, >= 0, values).

    A partition's end offset only grows on a live broker (Notifi never deletes records), so
    an end below the one seen before means the log was lost and re-created, even when
    another process re-created the topic before this one looked."""
    wanted = list(wanted)
    missing = tuple(t for t in wanted if t not in partitions_found)
    short = tuple(
        t for t in wanted if t in partitions_found and partitions_found[t] < partitions_wanted
    )
    went_back = tuple(tp for tp, end in sorted(ends_now.items()) if end < ends_before.get(tp, 0))
    return Survey(missing, short, went_back)


def group_instance_id(
    process_instance_id: str | None, consumer_name: str | None, *, static_membership: bool
) -> str | None:
    """The KIP-345 `group.instance.id` of one consumer, or None for dynamic membership.

    It must be unique per consumer within a group and stable across restarts of the same
    process, so it is the process's instance id (its pod name) plus the consumer's own name
    (the actor's name). Without either, the consumer joins as a dynamic member."""
    if not static_membership or not process_instance_id or not consumer_name:
        return None
    return f"{process_instance_id}-{consumer_name}"


def backoff_s(attempt: int, *, first_s: float = 0.05, cap_s: float = 1.0) -> float:
    """Wait before retry number `attempt` (0-based): doubling from `first_s`, capped."""
    return min(cap_s, first_s * (2 ** min(attempt, 16)))
