"""Sealing: what encryption at rest does to each object, with a well-kept library.

A repository encrypted at rest has one random **master key** (:mod:`keys` keeps it
wrapped). From it HKDF-SHA256 derives, with the repository id as salt, the **data
key** that seals chunks and metadata. A sealed object is AES-256-GCM over its bytes:

    nonce (12 random bytes) | ciphertext | tag (16 bytes)

with **associated data** that binds it to where it belongs: a chunk to its digest, a
metadata object to its name. A sealed object moved to another name, or a chunk put
under another digest, fails authentication like a flipped bit does, so objects cannot
be swapped; an older copy of an object cannot replace a newer one where the name
carries what changes (see FORMAT.md, "Encryption at rest").

Random 96-bit nonces keep the chance of a repeat below 2^-32 for up to 2^32 sealed
objects under one data key, which is far beyond a repository's chunk count.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from blockferry.core.errors import CorruptionError

ALGORITHM = "aes-256-gcm"
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
"""Bytes a sealed object has beyond its plaintext."""
# Do not change: the data keys of every encrypted repository are derived with it.
DATA_KEY_INFO = b"blockferry data key v1"


def derive_data_key(master_key: bytes, repository_id: str) -> bytes:
    """The key that seals a repository's chunks and metadata."""
    if len(master_key) != KEY_SIZE:
        raise ValueError(f"a master key has {KEY_SIZE} bytes, not {len(master_key)}")
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=bytes.fromhex(repository_id),
        info=DATA_KEY_INFO,
    ).derive(master_key)


class Sealer:
    """Seals and opens objects with one key; thread-safe (AESGCM keeps no state). Each
    call writes into one new buffer: a chunk is not copied on its way through."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, data: bytes | bytearray | memoryview, associated: bytes) -> bytearray:
        """``data`` sealed, bound to ``associated``."""
        nonce = os.urandom(NONCE_SIZE)
        sealed = bytearray(NONCE_SIZE + len(data) + TAG_SIZE)
        sealed[:NONCE_SIZE] = nonce
        self._aead.encrypt_into(nonce, data, associated, memoryview(sealed)[NONCE_SIZE:])
        return sealed

    def open(
        self, sealed: bytes | bytearray | memoryview, associated: bytes, subject: str
    ) -> bytes:
        """The plaintext of a sealed object.

        Raises:
            CorruptionError: naming ``subject``, when the object is too short or fails
                authentication (damaged, sealed with another key, or moved here from
                another name). The message never holds key material.
        """
        if len(sealed) < OVERHEAD:
            raise CorruptionError(
                f"reading {subject}: {len(sealed)} bytes, too short to be a sealed object"
            )
        view = memoryview(sealed)
        plain = bytearray(len(sealed) - OVERHEAD)
        try:
            self._aead.decrypt_into(view[:NONCE_SIZE], view[NONCE_SIZE:], associated, plain)
        except InvalidTag:
            raise CorruptionError(
                f"reading {subject}: it fails authentication (damaged, written with another "
                "key, or an object moved here from another name)"
            ) from None
        return bytes(plain)
