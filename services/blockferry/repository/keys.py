"""A repository's master key, kept wrapped in ``keys/<key-id>.json``.

The master key (32 random bytes) never leaves the processes that open the repository:
it is not on Kafka, in a log or in an error message. Each **key slot** wraps it with a
key-encryption key made from one secret:

* a **passphrase**: Argon2id (memory-hard; 64 MiB, 3 passes, 4 lanes by default) over
  the passphrase and the slot's random salt;
* a **key file**: 32 random bytes in a file of mode 0600 (:func:`write_key_file`),
  through HKDF-SHA256 with the slot's salt (the file is random already).

The wrapped master key is AES-256-GCM bound to the repository id and the slot id, so a
slot copied from another repository opens nothing. Several slots may wrap the same key
(:meth:`Keyring.add`, :meth:`Keyring.remove`): a passphrase is changed by adding a slot
and removing the old one, without sealing any object again. The master key itself can
be printed as a **recovery key** (:func:`recovery_key`) to keep on paper.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from blockferry.core.errors import ConfigError, CorruptionError, RepositoryError, WrongKey
from blockferry.repository.files import SECRET_MODE, write_atomic
from blockferry.repository.ids import format_time, parse_time, utc_now
from blockferry.repository.sealing import KEY_SIZE, NONCE_SIZE
from blockferry.repository.storage import ObjectNotFound, Storage

log = logging.getLogger(__name__)

KEYS = "keys/"
SLOT_VERSION = 1
SALT_SIZE = 16
PASSPHRASE = "passphrase"
KEY_FILE = "key-file"
RECOVERY_KEY = "recovery-key"
KINDS = (PASSPHRASE, KEY_FILE)
"""The kinds of key slot; a recovery key is the master key itself and needs none."""
# Do not change: the first line of every key file, and the wrapping's bound data.
KEY_FILE_HEADER = "blockferry key file v1"
WRAP_CONTEXT = b"blockferry key slot v1"
KEY_FILE_INFO = b"blockferry key file wrapping v1"
RECOVERY_CHECK_SIZE = 4


@dataclass(frozen=True)
class Argon2Params:
    """How hard a passphrase is made to guess; stored in each passphrase slot."""

    iterations: int = 3
    memory_kib: int = 64 * 1024
    lanes: int = 4


@dataclass(frozen=True)
class Secret:
    """What unlocks a key slot: a passphrase or a key file's bytes."""

    kind: str
    material: bytes

    @classmethod
    def passphrase(cls, text: str) -> Secret:
        if not text:
            raise ConfigError("an empty passphrase protects nothing")
        return cls(PASSPHRASE, text.encode())

    @classmethod
    def key_file(cls, path: Path) -> Secret:
        return cls(KEY_FILE, read_key_file(path))

    @classmethod
    def recovery_key(cls, text: str) -> Secret:
        return cls(RECOVERY_KEY, parse_recovery_key(text))

    def __repr__(self) -> str:  # never the material
        return f"Secret({self.kind})"


@dataclass(frozen=True)
class KeySlot:
    """One ``keys/<id>.json``: the master key wrapped by one secret."""

    id: str
    kind: str
    label: str
    created: datetime
    salt: bytes
    wrapped: bytes
    argon2: Argon2Params | None

    def to_json(self) -> bytes:
        kdf: dict[str, Any]
        if self.argon2 is not None:
            kdf = {"name": "argon2id", "salt": self.salt.hex(), **self.argon2.__dict__}
        else:
            kdf = {"name": "hkdf-sha256", "salt": self.salt.hex()}
        document = {
            "version": SLOT_VERSION,
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "created": format_time(self.created),
            "kdf": kdf,
            "wrapped_key": self.wrapped.hex(),
        }
        return (json.dumps(document, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> KeySlot:
        try:
            document = json.loads(data)
            if document["version"] != SLOT_VERSION:
                raise RepositoryError(
                    f"reading {source}: key slot version {document['version']!r} is newer "
                    "than this blockferry knows"
                )
            kdf = document["kdf"]
            argon2 = None
            if kdf["name"] == "argon2id":
                argon2 = Argon2Params(
                    int(kdf["iterations"]), int(kdf["memory_kib"]), int(kdf["lanes"])
                )
            elif kdf["name"] != "hkdf-sha256":
                raise RepositoryError(f"reading {source}: unknown key derivation {kdf['name']!r}")
            slot = cls(
                id=str(document["id"]),
                kind=str(document["kind"]),
                label=str(document["label"]),
                created=parse_time(str(document["created"])),
                salt=bytes.fromhex(kdf["salt"]),
                wrapped=bytes.fromhex(document["wrapped_key"]),
                argon2=argon2,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptionError(f"reading {source}: not a key slot ({exc})") from exc
        if slot.kind not in KINDS or (slot.kind == PASSPHRASE) != (argon2 is not None):
            raise CorruptionError(f"reading {source}: a {slot.kind} slot with {kdf['name']}")
        return slot


def new_master_key() -> bytes:
    """A fresh master key."""
    return secrets.token_bytes(KEY_SIZE)


def wrap(
    master_key: bytes,
    repository_id: str,
    secret: Secret,
    *,
    label: str = "",
    argon2: Argon2Params | None = None,
) -> KeySlot:
    """A new key slot that opens with ``secret``."""
    slot_id = secrets.token_hex(8)
    salt = secrets.token_bytes(SALT_SIZE)
    params = (argon2 or Argon2Params()) if secret.kind == PASSPHRASE else None
    kek = _key_encryption_key(secret, salt, params)
    nonce = os.urandom(NONCE_SIZE)
    wrapped = nonce + AESGCM(kek).encrypt(nonce, master_key, _bound(repository_id, slot_id))
    return KeySlot(slot_id, secret.kind, label, utc_now(), salt, wrapped, params)


def unwrap(slot: KeySlot, repository_id: str, secret: Secret) -> bytes | None:
    """The master key, or None if ``secret`` does not open ``slot``."""
    if slot.kind != secret.kind or len(slot.wrapped) <= NONCE_SIZE:
        return None
    kek = _key_encryption_key(secret, slot.salt, slot.argon2)
    nonce, body = slot.wrapped[:NONCE_SIZE], slot.wrapped[NONCE_SIZE:]
    try:
        return AESGCM(kek).decrypt(nonce, body, _bound(repository_id, slot.id))
    except InvalidTag:
        return None


class Keyring:
    """The key slots of one repository (``keys/``)."""

    def __init__(self, storage: Storage, repository_id: str) -> None:
        self._storage = storage
        self._repository_id = repository_id

    def slots(self) -> list[KeySlot]:
        """Every key slot, oldest first; raises CorruptionError naming one that is
        damaged."""
        slots, damaged = self._read()
        if damaged:
            raise damaged[0]
        return slots

    def _read(self) -> tuple[list[KeySlot], list[RepositoryError]]:
        found, damaged = [], []
        for info in self._storage.list_objects(KEYS):
            if info.name.endswith(".json") and "/" not in info.name[len(KEYS) :]:
                try:
                    found.append(KeySlot.from_json(self._storage.get(info.name), info.name))
                except ObjectNotFound:
                    continue
                except RepositoryError as exc:
                    damaged.append(exc)
        return sorted(found, key=lambda slot: (slot.created, slot.id)), damaged

    def add(
        self,
        master_key: bytes,
        secret: Secret,
        *,
        label: str = "",
        argon2: Argon2Params | None = None,
    ) -> KeySlot:
        """Wrap the master key with one more secret."""
        slot = wrap(master_key, self._repository_id, secret, label=label, argon2=argon2)
        self._storage.put_new(_name(slot.id), slot.to_json())
        log.info("added %s key slot %s to repository %s", slot.kind, slot.id, self._repository_id)
        return slot

    def remove(self, slot_id: str) -> None:
        """Remove a key slot; the last one never goes (nothing could open the data)."""
        slots = self.slots()
        if slot_id not in {slot.id for slot in slots}:
            raise ConfigError(f"removing key slot {slot_id!r}: the repository has no such slot")
        if len(slots) == 1:
            raise ConfigError(
                f"removing key slot {slot_id}: it is the last one, and without it nothing "
                "opens the repository; add another first"
            )
        self._storage.delete(_name(slot_id))

    def unlock(self, secret: Secret) -> tuple[bytes, KeySlot]:
        """The master key and the slot that opened it.

        Raises:
            WrongKey: no slot opens with ``secret`` (a wrong passphrase or key file).
        """
        if secret.kind == RECOVERY_KEY:
            raise ConfigError("a recovery key is the master key: it opens no key slot")
        slots, damaged = self._read()
        for slot in slots:
            master_key = unwrap(slot, self._repository_id, secret)
            if master_key is not None:
                return master_key, slot
        kinds = sum(1 for slot in slots if slot.kind == secret.kind)
        unreadable = "".join(f"; {exc}" for exc in damaged)
        raise WrongKey(
            f"opening repository {self._repository_id}: the {secret.kind.replace('-', ' ')} "
            f"given opens none of its {kinds} {secret.kind} key slots (wrong "
            f"{'passphrase' if secret.kind == PASSPHRASE else 'key file'}?){unreadable}"
        )


def recovery_key(master_key: bytes) -> str:
    """The master key as text to print and keep: base32 in groups of six, with a
    checksum that catches a mistyped group."""
    check = blake3.blake3(master_key).digest()[:RECOVERY_CHECK_SIZE]
    text = base64.b32encode(master_key + check).decode().rstrip("=")
    return "-".join(text[i : i + 6] for i in range(0, len(text), 6))


def parse_recovery_key(text: str) -> bytes:
    """The master key a recovery key holds; raises ConfigError when it is mistyped."""
    compact = "".join(text.split()).replace("-", "").upper()
    try:
        raw = base64.b32decode(compact + "=" * (-len(compact) % 8))
    except ValueError as exc:
        raise ConfigError("the recovery key is not valid base32: check what was typed") from exc
    master_key, check = raw[:-RECOVERY_CHECK_SIZE], raw[-RECOVERY_CHECK_SIZE:]
    if len(master_key) != KEY_SIZE or blake3.blake3(master_key).digest()[:4] != check:
        raise ConfigError("the recovery key does not check out: a group was mistyped")
    return master_key


def write_key_file(path: Path) -> None:
    """Create a new key file (mode 0600); an existing file is never replaced."""
    if path.exists():
        raise ConfigError(f"creating key file {path}: it exists; choose another name")
    material = base64.b64encode(secrets.token_bytes(KEY_SIZE)).decode()
    write_atomic(path, f"{KEY_FILE_HEADER}\n{material}\n".encode(), mode=SECRET_MODE)


def read_key_file(path: Path) -> bytes:
    """A key file's secret; raises ConfigError naming the file (never its content)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"reading key file {path}: {exc}") from exc
    try:
        if len(lines) != 2 or lines[0] != KEY_FILE_HEADER:
            raise ValueError
        material = base64.b64decode(lines[1].strip(), validate=True)
    except ValueError:
        raise ConfigError(f"reading key file {path}: not a blockferry key file") from None
    if len(material) != KEY_SIZE:
        raise ConfigError(f"reading key file {path}: not a blockferry key file")
    return material


def _name(slot_id: str) -> str:
    return f"{KEYS}{slot_id}.json"


def _bound(repository_id: str, slot_id: str) -> bytes:
    return WRAP_CONTEXT + b" " + repository_id.encode() + b" " + slot_id.encode()


def _key_encryption_key(secret: Secret, salt: bytes, argon2: Argon2Params | None) -> bytes:
    if argon2 is not None:
        return Argon2id(
            salt=salt,
            length=KEY_SIZE,
            iterations=argon2.iterations,
            lanes=argon2.lanes,
            memory_cost=argon2.memory_kib,
        ).derive(secret.material)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=KEY_FILE_INFO).derive(
        secret.material
    )
