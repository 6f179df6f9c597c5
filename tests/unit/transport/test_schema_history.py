"""Schema history: golden fingerprints, golden records and the rolling-upgrade rules.

``schemas/fingerprints.txt`` lists the fingerprint of every schema file, current and
``history/``; ``golden/<Name>.bin`` here is the codec's encoding of each record type's sample
(``SAMPLES`` in test_codec.py). Both change only with a schema, on purpose:

1. keep the schema's previous version, exactly as it was, as
   ``schemas/history/<Name>.vN.avsc`` with the next free N
   (``git show HEAD:schemas/<Name>.avsc > schemas/history/<Name>.vN.avsc``);
2. change ``schemas/<Name>.avsc`` within the rules of README.md's "Upgrade notes", and its
   sample in ``SAMPLES``;
3. regenerate both with ``UPDATE_GOLDEN=1 .venv/bin/pytest -q
   tests/unit/transport/test_schema_history.py`` and commit them with the schema.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from blockferry.transport.codec import MAGIC, SCHEMA_DIR, Codec, _schema
from tests.unit.transport.test_codec import SAMPLES, decode, encode, encode_as

FINGERPRINTS = SCHEMA_DIR / "fingerprints.txt"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
REGENERATE = "UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/transport/test_schema_history.py"
HEADER = (
    "# CRC-64-AVRO fingerprint of each schema's parsing canonical form, as a record carries it\n"
    "# after C3 01 and as an 'unknown schema fingerprint' error prints it. Checked, and\n"
    "# regenerated, by tests/unit/transport/test_schema_history.py.\n"
)
HISTORY_NAME = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[0-9]+)\.avsc")

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}
"""Avro's promotions (writer type, reader type): the only type changes a field may have."""

REMOVED_FIELD_VALUES: dict[str, Any] = {"bytes": b"removed", "string": "removed", "int": 0}
"""What an older release wrote in a field since removed, by its type."""

NOT_ROLLING: dict[str, set[str]] = {
    "history/RepositoryInfo.v0.avsc": {
        "RepositoryInfo.dedupe_key: removed, and the older version (an older reader) has no default"
    },
    "history/GcResult.v0.avsc": {
        "GcResult.protected_after: removed, and the older version (an older reader) has no default"
    },
}
"""Breaks of the rolling-upgrade rules made on purpose, in a release upgraded all at once
(README.md's upgrade notes say so): the dedupe key left the bus; GC tells recent packs
by the repository's generation, not by a time."""


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
NAMES = sorted(name.rsplit(".", 1)[-1] for name in Codec().names)


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


def _default(field: dict[str, Any]) -> Any:
    """A field's default as fastavro reads it (bytes defaults are JSON strings)."""
    value = field["default"]
    first = field["type"][0] if isinstance(field["type"], list) else field["type"]
    kind = first.get("type") if isinstance(first, dict) else first
    if kind in ("bytes", "fixed") and isinstance(value, str):
        return value.encode("latin-1")
    return value


@pytest.mark.parametrize("history_file", HISTORY)
def test_records_of_an_older_version_read_with_the_current_codec(
    history_file: str, tmp_path: Path
) -> None:
    """A record an older release wrote reads: its fields as written, the added ones as their
    defaults."""
    old = _raw(history_file)
    name = old["name"]
    current = {f["name"]: f for f in _raw(f"{name}.avsc")["fields"]}
    sample = SAMPLES[name]
    written = {}
    expected = {}
    for field in old["fields"]:
        promoted = (field["type"], current.get(field["name"], {}).get("type")) == (
            "string",
            "bytes",
        )
        if promoted:  # as older senders wrote it; read back as its UTF-8 bytes
            written[field["name"]] = "{}"
            expected[field["name"]] = b"{}"
        elif field["name"] in sample:
            written[field["name"]] = sample[field["name"]]
        elif "default" in field:
            written[field["name"]] = _default(field)
        elif field["name"] not in current:  # removed since: any value of its type
            written[field["name"]] = REMOVED_FIELD_VALUES[field["type"]]
        else:
            pytest.fail(f"{history_file}: no value for {field['name']}, gone from the sample")
    encoded = encode_as(old, written)
    assert encoded[len(MAGIC) : len(MAGIC) + 8].hex() == _fingerprint(history_file)

    read_name, fields = decode(encoded)

    assert read_name == name
    assert set(fields) == set(current)
    assert {k: v for k, v in fields.items() if k in written} == {
        k: expected.get(k, v) for k, v in written.items() if k in current
    }
    assert {k: v for k, v in fields.items() if k not in written} == {
        k: _default(f) for k, f in current.items() if k not in written
    }


def _named_types(schema: Any) -> dict[str, dict[str, Any]]:
    """Every record, enum and fixed defined in ``schema``, by short name."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch)
        elif isinstance(node, dict):
            if node["type"] in ("record", "enum", "fixed"):
                found[node["name"].rsplit(".", 1)[-1]] = node
            for field in node.get("fields", []):
                walk(field["type"])
            walk(node.get("items"))
            walk(node.get("values"))

    walk(schema)
    return found


def _rule_breaks(
    old: Any,
    new: Any,
    where: str,
    named: tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]],
    seen: set[tuple[str, str]],
) -> list[str]:
    """How a change from ``old`` to ``new`` breaks the rolling-upgrade rules (README.md)."""

    def resolve(node: Any, types: dict[str, dict[str, Any]]) -> Any:
        if isinstance(node, str) and node not in PRIMITIVES:
            return types[node.rsplit(".", 1)[-1]]
        if isinstance(node, dict) and node["type"] in PRIMITIVES:
            return node["type"]  # a logical type is the same on the wire
        return node

    old, new = resolve(old, named[0]), resolve(new, named[1])

    def kind(node: Any) -> str:
        return (
            "union" if isinstance(node, list) else node if isinstance(node, str) else node["type"]
        )

    def describe(node: Any) -> str:
        if isinstance(node, list):
            return "[" + ", ".join(describe(b) for b in node) + "]"
        return node if isinstance(node, str) else f"{node['type']} {node.get('name', '')}".strip()

    changed = f"{where}: {describe(old)} became {describe(new)}, not an Avro promotion"
    if kind(old) != kind(new):
        return [] if (kind(old), kind(new)) in PROMOTIONS else [changed]
    if isinstance(old, str):
        return []
    if isinstance(old, list):
        breaks = [
            b
            for o, n in zip(old, new, strict=False)
            for b in _rule_breaks(o, n, where, named, seen)
        ]
        return breaks + ([] if len(old) == len(new) else [changed])
    if kind(old) in ("record", "enum", "fixed"):
        if old["name"].rsplit(".", 1)[-1] != new["name"].rsplit(".", 1)[-1]:
            return [changed]
        if (old["name"], new["name"]) in seen:
            return []
        seen = seen | {(old["name"], new["name"])}
    if kind(old) == "record":
        before = {f["name"]: f for f in old["fields"]}
        after = {f["name"]: f for f in new["fields"]}
        breaks = []
        for name, field in after.items():
            if name in before:
                breaks += _rule_breaks(
                    before[name]["type"], field["type"], f"{where}.{name}", named, seen
                )
            elif "default" not in field:
                breaks.append(f"{where}.{name}: added without a default")
        breaks += [
            f"{where}.{name}: removed, and the older version (an older reader) has no default"
            for name, field in before.items()
            if name not in after and "default" not in field
        ]
        return breaks
    if kind(old) == "enum":
        symbols, now = old["symbols"], new["symbols"]
        if now[: len(symbols)] != symbols:
            return [f"{where}: symbols {symbols} became {now}; symbols are only appended"]
        if len(now) > len(symbols) and "default" not in old:
            return [
                f"{where}: {now[len(symbols) :]} appended, but the older version has no default"
            ]
        return []
    if kind(old) == "fixed":
        return [] if old["size"] == new["size"] else [changed]
    if kind(old) == "array":
        return _rule_breaks(old["items"], new["items"], f"{where}[]", named, seen)
    if kind(old) == "map":
        return _rule_breaks(old["values"], new["values"], f"{where}{{}}", named, seen)
    return [] if old == new else [changed]


@pytest.mark.parametrize("history_file", HISTORY)
def test_the_change_since_an_older_version_keeps_the_rolling_upgrade_rules(
    history_file: str,
) -> None:
    """Fields are added only with a default, removed only if older readers have one for
    them, change type only by Avro promotion; enum symbols are only appended."""
    old = _raw(history_file)
    new = _raw(f"{old['name']}.avsc")
    breaks = _rule_breaks(old, new, old["name"], (_named_types(old), _named_types(new)), set())
    breaks = [b for b in breaks if b not in NOT_ROLLING.get(history_file, set())]
    assert not breaks, f"{history_file} -> {old['name']}.avsc:\n" + "\n".join(breaks)


@pytest.mark.parametrize("name", NAMES)
def test_a_sample_encodes_to_its_golden_file(name: str) -> None:
    assert name in SAMPLES, f"no sample of {name}: add one to SAMPLES in test_codec.py"
    encoded = encode(name, SAMPLES[name])
    golden = GOLDEN_DIR / f"{name}.bin"
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        golden.write_bytes(encoded)
    assert golden.exists() and golden.read_bytes() == encoded, (
        f"golden/{name}.bin is not the encoding of SAMPLES[{name!r}]. A golden file changes "
        f"only with its schema: if schemas/{name}.avsc changed on purpose (its previous version "
        f"in schemas/history/), regenerate with: {REGENERATE}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_a_golden_file_decodes_to_its_sample(name: str) -> None:
    golden = GOLDEN_DIR / f"{name}.bin"
    assert golden.exists(), f"no golden/{name}.bin: regenerate with: {REGENERATE}"
    assert decode(golden.read_bytes()) == (name, SAMPLES[name])


def test_every_record_type_has_a_golden_file_and_no_other_has() -> None:
    assert sorted(p.stem for p in GOLDEN_DIR.glob("*.bin")) == NAMES, (
        f"golden/ must hold one <Name>.bin per schema: regenerate with: {REGENERATE}, and "
        "remove the files of record types that are gone"
    )
