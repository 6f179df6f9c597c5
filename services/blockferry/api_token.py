"""The bearer token that guards the orchestrator's REST API.

The orchestrator reads it from a file (a mounted secret, say), or creates one with a
random token, readable by its owner only, on first start. Clients send it as
``Authorization: Bearer <token>``; the CLI reads the same file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from blockferry.core.errors import ConfigError
from blockferry.secret_files import read_secret

FILE_NAME = "api-token"


def default_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def load_or_create(path: Path) -> str:
    """The token in ``path``; a new random one is written there if it does not exist."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = read(path)
        if token is None:
            raise ConfigError(f"API token file {path} vanished while it was read") from None
        if not token:
            raise ConfigError(f"API token file {path} is empty") from None
        return token
    except OSError as exc:
        raise ConfigError(f"creating API token file {path}: {exc}") from exc
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read(path: Path) -> str | None:
    """The token in ``path``, or None if there is no such file.

    Raises:
        ConfigError: the file is readable by others than its owner (as a secret, it
            must not be), or cannot be read.
    """
    return read_secret(path, "API token file")
