"""Settings of the orchestrator."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from blockferry.settings import CommonSettings


class OrchestratorConfig(BaseModel):
    lease_seconds: int = Field(
        30, ge=5, description="A task with no progress for this long is offered again."
    )
    max_attempts: int = Field(3, ge=1, description="Offers of one task before the session fails.")
    command_timeout_s: float = Field(
        120.0, gt=0, description="How long to wait for a repository owner's reply."
    )
    api_token_file: Path | None = Field(
        None,
        description="File holding the token of the built-in API user admin (a mounted"
        " secret, say). Unset: <data_dir>/api-token, created with a random token, mode 0600,"
        " on first start.",
    )
    api_users_file: Path | None = Field(
        None,
        description="The API's users beyond the built-in admin (names, roles, token"
        " hashes), managed through the API. Unset: <data_dir>/api-users.json.",
    )
    audit_log_file: Path | None = Field(
        None,
        description="Where every mutating API call is recorded, one JSON line each."
        " Unset: <data_dir>/audit.log.",
    )
    guest_answer_margin_s: float = Field(
        30.0,
        gt=0,
        description="How long, beyond a guest script's or snapshot command's own limit, to"
        " wait for a guest-proxy's answer before going on without it.",
    )
    session_history_days: float = Field(
        30.0,
        gt=0,
        description="How long ended sessions are kept (the newest session of each job is"
        " always kept); their transitions stay on the session-events topic for its own"
        " retention (90 days).",
    )
    verify_timeout_s: float = Field(3600.0, gt=0, description="How long a verify may take.")
    commit_timeout_s: float = Field(
        6 * 3600.0 + 120.0,
        gt=0,
        description="How long a commit may take: the repository's owner lets it wait for a"
        " garbage collection or prune (its lock_wait_s) rather than fail the session.",
    )
    events_schema_registry_url: str | None = Field(
        None,
        description="A schema registry (the Confluent API: Apicurio's ccompat, Karapace,"
        " Confluent's). Set: the public event topics carry the registry's wire format"
        " (magic byte 0, the schema id, Avro), each schema registered under"
        " <topic>-value. Unset: Avro single-object encoding, as every topic of the mesh.",
    )
    jobs_file: Path | None = Field(
        None,
        description="YAML file of job definitions ({jobs: [...]}); read at start, and"
        " read-only through the API. Jobs can also be defined through the API.",
    )


class OrchestratorSettings(CommonSettings):
    orchestrator: OrchestratorConfig = OrchestratorConfig()
