"""The API's users: tokens per user, roles, kept as hashes in a private file."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockferry.core.errors import ConfigError
from blockferry.orchestrator.users import BUILT_IN_ADMIN, Role, UserExists, Users

ADMIN_TOKEN = "the-admin-token"


def test_roles_allow_what_the_roles_below_them_may() -> None:
    assert Role.admin.allows(Role.operator) and Role.admin.allows(Role.viewer)
    assert Role.operator.allows(Role.viewer) and not Role.operator.allows(Role.admin)
    assert not Role.viewer.allows(Role.operator)


def test_the_token_file_is_the_built_in_admin(tmp_path: Path) -> None:
    users = Users(tmp_path / "users.json", ADMIN_TOKEN)
    admin = users.authenticate(ADMIN_TOKEN)
    assert admin is not None and (admin.name, admin.role) == (BUILT_IN_ADMIN, Role.admin)
    assert users.authenticate("guess") is None
    with pytest.raises(ConfigError, match="replace that file"):
        users.remove(BUILT_IN_ADMIN)
    with pytest.raises(UserExists):
        users.add(BUILT_IN_ADMIN, Role.viewer)


def test_added_users_authenticate_survive_a_restart_and_stop_when_removed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.json"
    users = Users(path, ADMIN_TOKEN)
    token = users.add("alice", Role.operator)
    assert token.startswith("bf_") and len(token) > 40
    assert token not in path.read_text()  # only its hash is kept
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(UserExists):
        users.add("alice", Role.viewer)

    again = Users(path, ADMIN_TOKEN)
    alice = again.authenticate(token)
    assert alice is not None and (alice.name, alice.role) == ("alice", Role.operator)
    assert [(u.name, u.role) for u in again.all()] == [
        ("admin", Role.admin),
        ("alice", Role.operator),
    ]
    assert again.remove("alice") and not again.remove("alice")
    assert again.authenticate(token) is None
    assert Users(path, ADMIN_TOKEN).authenticate(token) is None


def test_a_malformed_users_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text('{"users": [{"name": "x"}]}')
    with pytest.raises(ConfigError, match=f"the API users file {path} is malformed"):
        Users(path, ADMIN_TOKEN)
