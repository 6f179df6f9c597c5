"""Secrets kept in files (mounted secrets): readable by their owner only."""

from __future__ import annotations

from pathlib import Path

from blockferry.core.errors import ConfigError


def read_secret(path: Path, what: str) -> str | None:
    """The text of the secret file ``path`` (``what`` names it in errors), stripped; None
    if there is no such file.

    Raises:
        ConfigError: the file is readable by others than its owner (as a secret, it
            must not be), or cannot be read.
    """
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                f"{what} {path} is readable by others (mode {mode:o}); a secret must be its"
                f" owner's only: chmod 600 {path} (a mounted secret: defaultMode 0400)"
            )
        return path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"reading {what} {path}: {exc}") from exc
