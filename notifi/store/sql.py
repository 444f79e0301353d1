"""The named SQL blocks of `queries.sql`, loaded once (procrastinate style)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_NAME = re.compile(r"^-- name: (\w+) --$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """Every named query of queries.sql, by name."""
    text = (Path(__file__).parent / "queries.sql").read_text()
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def query(name: str) -> str:
    return queries()[name]
