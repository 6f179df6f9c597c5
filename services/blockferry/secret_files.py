"""Secrets kept in files (mounted secrets): readable by their owner only, or else by
this process's own group too (how Kubernetes mounts a Secret for a pod with an fsGroup:
owned by root, mode 0440, its group the pod's)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from blockferry.core.errors import ConfigError


def read_secret(path: Path, what: str) -> str | None:
    """The text of the secret file ``path`` (``what`` names it in errors), stripped; None
    if there is no such file.

    Raises:
        ConfigError: the file is readable by others than its owner and this process's
            group (as a secret, it must not be), or cannot be read.
    """
    try:
        status = path.stat()
        mode = stat.S_IMODE(status.st_mode)
        own_group = status.st_gid == os.getegid()
        if mode & 0o007 or (mode & 0o070 and not own_group):
            raise ConfigError(
                f"{what} {path} is readable by others (mode {mode:o}); a secret must be its"
                f" owner's only, or also its group's when that is this process's own group:"
                f" chmod 600 {path} (a mounted secret: defaultMode 0400)"
            )
        return path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"reading {what} {path}: {exc}") from exc
