"""The dedupe keys a source mover digests with: one file per repository, never from
the bus.

A repository's dedupe key is its secret (whoever holds it can confirm guesses at the
contents of its blocks). Its owner announces only the key's fingerprint; the mover reads
the key from ``<dir>/<repository>.key`` (a mounted secret, say, written by ``blockferry
repo export-dedupe-key``) whenever a task needs it, so a rotated mount is seen, and
refuses the task at once, naming the file, when the key is missing or is not the
repository's. When repository encryption comes, its master key wraps the same key inside
the repository; the file the movers read stays as it is.
"""

from __future__ import annotations

from pathlib import Path

from blockferry.core.blocks import DEDUPE_KEY_SIZE, key_fingerprint
from blockferry.core.errors import ConfigError
from blockferry.repository.files import SECRET_MODE, write_atomic
from blockferry.secret_files import read_secret
from blockferry.transport.records import RepositoryInfo

SUFFIX = ".key"


def key_file(directory: Path, repository: str) -> Path:
    return directory / f"{repository}{SUFFIX}"


def write_key_file(path: Path, key: bytes) -> None:
    """Write ``key`` (hex) to ``path``, readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, (key.hex() + "\n").encode(), mode=SECRET_MODE)


class DedupeKeys:
    """The key files in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def key_for(self, repository: RepositoryInfo) -> bytes:
        """The dedupe key of ``repository``, checked against its announced fingerprint.

        Raises:
            ConfigError: no key file, a malformed or loose one, or another repository's
                key; the message says what to do.
        """
        name = repository.name
        path = key_file(self._directory, name)
        text = read_secret(path, "dedupe key file")
        if text is None:
            raise ConfigError(
                f"no dedupe key for repository {name}: {path} does not exist; on the"
                f" repository's host run `blockferry repo export-dedupe-key"
                f" REPOSITORY_PATH FILE` and give this source mover the file as {path}"
            )
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != DEDUPE_KEY_SIZE:
            raise ConfigError(
                f"dedupe key file {path} does not hold a {DEDUPE_KEY_SIZE}-byte key in hex"
            )
        if not repository.dedupe_key_fingerprint:
            raise ConfigError(
                f"repository {name} is served by an older target mover that announces no"
                f" dedupe key fingerprint: upgrade it"
            )
        if key_fingerprint(key) != repository.dedupe_key_fingerprint:
            raise ConfigError(
                f"the dedupe key in {path} is not repository {name}'s (its fingerprint is"
                f" {key_fingerprint(key)}, the repository's {repository.dedupe_key_fingerprint}):"
                f" export the key of repository {name} again"
            )
        return key
