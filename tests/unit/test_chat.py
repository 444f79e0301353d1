"""Each chat service's payload: its shape and its documented limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID

from notifi.destinations.chat import discord_payload, slack_payload, teams_payload
from notifi.model import Notification

N = Notification(
    id=UUID(int=1),
    title="Deploy",
    body="api is live",
    data={"service": "api", "n": 2},
    created_at=datetime(2026, 11, 24, 18, 0, tzinfo=UTC),
)


def test_slack_blocks_and_fallback_text() -> None:
    p = slack_payload(N)
    assert p["text"] == "Deploy: api is live"
    assert p["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "Deploy"}}
    assert p["blocks"][1]["text"]["text"] == "api is live"
    assert p["blocks"][2]["elements"][0]["text"] == "*service*: api"


def test_discord_embed_and_fields() -> None:
    p = discord_payload(N)
    embed = p["embeds"][0]
    assert p["content"] == "Deploy" and embed["description"] == "api is live"
    assert {"name": "n", "value": "2", "inline": True} in embed["fields"]
    assert embed["timestamp"] == "2026-11-24T18:00:00+00:00"


def test_teams_adaptive_card() -> None:
    p = teams_payload(N)
    card = p["attachments"][0]["content"]
    assert p["type"] == "message" and card["type"] == "AdaptiveCard"
    assert card["body"][0]["text"] == "Deploy"
    assert {"title": "service", "value": "api"} in card["body"][2]["facts"]


def test_limits_are_respected() -> None:
    big = replace(
        N, title="t" * 500, body="b" * 9000, data={f"k{i}": "v" * 2000 for i in range(40)}
    )
    s = slack_payload(big)
    assert len(s["blocks"][0]["text"]["text"]) == 150
    assert len(s["blocks"][1]["text"]["text"]) == 3000
    d = discord_payload(big)
    assert len(d["content"]) <= 2000 and len(d["embeds"][0]["title"]) == 256
    assert len(d["embeds"][0]["description"]) == 4096
    assert len(d["embeds"][0]["fields"]) == 25
    assert all(len(f["value"]) <= 1024 for f in d["embeds"][0]["fields"])


def test_no_title_no_header() -> None:
    p = slack_payload(replace(N, title="", data={}))
    assert [b["type"] for b in p["blocks"]] == ["section"]
    assert p["text"] == "api is live"
