"""Talking to the orchestrator's REST API: the client, its options, following a session."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import click
import httpx
from rich.progress import BarColumn, Progress, TextColumn

from blockferry import api_token
from blockferry.cli.output import console, fail
from blockferry.core.errors import BlockferryError

DEFAULT_API = "http://127.0.0.1:8080"

destination_option = click.option(
    "--to",
    "destination",
    required=True,
    type=click.Path(path_type=Path),
    help="Destination file or block device.",
)


def api_client(api_url: str) -> httpx.Client:
    """A client of the orchestrator, with the API token of ``BLOCKFERRY_API_TOKEN_FILE``
    (default: ``api-token`` in the data directory) when there is one; an HTTPS API's
    certificate is checked against ``BLOCKFERRY_API_CA_FILE``, else the system's CAs."""
    from blockferry.settings import CommonSettings

    configured = os.environ.get("BLOCKFERRY_API_TOKEN_FILE")
    path = Path(configured) if configured else api_token.default_path(CommonSettings().data_dir)
    ca_file = os.environ.get("BLOCKFERRY_API_CA_FILE")
    try:
        token = api_token.read(path)
        verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
    except BlockferryError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"reading the API's CA file {ca_file}: {exc}")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=api_url,
        headers=headers,
        timeout=httpx.Timeout(30.0, read=3600.0),
        verify=verify,
    )


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        fail(
            f"reaching the orchestrator at {client.base_url}: {exc}"
            " (is the mesh running? try `make up`)"
        )
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        fail(f"{method} {path}: {detail}")
    return response.json()


api_option = click.option(
    "--api",
    "api_url",
    envvar="BLOCKFERRY_API_URL",
    default=DEFAULT_API,
    show_default=True,
    help="The orchestrator's URL.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
repo_option = click.option(
    "--repo",
    "repository",
    default="default",
    show_default=True,
    help="The repository's name in the mesh.",
)


ENDED = ("success", "warning", "failed", "cancelled")


def follow(client: httpx.Client, session: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """Poll a session until it ends, with a progress bar per disk on stderr."""
    bar = (
        None
        if as_json
        else Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} blocks"),
            console=console,
            transient=True,
        )
    )
    bars: dict[str, Any] = {}
    if bar is not None:
        bar.start()
        for task in session["tasks"]:
            bars[task["disk"]] = bar.add_task(f"{session['kind']} {task['disk']}", total=None)
    try:
        while session["state"] not in ENDED:
            session = call(
                client, "GET", f"/api/v1/sessions/{session['id']}", params={"wait_s": 1.0}
            )
            if bar is not None:
                for task in session["tasks"]:
                    bar.update(
                        bars[task["disk"]],
                        description=f"{session['kind']} {task['disk']} ({_state_of(session)})",
                        total=task["blocks_total"] or None,
                        completed=task["blocks_done"],
                    )
    finally:
        if bar is not None:
            bar.stop()
    return session


def _state_of(session: dict[str, Any]) -> str:
    """The session's state, and what it waits for if anything."""
    waiting = session.get("waiting")
    return f"{session['state']}: {waiting}" if waiting else str(session["state"])


def session_document(session: dict[str, Any]) -> dict[str, Any]:
    """What ``--json`` prints of a session. A session of one disk also has that disk's
    fields at the top (disk, parent, tracking, counters), as one disk's backup reads."""
    tasks = session["tasks"]
    counters: dict[str, int] = {}
    for task in tasks:
        for name, value in task["counters"].items():
            counters[name] = counters.get(name, 0) + value
    only = tasks[0] if len(tasks) == 1 else None
    warnings = list(session["warnings"])
    for task in tasks:
        prefix = "" if only else f"{task['disk']}: "
        warnings += [prefix + warning for warning in task["warnings"]]
    errors = [f"{task['disk']}: {task['error']}" for task in tasks if task["error"]]
    return {
        "session": session["id"],
        "kind": session["kind"],
        "state": session["state"],
        "restore_point": session.get("restore_point"),
        "job": session["job"],
        "disk": only["disk"] if only else None,
        "bytes_read": counters.get("bytes_read", 0),
        "bytes_sent": counters.get("bytes_sent", 0),
        "bytes_written": counters.get("bytes_written", 0),
        "seconds": round(session.get("seconds", 0.0), 3),
        "parent": only["parent"] if only else None,
        "tracking": only["tracking"] if only else "",
        "warnings": warnings,
        "waiting": session.get("waiting", ""),
        "error": session["error"] or "; ".join(errors),
        "counters": counters,
        "tasks": [
            {k: task[k] for k in ("disk", "state", "parent", "tracking", "error", "counters")}
            for task in tasks
        ],
        "steps": session.get("steps", []),
    }
