"""Encryption at rest: nothing of a disk is readable in the repository's files; a missing
or wrong key, a swapped object, a replayed one or a flipped bit is a clear error naming
the object, never wrong bytes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from blockferry.core.blocks import checksum, digest
from blockferry.core.errors import CorruptionError, WrongKey
from blockferry.repository import Repository, check, layout, restore_disk, verify
from blockferry.repository.gc import collect_garbage
from blockferry.repository.keys import Argon2Params, Secret, write_key_file
from blockferry.repository.pack import CHUNK_HEADER
from blockferry.repository.retention import Policy
from tests.unit.repository.repo_helpers import BLOCK_SIZE, backup, file_of, pack_file, root

CHEAP = Argon2Params(iterations=1, memory_kib=64, lanes=1)
MARKER = b"BLOCKFERRY-MARKER-7c1e"


def marked_image(blocks: int, seed: int) -> bytes:
    """Blocks that carry the marker: half compressible, half random (stored plain)."""
    rng = os.urandom if seed < 0 else __import__("random").Random(seed).randbytes
    image = b""
    for index in range(blocks):
        if index % 2:
            body = MARKER * (BLOCK_SIZE // len(MARKER))
        else:
            body = MARKER + rng(BLOCK_SIZE - 2 * len(MARKER)) + MARKER
        image += body.ljust(BLOCK_SIZE, b"\x01")
    return image


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "repo.key"
    write_key_file(path)
    return path


@pytest.fixture
def encrypted(tmp_path: Path, key_file: Path) -> Repository:
    return Repository.init(
        tmp_path / "repo", block_size=BLOCK_SIZE, shard_count=2, secret=Secret.key_file(key_file)
    )


def files_holding(directory: Path, needle: bytes) -> list[str]:
    return sorted(
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and needle in path.read_bytes()
    )


def test_the_marker_is_in_no_file_of_an_encrypted_repository(
    encrypted: Repository, tmp_path: Path
) -> None:
    image = marked_image(6, seed=1)
    point = backup(encrypted, "vm", {"sda": image})
    collect_garbage(encrypted, grace=0, pack_size=1)
    assert files_holding(root(encrypted), MARKER) == []

    plain = Repository.init(tmp_path / "plain", block_size=BLOCK_SIZE, shard_count=2)
    backup(plain, "vm", {"sda": image})
    assert files_holding(root(plain), MARKER) != [], "the search finds it where it is"

    out = tmp_path / "sda.img"
    restore_disk(encrypted, point.id, "sda", out, force=False)
    assert out.read_bytes() == image


def test_the_whole_cycle_in_an_encrypted_repository(
    encrypted: Repository, key_file: Path, tmp_path: Path
) -> None:
    images = [marked_image(4, seed=n) for n in range(3)]
    points = [backup(encrypted, "vm", {"sda": image}) for image in images]
    encrypted.prune("vm", Policy(keep_last=2))
    collect_garbage(encrypted, grace=0, pack_size=1 << 20)
    reopened = Repository.open(root(encrypted), secret=Secret.key_file(key_file))
    assert reopened.config.dedupe_key == encrypted.config.dedupe_key
    assert verify(reopened).ok and check(reopened).ok
    assert [p.id for p in reopened.restore_points()] == [p.id for p in points[1:]]
    for point, image in zip(points[1:], images[1:], strict=True):
        out = tmp_path / f"{point.id}.img"
        restore_disk(reopened, point.id, "sda", out, force=False)
        assert out.read_bytes() == image
    assert reopened.rebuild_index() >= 1 and verify(reopened).ok


def test_missing_and_wrong_keys_are_named(
    encrypted: Repository, key_file: Path, tmp_path: Path
) -> None:
    path = root(encrypted)
    with pytest.raises(WrongKey, match="is encrypted: give its key file or passphrase"):
        Repository.open(path)
    other = tmp_path / "other.key"
    write_key_file(other)
    with pytest.raises(WrongKey, match="wrong key file"):
        Repository.open(path, secret=Secret.key_file(other))
    with pytest.raises(WrongKey, match="wrong passphrase"):
        Repository.open(path, secret=Secret.passphrase("guess"))

    slot = encrypted.add_key(Secret.passphrase("long enough"), label="ops", argon2=CHEAP)
    opened = Repository.open(path, secret=Secret.passphrase("long enough"))
    assert opened.config.dedupe_key == encrypted.config.dedupe_key
    encrypted.keyring.remove(slot.id)
    with pytest.raises(WrongKey):
        Repository.open(path, secret=Secret.passphrase("long enough"))

    recovery = encrypted.recovery_key()
    assert Repository.open(path, secret=Secret.recovery_key(recovery)).config.id == (
        encrypted.config.id
    )
    elsewhere = Repository.init(
        tmp_path / "elsewhere", block_size=BLOCK_SIZE, secret=Secret.key_file(key_file)
    )
    with pytest.raises(WrongKey, match="recovery key is not its"):
        Repository.open(path, secret=Secret.recovery_key(elsewhere.recovery_key()))
    with pytest.raises(WrongKey, match="wrong key file"):  # same key file, another master key
        Repository.open(path, secret=Secret.key_file(other))


def test_a_swapped_or_replayed_metadata_object_is_named(
    encrypted: Repository, tmp_path: Path
) -> None:
    first = backup(encrypted, "vm", {"sda": marked_image(2, seed=1)})
    second = backup(encrypted, "vm", {"sda": marked_image(2, seed=2)})

    # the fixed index of the first restore point put in place of the second's
    older = file_of(encrypted, encrypted.fixed_index_name(first, "sda"))
    newer = file_of(encrypted, encrypted.fixed_index_name(second, "sda"))
    kept_fidx = newer.read_bytes()
    shutil.copyfile(older, newer)
    with pytest.raises(CorruptionError, match=f"{second.id}/sda.fidx.*fails authentication"):
        encrypted.read_fixed_index(second, "sda")
    report = verify(encrypted)
    assert [d.restore_points for d in report.damage] == [(second.id,)]
    newer.write_bytes(kept_fidx)

    # a restore point's marker swapped with another's
    marker = file_of(encrypted, layout.restore_point_file("vm", second.id))
    kept_marker = marker.read_bytes()
    shutil.copyfile(file_of(encrypted, layout.restore_point_file("vm", first.id)), marker)
    with pytest.raises(CorruptionError, match=r"restorepoint\.json.*fails authentication"):
        encrypted.load_restore_point("vm", second.id)
    marker.write_bytes(kept_marker)

    # a staged fixed index (an older object, of the same digests) replayed as a committed one
    digests = list(encrypted.read_fixed_index(second, "sda").digests)
    encrypted.stage_fixed_index("s9", "sda", 2 * BLOCK_SIZE, digests)
    shutil.copyfile(file_of(encrypted, layout.staged_fixed_index("s9", "sda")), newer)
    with pytest.raises(CorruptionError, match="fails authentication"):
        encrypted.read_fixed_index(second, "sda")
    newer.write_bytes(kept_fidx)
    assert verify(encrypted).ok

    # one pack's index file replayed as another's: named, and the pack's footer used
    packs = encrypted.sealed_pack_ids()
    assert len(packs) == 2
    shutil.copyfile(
        file_of(encrypted, layout.index_file(packs[0])),
        file_of(encrypted, layout.index_file(packs[1])),
    )
    reopened = Repository.open(
        root(encrypted), secret=Secret.recovery_key(encrypted.recovery_key())
    )
    [problem] = check(reopened).problems
    assert problem.path == layout.index_file(packs[1]) and "authentication" in problem.detail
    assert verify(reopened).ok, "every chunk is still found, through the footer"


def test_a_swapped_or_flipped_chunk_is_named_never_wrong_bytes(
    encrypted: Repository, tmp_path: Path
) -> None:
    image = os.urandom(2 * BLOCK_SIZE)  # two random blocks: stored plain, same sealed size
    point = backup(encrypted, "vm", {"sda": image})
    key = encrypted.config.dedupe_key
    first = encrypted.locate(digest(image[:BLOCK_SIZE], key))
    second = encrypted.locate(digest(image[BLOCK_SIZE:], key))
    assert first is not None and second is not None
    assert first.encrypted and first.stored_size == second.stored_size
    pack = pack_file(encrypted, first.pack_id)
    data = bytearray(pack.read_bytes())
    header = CHUNK_HEADER.size
    body = slice(first.offset + header, first.offset + header + first.stored_size)
    other = slice(second.offset + header, second.offset + header + second.stored_size)
    data[body], data[other] = data[other], data[body]
    # the chunk headers' checksums made to match, so only the sealing can notice
    for entry, part in ((first, body), (second, other)):
        fields = list(CHUNK_HEADER.unpack_from(data, entry.offset))
        fields[-1] = checksum(bytes(data[part]))
        CHUNK_HEADER.pack_into(data, entry.offset, *fields)
    pack.write_bytes(bytes(data))
    encrypted.close()

    with pytest.raises(CorruptionError, match=f"chunk {first.digest.hex()}.*authentication"):
        encrypted.read_entry(first)
    out = tmp_path / "out.img"
    with pytest.raises(CorruptionError, match="authentication"):
        restore_disk(encrypted, point.id, "sda", out, force=False)
    assert not out.exists(), "no wrong bytes are ever written"
