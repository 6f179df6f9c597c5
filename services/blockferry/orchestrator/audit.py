"""The audit log: every call that changes something (any API method but GET, HEAD and
OPTIONS), refused ones included, as one JSON line: when, who (user and role, or none),
from where, what (method, path, query and request body) and the outcome (status).

Lines are appended to a file readable by its owner only and written to the log as
``blockferry.audit``. A request body is kept as JSON when it is JSON (at most
:data:`MAX_BODY` bytes of it); no request of the API carries a secret, and the tokens
that responses carry are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blockferry.orchestrator.auth import USER_STATE
from blockferry.orchestrator.users import ApiUser
from blockferry.repository.files import SECRET_MODE
from blockferry.repository.ids import format_time, utc_now

log = logging.getLogger("blockferry.audit")

READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_BODY = 16 * 1024


class AuditLog:
    """ASGI middleware writing the audit line of each mutating call under ``prefix``."""

    def __init__(self, app: ASGIApp, path: Path, prefix: str = "/api/") -> None:
        self._app = app
        self._path = path
        self._prefix = prefix
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in READ_ONLY
            or not scope["path"].startswith(self._prefix)
        ):
            await self._app(scope, receive, send)
            return
        body = bytearray()
        written = False

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < MAX_BODY:
                body.extend(message.get("body", b"")[: MAX_BODY - len(body)])
            return message

        async def sending(message: Message) -> None:
            nonlocal written
            if message["type"] == "http.response.start" and not written:
                written = True  # recorded before the caller learns the outcome
                self._write(scope, bytes(body), message["status"])
            await send(message)

        try:
            await self._app(scope, receiving, sending)
        finally:
            if not written:  # failed before answering: the server answers 500
                self._write(scope, bytes(body), 500)

    def _write(self, scope: Scope, body: bytes, status: int) -> None:
        user: ApiUser | None = scope.get("state", {}).get(USER_STATE)
        client = scope.get("client")
        entry: dict[str, Any] = {
            "time": format_time(utc_now()),
            "user": user.name if user else None,
            "role": str(user.role) if user else None,
            "client": client[0] if client else None,
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode(errors="replace"),
            "body": _body(body),
            "status": status,
            "outcome": "ok" if status < 400 else "refused" if status < 500 else "failed",
        }
        line = json.dumps(entry, sort_keys=True)
        log.info("%s", line)
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, SECRET_MODE)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)


def _body(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return {"bytes": len(body), "json": False}
