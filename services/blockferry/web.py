"""The one HTTP port of a process: /metrics, /healthz, /readyz, and the API if any."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from blockferry.settings import HttpSettings


def build_app(registry: CollectorRegistry, ready: Callable[[], bool]) -> FastAPI:
    """An app serving health and metrics; a role with an API adds its routes to it."""
    app = FastAPI(
        title="blockferry",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(response: Response) -> dict[str, str]:
        if ready():
            return {"status": "ready"}
        response.status_code = 503
        return {"status": "starting"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process runner owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServer:
    """uvicorn serving ``app`` inside the process's event loop."""

    def __init__(self, app: FastAPI, settings: HttpSettings) -> None:
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=settings.tls_cert_file,
            ssl_keyfile=settings.tls_key_file,
        )
        self._server = _Server(config)

    async def run(self) -> None:
        await self._server.serve()

    def stop(self) -> None:
        self._server.should_exit = True
