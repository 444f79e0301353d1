"""When Redis's change marks may vouch for a job loaded early (notifi.marks.trusts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from notifi.marks import SKEW_S, TRUST_S, trusts

NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


def test_marks_kept_since_well_before_the_load_vouch() -> None:
    loaded = NOW - timedelta(seconds=5)
    assert trusts(loaded.timestamp() - SKEW_S, loaded, NOW)
    assert trusts(loaded.timestamp() - 100, loaded, NOW)


def test_unknown_or_too_recent_marks_do_not_vouch() -> None:
    loaded = NOW - timedelta(seconds=5)
    assert not trusts(None, loaded, NOW)  # Redis came back empty
    assert not trusts(loaded.timestamp(), loaded, NOW)  # within the clock skew
    assert not trusts(loaded.timestamp() - SKEW_S + 0.01, loaded, NOW)
    assert not trusts(loaded.timestamp() + 3, loaded, NOW)  # a mark was owed after the load


def test_a_load_older_than_the_marks_are_kept_does_not_vouch() -> None:
    loaded = NOW - timedelta(seconds=TRUST_S)
    assert not trusts(loaded.timestamp() - 100, loaded, NOW)
    assert trusts(loaded.timestamp() - 100, loaded, NOW - timedelta(seconds=1))
