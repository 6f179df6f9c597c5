"""Job definitions: validation with field-level errors, the jobs file, schedules."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from blockferry.core.errors import ConfigError
from blockferry.orchestrator.jobs import Job, Schedule, field_errors, load_jobs_file


def definition(**more: Any) -> dict[str, Any]:
    return {
        "name": "web",
        "vms": [{"name": "web1", "disks": [{"name": "sda", "source": "/images/web1.img"}]}],
        **more,
    }


def errors(document: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        Job.model_validate(document)
    return dict(line.split(": ", 1) for line in field_errors(caught.value))


def test_a_job_names_its_disks_by_vm_and_disk() -> None:
    job = Job.model_validate(
        definition(
            vms=[
                {"name": "web1", "disks": [{"name": "sda", "source": "/a"}]},
                {"name": "web2", "disks": [{"name": "sda", "source": "nbd://h/x"}]},
            ]
        )
    )
    assert [name for name, _ in job.disks()] == ["web1.sda", "web2.sda"]
    assert (job.repository, job.compression, job.schedule, job.retention) == (
        "default",
        "optimal",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("change", "where", "says"),
    [
        ({"name": "../x"}, "name", "pattern"),
        ({"compression": "max"}, "compression", "'none'"),
        ({"vms": []}, "(document)", "backs up vms, or copies restore points"),
        ({"copy_from": {"job": "j"}}, "(document)", "it has no vms"),
        ({"vms": [], "copy_from": {"job": "j"}}, "(document)", "to another repository"),
        ({"vms": [], "copy_from": {"job": "../j", "repository": "r"}}, "copy_from.job", "pattern"),
        (
            {"vms": [{"name": "a", "disks": [{"name": "d", "source": "/x"}]}] * 2},
            "vms",
            "vm name 'a' appears twice",
        ),
        (
            {"vms": [{"name": "a", "disks": [{"name": "d", "source": "/x"}] * 2}]},
            "vms.0.disks",
            "disk name 'd' appears twice",
        ),
        ({"vms": [{"name": "a", "disks": [{"name": "d"}]}]}, "vms.0.disks.0.source", "required"),
        ({"schedule": {"cron": "* * *"}}, "schedule.cron", "not a cron expression"),
        ({"schedule": {"cron": "0 1 * * *", "timezone": "Mars/Base"}}, "schedule.timezone", "Mars"),
        ({"schedule": {"cron": "0 1 * * *", "missed": "maybe"}}, "schedule.missed", "'skip'"),
        ({"retention": {}}, "retention", "keeps nothing"),
        ({"retention": {"keep_last": -1}}, "retention.keep_last", "greater than or equal"),
        ({"color": "blue"}, "color", "Extra inputs"),
        ({"guest_processing": {"pre_freeze": "sync"}}, "(document)", "missing for web1"),
        ({"guest_processing": {}}, "guest_processing", "give pre_freeze, post_thaw or both"),
        (
            {"guest_processing": {"post_thaw": "x", "freeze_limit_s": 0}},
            "guest_processing.freeze_limit_s",
            "greater than or equal to 1",
        ),
        (
            {"guest_processing": {"post_thaw": "x", "on_failure": "panic"}},
            "guest_processing.on_failure",
            "'warn'",
        ),
        (
            {"vms": [{"name": "a", "disks": [{"name": "d", "source": "/x"}], "guest": {}}]},
            "vms.0.guest",
            "needs the guest's host",
        ),
        (
            {
                "vms": [
                    {
                        "name": "a",
                        "disks": [{"name": "d", "source": "/x"}],
                        "guest": {"host": "h", "user": "Robert'); DROP"},
                    }
                ]
            },
            "vms.0.guest.user",
            "pattern",
        ),
        ({"snapshot": {"provider": "lvm"}}, "snapshot.provider", "'file-copy'"),
        (
            {"snapshot": {"provider": "command", "create": "x"}},
            "snapshot",
            "both create and delete",
        ),
        ({"snapshot": {"create": "x"}}, "snapshot", "only for the command provider"),
        (
            {
                "vms": [{"name": "a", "disks": [{"name": "d", "source": "nbd://h/e"}]}],
                "snapshot": {"provider": "file-copy"},
            },
            "(document)",
            "a.d are NBD exports",
        ),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], where: str, says: str) -> None:
    found = errors(definition(**change))
    assert where in found, found
    assert says in found[where], found


def test_a_vm_and_disk_name_together_fit_a_disk_name() -> None:
    long = "v" * 100
    found = errors(definition(vms=[{"name": long, "disks": [{"name": "d" * 40, "source": "/x"}]}]))
    assert "at most 127 characters" in found["vms"]


def test_the_next_run_is_read_in_the_jobs_time_zone() -> None:
    schedule = Schedule(cron="30 1 * * *", timezone="Europe/Berlin")
    after = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert schedule.next_run(after) == datetime(2026, 11, 28, 0, 30, tzinfo=UTC)
    assert schedule.next_run(after).utcoffset().total_seconds() == 3600  # type: ignore[union-attr]


def test_the_jobs_file_lists_every_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "jobs:\n"
        "  - name: a\n"
        "    vms: [{name: v, disks: [{name: d, source: /x}]}]\n"
        "  - name: a\n"
        "    vms: [{name: v, disks: [{name: d, source: /x}]}]\n"
        "  - name: b\n"
        "    vms: []\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_jobs_file(path)
    message = str(caught.value)
    assert "jobs.2: Value error, a job backs up vms, or copies restore points" in message
    path.write_text("jobs: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_jobs_file(path)
    path.write_text("")
    assert load_jobs_file(path) == []
    with pytest.raises(ConfigError, match="reading jobs file"):
        load_jobs_file(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("vms", "named"),
    [
        (
            [
                {"name": "a.b", "disks": [{"name": "c", "source": "/x"}]},
                {"name": "a", "disks": [{"name": "b.c", "source": "/y"}]},
            ],
            "VM 'a.b' disk 'c' and VM 'a' disk 'b.c' are both named 'a.b.c'",
        ),
        (
            [
                {"name": "a", "disks": [{"name": "b.c", "source": "/y"}]},
                {"name": "a.b", "disks": [{"name": "x", "source": "/z"}]},
                {"name": "a.b", "disks": [{"name": "c", "source": "/x"}]},
            ],
            "vm name 'a.b' appears twice",
        ),
        (
            [
                {"name": "x", "disks": [{"name": "y", "source": "/y"}]},
                {"name": "a", "disks": [{"name": "b.c", "source": "/y"}]},
                {
                    "name": "a.b",
                    "disks": [{"name": "d", "source": "/d"}, {"name": "c", "source": "/x"}],
                },
            ],
            "VM 'a' disk 'b.c' and VM 'a.b' disk 'c' are both named 'a.b.c'",
        ),
    ],
)
def test_two_disks_of_one_job_with_one_repository_name_are_refused(
    vms: list[dict[str, Any]], named: str
) -> None:
    found = errors(definition(vms=vms))
    assert named in found["vms"], found


def test_the_same_disk_name_in_two_jobs_is_no_collision() -> None:
    one = Job.model_validate(
        definition(name="one", vms=[{"name": "a.b", "disks": [{"name": "c", "source": "/x"}]}])
    )
    two = Job.model_validate(
        definition(name="two", vms=[{"name": "a", "disks": [{"name": "b.c", "source": "/x"}]}])
    )
    assert [n for n, _ in one.disks()] == [n for n, _ in two.disks()] == ["a.b.c"]


def test_a_copy_job_stores_under_its_source_jobs_name() -> None:
    copies = Job.model_validate(
        {"name": "fleet-offsite", "repository": "offsite", "copy_from": {"job": "fleet"}}
    )
    assert copies.stored_as == ("offsite", "fleet")
    assert copies.copy_from is not None and copies.copy_from.repository == "default"
    backups = Job.model_validate(
        {"name": "fleet", "vms": [{"name": "a", "disks": [{"name": "d", "source": "/x"}]}]}
    )
    assert backups.stored_as == ("default", "fleet")
