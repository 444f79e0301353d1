"""The recorder's pause under the destination's row lock (notifi.store.recording.unpause): a
pause stands only while the destination is disabled; otherwise the delivery goes on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from notifi.model import DeliveryJob, DeliveryStatus
from notifi.store import Finished
from notifi.store.recording import unpause

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
OFF, ON = UUID(int=1), UUID(int=2)  # a destination still disabled, one enabled meanwhile


def job(n: int) -> DeliveryJob:
    return DeliveryJob(UUID(int=100 + n), 0, 2, NOW - timedelta(minutes=5))


def test_a_pause_stands_only_while_the_destination_is_disabled() -> None:
    at_load_off = Finished(job(1), DeliveryStatus.PAUSED, destination_id=OFF)
    at_load_on = Finished(job(2), DeliveryStatus.PAUSED, destination_id=ON)
    attempted_on = Finished(
        job(3), DeliveryStatus.PAUSED, NOW, outcome="permanent", status_code=410, destination_id=ON
    )
    delivered = Finished(job(4), DeliveryStatus.DELIVERED, NOW, outcome="delivered")
    kept, back = unpause([at_load_off, at_load_on, attempted_on, delivered], [], {OFF}, NOW)
    # Unattempted, enabled meanwhile: back to the outbox, the same attempt, due now.
    assert back == [job(2).later(NOW)]
    # Attempted, enabled meanwhile: tried again now, as a retry.
    assert [f.job for f in kept] == [job(1), job(3), job(4)]
    assert kept[0] is at_load_off and kept[2] is delivered
    assert kept[1].new_status is DeliveryStatus.DELIVERING and kept[1].next_attempt_at == NOW
    assert kept[1].status_code == 410 and kept[1].outcome == "permanent"  # the attempt stays


def test_a_deleted_destination_sends_the_paused_job_back_to_be_cancelled() -> None:
    gone = Finished(job(5), DeliveryStatus.PAUSED, destination_id=UUID(int=3))
    kept, back = unpause([gone], [job(6)], set(), NOW)
    assert kept == [] and back == [job(6), job(5).later(NOW)]
