"""Bearer-token authentication of the REST API."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="The orchestrator's API token.")


def bearer_token(token: str) -> Callable[..., Awaitable[None]]:
    """A dependency that lets a request through only with ``token`` as its bearer token."""

    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if credentials is None:
            raise HTTPException(
                401,
                "missing API token: send the header 'Authorization: Bearer TOKEN' with the"
                " orchestrator's token (its api_token_file)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(
                401, "wrong API token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )

    return check
