"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient

from notifi.store import Store
from tests.support.api import api_client


@pytest.fixture
async def api(store: Store) -> AsyncIterator[TestClient]:
    """The REST API in process on the real store, with the default service tokens."""
    async with api_client(store) as client:
        yield client
