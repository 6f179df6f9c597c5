"""Settings of the guest-proxy."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from blockferry.settings import CommonSettings


class GuestProxyConfig(BaseModel):
    ssh_client_keys: list[Path] = Field(
        default_factory=list,
        description="Private keys the guest-proxy logs in to guests with (a mounted"
        " secret, say). Empty: <data_dir>/ssh/id_ed25519.",
    )
    known_hosts_file: Path | None = Field(
        None,
        description="The guests' host keys (OpenSSH known_hosts format); a guest whose key"
        " is not there is refused. Unset: <data_dir>/ssh/known_hosts.",
    )
    connect_timeout_s: float = Field(15.0, gt=0, description="How long an SSH login may take.")
    run_local_commands: bool = Field(
        False,
        description="Run commands on this host when a job asks: guest scripts of a VM whose"
        " guest connection is local (a guest-proxy placed in the guest), and snapshot"
        " command hooks. Whoever may define jobs through the API may then run commands"
        " here, as this process's user.",
    )


class GuestProxySettings(CommonSettings):
    guest_proxy: GuestProxyConfig = GuestProxyConfig()

    def client_keys(self) -> list[Path]:
        return self.guest_proxy.ssh_client_keys or [self.data_dir / "ssh" / "id_ed25519"]

    def known_hosts(self) -> Path:
        return self.guest_proxy.known_hosts_file or self.data_dir / "ssh" / "known_hosts"
