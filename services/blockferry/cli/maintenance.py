"""``prune`` and ``gc``: repository upkeep through the orchestrator, run on the
repository's owner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from rich.table import Table

from blockferry.cli import main
from blockferry.cli.client import api_client, api_option, call, json_option, repo_option
from blockferry.cli.output import emit, show_table
from blockferry.core.units import size

RULES = ("keep_last", "daily", "weekly", "monthly", "yearly")


def retention_options(function: Callable[..., None]) -> Callable[..., None]:
    """The options of a retention policy: the command gets ``timezone``, ``dry_run`` and
    the rules as keyword arguments (None: not given)."""
    for option in reversed(
        [
            click.option("--keep-last", type=click.IntRange(0), help="Keep the newest N."),
            click.option(
                "--daily", type=click.IntRange(0), help="Keep the newest of each of N days."
            ),
            click.option(
                "--weekly", type=click.IntRange(0), help="Keep the newest of each of N weeks."
            ),
            click.option(
                "--monthly", type=click.IntRange(0), help="Keep the newest of each of N months."
            ),
            click.option(
                "--yearly", type=click.IntRange(0), help="Keep the newest of each of N years."
            ),
            click.option("--timezone", default="UTC", show_default=True, help="Where days begin."),
            click.option(
                "--dry-run", is_flag=True, help="Say what would be removed; remove nothing."
            ),
        ]
    ):
        function = option(function)
    return function


def retention_of(rules: dict[str, int | None], timezone: str) -> dict[str, Any] | None:
    """The policy the rule options give, or None if none was given."""
    if all(value is None for value in rules.values()):
        return None
    return {**{rule: rules[rule] or 0 for rule in RULES}, "timezone": timezone}


def show_prune(result: dict[str, Any], dry_run: bool, as_json: bool) -> None:
    if as_json:
        emit(True, result, "")
        return
    table = Table("restore point", "kept because")
    for rp_id, reasons in sorted(result["kept"].items()):
        table.add_row(rp_id, ", ".join(reasons))
    for rp_id in result["removed"]:
        table.add_row(rp_id, "[red]would be removed[/]" if dry_run else "[red]removed[/]")
    show_table(table)


def show_gc(result: dict[str, Any], dry_run: bool, as_json: bool) -> None:
    verb = "would free" if dry_run else "freed"
    emit(
        as_json,
        result,
        f"{verb} {size(result['bytes_freed'])}: {result['chunks_removed']} chunks,"
        f" {result['packs_removed']} packs removed, {result['packs_repacked']} repacked"
        f" ({result['chunks_moved']} chunks moved); {result['packs_recent']} recent packs kept"
        f" (generation {result['protected_from']} and later; this GC began"
        f" {result['generation']})",
    )


@main.command()
@click.option("--job", required=True, help="The job whose restore points are pruned.")
@repo_option
@retention_options
@api_option
@json_option
def prune(
    job: str,
    repository: str,
    timezone: str,
    dry_run: bool,
    api_url: str,
    as_json: bool,
    **rules: int | None,
) -> None:
    """Remove the restore points of JOB that a retention policy does not keep: the one
    given here, or without any --keep-*/--daily… option the job's own. The newest restore
    point of each disk always stays; removed restore points' chunks go at the next GC."""
    request: dict[str, Any] = {"repository": repository, "job": job, "dry_run": dry_run}
    retention = retention_of(rules, timezone)
    if retention is not None:
        request["retention"] = retention
    with api_client(api_url) as client:
        result = call(client, "POST", "/api/v1/prune", json=request)
    show_prune(result, dry_run, as_json)


@main.command()
@repo_option
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@api_option
@json_option
def gc(repository: str, dry_run: bool, api_url: str, as_json: bool) -> None:
    """Delete the chunks no restore point references (after prune), on the repository's
    owner under its exclusive lock. Packs a running backup may still reference stay;
    packs mostly garbage are rewritten with their live chunks."""
    with api_client(api_url) as client:
        result = call(
            client, "POST", "/api/v1/gc", json={"repository": repository, "dry_run": dry_run}
        )
    show_gc(result, dry_run, as_json)
