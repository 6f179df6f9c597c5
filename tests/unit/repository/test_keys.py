"""Encryption at rest, its parts: sealing objects and the wrapped master key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from blockferry.core.errors import ConfigError, CorruptionError, WrongKey
from blockferry.repository.keys import (
    Argon2Params,
    Keyring,
    KeySlot,
    Secret,
    new_master_key,
    parse_recovery_key,
    read_key_file,
    recovery_key,
    write_key_file,
)
from blockferry.repository.local_storage import LocalStorage
from blockferry.repository.sealing import OVERHEAD, Sealer, derive_data_key

REPO_ID = "0123456789abcdef0123456789abcdef"
CHEAP = Argon2Params(iterations=1, memory_kib=64, lanes=1)
"""Tests' passphrase slots: the format, not the cost."""


def test_a_sealed_object_opens_only_with_its_key_and_its_associated_data() -> None:
    master = new_master_key()
    sealer = Sealer(derive_data_key(master, REPO_ID))
    sealed = sealer.seal(b"block of a disk", b"digest-1")
    assert len(sealed) == len(b"block of a disk") + OVERHEAD
    assert b"block of a disk" not in sealed
    assert sealer.open(sealed, b"digest-1", "chunk 1") == b"block of a disk"
    assert sealer.seal(b"same", b"a") != sealer.seal(b"same", b"a"), "a fresh nonce each time"

    other_key = Sealer(derive_data_key(new_master_key(), REPO_ID))
    other_repository = Sealer(derive_data_key(master, "f" * 32))
    flipped = bytearray(sealed)
    flipped[20] ^= 1
    for opener, data, associated in (
        (sealer, sealed, b"digest-2"),  # swapped: put under another digest
        (other_key, sealed, b"digest-1"),  # another key
        (other_repository, sealed, b"digest-1"),  # the same key, another repository
        (sealer, bytes(flipped), b"digest-1"),  # a bit flip
        (sealer, sealed[:-1], b"digest-1"),  # truncated
        (sealer, sealed[:10], b"digest-1"),
    ):
        with pytest.raises(CorruptionError, match="reading chunk 1: ") as caught:
            opener.open(data, associated, "chunk 1")
        assert master.hex() not in str(caught.value)


def test_passphrase_slots_unlock_and_change_without_sealing_again(tmp_path: Path) -> None:
    keyring = Keyring(LocalStorage(tmp_path / "repo"), REPO_ID)
    master = new_master_key()
    first = keyring.add(master, Secret.passphrase("correct horse"), label="ops", argon2=CHEAP)
    assert keyring.unlock(Secret.passphrase("correct horse")) == (master, first)
    with pytest.raises(WrongKey, match="wrong passphrase") as caught:
        keyring.unlock(Secret.passphrase("battery staple"))
    assert "correct horse" not in str(caught.value) and "battery" not in str(caught.value)

    second = keyring.add(master, Secret.passphrase("battery staple"), argon2=CHEAP)
    keyring.remove(first.id)  # the passphrase changed; no object was sealed again
    assert [slot.id for slot in keyring.slots()] == [second.id]
    assert keyring.unlock(Secret.passphrase("battery staple"))[0] == master
    with pytest.raises(WrongKey):
        keyring.unlock(Secret.passphrase("correct horse"))
    with pytest.raises(ConfigError, match="last one"):
        keyring.remove(second.id)
    with pytest.raises(ConfigError, match="no such slot"):
        keyring.remove("0" * 16)


def test_key_files_and_passphrases_side_by_side(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    keyring = Keyring(storage, REPO_ID)
    master = new_master_key()
    key_file = tmp_path / "repo.key"
    write_key_file(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="exists"):
        write_key_file(key_file)
    keyring.add(master, Secret.key_file(key_file), label="target-mover")
    keyring.add(master, Secret.passphrase("s3cret"), argon2=CHEAP)
    assert [slot.kind for slot in keyring.slots()] == ["key-file", "passphrase"]
    assert keyring.unlock(Secret.key_file(key_file))[0] == master
    assert keyring.unlock(Secret.passphrase("s3cret"))[0] == master

    another = tmp_path / "another.key"
    write_key_file(another)
    with pytest.raises(WrongKey, match="wrong key file"):
        keyring.unlock(Secret.key_file(another))
    for name in (info.name for info in storage.list_objects("keys/")):
        data = storage.get(name)
        assert master not in data and master.hex().encode() not in data


def test_a_slot_copied_from_another_repository_opens_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    master = new_master_key()
    slot = Keyring(storage, REPO_ID).add(master, Secret.passphrase("pw"), argon2=CHEAP)
    elsewhere = Keyring(storage, "e" * 32)
    with pytest.raises(WrongKey):
        elsewhere.unlock(Secret.passphrase("pw"))
    assert KeySlot.from_json(slot.to_json(), "slot") == slot


@pytest.mark.parametrize(
    "content",
    [b"", b"blockferry key file v1\n", b"blockferry key file v1\nnot base64!\n", b"\xff\xfe"],
)
def test_a_file_that_is_no_key_file_is_named(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"bad\.key"):
        read_key_file(path)
    with pytest.raises(ConfigError, match=r"missing\.key"):
        read_key_file(tmp_path / "missing.key")


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text.replace('"wrapped_key": "', '"wrapped_key": "00'),
        lambda text: text.replace('"argon2id"', '"scrypt"'),
        lambda text: text[: len(text) // 2],
    ],
)
def test_a_damaged_slot_is_named(tmp_path: Path, damage: object) -> None:
    storage = LocalStorage(tmp_path / "repo")
    keyring = Keyring(storage, REPO_ID)
    slot = keyring.add(new_master_key(), Secret.passphrase("pw"), argon2=CHEAP)
    name = f"keys/{slot.id}.json"
    text = storage.get(name).decode()
    storage.put(name, damage(text).encode())  # type: ignore[operator]
    try:
        keyring.unlock(Secret.passphrase("pw"))
    except WrongKey:
        pass  # the wrapped key no longer opens: as good as a wrong passphrase
    except Exception as exc:
        assert name in str(exc)
    else:
        pytest.fail("a damaged slot opened")


def test_recovery_key_round_trip_and_typos() -> None:
    master = new_master_key()
    text = recovery_key(master)
    assert all(len(group) <= 6 for group in text.split("-"))
    assert parse_recovery_key(text) == master
    assert parse_recovery_key(text.lower().replace("-", " ")) == master
    typo = ("B" if text[3] != "B" else "C").join((text[:3], text[4:]))
    with pytest.raises(ConfigError, match="mistyped"):
        parse_recovery_key(typo)
    with pytest.raises(ConfigError):
        parse_recovery_key("not a key at all!")


def test_default_passphrase_cost_is_memory_hard() -> None:
    params = Argon2Params()
    assert params.memory_kib >= 64 * 1024 and params.iterations >= 3
    assert os.cpu_count() is None or params.lanes >= 1
