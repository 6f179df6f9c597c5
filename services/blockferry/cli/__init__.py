"""The one entry point: ``blockferry run ROLE…|all``, ``config``, ``repo …``, ``backup``,
``restore``, ``verify``, ``restore-points``, ``jobs``, ``sessions``. Commands other than
``run``, ``config`` and ``repo`` talk to the orchestrator's REST API; ``repo`` works on a
repository path directly, with no Kafka."""

from __future__ import annotations

import logging
import os

import click


@click.group()
@click.option(
    "--log-level",
    default=lambda: os.environ.get("BLOCKFERRY_LOG_LEVEL", "INFO"),
    show_default="INFO",
    help="Logging level.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=lambda: os.environ.get("BLOCKFERRY_LOG_FORMAT", "text"),
    show_default="text",
    help="Log lines as text, or as JSON objects with the session, job and disk each is"
    " about (BLOCKFERRY_LOG_FORMAT).",
)
def main(log_level: str, log_format: str) -> None:
    """blockferry: block-level backup of virtual machines and volumes over Kafka."""
    from blockferry.log_context import configure

    configure(log_level, log_format)
    for noisy in ("aiokafka", "httpx", "httpcore", "dissect"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# the commands register themselves on ``main``
from blockferry.cli import in_place as in_place  # noqa: E402
from blockferry.cli import jobs as jobs  # noqa: E402
from blockferry.cli import maintenance as maintenance  # noqa: E402
from blockferry.cli import repo as repo  # noqa: E402
from blockferry.cli import repo_browse as repo_browse  # noqa: E402
from blockferry.cli import roles as roles  # noqa: E402
from blockferry.cli import transfers as transfers  # noqa: E402
from blockferry.cli import users as users  # noqa: E402
