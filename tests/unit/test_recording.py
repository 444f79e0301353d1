"""The recorder's pause under the destination's row lock (notifi.store.recording.unpause): a
pause stands only while the destination is disabled; otherwise the delivery goes on. And which
batches are written in one statement, with no transaction around it (one_statement)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from notifi.model import DeliveryJob, DeliveryStatus
from notifi.store import Finished
from notifi.store.recording import one_statement, unpause

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


def test_only_plain_outcomes_are_written_without_a_transaction() -> None:
    delivered = Finished(job(7), DeliveryStatus.DELIVERED, NOW, outcome="delivered")
    stored_ok = Finished(
        job(8), DeliveryStatus.DELIVERED, NOW, outcome="delivered", destination_id=ON
    )
    assert one_statement([delivered, stored_ok], [])
    assert one_statement([], [])
    # A job sent back to the outbox is a second statement.
    assert not one_statement([delivered], [job(9)])
    # So is what writes to a stored destination (under its row lock): a streak, a disable, a
    # pause.
    streak = Finished(job(10), DeliveryStatus.DELIVERING, NOW, outcome="retry", failing=True,
                      destination_id=ON)  # fmt: skip
    disabled = Finished(job(11), DeliveryStatus.FAILED, NOW, outcome="permanent",
                        disable_reason="gone", destination_id=ON)  # fmt: skip
    paused = Finished(job(12), DeliveryStatus.PAUSED, destination_id=OFF)
    for f in (streak, disabled, paused):
        assert not one_statement([delivered, f], [])
