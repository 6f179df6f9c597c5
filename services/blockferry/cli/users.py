"""``users``: the API's users and their roles, through the orchestrator (admins only)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from blockferry.cli import main
from blockferry.cli.client import api_client, api_option, call, json_option
from blockferry.cli.output import emit, fail, show_table

ROLES = ("viewer", "operator", "admin")


@main.group()
def users() -> None:
    """API users: viewer (reads), operator (also backups, restores, jobs' runs), admin
    (also job definitions, prune, GC, users)."""


@users.command("list")
@api_option
@json_option
def users_list(api_url: str, as_json: bool) -> None:
    """List the users and their roles."""
    with api_client(api_url) as client:
        found = call(client, "GET", "/api/v1/users")
    if as_json:
        click.echo(json.dumps({"users": found}))
        return
    table = Table("user", "role", "created")
    for user in found:
        table.add_row(user["name"], user["role"], user["created"] or "-")
    show_table(table)


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the user may do.")
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the new token to this file (mode 0600) instead of printing it.",
)
@api_option
@json_option
def users_add(name: str, role: str, token_file: Path | None, api_url: str, as_json: bool) -> None:
    """Add user NAME with a new token, shown (or written) this once."""
    from blockferry.repository.files import SECRET_MODE, write_atomic

    with api_client(api_url) as client:
        added = call(client, "POST", "/api/v1/users", json={"name": name, "role": role})
    token = added.pop("token")
    if token_file is not None:
        try:
            write_atomic(token_file, (token + "\n").encode(), mode=SECRET_MODE)
        except OSError as exc:
            fail(f"writing {token_file}: {exc}")
        emit(as_json, added, f"added {name} ({role}); its token is in {token_file}")
    else:
        emit(as_json, {**added, "token": token}, f"added {name} ({role}); its token: {token}")


@users.command("remove")
@click.argument("name")
@api_option
def users_remove(name: str, api_url: str) -> None:
    """Remove user NAME: its token stops working at once."""
    with api_client(api_url) as client:
        response = client.delete(f"/api/v1/users/{name}")
    if response.status_code != 204:
        fail(f"DELETE /api/v1/users/{name}: {response.json().get('detail', response.text)}")
    click.echo(f"removed {name}")
