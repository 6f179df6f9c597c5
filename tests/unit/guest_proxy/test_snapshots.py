import asyncio
import fcntl
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from blockferry.core.errors import GuestError
from blockferry.guest_proxy import snapshots
from blockferry.guest_proxy.snapshots import (
    Snapshot,
    copy_path,
    create_snapshot,
    delete_snapshot,
    partial_path,
)
from tests.system import unavailable

SESSION = "0123abcd"
MIB = 1024 * 1024
DATA = {0: b"boot sector", 5 * MIB + 123: b"middle" * 1000, 31 * MIB: b"near the end"}
SIZE = 32 * MIB + 17  # not a multiple of anything, and ends in a hole


def sparse_image(path: Path) -> Path:
    with path.open("wb") as f:
        f.truncate(SIZE)
        for offset, data in DATA.items():
            f.seek(offset)
            f.write(data)
    return path


def reflink_works(directory: Path) -> bool:
    """Whether this file system clones files (what file-copy should then do)."""
    (directory / "probe-src").write_bytes(b"x" * 4096)
    with (directory / "probe-src").open("rb") as src, (directory / "probe-dst").open("wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), snapshots.FICLONE, src.fileno())
        except OSError as exc:
            assert exc.errno in snapshots.NO_REFLINK
            return False
    return True


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if "blockferry-snapshot" in p.name)


def read(path: str | Path) -> bytes:
    """Sync file helpers: the tests are async and their checks are quick."""
    return Path(path).read_bytes()


def write(path: str | Path, data: bytes) -> None:
    Path(path).write_bytes(data)


def write_at(path: str | Path, offset: int, data: bytes) -> None:
    with Path(path).open("r+b") as f:
        f.seek(offset)
        f.write(data)


def make_directory(path: str | Path) -> None:
    Path(path).mkdir()


def exists(path: str | Path) -> bool:
    return Path(path).exists()


def status(path: str | Path) -> os.stat_result:
    return Path(path).stat()


async def test_none_reads_the_source(tmp_path: Path) -> None:
    image = sparse_image(tmp_path / "a.raw")
    made = await create_snapshot("none", "vm1.sda", str(image), SESSION)
    assert made == Snapshot("vm1.sda", str(image), str(image), "none")
    await delete_snapshot(made.disk, made.source, made.path, provider="none", session_id=SESSION)
    assert exists(image)


async def test_file_copy_is_an_equal_independent_sparse_copy(tmp_path: Path) -> None:
    expected_kind = "reflink" if reflink_works(tmp_path) else "copy"
    image = sparse_image(tmp_path / "a.raw")
    original = read(image)

    made = await create_snapshot("file-copy", "vm1.sda", str(image), SESSION)

    assert made.kind == expected_kind
    assert made.path == str(tmp_path / f".a.raw.blockferry-snapshot-{SESSION}")
    assert read(made.path) == original
    assert status(made.path).st_size == SIZE
    assert status(made.path).st_blocks * 512 < SIZE // 4  # the holes stayed holes
    assert status(made.path).st_mode == status(image).st_mode
    assert (made.kind == "copy") == (snapshots.PLAIN_COPY_WARNING in made.warnings)

    write_at(image, 5 * MIB, b"changed after the snapshot")
    assert read(made.path) == original

    for _ in range(2):  # deleting is idempotent
        await delete_snapshot(
            made.disk, made.source, made.path, provider="file-copy", session_id=SESSION
        )
        assert leftovers(tmp_path) == []
    assert exists(image)


async def test_file_copy_replaces_a_leftover_of_the_same_session(tmp_path: Path) -> None:
    image = sparse_image(tmp_path / "a.raw")
    path = copy_path(str(image), SESSION)
    write(path, b"stale")
    write(partial_path(path), b"stale partial")

    made = await create_snapshot("file-copy", "vm1.sda", str(image), SESSION)

    assert read(made.path) == read(image)
    assert leftovers(tmp_path) == [Path(path).name]


async def test_file_copy_of_a_symbolic_link_is_made_next_to_the_image(tmp_path: Path) -> None:
    image = sparse_image(tmp_path / "a.raw")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "disk").symlink_to(image)

    made = await create_snapshot("file-copy", "d", str(tmp_path / "links" / "disk"), SESSION)

    assert made.path == copy_path(str(image), SESSION)
    await delete_snapshot(
        made.disk, made.source, made.path, provider="file-copy", session_id=SESSION
    )
    assert leftovers(tmp_path) == []


async def test_plain_copy_warns_about_atomicity_and_the_freeze_limit(tmp_path: Path) -> None:
    if reflink_works(tmp_path):
        pytest.skip("this file system reflinks: no plain copy to warn about")
    image = sparse_image(tmp_path / "a.raw")
    made = await create_snapshot("file-copy", "d", str(image), SESSION, freeze_limit_s=0.0)
    assert made.kind == "copy"
    assert made.warnings[0] == snapshots.PLAIN_COPY_WARNING
    assert "longer than the freeze limit of 0 s" in made.warnings[1]
    relaxed = await create_snapshot("file-copy", "d", str(image), SESSION, freeze_limit_s=3600)
    assert relaxed.warnings == (snapshots.PLAIN_COPY_WARNING,)


def block_device(tmp_path: Path) -> Path:
    path = tmp_path / "sdz"
    try:
        os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(7, 200))
    except PermissionError:
        unavailable("cannot make a device node (needs root)")
    return path


def fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "fifo")
    return tmp_path / "fifo"


def directory(tmp_path: Path) -> Path:
    (tmp_path / "dir").mkdir()
    return tmp_path / "dir"


def missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.raw"


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (block_device, "not a regular file"),
        (fifo, "not a regular file"),
        (directory, "not a regular file"),
        (missing, "No such file or directory"),
    ],
)
async def test_file_copy_refuses_what_is_not_an_image_file(
    make: Callable[[Path], Path], cause: str, tmp_path: Path
) -> None:
    source = make(tmp_path)
    message = f"making a snapshot copy of disk d ({source}): {cause}"
    with pytest.raises(GuestError, match=re.escape(message)):
        await create_snapshot("file-copy", "d", str(source), SESSION)
    assert leftovers(tmp_path) == []


async def test_a_failing_copy_leaves_no_partial_file(tmp_path: Path) -> None:
    image = sparse_image(tmp_path / "a.raw")
    path = copy_path(str(image), SESSION)
    make_directory(path)  # the finished copy cannot be renamed into place
    with pytest.raises(GuestError, match="Is a directory"):
        await create_snapshot("file-copy", "d", str(image), SESSION)
    assert leftovers(tmp_path) == [Path(path).name]


async def test_a_cancelled_copy_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if reflink_works(tmp_path):
        pytest.skip("a reflink is instantaneous: nothing to cancel")
    monkeypatch.setattr(snapshots, "COPY_CHUNK", 4096)  # slow the copy down
    image = tmp_path / "a.raw"
    write(image, os.urandom(64 * MIB))

    task = asyncio.create_task(create_snapshot("file-copy", "d", str(image), SESSION))
    for _ in range(1000):  # until the copy has begun
        if leftovers(tmp_path):
            break
        await asyncio.sleep(0.001)
    assert leftovers(tmp_path) == [Path(partial_path(copy_path(str(image), SESSION))).name]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(500):  # the copying thread stops at its next chunk
        if not leftovers(tmp_path):
            break
        await asyncio.sleep(0.01)
    assert leftovers(tmp_path) == []


COPY_WITH_CP = (
    'out="$(dirname "$BLOCKFERRY_SOURCE")/snap-$BLOCKFERRY_DISK-$BLOCKFERRY_SESSION"'
    ' && cp "$BLOCKFERRY_SOURCE" "$out" && echo "making $out" >&2 && printf "\\n%s\\n\\n" "$out"'
)


async def test_command_provider_runs_the_commands_with_the_variables(tmp_path: Path) -> None:
    image = tmp_path / "a.raw"
    write(image, b"disk contents")
    log = tmp_path / "deleted"
    delete = f'rm "$BLOCKFERRY_SNAPSHOT" && echo "$BLOCKFERRY_DISK $BLOCKFERRY_SESSION" > {log}'

    made = await create_snapshot(
        "command", "vm1.sda", str(image), SESSION, create=COPY_WITH_CP, timeout_s=10
    )

    expected = str(tmp_path / f"snap-vm1.sda-{SESSION}")
    assert made == Snapshot("vm1.sda", str(image), expected, "command")
    assert read(made.path) == b"disk contents"
    await delete_snapshot(
        made.disk,
        made.source,
        made.path,
        provider="command",
        delete=delete,
        timeout_s=10,
        session_id=SESSION,
    )
    assert not exists(made.path)
    assert read(log) == f"vm1.sda {SESSION}\n".encode()


@pytest.mark.parametrize(
    ("create", "ending"),
    [
        (
            "echo 'lvcreate: volume group full' >&2; exit 5",
            "exit code 5: lvcreate: volume group full",
        ),
        ("echo '  '; echo done >&2", "it printed no snapshot path (exit code 0: done)"),
        ("sleep 30; echo /never", "killed after its time limit"),
    ],
)
async def test_command_provider_failures(create: str, ending: str) -> None:
    message = f"making a snapshot of disk d (/img) with the create command: {ending}"
    with pytest.raises(GuestError, match=re.escape(message)):
        await create_snapshot("command", "d", "/img", SESSION, create=create, timeout_s=1)


async def test_command_provider_delete_failure() -> None:
    made = Snapshot("d", "/img", "/snap", "command")
    message = "deleting the snapshot /snap of disk d with the delete command: exit code 3: busy"
    with pytest.raises(GuestError, match=re.escape(message)):
        await delete_snapshot(
            made.disk,
            made.source,
            made.path,
            provider="command",
            delete="echo busy >&2; exit 3",
            timeout_s=5,
            session_id=SESSION,
        )
