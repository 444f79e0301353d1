"""The event JSON Schemas under notifi/schemas, compiled for tests that check what is produced."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema

SCHEMAS = Path(__file__).resolve().parents[2] / "notifi" / "schemas"


def schema(name: str) -> Callable[[Any], Any]:
    return fastjsonschema.compile(json.loads((SCHEMAS / name).read_text()))
