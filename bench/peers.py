"""What the bench's peers (`--modes arq`, `--modes celery`: bench.arq_peer, bench.celery_peer)
share: what they take from a request. Imported inside the peers' own virtualenvs too, so it
needs no more than orjson."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson


class BadItem(ValueError):
    """A request the peer does not take (it knows inline webhooks only)."""


def jobs_of(item: Any) -> tuple[list[str], bytes, datetime | None]:
    """The webhook URLs, the payload they get and the time the jobs are due (None: now)."""
    if not isinstance(item, dict) or not isinstance(item.get("body"), str):
        raise BadItem("body must be a string")
    destinations = item.get("destinations")
    if not isinstance(destinations, list) or not destinations:
        raise BadItem("destinations must be a non-empty list")
    urls = []
    for d in destinations:
        if not isinstance(d, dict) or d.get("type") != "webhook" or "secret" in d:
            raise BadItem("the peer takes unsigned inline webhooks only")
        if not isinstance(d.get("url"), str):
            raise BadItem("a webhook needs a url")
        urls.append(d["url"])
    when = item.get("scheduled_at")
    try:
        due = datetime.fromisoformat(when) if isinstance(when, str) else None
    except ValueError:
        raise BadItem("scheduled_at must be an ISO 8601 date-time") from None
    if due is not None and due.tzinfo is None:
        raise BadItem("scheduled_at needs an offset")
    payload = orjson.dumps({k: item.get(k) for k in ("title", "body", "data")})
    return urls, payload, due
