"""``run`` and ``config``: the roles of this process and their settings."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from blockferry.cli import main
from blockferry.cli.output import fail
from blockferry.core.errors import BlockferryError


@main.command()
@click.argument("roles", nargs=-1, required=True)
def run(roles: tuple[str, ...]) -> None:
    """Run ROLES (orchestrator, source-mover, dedupe-index, target-mover) or all in this
    process."""
    from blockferry import failpoints
    from blockferry.roles import resolve
    from blockferry.runner import run_roles
    from blockferry.settings import CommonSettings

    try:
        names = resolve(roles)
    except ValueError as exc:
        fail(str(exc))
    common = CommonSettings()
    failpoints.arm(common.failpoints, common.failpoint_log)
    try:
        asyncio.run(run_roles(names))
    except BlockferryError as exc:
        fail(str(exc))


@main.command()
@click.argument("roles", nargs=-1)
@click.option("--print-defaults", is_flag=True, help="The defaults, ignoring env and files.")
def config(roles: tuple[str, ...], print_defaults: bool) -> None:
    """Print the settings of ROLES (default: all) as YAML: the effective ones, from the
    environment and BLOCKFERRY_CONFIG_FILE, or with --print-defaults the defaults."""
    import yaml

    from blockferry.roles import ROLES, resolve

    try:
        names = resolve(roles or ("all",))
    except ValueError as exc:
        fail(str(exc))
    merged: dict[str, Any] = {}
    for name in names:
        model = ROLES[name].settings
        settings = model.model_construct() if print_defaults else model()
        merged.update(settings.model_dump(mode="json", exclude={"instance"}))
    click.echo(yaml.safe_dump(merged, sort_keys=True), nl=False)
