"""Running guest scripts over SSH, on the real OpenSSH server of ``tests/conftest.py``."""

from __future__ import annotations

import pytest

from blockferry.guest_proxy.guest import SshShell
from tests.sshd import SshServer


@pytest.fixture
def ssh_shell(sshd: SshServer) -> SshShell:
    """A shell on the test sshd, as the guest-proxy would open it."""
    return SshShell(
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        client_keys=[sshd.client_key],
        known_hosts=sshd.known_hosts,
        connect_timeout=10.0,
    )
