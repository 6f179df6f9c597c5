import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import parse_schema, to_parsing_canonical_form

from blockferry.core.errors import RecordError
from blockferry.orchestrator.jobs import Job
from blockferry.orchestrator.models import Session, SessionTask
from blockferry.orchestrator.state import GuestPlan, SessionPlan, StoredJob, StoredSession
from blockferry.transport.codec import SCHEMA_DIR, Codec, _schema, signed64, unsigned64
from blockferry.transport.commands import GuestStep, PruneResult
from blockferry.transport.records import message_types

JOB = Job.model_validate(
    {
        "name": "web",
        "vms": [
            {
                "name": "web1",
                "disks": [{"name": "sda", "source": "/images/web1-sda.img"}],
                "guest": {"host": "10.0.0.5"},
            }
        ],
        "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Paris"},
        "retention": {"keep_last": 3, "daily": 7},
        "guest_processing": {"pre_freeze": "sync", "freeze_limit_s": 30},
        "snapshot": {"provider": "file-copy"},
    }
)
SESSION = Session(
    id="s",
    kind="backup",
    state="success",
    repository="default",
    job="web",
    created=datetime(2026, 11, 27, 1, 0, 0, 123000, tzinfo=UTC),
    finished=datetime(2026, 11, 27, 1, 5, 0, tzinfo=UTC),
    seconds=300.5,
    restore_point="20261127T010000Z-1a2b3c4d",
    epoch=2,
    tasks=[SessionTask(disk="web1.sda", path="/images/web1-sda.img", state="success")],
    steps=[GuestStep(action="freeze", vm="web1", ok=True, exit_code=0)],
    pruned=PruneResult(kept={"20261127T010000Z-1a2b3c4d": ["last"]}, removed=["old"]),
)
PLAN = SessionPlan(
    restore_point="20261127T010000Z-1a2b3c4d",
    compression="fast",
    dirty_bitmaps={"web1.sda": "bitmap-1"},
    guest=GuestPlan(processing=JOB.guest_processing, access={"web1": JOB.vms[0].guest}),
    snapshot=JOB.snapshot,
)

SAMPLES: dict[str, dict[str, Any]] = {
    "Chunk": {
        "session_id": "s1",
        "digest": b"d" * 32,
        "compressed": True,
        "plain_size": 10,
        "checksum": -1,
        "data": b"stored",
    },
    "Extents": {"session_id": "s1", "disk": "d0", "seq": 0, "blocks": [0, 5], "digests": b"a" * 64},
    "DiskEnd": {
        "session_id": "s1",
        "task_id": "t",
        "job": "j",
        "disk": "d0",
        "disk_size": 12345,
        "block_size": 1048576,
        "extent_records": 1,
        "parent": None,
        "attempt": 0,
        "error": "",
    },
    "ResumeQuery": {"session_id": "s1", "disk": "d0", "attempt": 1},
    "LookupRequest": {
        "request_id": "r1",
        "reply_to": "s1/d0/lookups",
        "deadline_ms": 1_800_000_000_000,
        "digests": b"d" * 64,
    },
    "LookupReply": {"correlation_id": "s1/d0/lookups", "request_id": "r1", "known": b"\x02"},
    "FixedIndexPage": {
        "correlation_id": "c",
        "disk_size": 5,
        "block_size": 262144,
        "first_block": 0,
        "digests": b"d" * 32,
        "last": True,
    },
    "IndexEntry": {
        "digest": b"d" * 32,
        "pack_id": "p" * 32,
        "offset": 16,
        "stored_size": 5,
        "plain_size": 9,
        "compressed": False,
    },
    "Task": {
        "task_id": "t",
        "session_id": "s",
        "kind": "restore",
        "attempt": 2,
        "repository": "default",
        "job": "j",
        "disk": "d",
        "path": "/x",
        "compression": "fast",
        "restore_point": "rp",
        "force": True,
        "lease_seconds": 30,
        "parent": "20261126T231500Z-1a2b3c4d",
        "dirty_bitmap": "",
        "allow_holes": True,
        "changed_ranges_pages": {
            "map_id": "m",
            "partition": 3,
            "first_offset": 10,
            "last_offset": 14,
            "pages": 2,
            "ranges": 20000,
        },
        "issued_at": 1764633600000,
        "expires_at": 1764633630000,
        "epoch": 2,
    },
    "ChangedRangesPage": {
        "session_id": "s",
        "map_id": "m",
        "page": 1,
        "pages": 2,
        "since": None,
        "offsets": [0, 2**63 - 1],
        "lengths": [4096, 0],
    },
    "TaskProgress": {
        "task_id": "t",
        "session_id": "s",
        "attempt": 0,
        "mover": "m",
        "state": "running",
        "blocks_total": 4,
        "blocks_done": 2,
        "counters": {"bytes_read": 7},
        "message": "",
        "tracking": "digest-compare",
        "warnings": ["the map is for another restore point"],
    },
    "Command": {
        "command_id": "c",
        "name": "commit",
        "arguments": b"\xc3\x01" + bytes(8),
        "issued_at": 1764633600000,
        "expires_at": 1764633720000,
        "session_id": "s",
        "epoch": 3,
    },
    "Reply": {
        "correlation_id": "c",
        "name": "commit",
        "ok": False,
        "error": "no",
        "result": b"",
        "code": "refused",
    },
    "RestoreStart": {
        "session_id": "s",
        "disk": "d",
        "disk_size": 1,
        "block_size": 262144,
        "attempt_id": "a1",
        "attempt": 2,
    },
    "RestoreBlock": {
        "session_id": "s",
        "block": 3,
        "digest": b"d" * 32,
        "compressed": True,
        "plain_size": 4,
        "checksum": 5,
        "data": b"x",
        "attempt_id": "a1",
    },
    "RestoreEnd": {
        "session_id": "s",
        "blocks_sent": 3,
        "error": "",
        "attempt_id": "a1",
        "damaged": [4, 7],
    },
    "JobDefinition": {"name": "web", "definition": '{"name": "web"}', "updated": "2026-11-27"},
    "SessionEvent": {
        "session_id": "s",
        "at": "2026-11-27T01:00:00.000000Z",
        "job": "web",
        "disk": "web1.sda",
        "state": "success",
        "message": "",
    },
    "SessionRecord": {"session_id": "s", "session": "{}", "plan": "{}"},
    "SessionEnded": {
        "session_id": "s",
        "kind": "backup",
        "repository": "main",
        "job": "web",
        "state": "warning",
        "created": "2026-11-27T01:00:00.000000Z",
        "finished": "2026-11-27T01:05:00.000000Z",
        "seconds": 300.0,
        "restore_point": "20261127T010000Z-ab12",
        "disks": ["web1.sda", "web1.sdb"],
        "failed_disks": ["web1.sdb"],
        "warnings": ["1 of 2 disks failed: web1.sdb"],
        "error": "",
    },
    "RestorePointCommitted": {
        "repository": "main",
        "job": "web",
        "restore_point": "20261127T010000Z-ab12",
        "session_id": "s",
        "created": "2026-11-27T01:00:00.000000Z",
        "parent": None,
        "disks": [{"name": "web1.sda", "size": 1 << 30}],
    },
    "RepositoryInfo": {
        "name": "r",
        "repository_id": "i",
        "block_size": 1,
        "shard_count": 2,
        "owner": "o",
        "dedupe_key_fingerprint": "f" * 32,
    },
    "DeadLetter": {
        "topic": "t",
        "partition": 0,
        "offset": 1,
        "key": None,
        "value": b"v",
        "reason": "r",
        "consumer": "c",
        "value_length": 1,
        "value_sha256": "ab" * 32,
    },
    # command arguments and results (blockferry.transport.commands)
    "Done": {},
    "CommitArguments": {
        "restore_point": "20261126T231500Z-1a2b3c4d",
        "session_id": "s",
        "job": "j",
        "disks": ["sda", "sdb"],
        "parent": None,
        "stats": {"sda": {"counters": {"bytes_read": 7}, "tracking": "full", "parent": None}},
        "created": "2026-11-26T23:15:00.000000Z",
    },
    "RestorePointInfo": {
        "version": 1,
        "id": "20261126T231500Z-1a2b3c4d",
        "job": "j",
        "created": "2026-11-26T23:15:00.000000Z",
        "parent": None,
        "session_id": "s",
        "disks": [{"name": "sda", "size": 5, "fidx": "sda.fidx", "fidx_checksum": "00ff" * 4}],
        "stats": {"sda": {"counters": {}, "tracking": "", "parent": "p"}},
    },
    "DiscardArguments": {"session_id": "s"},
    "GcArguments": {"keep_since": 41, "dry_run": True},
    "GcResult": {
        "packs_removed": 1,
        "packs_repacked": 2,
        "packs_recent": 3,
        "chunks_removed": 4,
        "chunks_moved": 5,
        "bytes_freed": 6,
        "generation": 42,
        "protected_from": 41,
    },
    "PruneArguments": {
        "job": "j",
        "policy": {
            "keep_last": 1,
            "daily": 2,
            "weekly": 3,
            "monthly": 4,
            "yearly": 5,
            "timezone": "Europe/Paris",
        },
        "dry_run": False,
    },
    "PruneResult": {"kept": {"a": ["last"]}, "removed": ["b"]},
    "ListRestorePointsArguments": {"job": None},
    "RestorePointList": {"restore_points": []},
    "RestorePointArguments": {"restore_point": "rp"},
    "VerifyArguments": {"restore_point": None},
    "VerifyReport": {
        "ok": False,
        "restore_points": ["rp"],
        "chunks_checked": 3,
        "bytes_read": 4,
        "damaged_restore_points": ["rp"],
        "damage": [
            {
                "kind": "chunk",
                "path": "packs/ab/abcd",
                "detail": "checksum mismatch",
                "restore_points": ["rp"],
                "digest": "ab" * 32,
                "pack_id": None,
            }
        ],
        "quarantined": ["ab" * 32],
        "summary": "1 damaged",
    },
    "LatestRestorePointArguments": {"job": "j", "disk": "sda"},
    "LatestRestorePoint": {"restore_point": None},
    "DescribeArguments": {},
    "RepositoryDescription": {"id": "i", "block_size": 1048576, "shard_count": 8},
    "StartGenerationArguments": {},
    "Generation": {"generation": 42},
    "FilesArguments": {"restore_point": "rp", "disk": "sda", "path": "/p1/etc"},
    "FileList": {
        "entries": [
            {
                "path": "/p1/etc/hosts",
                "name": "hosts",
                "kind": "file",
                "size": 220,
                "mode": "0644",
                "uid": 0,
                "gid": 0,
                "mtime_ns": 1_700_000_000_123_456_789,
                "atime_ns": 1_700_000_000_000_000_000,
                "target": None,
                "filesystem": None,
            }
        ]
    },
    "ReadFileArguments": {
        "restore_point": "rp",
        "disk": None,
        "path": "/p1/etc/hosts",
        "offset": 4096,
        "length": 1 << 22,
    },
    "FileData": {"data": b"127.0.0.1 localhost\n", "size": 220},
    "RestoreFilesArguments": {
        "restore_point": "rp",
        "disk": "sda",
        "path": "/p1/home",
        "destination": "/srv/restored",
        "overwrite": False,
    },
    "FilesRestored": {
        "files": 3,
        "dirs": 1,
        "symlinks": 1,
        "bytes": 4096,
        "failed": {"/p1/home/big": "reading chunk ...: checksum mismatch"},
        "skipped": {},
    },
    "StartExportArguments": {
        "restore_point": "rp",
        "disk": None,
        "socket": None,
        "listen": "0.0.0.0:10809",
    },
    "ExportInfo": {
        "id": "e1",
        "restore_point": "rp",
        "disk": "sda",
        "uri": "nbd+unix:///?socket=/run/e1.sock",
        "lease_s": 120,
    },
    "ExportArguments": {"id": "e1"},
    "CatalogArguments": {"restore_point": "rp"},
    "CatalogBuilt": {"restore_point": "rp", "entries": 1200},
    "FindArguments": {"pattern": "*.conf", "job": None},
    "FoundFiles": {
        "found": [
            {
                "restore_point": "rp",
                "job": "vm1",
                "created": "2026-12-04T10:00:00.000Z",
                "disk": "sda",
                "path": "/p1/etc/nginx.conf",
                "size": 2048,
                "mtime_ns": 1_700_000_000_000_000_000,
            }
        ],
        "uncatalogued": ["rp0"],
    },
    "FixedIndexArguments": {"restore_point": "rp", "disk": "sda"},
    "RestoreArguments": {
        "session_id": "s",
        "restore_point": "rp",
        "disk": "sda",
        "attempt_id": "a1",
        "attempt": 1,
        "blocks": b"\x05",
    },
    "DiskStored": {"attempt": 1, "blocks": 9},
    "MissingBlocks": {"attempt": 0, "blocks": [3, 5]},
    "ResumePoint": {"attempt": 2, "stored": False, "block": 7, "extent_records": 1},
    "FreezeArguments": {
        "session_id": "s",
        "vm": "web1",
        "access": {"connection": "ssh", "host": "10.0.0.5", "port": 22, "user": "root"},
        "pre_freeze": "sync",
        "post_thaw": None,
        "freeze_limit_s": 60.0,
    },
    "ThawArguments": {
        "session_id": "s",
        "vm": "web1",
        "access": {"connection": "local", "host": None, "port": 22, "user": "root"},
        "post_thaw": "true",
        "timeout_s": 300.0,
    },
    "GuestStep": {
        "action": "freeze",
        "vm": "web1",
        "disk": "",
        "ok": True,
        "exit_code": 0,
        "timed_out": False,
        "seconds": 0.25,
        "stdout": "frozen",
        "stderr": "",
        "message": "",
    },
    "SnapshotArguments": {
        "session_id": "s",
        "disk": "sda",
        "source": "/images/sda.img",
        "provider": "file-copy",
        "create": None,
        "timeout_s": 300.0,
        "freeze_limit_s": 60.0,
    },
    "SnapshotTaken": {"path": "/snap/sda.img", "kind": "file-copy", "warnings": [], "seconds": 1.5},
    "DeleteSnapshotArguments": {
        "session_id": "s",
        "disk": "sda",
        "source": "/images/sda.img",
        "path": "/snap/sda.img",
        "provider": "file-copy",
        "delete": None,
        "timeout_s": 300.0,
    },
    "CancelArguments": {"session_id": "s"},
    # the orchestrator's own state (blockferry.orchestrator.state)
    "StoredJob": StoredJob(name="web", job=JOB, updated="2026-11-27T01:00:00Z").model_dump(),
    "StoredSession": StoredSession(session_id="s", session=SESSION, plan=PLAN).model_dump(),
}


def encode(name: str, fields: dict[str, Any]) -> bytes:
    """The record ``name`` with ``fields``, as the codec writes it."""
    return Codec().encode(message_types()[name].model_validate(fields))


def decode(data: bytes, codec: Codec | None = None) -> tuple[str, dict[str, Any]]:
    """The type and fields of a record, as the codec reads it."""
    message = (codec or Codec()).decode(data)
    return type(message).__name__, message.model_dump()


def encode_as(schema: dict[str, Any], fields: dict[str, Any]) -> bytes:
    """A record written with ``schema`` (an older version), as its sender wrote it."""
    writer = _schema(schema)
    out = io.BytesIO()
    out.write(writer.header)
    fastavro.schemaless_writer(out, writer.parsed, fields)
    return out.getvalue()


def test_every_schema_has_a_sample() -> None:
    assert sorted(SAMPLES) == Codec().names


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name: str) -> None:
    encoded = encode(name, SAMPLES[name])
    assert encoded[:2] == b"\xc3\x01"
    assert decode(encoded) == (name, SAMPLES[name])


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_a_model_has_its_schemas_canonical_form(name: str) -> None:
    """The schema a model generates is the committed one (docs aside)."""
    committed = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    generated = message_types()[name].avro_schema_to_python()
    assert to_parsing_canonical_form(parse_schema(generated)) == to_parsing_canonical_form(
        parse_schema(committed)
    )


def test_a_record_of_another_type_is_refused_where_one_type_is_expected() -> None:
    data = encode("DiscardArguments", SAMPLES["DiscardArguments"])
    with pytest.raises(RecordError, match="expected a PruneArguments record"):
        Codec().decode_as(data, message_types()["PruneArguments"])


def test_single_object_header_is_the_java_fingerprint() -> None:
    # CRC-64-AVRO of the parsing canonical form, little-endian, as Java's SchemaNormalization.
    from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

    raw = json.loads((SCHEMA_DIR / "Command.avsc").read_text())
    canonical = to_parsing_canonical_form(parse_schema(raw))
    expected = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    assert encode("Command", SAMPLES["Command"])[2:10] == expected


def test_older_writer_schema_reads_with_current_reader() -> None:
    """A record written before a field with a default was added still reads."""
    raw = json.loads((SCHEMA_DIR / "DiskEnd.avsc").read_text())
    old = dict(
        raw, fields=[f for f in raw["fields"] if f["name"] not in ("parent", "attempt", "error")]
    )
    old_fields = {
        k: v for k, v in SAMPLES["DiskEnd"].items() if k not in ("parent", "attempt", "error")
    }
    encoded = encode_as(old, old_fields)

    reader = Codec()
    with pytest.raises(RecordError, match="unknown schema fingerprint"):
        reader.decode(encoded)
    reader.add_writer_schema(old)
    name, fields = decode(encoded, reader)
    assert name == "DiskEnd"
    assert fields == {**old_fields, "parent": None, "attempt": 0, "error": ""}


def _schema_dir_with(schema: dict[str, Any], name: str = "DiskEnd") -> Path:
    import tempfile

    folder = Path(tempfile.mkdtemp())
    (folder / f"{name}.avsc").write_text(json.dumps(schema))
    return folder


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("DeadLetter", 0),
        ("RestoreStart", 0),
        ("RestoreBlock", 0),
        ("RestoreEnd", 0),
        ("Task", 0),
        ("Task", 1),
    ],
)
def test_records_of_earlier_schema_versions_still_read(name: str, version: int) -> None:
    """history/ keeps what earlier releases wrote; the fields added since get defaults."""
    old = json.loads((SCHEMA_DIR / "history" / f"{name}.v{version}.avsc").read_text())
    kept = {f["name"] for f in old["fields"]}
    encoded = encode_as(old, {k: v for k, v in SAMPLES[name].items() if k in kept})
    fields = decode(encoded)[1]
    assert {k: v for k, v in fields.items() if k in kept} == {
        k: v for k, v in SAMPLES[name].items() if k in kept
    }
    assert set(fields) == set(SAMPLES[name])


def test_history_folder_schemas_are_accepted(tmp_path: Path) -> None:
    for path in SCHEMA_DIR.glob("*.avsc"):
        (tmp_path / path.name).write_text(path.read_text())
    raw = json.loads((SCHEMA_DIR / "DiskEnd.avsc").read_text())
    old = dict(raw, fields=[f for f in raw["fields"] if f["name"] != "attempt"])
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "DiskEnd.v0.avsc").write_text(json.dumps(old))
    encoded = encode_as(old, {k: v for k, v in SAMPLES["DiskEnd"].items() if k != "attempt"})
    assert decode(encoded, Codec(tmp_path))[1]["attempt"] == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not Avro single-object encoded"),
        (b"\x00\x01garbage", "not Avro single-object encoded"),
        (b"\xc3\x01" + bytes(8) + b"body", "unknown schema fingerprint"),
    ],
)
def test_undecodable_records_raise_record_error(data: bytes, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        Codec().decode(data)


def test_malformed_body_raises_record_error() -> None:
    codec = Codec()
    encoded = encode("Chunk", SAMPLES["Chunk"])
    with pytest.raises(RecordError, match=r"malformed body|left over"):
        codec.decode(encoded[:-4])
    with pytest.raises(RecordError, match="left over"):
        codec.decode(encoded + b"\x00")


def test_encoding_a_bad_record_is_a_record_error() -> None:
    chunk = message_types()["Chunk"].model_construct(**{**SAMPLES["Chunk"], "plain_size": "x"})
    with pytest.raises(RecordError, match="encoding record Chunk"):
        Codec().encode(chunk)
    with pytest.raises(RecordError, match="no such schema"):
        Codec().encode(
            message_types()["ChangedRangesRef"](**SAMPLES["Task"]["changed_ranges_pages"])
        )


@pytest.mark.parametrize("value", [0, 1, 2**63 - 1, 2**63, 2**64 - 1])
def test_checksums_survive_avro_long(value: int) -> None:
    assert unsigned64(signed64(value)) == value
    assert -(2**63) <= signed64(value) < 2**63


def test_a_record_whose_model_this_role_lacks_is_a_record_error(tmp_path: Path) -> None:
    """A role decodes only the records it has models of: another's is refused, named."""
    schema = {"type": "record", "name": "Elsewhere", "namespace": "io.blockferry.v1"}
    schema["fields"] = [{"name": "n", "type": "long"}]
    (tmp_path / "Elsewhere.avsc").write_text(json.dumps(schema))
    with pytest.raises(RecordError, match="decoding record Elsewhere: no model of it in this role"):
        Codec(tmp_path).decode(encode_as(schema, {"n": 1}))
