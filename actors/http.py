"""The HTTP server actor: owns an aiohttp AppRunner and site, for the REST API and for the
metrics endpoint of the other roles. Connections are served by the hardened protocol of
`notifi.api.protocol` (head timeout, problem documents for the server's own errors)."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web

from notifi.api.protocol import DEFAULT_HEADER_TIMEOUT_S, GuardedAppRunner
from notifi.runtime import Actor

log = structlog.get_logger(__name__)


class HttpServer(Actor):
    """Owns an aiohttp AppRunner and site, so the supervisor (not run_app) owns the process."""

    def __init__(
        self,
        name: str,
        make_app: Callable[[], web.Application],
        host: str,
        port: int,
        shutdown_timeout_s: float = 5.0,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    ) -> None:
        super().__init__(name)
        self._make_app, self._host, self._port = make_app, host, port
        self._shutdown_timeout_s = shutdown_timeout_s
        self._header_timeout_s = header_timeout_s
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    async def on_start(self) -> None:
        self._runner = GuardedAppRunner(
            self._make_app(),
            access_log=None,
            shutdown_timeout=self._shutdown_timeout_s,
            header_timeout_s=self._header_timeout_s,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        self.bound_port = self._runner.addresses[0][1]
        log.info("http_listening", actor=self.name, host=self._host, port=self.bound_port)

    async def run(self) -> None:
        while not self.should_stop:
            await self.sleep(3600)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
