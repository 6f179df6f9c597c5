"""The alert rules: what each watches, when it fires, and what to do (its runbook).

One list, :data:`ALERTS`, makes the rules file the chart (a PrometheusRule) and compose
(Prometheus's ``rule_files``) ship, and the unit tests ``promtool test rules`` runs: each
alert carries a series that fires it and one that does not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

OWNER_ROLES = "target_mover|gateway"
"""The roles that own repositories, as their metrics' prefixes."""


def owner_metric(name: str) -> str:
    """A selector of an owner's metric ``blockferry_<role>_<name>``, either role."""
    return f'{{__name__=~"blockferry_({OWNER_ROLES})_{name}"}}'


@dataclass(frozen=True)
class Case:
    """A promtool test case: input series (``series{labels}`` -> promtool's expanding
    notation, one sample a minute) and the labels of the alerts expected at ``at``."""

    series: dict[str, str]
    expected: list[dict[str, str]]
    at: str = "10m"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    signal: str
    """The series the alert reads, which a running mesh must serve (evaluated live)."""
    severity: str
    summary: str
    runbook: str
    firing: Case
    calm: Case
    duration: str = "0m"

    def rule(self) -> dict[str, Any]:
        rule: dict[str, Any] = {
            "alert": self.name,
            "expr": self.expr,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "runbook": self.runbook},
        }
        if self.duration != "0m":
            rule["for"] = self.duration
        return rule


SESSIONS = "blockferry_orchestrator_sessions_total"
LAST_GOOD = "blockferry_orchestrator_job_last_good_restore_point_timestamp_seconds"
INTERVAL = "blockferry_orchestrator_job_schedule_interval_seconds"
LAG = "blockferry_kafka_consumer_lag_records"
JOB = 'kind="backup",repository="main",backup_job="web"'
OWNER = 'instance="tm:8080",repository="main"'
SESSION_LABELS = {"kind": "backup", "repository": "main", "backup_job": "web"}
OWNER_LABELS = {"instance": "tm:8080", "repository": "main"}


def _sessions(result: str, values: str) -> dict[str, str]:
    return {f'{SESSIONS}{{{JOB},result="{result}"}}': values}


def _owner(name: str, values: str, role: str = "target_mover") -> dict[str, str]:
    return {f"blockferry_{role}_{name}{{{OWNER}}}": values}


ALERTS: list[Alert] = [
    Alert(
        name="BlockferrySessionFailed",
        expr="sum by (kind, repository, backup_job)"
        f' (increase({SESSIONS}{{result="failed"}}[1h])) > 0',
        signal=SESSIONS,
        severity="critical",
        summary="A {{ $labels.kind }} session of job {{ $labels.backup_job }} into"
        " {{ $labels.repository }} failed in the last hour.",
        runbook="Find the session: `blockferry sessions list --job JOB`, then `blockferry"
        " sessions show ID` for its error and each disk's. A backup that failed committed"
        " nothing and left no partial restore point; the previous restore points are"
        " untouched. Fix the cause (source unreadable, snapshot failed, repository owner"
        " down, Kafka unavailable) and start the job again: `blockferry jobs start JOB`.",
        firing=Case(_sessions("failed", "0 0 1 1 1 1 1 1 1 1 1"), [SESSION_LABELS]),
        calm=Case(_sessions("failed", "0 0 0 0 0 0 0 0 0 0 0"), []),
    ),
    Alert(
        name="BlockferrySessionWarning",
        expr="sum by (kind, repository, backup_job)"
        f' (increase({SESSIONS}{{result="warning"}}[1h])) > 0',
        signal=SESSIONS,
        severity="warning",
        summary="A {{ $labels.kind }} session of job {{ $labels.backup_job }} into"
        " {{ $labels.repository }} ended with warnings in the last hour.",
        runbook="`blockferry sessions show ID` lists the warnings: a disk that failed while"
        " the others were committed (its previous restore point is its newest), a guest"
        " script that failed with on_failure: warn (the restore point is crash-consistent,"
        " not application-consistent), holes restored as zeros. Fix the disk or"
        " the script; the next run backs the disk up again.",
        firing=Case(_sessions("warning", "0 1 1 1 1 1 1 1 1 1 1"), [SESSION_LABELS]),
        calm=Case(_sessions("warning", "1 1 1 1 1 1 1 1 1 1 1"), [], at="70m"),
    ),
    Alert(
        name="BlockferryRestorePointObjectiveMissed",
        expr=f"(time() - {LAST_GOOD}) > on (repository, backup_job)"
        f" ({INTERVAL} + clamp_min({INTERVAL} * 0.25, 900))",
        signal=f"time() - {LAST_GOOD}",
        severity="critical",
        summary="Job {{ $labels.backup_job }} into {{ $labels.repository }} has no good restore"
        " point within its schedule window.",
        runbook="The newest restore point of the job is older than its schedule interval"
        " plus a quarter of it (at least 15 minutes): a run failed, was skipped (a run"
        " still going when the next was due, with overlap: skip) or never started (the job"
        " disabled, the orchestrator down). `blockferry jobs list` shows each job's last"
        " result and next run; `blockferry sessions list --job JOB` its runs. Start it by"
        " hand once the cause is fixed: `blockferry jobs start JOB`.",
        firing=Case(
            {
                f'{LAST_GOOD}{{repository="main",backup_job="web"}}': "0+0x30",
                f'{INTERVAL}{{repository="main",backup_job="web"}}': "600+0x30",
            },
            [{"repository": "main", "backup_job": "web"}],
            at="30m",
        ),
        calm=Case(
            {
                f'{LAST_GOOD}{{repository="main",backup_job="web"}}': "0+60x30",
                f'{INTERVAL}{{repository="main",backup_job="web"}}': "600+0x30",
            },
            [],
            at="30m",
        ),
    ),
    Alert(
        name="BlockferryConsumerLagGrowing",
        expr=f"sum by (group, topic) ({LAG}) > 1000"
        f" and sum by (group, topic) (deriv({LAG}[15m])) > 0",
        signal=LAG,
        severity="warning",
        duration="15m",
        summary="Consumer group {{ $labels.group }} falls behind on {{ $labels.topic }}.",
        runbook="The group's consumers read slower than the topic is written, or none runs."
        " `kafka-consumer-groups.sh --describe --group PREFIX.GROUP` shows its members and"
        " lag per partition. No member: start the role (its pods, or `blockferry run"
        " ROLE`). Members but growing lag: the role is saturated (CPU, the repository's"
        " storage: see the Repositories dashboard's request latency); add instances, up to"
        " the topic's partitions.",
        firing=Case(
            {f'{LAG}{{group="target",topic="bf.main.chunks"}}': "0+200x40"},
            [{"group": "target", "topic": "bf.main.chunks"}],
            at="40m",
        ),
        calm=Case({f'{LAG}{{group="target",topic="bf.main.chunks"}}': "5000-100x40"}, [], "40m"),
    ),
    Alert(
        name="BlockferryDeadLetters",
        expr="increase(blockferry_kafka_dead_letters_total[30m]) > 0",
        signal="blockferry_kafka_dead_letters_total",
        severity="warning",
        summary="Records were set aside on the dead-letter topic.",
        runbook="A consumer read a record it could not decode or had to refuse. Each role"
        " logs it (`dead-lettering TOPIC[PARTITION]@OFFSET: REASON`), and the record on"
        " PREFIX.dead-letter names its topic, offset, reason and consumer. A schema"
        " fingerprint unknown to the reader: roles of different releases (finish the"
        " upgrade). A record damaged or written by something"
        " else: find its producer. Nothing committed is affected; the session that needed"
        " the record failed or retried.",
        firing=Case({"blockferry_kafka_dead_letters_total": "0 0 0 0 2 2 2 2 2 2 2"}, [{}]),
        calm=Case({"blockferry_kafka_dead_letters_total": "3 3 3 3 3 3 3 3 3 3 3"}, []),
    ),
    Alert(
        name="BlockferryRepositoryNearlyFull",
        expr=f"{owner_metric('repository_free_bytes')}"
        f" / {owner_metric('repository_filesystem_size_bytes')} < 0.1",
        signal=owner_metric("repository_free_bytes"),
        severity="warning",
        duration="10m",
        summary="Repository {{ $labels.repository }} has under 10% of its file system free.",
        runbook="Backups fail once the file system is full (nothing committed is lost: a"
        " pack that cannot be written is never published). Free space: prune (`blockferry"
        " prune --job JOB`) with a shorter retention, then `blockferry gc`; or grow the"
        " volume. The Repositories dashboard shows its size and free space over time.",
        firing=Case(
            {
                **_owner("repository_free_bytes", "50+0x20"),
                **_owner("repository_filesystem_size_bytes", "1000+0x20"),
            },
            [OWNER_LABELS],
            at="15m",
        ),
        calm=Case(
            {
                **_owner("repository_free_bytes", "500+0x20"),
                **_owner("repository_filesystem_size_bytes", "1000+0x20"),
            },
            [],
            at="15m",
        ),
    ),
    Alert(
        name="BlockferryVerifyFoundDamage",
        expr=f"increase({owner_metric('verify_damage_total')}[1d]) > 0",
        signal=owner_metric("verifies_total"),
        severity="critical",
        summary="Verification found damage in repository {{ $labels.repository }}.",
        runbook="`blockferry verify` names each damaged pack, chunk, fixed index or"
        " restore point and the restore points it affects. Damaged chunks are quarantined:"
        " the next backup of a disk that still has the block sends it again and heals every"
        " restore point naming it. Check the"
        " storage (disk errors, a bucket's replication) before trusting new writes to it.",
        firing=Case(_owner("verify_damage_total", "0 0 0 3 3 3 3 3 3 3 3"), [OWNER_LABELS]),
        calm=Case(_owner("verify_damage_total", "0 0 0 0 0 0 0 0 0 0 0"), []),
    ),
    Alert(
        name="BlockferryQuarantinedChunks",
        expr=f"{owner_metric('quarantined_chunks')} > 0",
        signal=owner_metric("quarantined_chunks"),
        severity="warning",
        duration="1h",
        summary="Repository {{ $labels.repository }} holds quarantined chunks.",
        runbook="Chunks found damaged were set aside; the restore points naming them cannot"
        " restore those blocks until a backup sends them again (`blockferry verify` names"
        " those restore points). Run the jobs whose disks hold the blocks (`blockferry"
        " jobs start JOB`); `blockferry gc` then removes the damaged copies.",
        firing=Case(_owner("quarantined_chunks", "2+0x80"), [OWNER_LABELS], at="70m"),
        calm=Case(_owner("quarantined_chunks", "0+0x80"), [], at="70m"),
    ),
    Alert(
        name="BlockferryLockHeldTooLong",
        expr=f"{owner_metric('oldest_lock_age_seconds')} > 6 * 3600",
        signal=owner_metric("oldest_lock_age_seconds"),
        severity="warning",
        summary="A lock on repository {{ $labels.repository }} has been held over 6 hours.",
        runbook="Each lock is a file under locks/ in the repository naming its holder (host,"
        " process, purpose); its modification time is the holder's heartbeat. A long GC or"
        " verify of a large repository may hold one that long; a holder whose heartbeat"
        " stopped is stale and is removed by the next locker. A live holder that should"
        " have ended: stop it; never remove a live lock by hand.",
        firing=Case(_owner("oldest_lock_age_seconds", "30000+60x10"), [OWNER_LABELS]),
        calm=Case(_owner("oldest_lock_age_seconds", "0+0x10"), []),
    ),
    Alert(
        name="BlockferryUnreadableMetadata",
        expr=f"{owner_metric('unreadable_metadata')} > 0",
        signal=owner_metric("unreadable_metadata"),
        severity="critical",
        summary="Repository {{ $labels.repository }} has metadata that cannot be read.",
        runbook="A restore point or fixed index could not be read at start-up. GC and prune"
        " refuse to run until it is repaired or set aside, so nothing is deleted on its"
        " account. `blockferry repo check REPOSITORY` names it; `blockferry repo set-aside"
        " REPOSITORY ID` moves it to damaged/ (kept, never deleted) so that they run again.",
        firing=Case(_owner("unreadable_metadata", "1+0x10"), [OWNER_LABELS]),
        calm=Case(_owner("unreadable_metadata", "0+0x10"), []),
    ),
    Alert(
        name="BlockferryStorageErrors",
        expr="sum by (instance, repository, backend, operation)"
        f" (increase({owner_metric('storage_errors_total')}[10m])) > 0",
        signal=owner_metric("storage_requests_total"),
        severity="warning",
        summary="Requests to repository {{ $labels.repository }}'s {{ $labels.backend }}"
        " storage fail ({{ $labels.operation }}).",
        runbook="The repository's storage refuses requests or fails them: a full or read-only"
        " file system, an unreachable share or bucket, expired credentials. The owning"
        " role's log names each failure. Writes that failed published nothing; the"
        " sessions that needed them failed or retried.",
        firing=Case(
            {
                'blockferry_gateway_storage_errors_total{instance="gw:8080",repository="main",'
                'backend="s3",operation="put"}': "0 0 0 0 0 4 4 4 4 4 4"
            },
            [{"instance": "gw:8080", "repository": "main", "backend": "s3", "operation": "put"}],
        ),
        calm=Case(
            {
                'blockferry_gateway_storage_errors_total{instance="gw:8080",repository="main",'
                'backend="s3",operation="put"}': "4 4 4 4 4 4 4 4 4 4 4 4 4 4 4 4"
            },
            [],
            at="15m",
        ),
    ),
    Alert(
        name="BlockferryRoleDown",
        expr='up{job="blockferry"} == 0',
        signal='up{job="blockferry"}',
        severity="critical",
        duration="5m",
        summary="{{ $labels.role }} at {{ $labels.instance }} is down.",
        runbook="Prometheus cannot scrape the role. Its pod or process stopped, or its port"
        " is not reachable. `kubectl describe pod` / `kubectl logs --previous` (or the"
        " process's log) tell why; a role that cannot reach Kafka keeps retrying and stays"
        " up but not ready. Other instances of the role take over its partitions meanwhile.",
        firing=Case(
            {'up{job="blockferry",role="target-mover",instance="tm:8080"}': "1 1 0+0x8"},
            [{"job": "blockferry", "role": "target-mover", "instance": "tm:8080"}],
        ),
        calm=Case({'up{job="blockferry",role="target-mover",instance="tm:8080"}': "1+0x10"}, []),
    ),
]


RULES_FILE = Path(__file__).resolve().parent.parent / "charts/blockferry/files/alerts.yaml"
"""Where the rules are shipped: the chart's PrometheusRule reads it, compose mounts it."""


def rules_yaml() -> str:
    """The rules file's text, as committed."""
    header = "# Generated by observability/alerts.py (python -m observability.generate).\n"
    return header + yaml.safe_dump(rules_document(), sort_keys=False, width=100)


def rules_document() -> dict[str, Any]:
    """The Prometheus rules file: one group of every alert."""
    return {"groups": [{"name": "blockferry", "rules": [alert.rule() for alert in ALERTS]}]}


def promtool_tests(rules_file: str) -> dict[str, Any]:
    """A ``promtool test rules`` file: every alert's firing and calm case."""
    tests = []
    for alert in ALERTS:
        for case in (alert.firing, alert.calm):
            tests.append(
                {
                    "interval": "1m",
                    "input_series": [
                        {"series": series, "values": values}
                        for series, values in case.series.items()
                    ],
                    "alert_rule_test": [
                        {
                            "eval_time": case.at,
                            "alertname": alert.name,
                            "exp_alerts": [
                                {
                                    "exp_labels": {"severity": alert.severity, **labels},
                                    "exp_annotations": {
                                        "summary": _expand(alert.summary, labels),
                                        "runbook": alert.runbook,
                                    },
                                }
                                for labels in case.expected
                            ],
                        }
                    ],
                }
            )
    return {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": tests}


def _expand(template: str, labels: dict[str, str]) -> str:
    """``template`` with each ``{{ $labels.NAME }}`` replaced, as Prometheus does."""
    for name, value in labels.items():
        template = template.replace(f"{{{{ $labels.{name} }}}}", value)
    return template
