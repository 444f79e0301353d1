"""At a million notifications the list queries stay on an index: first pages, deep keyset
pages and time filters never sort or scan the table (plans checked with EXPLAIN)."""

from __future__ import annotations

import json
import time
from uuid import UUID

import pytest

from notifi.store import ID_MAX, ID_MIN, Store
from notifi.store.sql import query

pytestmark = pytest.mark.timeout(300)

ROWS = 1_000_000

FILL = """
INSERT INTO notifications (id, client_id, body, partition_key, status, created_at, updated_at)
SELECT (lpad(to_hex(1700000000000 + g), 12, '0') || '7' || substr(md5(g::text), 1, 19))::uuid,
       'c' || (g % 4), 'b', g % 1024, 'delivered', now(), now()
  FROM generate_series(1, $1) AS g
"""


def nodes(plan: dict) -> list[dict]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += nodes(child)
    return out


async def explain(store: Store, sql: str, *args: object) -> tuple[list[dict], float]:
    raw = await store.pool.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
    doc = json.loads(raw)[0]
    return nodes(doc["Plan"]), doc["Execution Time"]


async def test_list_queries_use_an_index_at_a_million_rows(store: Store) -> None:
    await store.pool.execute(FILL, ROWS)
    await store.pool.execute("ANALYZE notifications")
    middle = await store.pool.fetchval(
        "SELECT id FROM notifications WHERE client_id = 'c1' ORDER BY id DESC OFFSET 120000 LIMIT 1"
    )
    cases = {
        "first page": (query("list_notifications"), "c1", False, None, 50, 0, ID_MAX, ID_MIN),
        "deep cursor": (query("list_notifications"), "c1", False, None, 50, 0, middle, ID_MIN),
        "time range": (
            query("list_notifications"),
            "c1",
            False,
            None,
            50,
            0,
            middle,
            UUID(int=middle.int - (10_000 << 80)),
        ),
        "admin page": (query("list_all_notifications"), False, None, 50, 0, ID_MAX, ID_MIN),
        "admin cursor": (query("list_all_notifications"), False, None, 50, 0, middle, ID_MIN),
    }
    report = []
    for name, (sql, *args) in cases.items():
        started = time.perf_counter()
        plan, ms = await explain(store, sql, *args)
        kinds = [n["Node Type"] for n in plan]
        assert any(k.startswith("Index") for k in kinds), (name, kinds)
        assert "Sort" not in kinds and "Seq Scan" not in kinds, (name, kinds)
        report.append(
            f"{name}: {' > '.join(kinds)} {ms:.2f} ms "
            f"({(time.perf_counter() - started) * 1000:.1f} ms round trip)"
        )
    print("\n" + "\n".join(report))
    await store.pool.execute("TRUNCATE notifications CASCADE")  # the next test starts light
