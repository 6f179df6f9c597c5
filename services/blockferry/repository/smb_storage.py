"""The SMB backend: a repository's objects as files on an SMB 2/3 share (Samba, Windows,
a NAS), through smbprotocol's ``smbclient``.

An object ``a/b/c`` is the file ``\\\\host\\share\\<prefix>a\\b\\c``. How each guarantee of
:class:`~blockferry.repository.storage.Storage` is kept:

* **Atomic puts**: every object is written under a temporary name in its final
  directory (``.c.tmp-<random>``, its directories made first if missing) through one
  handle, flushed (SMB2 FLUSH, an fsync on the server: Samba's ``strict sync``), then
  given its name through that same handle, so a reader sees a whole file or none.
  :meth:`SmbStorage.put` renames it over the old object (SET_INFO FileRenameInformation,
  ReplaceIfExists): a rename(2) on Samba. A server refuses to replace a file that is
  open (a reader's handle on Windows; on Samba one open through the same connection),
  so the rename is retried for a while.
* **Put-if-absent**: :meth:`SmbStorage.put_new` and a writer's commit hard-link the
  temporary to the name (SET_INFO FileLinkInformation, ReplaceIfExists false), which the
  server refuses with STATUS_OBJECT_NAME_COLLISION if the name exists, then delete the
  temporary. Samba makes the link a link(2), atomic: of racing creators, through any
  connections, exactly one wins. A rename without replace would not do: Samba checks
  that the name is free, then renames over whatever is there by then. A share whose
  file system has no hard links (STATUS_NOT_SUPPORTED) falls back to that rename, and
  racing creators could then both win.
* **Durability**: the data is flushed before it is published; SMB has no way to sync a
  directory, so the name itself is as durable as the server's file system makes a
  rename or a link (journaled on ext4, XFS, NTFS).
* **Writers** write a pack part by part into their temporary, held open sharing
  reading only: no other client can delete it while its writer lives.
* **Leftovers**: a temporary whose writer died stays behind. :meth:`SmbStorage.remove_leftovers`
  deletes those older than ``max(min_age, abandoned_temporary_s)``
  (:data:`ABANDONED_TEMPORARY_S`) by the server's clock, read as the time the server
  gives a probe file it creates (never this host's clock), and skips any still held
  open (STATUS_SHARING_VIOLATION: a live writer's). A temporary's time is its last
  write, so a slow writer's is young for as long as it writes.
* **Touch** rewrites an object's first byte with itself (an empty object: a write of
  no bytes): the server stamps the last-write time by its own clock, as every other
  time it gives. Setting the time (SET_INFO FileBasicInformation) would carry this
  host's clock instead. Opening without create, it never makes a missing object.
* **Reads** open the file sharing read, write and delete (a reader never blocks a
  rename or a delete), read whole or from an offset, and close; no handle is kept.
* **Deletes** go one by one, in order, each done when the server answers.

The session is SMB 3 with encryption (``encrypt``; without it, every message is
signed), NTLM or Kerberos as the server negotiates; one connection per storage,
made again when it drops. The password is never logged nor put in a message.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import secrets
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import smbclient
from smbprotocol.connection import Connection
from smbprotocol.exceptions import (
    SMBAuthenticationError,
    SMBConnectionClosed,
    SMBException,
    SMBOSError,
    SMBResponseException,
)
from smbprotocol.file_info import (
    FileAttributes,
    FileDispositionInformation,
    FileLinkInformation,
    FileRenameInformation,
)
from smbprotocol.header import NtStatus
from smbprotocol.open import CreateOptions, FilePipePrinterAccessMask, SMB2SetInfoRequest
from smbprotocol.tree import TreeConnect

from blockferry.core.errors import RepositoryError, RepositoryFull, RepositoryUnavailable
from blockferry.repository.storage import (
    Data,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    Parts,
    WriterBase,
    check_prefix,
    checked_name,
    parts_of,
)

# smbprotocol logs every request and response at INFO: a role's log would be nothing else
logging.getLogger("smbprotocol").setLevel(logging.WARNING)
logging.getLogger("smbclient").setLevel(logging.WARNING)

ABANDONED_TEMPORARY_S = 3600.0
"""A temporary this old (by the server's clock) that no handle holds has no live writer."""

REPLACE_RETRY_S = 5.0
"""How long a put retries renaming over an object the server says is open."""

_Access = FilePipePrinterAccessMask
_WRITE = _Access.FILE_WRITE_DATA | _Access.FILE_READ_ATTRIBUTES | _Access.FILE_WRITE_ATTRIBUTES
_TEMPORARY_ACCESS = _WRITE | _Access.DELETE
_TOUCH_ACCESS = _Access.FILE_READ_DATA | _WRITE
_SHARE_ALL = "rwd"

_STATUS_QUOTA_EXCEEDED = 0xC0000044
_FULL = frozenset({NtStatus.STATUS_DISK_FULL, _STATUS_QUOTA_EXCEEDED})
_NOT_FOUND = frozenset(
    {
        NtStatus.STATUS_OBJECT_NAME_NOT_FOUND,
        NtStatus.STATUS_OBJECT_PATH_NOT_FOUND,
        NtStatus.STATUS_NOT_FOUND,
        NtStatus.STATUS_FILE_IS_A_DIRECTORY,
        NtStatus.STATUS_NOT_A_DIRECTORY,
        NtStatus.STATUS_DELETE_PENDING,
    }
)
_LOGIN_REFUSED = frozenset(
    {
        NtStatus.STATUS_LOGON_FAILURE,
        NtStatus.STATUS_WRONG_PASSWORD,
        NtStatus.STATUS_PASSWORD_EXPIRED,
    }
)
_IN_USE = frozenset({NtStatus.STATUS_ACCESS_DENIED, NtStatus.STATUS_SHARING_VIOLATION})
_NO_HARD_LINKS = frozenset({NtStatus.STATUS_NOT_SUPPORTED, NtStatus.STATUS_INVALID_DEVICE_REQUEST})
_STATUS_NAMES: dict[int, str] = {
    value: name
    for name, value in vars(NtStatus).items()
    if name.startswith("STATUS_") and isinstance(value, int)
}
_FILETIME_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SmbLocation:
    """Where a repository lives on an SMB share (``smb://`` URLs)."""

    host: str
    port: int
    share: str
    prefix: str
    """Path inside the share, ``/``-separated, empty or ending with ``/``."""
    user: str

    def __post_init__(self) -> None:
        if self.prefix and (
            not self.prefix.endswith("/")
            or any(part in ("", ".", "..") for part in self.prefix[:-1].split("/"))
        ):
            raise RepositoryError(
                f"SMB path {self.prefix!r}: a path inside the share is empty or ends with '/'"
            )
        if not self.share or "/" in self.share or "\\" in self.share:
            raise RepositoryError(f"SMB share {self.share!r}: a share is one name")

    def url(self, name: str = "") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"smb://{self.user}@{host}:{self.port}/{self.share}/{self.prefix}{name}"


class SmbStorage:
    """A repository's objects under ``location``; see the module docstring and
    :class:`~blockferry.repository.storage.Storage` for the guarantees."""

    def __init__(
        self,
        location: SmbLocation,
        *,
        password: str,
        encrypt: bool = True,
        abandoned_temporary_s: float = ABANDONED_TEMPORARY_S,
        connect_timeout: float = 10.0,
    ) -> None:
        self.location = location
        self.abandoned_temporary_s = abandoned_temporary_s
        self._connections: dict[str, Any] = {}
        self._options: dict[str, Any] = {
            "username": location.user,
            "password": password,
            "port": location.port,
            "encrypt": encrypt,
            "connection_timeout": connect_timeout,
            "connection_cache": self._connections,
            "require_signing": True,
        }
        self._lock = threading.Lock()
        weakref.finalize(self, _disconnect, self._connections)

    def __repr__(self) -> str:
        return f"SmbStorage({self.location.url()!r})"

    def where(self, name: str = "") -> str:
        return self.location.url(name)

    def path(self, name: str) -> str:
        """The UNC path of object ``name`` (for this backend's tests and tools)."""
        return self._unc(self._relative(name))

    # -- reads ----------------------------------------------------------------------------

    def get(self, name: str) -> bytes:
        with self._errors("reading", name), self._open_read(name) as handle:
            return bytes(handle.readall())

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        with self._errors(f"reading {length} bytes at {offset} of", name):
            with self._open_read(name) as handle:
                end = min(offset + length, handle.fd.end_of_file)
                found = bytearray()
                handle.seek(offset)
                while offset + len(found) < end:
                    chunk = handle.read(end - offset - len(found))
                    if not chunk:
                        break
                    found += chunk
                return bytes(found)

    def stat(self, name: str) -> ObjectInfo:
        with self._errors("reading", name):
            status = smbclient.stat(self.path(name), **self._session())
        if status.st_file_attributes & FileAttributes.FILE_ATTRIBUTE_DIRECTORY:
            raise ObjectNotFound(f"reading {self.where(name)}: a directory, not an object")
        modified = _FILETIME_EPOCH + timedelta(microseconds=status.st_mtime_ns // 1000)
        return ObjectInfo(name, status.st_size, modified)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        check_prefix(prefix)
        found: list[ObjectInfo] = []
        self._walk(prefix, found, leftovers=False)
        return found

    # -- writes ---------------------------------------------------------------------------

    def put(self, name: str, data: Parts) -> None:
        self._put(name, data, replace=True)

    def put_new(self, name: str, data: Parts) -> None:
        self._put(name, data, replace=False)

    def writer(self, name: str) -> SmbWriter:
        relative = self._relative(name)
        temporary = _temporary(relative)
        with self._errors("creating a temporary for", name):
            handle = self._create_temporary(temporary)
        return SmbWriter(self, name, relative, handle)

    def touch(self, name: str) -> None:
        with self._errors("touching", name):
            handle = smbclient.open_file(
                self.path(name),
                mode="r+b",
                buffering=0,
                desired_access=_TOUCH_ACCESS,
                share_access=_SHARE_ALL,
                **self._session(),
            )
            with contextlib.closing(handle):
                first = handle.fd.read(0, 1) if handle.fd.end_of_file else b""
                handle.fd.write(first, offset=0)

    def delete(self, *names: str) -> None:
        for name in names:
            with self._errors("removing", name):
                try:
                    smbclient.remove(self.path(name), **self._session())
                except SMBOSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                        raise

    # -- housekeeping ---------------------------------------------------------------------

    def leftovers(self) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        self._walk("", found, leftovers=True)
        return found

    def remove_leftovers(self, min_age: float = 0.0) -> int:
        found = self.leftovers()
        if not found:
            return 0
        now = self.server_now()
        age = max(min_age, self.abandoned_temporary_s)
        removed = 0
        for info in found:
            if (now - info.modified).total_seconds() < age:
                continue
            with self._errors("removing the temporary", info.name):
                try:
                    smbclient.remove(self._unc(self.location.prefix + info.name), **self._session())
                except SMBOSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                        continue  # published or reaped by someone else meanwhile
                    if exc.ntstatus == NtStatus.STATUS_SHARING_VIOLATION:
                        continue  # held open by its writer, alive
                    raise
            removed += 1
        return removed

    def server_now(self) -> datetime:
        """The server's clock: the time it gives a probe file it creates (and deletes
        when the probe is closed)."""
        probe = f"{self.location.prefix}.clock.tmp-{secrets.token_hex(4)}"
        with self._errors("reading the clock of", ""):
            handle = smbclient.open_file(
                self._unc(probe),
                mode="xb",
                buffering=0,
                desired_access=_Access.DELETE | _Access.FILE_READ_ATTRIBUTES,
                create_options=CreateOptions.FILE_DELETE_ON_CLOSE,
                **self._session(),
            )
            handle.close()
        created: datetime = handle.fd.last_write_time
        return created.astimezone(UTC)

    def close(self) -> None:
        """Disconnect; the next request connects again."""
        with self._lock:
            _disconnect(self._connections)

    # -- internals ------------------------------------------------------------------------

    def _relative(self, name: str) -> str:
        """The path of object ``name`` inside the share, ``/``-separated."""
        return self.location.prefix + checked_name(name)

    def _unc(self, relative: str) -> str:
        location = self.location
        path = relative.rstrip("/").replace("/", "\\")
        return f"\\\\{location.host}\\{location.share}" + (f"\\{path}" if path else "")

    def _session(self) -> dict[str, Any]:
        """The keyword arguments of smbclient's calls, the connection and session made
        (again) first: one thread connects while the others wait."""
        with self._lock:
            key = f"{self.location.host.lower()}:{self.location.port}"
            connection = self._connections.get(key)
            if connection is None or not connection.transport.connected:
                self._connections[key] = self._connect()
            session = smbclient.register_session(self.location.host, **self._options)
            share = self._unc("")
            if not any(tree.share_name == share for tree in session.tree_connect_table.values()):
                # connected here, a share that does not exist is STATUS_BAD_NETWORK_NAME;
                # smbclient would look for a DFS referral instead, and report a missing path
                TreeConnect(session, share).connect()
        return self._options

    def _connect(self) -> Any:
        """A new connection with a client GUID of its own (smbclient would give every
        connection of the process the same one): Samba hands all the connections of one
        GUID to one smbd process, as channels of one client, and there connections that
        negotiate at the same time can hang."""
        connection = Connection(
            uuid.uuid4(), self.location.host, self.location.port, require_signing=True
        )
        try:
            connection.connect(timeout=self._options["connection_timeout"])
        except BaseException:
            with contextlib.suppress(SMBException, OSError, ValueError):
                connection.disconnect(close=False)
            raise
        return connection

    def _open_read(self, name: str) -> Any:
        return smbclient.open_file(
            self.path(name), mode="rb", buffering=0, share_access=_SHARE_ALL, **self._session()
        )

    def _create_temporary(self, temporary: str) -> Any:
        """A new temporary file, open for writing, its directory made first if missing.
        Its handle shares reading only: no one deletes it while it is open, and once
        renamed into place it does not keep readers out."""
        for attempt in range(3):
            try:
                return smbclient.open_file(
                    self._unc(temporary),
                    mode="xb",
                    buffering=0,
                    desired_access=_TEMPORARY_ACCESS,
                    share_access="r",
                    **self._session(),
                )
            except SMBOSError as exc:
                directory = temporary.rpartition("/")[0]
                if exc.errno != errno.ENOENT or attempt == 2 or not directory:
                    raise
            smbclient.makedirs(self._unc(directory), exist_ok=True, **self._session())
        raise AssertionError("unreachable")

    def _put(self, name: str, data: Parts, *, replace: bool) -> None:
        relative = self._relative(name)
        with self._errors("writing", name):
            handle = self._create_temporary(_temporary(relative))
            try:
                for part in parts_of(data):
                    _write_all(handle, part)
                handle.flush()
                if replace:
                    self._rename(handle, relative)
                else:
                    self._link(handle, relative, name)
            except BaseException:
                _discard(handle)
                raise
            handle.close()

    def _rename(self, handle: Any, relative: str) -> None:
        """Give the open temporary ``handle`` the name ``relative``, replacing what is
        there, retrying while the server says the old object is open."""
        rename = FileRenameInformation()
        rename["replace_if_exists"] = True
        rename["file_name"] = relative.replace("/", "\\")
        deadline = time.monotonic() + REPLACE_RETRY_S
        delay = 0.01
        while True:
            try:
                _set_info(handle, rename)
                return
            except SMBResponseException as exc:
                if exc.status not in _IN_USE or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _link(self, handle: Any, relative: str, name: str) -> None:
        """Give the open temporary ``handle`` the name ``relative`` if it is free, and
        delete the temporary's own name (when ``handle`` is closed)."""
        link = FileLinkInformation()
        link["replace_if_exists"] = False
        link["file_name"] = relative.replace("/", "\\")
        try:
            _set_info(handle, link)
        except SMBResponseException as exc:
            if exc.status == NtStatus.STATUS_OBJECT_NAME_COLLISION:
                raise ObjectExists(f"writing {self.where(name)}: it exists already") from exc
            if exc.status not in _NO_HARD_LINKS:
                raise
            self._rename_if_absent(handle, relative, name)
            return
        disposition = FileDispositionInformation()
        disposition["delete_pending"] = True
        _set_info(handle, disposition)

    def _rename_if_absent(self, handle: Any, relative: str, name: str) -> None:
        """Without hard links: a rename that the server refuses if the name exists (it
        checks, then renames: two racing creators could both pass)."""
        rename = FileRenameInformation()
        rename["replace_if_exists"] = False
        rename["file_name"] = relative.replace("/", "\\")
        try:
            _set_info(handle, rename)
        except SMBResponseException as exc:
            if exc.status == NtStatus.STATUS_OBJECT_NAME_COLLISION:
                raise ObjectExists(f"writing {self.where(name)}: it exists already") from exc
            raise

    def _walk(self, prefix: str, found: list[ObjectInfo], *, leftovers: bool) -> None:
        directory = self._unc(self.location.prefix + prefix)
        with self._errors("listing", prefix):
            try:
                with smbclient.scandir(directory, **self._session()) as scan:
                    entries = [entry.smb_info for entry in scan]
            except SMBOSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    return  # not made yet, or removed while listing
                raise
        for entry in entries:
            name = prefix + entry.file_name
            if entry.file_name.startswith("."):
                if leftovers and ".tmp-" in entry.file_name:
                    found.append(_info(name, entry))
            elif entry.file_attributes & FileAttributes.FILE_ATTRIBUTE_DIRECTORY:
                self._walk(name + "/", found, leftovers=leftovers)
            elif not leftovers:
                found.append(_info(name, entry))

    @contextlib.contextmanager
    def _errors(self, action: str, name: str) -> Iterator[None]:
        """Translate what smbclient raises while ``action`` on ``name`` into the
        repository's errors, each naming the object."""
        try:
            yield
        except RepositoryError:
            raise
        except (SMBOSError, SMBResponseException) as exc:
            raise self._status_error(action, name, exc) from exc
        except SMBAuthenticationError as exc:
            raise RepositoryError(
                f"{action} {self.where(name)}: the server refused {self.location.user}'s"
                f" login (wrong user or password?): {exc}"
            ) from exc
        except (SMBConnectionClosed, TimeoutError, ConnectionError) as exc:
            raise RepositoryUnavailable(
                f"{action} {self.where(name)}: the connection to the server failed: {exc}"
            ) from exc
        except ValueError as exc:
            if str(exc).startswith("Failed to connect"):
                raise RepositoryUnavailable(
                    f"{action} {self.where(name)}: the server cannot be reached: {exc.__cause__}"
                ) from exc
            raise RepositoryError(f"{action} {self.where(name)}: {exc}") from exc
        except (SMBException, OSError) as exc:
            raise RepositoryError(f"{action} {self.where(name)}: {exc}") from exc

    def _status_error(
        self, action: str, name: str, exc: SMBOSError | SMBResponseException
    ) -> RepositoryError:
        status = exc.ntstatus if isinstance(exc, SMBOSError) else exc.status
        message = f"{action} {self.where(name)}"
        if status in _NOT_FOUND:
            return ObjectNotFound(f"{message}: no such object")
        if status in _FULL:
            return RepositoryFull(
                f"{message}: no space left on the share ({_status_name(status)}); free space"
                " or raise the quota, then retry"
            )
        if status in _LOGIN_REFUSED:
            return RepositoryError(
                f"{message}: the server refused the login of {self.location.user!r}, wrong user"
                f" or password ({_status_name(status)})"
            )
        if status == NtStatus.STATUS_BAD_NETWORK_NAME:
            return RepositoryError(
                f"{message}: the server has no share {self.location.share!r}"
                f" ({_status_name(status)})"
            )
        return RepositoryError(f"{message}: {_status_name(status)}")


class SmbWriter(WriterBase):
    """An object written part by part into a temporary; see :class:`ObjectWriter`."""

    def __init__(self, storage: SmbStorage, name: str, relative: str, handle: Any) -> None:
        super().__init__(name, storage.where(name))
        self._storage = storage
        self._relative = relative
        self._handle: Any | None = handle

    def write(self, parts: Sequence[Data]) -> None:
        handle = self._require_open()
        try:
            with self._storage._errors("writing", self._name):
                for part in parts:
                    _write_all(handle, part)
                    self._size += len(part)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        handle = self._require_open()
        try:
            with self._storage._errors("writing", self._name):
                handle.flush()
                self._storage._link(handle, self._relative, self._name)
                handle.close()
        except BaseException:
            self.abort()
            raise
        self._handle = None

    def abort(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            _discard(handle)

    def _require_open(self) -> Any:
        if self._handle is None:
            raise self._finished()
        return self._handle


def _temporary(relative: str) -> str:
    """A fresh temporary name next to ``relative``."""
    directory, _, base = relative.rpartition("/")
    return f"{directory}/.{base}.tmp-{secrets.token_hex(4)}".lstrip("/")


def _write_all(handle: Any, data: Data) -> None:
    """Write every byte of ``data`` at the handle's offset (one write may take less)."""
    view = memoryview(data).cast("B")
    while view:
        written = handle.write(view)
        view = view[written:]


def _set_info(handle: Any, info: Any) -> None:
    """SET_INFO ``info`` on the open ``handle``; raises SMBResponseException."""
    fd = handle.fd
    request = SMB2SetInfoRequest()
    request["info_type"] = info.INFO_TYPE
    request["file_info_class"] = info.INFO_CLASS
    request["file_id"] = fd.file_id
    request["buffer"] = info
    sent = fd.connection.send(
        request, sid=fd.tree_connect.session.session_id, tid=fd.tree_connect.tree_connect_id
    )
    fd.connection.receive(sent)


def _discard(handle: Any) -> None:
    """Delete the temporary open as ``handle`` and close it; what is left (the
    connection is gone) is reaped by remove_leftovers."""
    disposition = FileDispositionInformation()
    disposition["delete_pending"] = True
    with contextlib.suppress(SMBException, OSError, ValueError):
        _set_info(handle, disposition)
    with contextlib.suppress(SMBException, OSError, ValueError):
        handle.close()


def _info(name: str, entry: Any) -> ObjectInfo:
    modified: datetime = entry.last_write_time
    return ObjectInfo(name, entry.end_of_file, modified.astimezone(UTC))


def _status_name(status: int) -> str:
    return _STATUS_NAMES.get(status, f"NTSTATUS 0x{status:08x}")


def _disconnect(connections: dict[str, Any]) -> None:
    smbclient.reset_connection_cache(fail_on_error=False, connection_cache=connections)
