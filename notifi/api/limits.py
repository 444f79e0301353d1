"""The size limits of API requests, from the api.* settings; the schemas and the validator
both read them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    max_destinations: int
    max_title_chars: int
    max_body_chars: int
    max_data_bytes: int
    max_bulk: int = 500
    max_data_depth: int = 32  # levels of objects and arrays in data, data itself being 1
