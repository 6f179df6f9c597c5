"""Schema history: golden fingerprints.

``schemas/fingerprints.txt`` lists the fingerprint of every schema file, current and
``history/``. It changes only with a schema, on purpose:

1. keep the schema's previous version, exactly as it was, as
   ``schemas/history/<Name>.vN.avsc`` with the next free N
   (``git show HEAD:schemas/<Name>.avsc > schemas/history/<Name>.vN.avsc``);
2. change ``schemas/<Name>.avsc`` within the rules of README.md's "Upgrade notes";
3. regenerate it with ``UPDATE_GOLDEN=1 .venv/bin/pytest -q
   tests/unit/transport/test_schema_history.py`` and commit it with the schema.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from typing import Any

from blockferry.transport.codec import MAGIC, SCHEMA_DIR, _schema

FINGERPRINTS = SCHEMA_DIR / "fingerprints.txt"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
REGENERATE = "UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/transport/test_schema_history.py"
HEADER = (
    "# CRC-64-AVRO fingerprint of each schema's parsing canonical form, as a record carries it\n"
    "# after C3 01 and as an 'unknown schema fingerprint' error prints it. Checked, and\n"
    "# regenerated, by tests/unit/transport/test_schema_history.py.\n"
)
HISTORY_NAME = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[0-9]+)\.avsc")


def _raw(relative: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((SCHEMA_DIR / relative).read_text())
    return raw


def _fingerprint(relative: str) -> str:
    """The fingerprint as the codec computes it: the 8 bytes after the record's C3 01."""
    return _schema(_raw(relative)).header[len(MAGIC) :].hex()


def _schema_files() -> list[str]:
    found = [*SCHEMA_DIR.glob("*.avsc"), *SCHEMA_DIR.glob("history/*.avsc")]
    return sorted(path.relative_to(SCHEMA_DIR).as_posix() for path in found)


HISTORY = [f for f in _schema_files() if f.startswith("history/")]


def _fingerprints_text() -> str:
    return HEADER + "".join(f"{f} {_fingerprint(f)}\n" for f in _schema_files())


def _committed_fingerprints() -> dict[str, str]:
    if not FINGERPRINTS.exists():
        return {}
    lines = FINGERPRINTS.read_text().splitlines()
    return dict(line.split() for line in lines if line.strip() and not line.startswith("#"))


def _next_history_file(name: str) -> str:
    versions = [
        int(m["version"])
        for f in HISTORY
        if (m := HISTORY_NAME.fullmatch(f.removeprefix("history/"))) and m["name"] == name
    ]
    return f"schemas/history/{name}.v{max(versions, default=-1) + 1}.avsc"


def _lost_versions() -> list[str]:
    """What each committed fingerprint that no schema file has any more means."""
    known = {_fingerprint(f) for f in _schema_files()}
    lost = []
    for relative, fp in sorted(_committed_fingerprints().items()):
        if fp in known:
            continue
        if relative.startswith("history/"):
            lost.append(
                f"schemas/{relative} ({fp}) changed or went: a history file never changes; "
                f"put it back (git checkout HEAD -- schemas/{relative})"
            )
        else:
            name = relative.removesuffix(".avsc")
            lost.append(
                f"schemas/{relative} changed and its previous version ({fp}) is in no file, so "
                f"records written with it no longer read: keep it as "
                f"{_next_history_file(name)} (git show HEAD:schemas/{relative})"
            )
    return lost


def test_every_committed_fingerprint_still_reads() -> None:
    lost = _lost_versions()
    assert not lost, "\n".join(
        [
            *lost,
            "(a version that was never released may instead lose its line in "
            "schemas/fingerprints.txt)",
        ]
    )


def test_fingerprints_file_lists_every_schema() -> None:
    expected = _fingerprints_text()
    if UPDATE:
        assert not _lost_versions(), "not regenerated: " + "\n".join(_lost_versions())
        FINGERPRINTS.write_text(expected)
    committed = FINGERPRINTS.read_text() if FINGERPRINTS.exists() else ""
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            "schemas/fingerprints.txt (committed)",
            "schemas/fingerprints.txt (computed)",
        )
    )
    assert committed == expected, (
        "The schemas' fingerprints are not those of schemas/fingerprints.txt: a schema was "
        "added or changed. Keep the previous version of a changed schema in schemas/history/ "
        "(a history file never changes), keep the rules of README.md's 'Upgrade notes', then "
        f"regenerate with: {REGENERATE}\n{diff}"
    )


def test_history_files_are_named_for_their_schema() -> None:
    current = {f.removesuffix(".avsc"): _raw(f) for f in _schema_files() if "/" not in f}
    problems = []
    for relative in HISTORY:
        match = HISTORY_NAME.fullmatch(relative.removeprefix("history/"))
        if match is None or match["name"] not in current:
            problems.append(f"schemas/{relative}: not <Name>.vN.avsc of a current schema")
            continue
        raw, now = _raw(relative), current[match["name"]]
        if (raw["namespace"], raw["name"]) != (now["namespace"], now["name"]):
            problems.append(f"schemas/{relative}: record {raw['namespace']}.{raw['name']}")
    by_fingerprint: dict[str, list[str]] = {}
    for relative in _schema_files():
        by_fingerprint.setdefault(_fingerprint(relative), []).append(relative)
    problems += [
        "one version in several files: " + ", ".join(f"schemas/{f}" for f in same)
        for same in by_fingerprint.values()
        if len(same) > 1
    ]
    assert not problems, "\n".join(problems)
