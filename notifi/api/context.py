"""What the API's handlers share: the store, the validator, the accept writer's mailbox, the
auth and rate limits, the sizes and the stored destinations' policy (one per application)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from uuid import UUID

from aiohttp import web

from notifi.api.validation import Validator
from notifi.auth import Authenticator, Client, NoAuth
from notifi.destinations.network import AddressPolicy
from notifi.marks import ChangeMarks
from notifi.model import NewNotification
from notifi.ratelimit import RateLimiter
from notifi.store import Accepted, Store


@dataclass(frozen=True, slots=True)
class ApiContext:
    store: Store
    validator: Validator
    submit: Callable[[NewNotification], Awaitable[Accepted]]  # the accept writer's mailbox
    ready: Callable[[], Awaitable[dict[str, bool]]]
    default_page_size: int
    max_page_size: int
    auth: Authenticator = field(default_factory=NoAuth)
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(0, 1))
    max_body_bytes: int = 262_144  # a single notification; bulk bodies may be larger
    body_timeout_s: float = 30.0  # a body must arrive within this (api.body_timeout)
    metric_clients: frozenset[str] = frozenset({"anonymous"})  # bounded label values
    # Stored destinations: their URLs meet the sender's policy at create and PATCH (an IP
    # literal or localhost outside delivery.allowed_networks is a 422), and a rotated-out
    # webhook secret still signs for delivery.rotation_overlap seconds.
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)
    rotation_overlap_s: float = 86_400.0
    max_stored_destinations: int = 10_000  # per client
    # Changes that can stop or move a delivery mark Redis before they commit (notifi.marks);
    # None: no delivery process trusts marks (tests of the API alone).
    marks: ChangeMarks | None = None

    def changing(
        self, *, notifications: Iterable[UUID] = (), destinations: Iterable[UUID] = ()
    ) -> AbstractAsyncContextManager[None]:
        """Wraps a change that can stop or move deliveries (notifi.marks.ChangeMarks.changing)."""
        if self.marks is None:
            return contextlib.nullcontext()
        return self.marks.changing(notifications=notifications, destinations=destinations)

    def client_label(self, client: Client) -> str:
        return client.id if client.id in self.metric_clients else "other"


CONTEXT = web.AppKey("context", ApiContext)
