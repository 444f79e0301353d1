"""The named SQL blocks of the store's `*.sql` files (queries.sql and one per area beside it),
loaded once (procrastinate style). A name is defined once across the files."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_NAME = re.compile(r"^-- name: (\w+) --$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """Every named query of the store's SQL files, by name."""
    found: dict[str, str] = {}
    for path in sorted(Path(__file__).parent.glob("*.sql")):
        parts = _NAME.split(path.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise ValueError(f"query {name!r} is defined twice ({path.name})")
            found[name] = body.strip()
    return found


def query(name: str) -> str:
    return queries()[name]
