"""Running roles in one process: one event loop, one HTTP port, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from prometheus_client import CollectorRegistry

from blockferry.core.errors import TopicConfigError, TransportError
from blockferry.roles import ROLES, Role
from blockferry.settings import CommonSettings
from blockferry.web import WebServer, build_app

log = logging.getLogger(__name__)

START_ATTEMPTS = 10


class _Stop(Exception):
    """Raised inside the task group to end the process."""


async def run_roles(names: list[str]) -> None:
    """Start the named roles, serve HTTP, run until SIGTERM or SIGINT, then stop them."""
    registry = CollectorRegistry()
    roles: list[Role] = [ROLES[n].build(ROLES[n].settings(), registry) for n in names]
    common = CommonSettings()
    app = build_app(registry, ready=lambda: all(role.ready for role in roles))
    for role in roles:
        add_routes = getattr(role, "routes", None)
        if add_routes is not None:
            add_routes(app)
    server = WebServer(app, common.http)
    if "orchestrator" in names and not common.http.tls and not common.http.loopback_only():
        log.warning(
            "the API listens on %s without TLS: its tokens and requests cross the network"
            " in the clear; set BLOCKFERRY_HTTP__TLS_CERT_FILE and BLOCKFERRY_HTTP__TLS_KEY_FILE",
            common.http.host,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def until_stopped() -> None:
        await stop.wait()
        raise _Stop

    started: list[Role] = []
    try:
        for role in roles:
            await _start(role)
            started.append(role)
        scheme = "HTTPS" if common.http.tls else "HTTP"
        log.info(
            "running %s; %s on %s:%d", ", ".join(names), scheme, common.http.host, common.http.port
        )
        with contextlib.suppress(_Stop):
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(server.run())
                    group.create_task(until_stopped())
                    for role in roles:
                        group.create_task(role.run(), name=role.name)
            except* _Stop:
                pass
    finally:
        server.stop()
        for role in reversed(started):
            try:
                await role.stop()
            except Exception:  # stopping must go on for the other roles
                log.exception("stopping %s", role.name)


async def _start(role: Role) -> None:
    """Start a role, retrying while Kafka is not reachable yet."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            await role.start()
            return
        except TopicConfigError:
            raise  # waiting does not mend a topic: the operator must
        except TransportError as exc:
            if attempt == START_ATTEMPTS:
                raise
            log.warning("starting %s: %s; retrying", role.name, exc)
            await asyncio.sleep(min(2 * attempt, 10))
