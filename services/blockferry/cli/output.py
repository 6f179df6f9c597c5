"""How the CLI speaks: messages on stderr, results on stdout (text or one JSON object)."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

console = Console(stderr=True, soft_wrap=True)
"""Messages, never wrapped here: a terminal wraps them, and a pipe takes them whole."""


def show_table(table: Table) -> None:
    """``table`` on stdout: on a terminal, fitted to its width; piped, every value whole
    (no wrapping, no ellipsis), as wide as the widest row."""
    out = Console()
    if not out.is_terminal:
        unbounded = out.options.update_width(1 << 20)
        out = Console(width=max(out.measure(table, options=unbounded).maximum, 1))
    out.print(table)


def fail(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    sys.exit(1)


def emit(as_json: bool, document: dict[str, Any], text: str) -> None:
    if as_json:
        click.echo(json.dumps(document, indent=None, sort_keys=True))
    else:
        click.echo(text)
