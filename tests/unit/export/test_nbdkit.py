"""Starting an export that is refused leaves nothing behind."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from blockferry.core.errors import ConfigError
from blockferry.export.nbdkit import Export, ExportRequest


@pytest.mark.parametrize(
    ("certificates", "error"),
    [(None, "needs TLS"), ("empty", "lacks ca-cert.pem")],
)
def test_an_export_on_tcp_without_its_certificates_is_refused_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certificates: str | None, error: str
) -> None:
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    directory = None
    if certificates:
        directory = tmp_path / certificates
        directory.mkdir()
    request = ExportRequest(
        repository=str(tmp_path / "repo"),
        restore_point="20260101T000000Z-00000000",
        disk="sda",
        listen=("127.0.0.1", 10809),
        tls_certificates=directory,
    )
    with pytest.raises(ConfigError, match=error):
        Export.start(request)
    assert list(work.iterdir()) == [], "no working directory is left"
