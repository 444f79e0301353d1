"""A delivery role's recorder and one worker under a real supervisor, for integration tests."""

from __future__ import annotations

from collections.abc import Callable

from actors.delivery import DeliveryWorker
from actors.recorder import Recorder
from notifi.bus import Bus, MemoryBus
from notifi.claims import Claims
from notifi.destinations.base import Sender
from notifi.hosts import HostGate
from notifi.retry import RetryPolicy
from notifi.runtime import ChildSpec, Mailbox, Supervisor
from notifi.store import Store


def delivery_tree(
    store: Store,
    claims: Claims,
    sender: Sender,
    work: Mailbox,
    *,
    bus: Bus | None = None,
    on_crash: Callable[[str, BaseException], None] | None = None,
) -> Supervisor:
    records: Mailbox = Mailbox("records", 10)
    gate = HostGate(max_in_flight=8, failure_threshold=5, cooldown_s=1, max_cooldown_s=1)
    return Supervisor(
        [
            ChildSpec(
                "recorder",
                lambda: Recorder(
                    "recorder",
                    records,
                    store=store,
                    claims=claims,
                    batch=10,
                    linger_s=0.002,
                    bus=bus or MemoryBus(),
                    events_topic="t.events",
                ),
                shutdown_timeout_s=0.5,
            ),
            ChildSpec(
                "worker",
                lambda: DeliveryWorker(
                    "worker",
                    work,
                    records,
                    store=store,
                    claims=claims,
                    senders={"webhook": sender},
                    policy=RetryPolicy.of([1], 0),
                    claim_ttl_s=30,
                    gate=gate,
                ),
                shutdown_timeout_s=0.5,
            ),
        ],
        max_restarts=3,
        period_s=10,
        backoff_initial_s=0.01,
        on_crash=on_crash,
    )
