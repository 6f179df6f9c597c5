"""config.json: what a repository is, fixed when it is created.

See ``schemas/repository/FORMAT.md`` for every field. A reader refuses a
version, an algorithm or an encryption mode it does not know rather than
guessing.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from blockferry.core.blocks import BLOCK_SIZES, DEDUPE_KEY_SIZE
from blockferry.core.errors import ConfigError, CorruptionError, RepositoryError
from blockferry.repository.ids import format_time, parse_time, utc_now
from blockferry.repository.sealing import ALGORITHM, Sealer

CONFIG_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 (releases before encryption at rest) is read as unencrypted."""
DIGEST_ALGORITHM = "blake3-keyed-256"
CHECKSUM_ALGORITHM = "xxh3-64"
COMPRESSION_ALGORITHM = "zstd"
ENCRYPTION_NONE = "none"
ENCRYPTION_MODES = (ENCRYPTION_NONE, ALGORITHM)
KEY_DERIVATION = "hkdf-sha256"
# Do not change: the sealed dedupe key's associated data.
DEDUPE_KEY_BINDING = b"blockferry config dedupe key"


@dataclass(frozen=True)
class RepositoryConfig:
    """The contents of config.json."""

    id: str
    created: datetime
    block_size: int
    shard_count: int
    dedupe_key: bytes = field(repr=False)
    version: int = CONFIG_VERSION
    digest: str = DIGEST_ALGORITHM
    checksum: str = CHECKSUM_ALGORITHM
    compression: str = COMPRESSION_ALGORITHM
    encryption_mode: str = ENCRYPTION_NONE
    sealed_dedupe_key: bytes = field(default=b"", repr=False)
    """The dedupe key sealed with the data key (encrypted repositories); ``dedupe_key``
    is empty until :meth:`unsealed` opened it."""

    @property
    def encrypted(self) -> bool:
        return self.encryption_mode != ENCRYPTION_NONE

    def sealed(self, sealer: Sealer) -> RepositoryConfig:
        """This configuration encrypted at rest: its dedupe key sealed by ``sealer``."""
        return replace(
            self,
            encryption_mode=ALGORITHM,
            sealed_dedupe_key=bytes(sealer.seal(self.dedupe_key, DEDUPE_KEY_BINDING)),
        )

    def unsealed(self, sealer: Sealer, source: str) -> RepositoryConfig:
        """With the dedupe key opened by ``sealer``; raises CorruptionError if it does
        not open (the key is not this repository's, or config.json was damaged)."""
        key = sealer.open(self.sealed_dedupe_key, DEDUPE_KEY_BINDING, f"the dedupe key in {source}")
        return replace(self, dedupe_key=key)

    @classmethod
    def new(
        cls, *, block_size: int, shard_count: int, dedupe_key: bytes | None = None
    ) -> RepositoryConfig:
        """A new configuration with a fresh id, and a fresh dedupe key unless given
        (another repository's, so that a block has the same digest in both); raises
        ConfigError."""
        if block_size not in BLOCK_SIZES:
            allowed = ", ".join(f"{size // 1024} KiB" for size in BLOCK_SIZES)
            raise ConfigError(f"invalid block size {block_size}: use one of {allowed}")
        if isinstance(shard_count, bool) or not isinstance(shard_count, int) or shard_count < 1:
            raise ConfigError(f"invalid shard count {shard_count!r}: use a whole number >= 1")
        if dedupe_key is not None and len(dedupe_key) != DEDUPE_KEY_SIZE:
            raise ConfigError(f"a dedupe key has {DEDUPE_KEY_SIZE} bytes, not {len(dedupe_key)}")
        return cls(
            id=uuid.uuid4().hex,
            created=utc_now(),
            block_size=block_size,
            shard_count=shard_count,
            dedupe_key=secrets.token_bytes(DEDUPE_KEY_SIZE) if dedupe_key is None else dedupe_key,
        )

    def to_json(self) -> bytes:
        """config.json's bytes (version 1's for a repository of version 1)."""
        document: dict[str, Any] = {
            "version": self.version,
            "id": self.id,
            "created": format_time(self.created),
            "block_size": self.block_size,
            "shard_count": self.shard_count,
            "digest": self.digest,
            "checksum": self.checksum,
            "compression": self.compression,
        }
        if self.version == 1:
            document["dedupe_key"] = self.dedupe_key.hex()
            document["encryption"] = {"mode": ENCRYPTION_NONE, "kdf": None, "wrapped_key": None}
        elif self.encrypted:
            document["encryption"] = {
                "mode": self.encryption_mode,
                "key_derivation": KEY_DERIVATION,
                "sealed_dedupe_key": self.sealed_dedupe_key.hex(),
            }
        else:
            document["dedupe_key"] = self.dedupe_key.hex()
            document["encryption"] = {"mode": ENCRYPTION_NONE}
        return (json.dumps(document, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> RepositoryConfig:
        """Parse config.json read from ``source``.

        Raises:
            CorruptionError: the file is not a well-formed configuration.
            RepositoryError: the repository uses a version or feature this code lacks.
        """
        try:
            document = json.loads(data)
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            version = document["version"]
            if version not in READABLE_VERSIONS:
                raise RepositoryError(
                    f"reading {source}: repository format version {version!r} is not "
                    f"supported (this blockferry reads versions 1 and {CONFIG_VERSION})"
                )
            encryption = document["encryption"]
            mode = encryption["mode"]
            if mode not in ENCRYPTION_MODES or (version == 1 and mode != ENCRYPTION_NONE):
                raise RepositoryError(
                    f"reading {source}: encryption mode {mode!r} is not "
                    "supported by this blockferry"
                )
            encrypted = mode != ENCRYPTION_NONE
            if encrypted and encryption["key_derivation"] != KEY_DERIVATION:
                raise RepositoryError(
                    f"reading {source}: key derivation {encryption['key_derivation']!r} is "
                    "not supported by this blockferry"
                )
            algorithms = {
                "digest": DIGEST_ALGORITHM,
                "checksum": CHECKSUM_ALGORITHM,
                "compression": COMPRESSION_ALGORITHM,
            }
            for name, expected in algorithms.items():
                if document[name] != expected:
                    raise RepositoryError(
                        f"reading {source}: {name} algorithm {document[name]!r} is not "
                        f"supported (expected {expected!r})"
                    )
            config = cls(
                id=_string(document["id"]),
                created=parse_time(_string(document["created"])),
                block_size=_integer(document["block_size"]),
                shard_count=_integer(document["shard_count"]),
                dedupe_key=b"" if encrypted else bytes.fromhex(_string(document["dedupe_key"])),
                version=version,
                encryption_mode=mode,
                sealed_dedupe_key=(
                    bytes.fromhex(_string(encryption["sealed_dedupe_key"])) if encrypted else b""
                ),
            )
        except RepositoryError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptionError(f"reading {source}: malformed configuration: {exc!r}") from exc
        if config.block_size not in BLOCK_SIZES:
            raise CorruptionError(f"reading {source}: invalid block size {config.block_size}")
        if config.shard_count < 1:
            raise CorruptionError(f"reading {source}: invalid shard count {config.shard_count}")
        if not encrypted and len(config.dedupe_key) != DEDUPE_KEY_SIZE:
            raise CorruptionError(f"reading {source}: dedupe key is not {DEDUPE_KEY_SIZE} bytes")
        return config


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value
