"""The API's users: a name, a role and a token each.

A **viewer** reads (sessions, jobs, restore points, repositories); an **operator** also
runs backups, restores, verifies and jobs, and cancels sessions; an **admin** also
defines and deletes jobs, prunes, collects garbage and manages users. The token of the
orchestrator's token file (``api-token``) is the built-in user ``admin``, so a fresh
mesh is usable on its own host; further users are added through the API by an admin.

The orchestrator keeps only each token's SHA-256 (a token is 256 random bits, so its hash
gives nothing away), in ``api-users.json`` (mode 0600), replaced atomically on change.
"""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
import threading
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from blockferry.core.errors import ConfigError
from blockferry.repository.files import SECRET_MODE, write_atomic
from blockferry.repository.ids import utc_now

BUILT_IN_ADMIN = "admin"
"""The user of the orchestrator's token file."""

TOKEN_PREFIX = "bf_"
"""Marks blockferry API tokens, so secret scanners can find leaked ones."""


class Role(enum.StrEnum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may."""
        order = list(Role)
        return order.index(self) >= order.index(needed)


NAME_PATTERN = r"^[a-z][a-z0-9._-]{0,63}$"


class ApiUser(BaseModel):
    """A user as the API shows it: never its token."""

    name: str = Field(pattern=NAME_PATTERN)
    role: Role
    created: datetime | None = None


class NewUser(BaseModel):
    """A user to add."""

    name: str = Field(pattern=NAME_PATTERN)
    role: Role


class NewUserToken(NewUser):
    """A user just added, with its token: shown this once, kept nowhere in the clear."""

    token: str


class _StoredUser(ApiUser):
    token_sha256: str

    def public(self) -> ApiUser:
        return ApiUser(name=self.name, role=self.role, created=self.created)


class _UsersFile(BaseModel):
    users: list[_StoredUser] = []


class UserExists(Exception):
    """A user of that name exists already."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    """The users of ``path``, and the built-in admin whose token is ``admin_token``."""

    def __init__(self, path: Path, admin_token: str) -> None:
        self._path = path
        self._admin = (_hash(admin_token), ApiUser(name=BUILT_IN_ADMIN, role=Role.admin))
        self._lock = threading.Lock()
        self._users = self._load()

    def _load(self) -> dict[str, _StoredUser]:
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"reading the API users file {self._path}: {exc}") from exc
        try:
            document = _UsersFile.model_validate(json.loads(data))
        except (ValueError, ValidationError) as exc:
            raise ConfigError(f"the API users file {self._path} is malformed: {exc}") from exc
        return {user.name: user for user in document.users}

    def _save(self, users: dict[str, _StoredUser]) -> None:
        document = _UsersFile(users=sorted(users.values(), key=lambda u: u.name))
        self._path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self._path, document.model_dump_json(indent=2).encode(), mode=SECRET_MODE)

    def authenticate(self, token: str) -> ApiUser | None:
        """The user whose token ``token`` is, or None."""
        digest = _hash(token)
        if secrets.compare_digest(digest, self._admin[0]):
            return self._admin[1]
        for user in list(self._users.values()):
            if secrets.compare_digest(digest, user.token_sha256):
                return user.public()
        return None

    def all(self) -> list[ApiUser]:
        listed = [self._admin[1], *(user.public() for user in self._users.values())]
        return sorted(listed, key=lambda u: u.name)

    def add(self, name: str, role: Role) -> str:
        """Add user ``name`` with ``role``; its new token, shown this once.

        Raises:
            UserExists: there is a user ``name`` (the built-in admin included).
        """
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            if name == BUILT_IN_ADMIN or name in self._users:
                raise UserExists(f"user {name} exists")
            user = _StoredUser(name=name, role=role, created=utc_now(), token_sha256=_hash(token))
            users = {**self._users, name: user}
            self._save(users)
            self._users = users
        return token

    def remove(self, name: str) -> bool:
        """Remove user ``name`` (its token stops working at once); False if there is none.

        Raises:
            ConfigError: ``name`` is the built-in admin (change its token file instead).
        """
        if name == BUILT_IN_ADMIN:
            raise ConfigError(
                f"the user {BUILT_IN_ADMIN} is the orchestrator's token file: replace that"
                " file to change its token"
            )
        with self._lock:
            if name not in self._users:
                return False
            users = {k: v for k, v in self._users.items() if k != name}
            self._save(users)
            self._users = users
        return True
