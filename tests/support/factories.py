"""Builders of test data shared by the test tiers."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from uuid_utils.compat import uuid7

from notifi.model import NewNotification


def new_notification(
    *,
    client_id: str = "anonymous",
    destinations: list[dict[str, Any]] | None = None,
    in_s: float | None = None,
    idempotency_key: str | None = None,
    body: str = "hello",
    partition_key: int = 0,
) -> NewNotification:
    now = datetime.now(UTC)
    return NewNotification(
        id=uuid7(),
        client_id=client_id,
        idempotency_key=idempotency_key,
        request_hash=hashlib.sha256(body.encode()).digest(),
        title="t",
        body=body,
        data={"k": 1},
        scheduled_at=None if in_s is None else now + timedelta(seconds=in_s),
        partition_key=partition_key,
        destinations=destinations or [{"type": "webhook", "url": "https://example.com/h"}],
        created_at=now,
    )
