"""Who calls the REST API (a bearer token per user) and what their role lets them do."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from blockferry.orchestrator.users import ApiUser, Role, Users

_bearer = HTTPBearer(auto_error=False, description="A user's API token.")

USER_STATE = "user"
"""Where in the request's state the authenticated user is (the audit log reads it)."""


def authenticated(users: Users) -> Callable[..., Awaitable[ApiUser]]:
    """A dependency that lets a request through only with a user's token as its bearer
    token, and gives that user."""

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiUser:
        if credentials is None:
            raise HTTPException(
                401,
                "missing API token: send the header 'Authorization: Bearer TOKEN' with your"
                " token (the orchestrator's api_token_file is the admin's)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        user = users.authenticate(credentials.credentials)
        if user is None:
            raise HTTPException(
                401, "wrong API token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        setattr(request.state, USER_STATE, user)
        return user

    return check


def needs(role: Role) -> Callable[..., Awaitable[None]]:
    """A dependency refusing (403) a user whose role does not allow what ``role`` may."""

    async def check(request: Request) -> None:
        user: ApiUser | None = getattr(request.state, USER_STATE, None)
        if user is None or not user.role.allows(role):
            who = "no user" if user is None else f"user {user.name} ({user.role})"
            raise HTTPException(403, f"{who} may not do this: it needs the role {role} or above")

    return check


OPERATOR = [Depends(needs(Role.operator))]
ADMIN = [Depends(needs(Role.admin))]
