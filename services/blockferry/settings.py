"""Settings every role shares; each role extends them in its own ``settings.py``.

Values come from, strongest first: keyword arguments, environment variables
(``BLOCKFERRY_…``, nested with ``__``, e.g. ``BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS``),
then an optional YAML file named by ``BLOCKFERRY_CONFIG_FILE``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from blockferry import failpoints


class KafkaSecurity(BaseModel):
    """How a role authenticates to Kafka and protects what it sends: TLS (with a client
    certificate for mutual TLS) and SASL. Secrets are read from files (a mounted secret),
    never given as values."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    username: str = Field(
        "",
        description="SASL: the role's principal; {role} is replaced by the role's name, so"
        " that the roles of one process each authenticate as their own principal.",
    )
    password_file: Path | None = Field(
        None, description="SASL: a file holding the password; {role} as in the username."
    )
    ca_file: Path | None = Field(
        None, description="TLS: the CA certificates (PEM) the brokers' certificates chain to."
    )
    cert_file: Path | None = Field(None, description="Mutual TLS: the client certificate (PEM).")
    key_file: Path | None = Field(None, description="Mutual TLS: its private key (PEM).")
    check_hostname: bool = Field(
        True, description="TLS: the broker's certificate must name the host connected to."
    )

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecurity:
        if self.protocol.startswith("SASL") and not (self.username and self.password_file):
            raise ValueError(f"{self.protocol} needs a username and a password_file")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        return self

    def for_role(self, role: str) -> KafkaSecurity:
        """These settings as ``role`` uses them: ``{role}`` in the username and the
        password file's name replaced by its name."""
        changes: dict[str, object] = {"username": self.username.replace("{role}", role)}
        if self.password_file is not None:
            changes["password_file"] = Path(str(self.password_file).replace("{role}", role))
        return self.model_copy(update=changes)


BulkClient = Literal["librdkafka", "aiokafka"]
"""The Kafka clients that can carry bulk records."""


class KafkaSettings(BaseModel):
    """How to reach the site's Kafka cluster."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    topic_prefix: str = Field("blockferry", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    topic_partitions: int = Field(4, ge=1, description="Partitions of the shared topics.")
    chunk_retention_hours: float = Field(
        24.0, gt=0, description="How long chunk and restore records stay on Kafka."
    )
    request_timeout_ms: int = Field(
        60000,
        ge=1000,
        description="How long a produce or fetch request may take; a role waits out a"
        " cluster unavailable for longer, trying again.",
    )
    bulk_client: BulkClient = Field(
        "librdkafka",
        description="The client carrying bulk records (chunks, restore streams):"
        " librdkafka does the work in C, off the interpreter lock; aiokafka is the"
        " control plane's client.",
    )
    clock_skew_s: float = Field(
        60.0,
        ge=0,
        description="How far the hosts' clocks may differ: a task or command is refused"
        " once this long past its expiry.",
    )


class HttpSettings(BaseModel):
    """The one port a process serves /metrics, /healthz, /readyz (and the API) on."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    tls_cert_file: Path | None = Field(
        None, description="Serve HTTPS with this certificate (PEM, its chain after it)."
    )
    tls_key_file: Path | None = Field(None, description="The certificate's private key (PEM).")

    @model_validator(mode="after")
    def _both_or_neither(self) -> HttpSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("HTTPS needs both tls_cert_file and tls_key_file")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def loopback_only(self) -> bool:
        """Whether the port is reachable from this host only."""
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class CommonSettings(BaseSettings):
    """What every role needs."""

    model_config = SettingsConfigDict(
        env_prefix="BLOCKFERRY_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path(".blockferry")
    kafka: KafkaSettings = KafkaSettings()
    http: HttpSettings = HttpSettings()
    instance: str = Field(default_factory=_default_instance)
    restore_roots: list[Path] = Field(
        default_factory=list,
        description="Directories restores through the mesh may write in (files, or block"
        " devices such as /dev). Empty: the data directory only.",
    )

    failpoints: list[str] = Field(
        default_factory=list,
        description="Fault injection, for tests only: the failpoints at which this process"
        " SIGKILLs itself, each 'point' or 'point@N' (at its Nth hit). Never set in"
        " production.",
    )
    failpoint_log: Path | None = Field(
        None, description="Fault injection: a file each failpoint reached is appended to."
    )

    @field_validator("failpoints")
    @classmethod
    def _known_failpoints(cls, specs: list[str]) -> list[str]:
        failpoints.parse(specs)
        return specs

    def restore_root_dirs(self) -> list[Path]:
        """The restore roots, absolute."""
        return [Path(os.path.abspath(root)) for root in self.restore_roots or [self.data_dir]]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("BLOCKFERRY_CONFIG_FILE")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)
