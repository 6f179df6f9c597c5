"""The one error hierarchy of blockferry.

Every error a user can see derives from :class:`BlockferryError`. Third-party
errors are translated at the boundary with ``raise ... from exc`` and messages
say action, subject and cause: ``writing chunk {digest} to {path}: {exc}``.
"""


class BlockferryError(Exception):
    """Base of every blockferry error."""


class ConfigError(BlockferryError):
    """A setting or request is invalid."""


class SourceError(BlockferryError):
    """A disk to back up cannot be opened or read."""


class DestinationError(BlockferryError):
    """A restore destination cannot be written or is refused."""


class FileSystemError(BlockferryError):
    """The partitions or file systems of a backed-up disk cannot be read, or a path in
    them is not there."""


class RepositoryError(BlockferryError):
    """A repository cannot be opened, read or written."""


class RepositoryNotFound(RepositoryError):
    """No initialised repository exists at the given place."""


class CorruptionError(RepositoryError):
    """Stored bytes fail their checksum, digest, magic or structure checks."""


class RepositoryFull(RepositoryError):
    """The repository's file system has no room left."""


class RepositoryUnavailable(RepositoryError):
    """The repository's storage cannot be reached now (a network cut, a store or share
    down): retried and waited out, never a verdict on the data."""


class LockError(RepositoryError):
    """A repository lock cannot be taken or was lost."""


class LockBusy(LockError):
    """A conflicting lock is held (a garbage collection or prune, say); try again later."""


class LockLost(LockError):
    """A held lock was taken over by another process; its holder must stop writing."""


class WrongKey(RepositoryError):
    """An encrypted repository cannot be opened with what was given: nothing, or a
    passphrase, key file or recovery key that is not its."""


class RestorePointNotFound(RepositoryError):
    """No committed restore point has the given id."""


class TransportError(BlockferryError):
    """A record cannot be produced, consumed or decoded."""


class RecordError(TransportError):
    """A record is malformed, has an unknown schema or a bad checksum."""


class TopicConfigError(TransportError):
    """A topic exists with settings blockferry cannot safely work with."""


class SessionError(BlockferryError):
    """A backup or restore session failed."""


class GuestError(BlockferryError):
    """A guest script or snapshot command cannot be run."""
