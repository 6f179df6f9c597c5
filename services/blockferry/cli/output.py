"""How the CLI speaks: messages on stderr, results on stdout (text or one JSON object)."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
from rich.console import Console

console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    sys.exit(1)


def emit(as_json: bool, document: dict[str, Any], text: str) -> None:
    if as_json:
        click.echo(json.dumps(document, indent=None, sort_keys=True))
    else:
        click.echo(text)
