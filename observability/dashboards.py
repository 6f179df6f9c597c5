"""The Grafana dashboards: overview, jobs, roles, repositories and Kafka, built with the
Grafana Foundation SDK's builders (``grafana-foundation-sdk``, Grafana 11.6's schema).

Each panel is declared once, as a :class:`Chart` with its queries; the declaration makes
both the SDK's panel and the :class:`PanelQuery` rows that ``make observe-test``
evaluates on a real Prometheus after one backup, one incremental and one restore on a
single-host mesh (:func:`panels`). So every query is kept that simple: a gauge, or a
counter's ``increase`` over the dashboard's time range; a ``rate`` only where a
throughput or a latency is the point.

The variables the queries use, and what that test puts in their place (as Grafana does
for "All"): ``$repository`` and ``$job``, always in ``=~`` matchers, become ``.*``;
``$__rate_interval`` becomes ``1m`` and ``$__range`` ``1h``.

Two things about labels every query here minds:

- A blockferry job's name is the label ``backup_job``: ``job`` is Prometheus's own,
  the scrape job's (``job="blockferry"`` on every target).
- The target mover and the gateway serve the same repository metrics, each under its
  own prefix: :func:`owner` reads both with one ``__name__`` matcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, units
from grafana_foundation_sdk.models import dashboard as model

from observability.alerts import OWNER_ROLES

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
"""The data source of every panel, query and variable: the ``datasource`` variable."""

SESSIONS = "blockferry_orchestrator_sessions_total"
SESSION_SECONDS = "blockferry_orchestrator_session_duration_seconds_bucket"
LAST_GOOD = "blockferry_orchestrator_job_last_good_restore_point_timestamp_seconds"
INTERVAL = "blockferry_orchestrator_job_schedule_interval_seconds"
BLOCKS = "blockferry_source_mover_blocks_total"
MOVED = "blockferry_source_mover_bytes_total"
LOOKUPS = "blockferry_source_mover_lookups_total"
LAG = "blockferry_kafka_consumer_lag_records"
DEAD_LETTERS = "blockferry_kafka_dead_letters_total"

IN_REPOSITORY = 'repository=~"$repository"'
OF_JOB = 'repository=~"$repository", backup_job=~"$job"'
"""The sessions and restore points of the jobs chosen (``backup_job``: see above)."""


def owner(name: str, matchers: str = IN_REPOSITORY) -> str:
    """The selector of a repository owner's metric ``blockferry_<role>_<name>``, the
    target mover's and the gateway's alike."""
    separator = ", " if matchers else ""
    return f'{{__name__=~"blockferry_({OWNER_ROLES})_{name}"{separator}{matchers}}}'


def objective_used(matchers: str) -> str:
    """Each job's time since its newest good restore point, as a share of its schedule
    interval: past 1, the restore point objective is missed."""
    by_job = "max by (repository, backup_job)"
    return (
        f"{by_job} (time() - {LAST_GOOD}{{{matchers}}})"
        f" / on (repository, backup_job) {by_job} ({INTERVAL}{{{matchers}}})"
    )


@dataclass(frozen=True)
class PanelQuery:
    """One query of one panel, as the observability test evaluates it."""

    dashboard: str
    """The dashboard's uid."""
    title: str
    """The panel's title."""
    expr: str
    """PromQL with Grafana's variables (see the module's docstring for their values)."""
    nonzero: bool
    """True when one backup, one incremental and one restore on a healthy mesh (guest
    scripts and a snapshot around the backups) must make the query return a non-zero
    sample; False when it need only return data: what stays 0 on a healthy run (dead
    letters, errors, damage, quarantined chunks, failed sessions, lag, frozen guests),
    and every ``rate`` over ``$__rate_interval``, which is 0 again by the time the test
    asks if the run ended a minute before. (An ``increase`` counts from Prometheus's
    first sample of a series: the test has every role scraped once before the run.)"""


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    nonzero: bool = True
    """See :attr:`PanelQuery.nonzero`."""


Steps = tuple[tuple[float | None, str], ...]
"""Thresholds: (from value, colour), the first from minus infinity (None)."""

CALM: Steps = ((None, "green"),)
BAD_FROM_ONE: Steps = ((None, "green"), (1, "red"))
GOOD_FROM_ONE: Steps = ((None, "red"), (1, "green"))
OBJECTIVE: Steps = ((None, "green"), (0.8, "orange"), (1, "red"))


@dataclass(frozen=True)
class Chart:
    """One panel: a time series over the time range, or a stat or bar gauge of instant
    queries (each a value now, or a counter's increase over the time range)."""

    kind: Literal["timeseries", "stat", "bargauge"]
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    steps: Steps = CALM
    width: int = 12


@dataclass(frozen=True)
class Board:
    name: str
    """The file's name (``<name>.json``) and the uid's end (``blockferry-<name>``)."""
    title: str
    description: str
    variables: tuple[Literal["repository", "job"], ...]
    charts: tuple[Chart, ...]

    @property
    def uid(self) -> str:
        return f"blockferry-{self.name}"


OVERVIEW = Board(
    "overview",
    "Overview",
    "Is every role up, are sessions succeeding and restore points fresh, how fast does"
    " data move and how much do deduplication and compression save.",
    ("repository",),
    (
        Chart(
            "stat",
            "Roles up",
            "Instances of each role Prometheus scrapes successfully now.",
            units.Short,
            (Query('sum by (role) (up{job="blockferry"})', "{{role}}"),),
            GOOD_FROM_ONE,
        ),
        Chart(
            "stat",
            "Sessions ended in the time range",
            "Backup, restore and copy sessions that ended, by result.",
            units.Short,
            (
                Query(
                    f"sum by (result) (increase({SESSIONS}{{{IN_REPOSITORY}}}[$__range]))",
                    "{{result}}",
                ),
            ),
            width=6,
        ),
        Chart(
            "stat",
            "Restore point objective used",
            "Time since each job's newest good restore point as a share of its schedule"
            " interval; past 100 % the job missed its objective (alerted on with a margin).",
            units.PercentUnit,
            (Query(objective_used(IN_REPOSITORY), "{{backup_job}}"),),
            OBJECTIVE,
            width=6,
        ),
        Chart(
            "stat",
            "Needs attention in the time range",
            "Each should be 0: sessions that failed, records set aside on the dead-letter"
            " topic, failed storage requests, damage found by verification, chunks in"
            " quarantine now.",
            units.Short,
            (
                Query(
                    f'sum(increase({SESSIONS}{{{IN_REPOSITORY}, result="failed"}}[$__range]))',
                    "failed sessions",
                    nonzero=False,
                ),
                Query(f"sum(increase({DEAD_LETTERS}[$__range]))", "dead letters", nonzero=False),
                Query(
                    f"sum(increase({owner('storage_errors_total')}[$__range]))",
                    "storage errors",
                    nonzero=False,
                ),
                Query(
                    f"sum(increase({owner('verify_damage_total')}[$__range]))",
                    "verify damage",
                    nonzero=False,
                ),
                Query(f"sum({owner('quarantined_chunks')})", "quarantined chunks", nonzero=False),
            ),
            BAD_FROM_ONE,
            width=24,
        ),
        Chart(
            "stat",
            "Moved in the time range",
            "Bytes the source movers read from sources, sent as chunks (after compression)"
            " and wrote back in restores.",
            units.BytesIEC,
            (
                Query(f'sum(increase({MOVED}{{kind="read"}}[$__range]))', "read"),
                Query(f'sum(increase({MOVED}{{kind="sent"}}[$__range]))', "sent"),
                Query(f'sum(increase({MOVED}{{kind="restored"}}[$__range]))', "restored"),
            ),
        ),
        Chart(
            "stat",
            "Deduplicated",
            "Of the changed, non-zero blocks backed up in the time range, the share not sent"
            " because the repository or the session already held them.",
            units.PercentUnit,
            (
                Query(
                    f'sum(increase({BLOCKS}{{outcome="deduplicated"}}[$__range]))'
                    f' / sum(increase({BLOCKS}{{outcome=~"deduplicated|sent"}}[$__range]))'
                ),
            ),
            width=6,
        ),
        Chart(
            "stat",
            "Compression ratio",
            "Bytes of the chunks sent in the time range before compression, per byte after.",
            units.Short,
            (
                Query(
                    f'sum(increase({MOVED}{{kind="sent_plain"}}[$__range]))'
                    f' / sum(increase({MOVED}{{kind="sent"}}[$__range]))'
                ),
            ),
            width=6,
        ),
        Chart(
            "timeseries",
            "Backup throughput",
            "Bytes the source movers read from sources and sent as chunks, per second.",
            units.BytesPerSecondSI,
            (
                Query(f'sum(rate({MOVED}{{kind="read"}}[$__rate_interval]))', "read", False),
                Query(f'sum(rate({MOVED}{{kind="sent"}}[$__rate_interval]))', "sent", False),
            ),
        ),
        Chart(
            "timeseries",
            "Restore throughput",
            "Bytes the repository owners read for restores, and the source movers wrote to"
            " the restored disks, per second.",
            units.BytesPerSecondSI,
            (
                Query(
                    f"sum(rate({owner('bytes_restored_total')}[$__rate_interval]))",
                    "read from repositories",
                    False,
                ),
                Query(
                    f'sum(rate({MOVED}{{kind="restored"}}[$__rate_interval]))',
                    "written by source movers",
                    False,
                ),
            ),
        ),
        Chart(
            "timeseries",
            "Repository size",
            "Bytes of each repository's sealed packs.",
            units.BytesIEC,
            (Query(f"sum by (repository) ({owner('repository_size_bytes')})", "{{repository}}"),),
        ),
        Chart(
            "timeseries",
            "Consumer lag",
            "Records the consumer groups have yet to read, over all topics.",
            units.Short,
            (Query(f"sum({LAG})", "records behind", False),),
        ),
    ),
)

JOBS = Board(
    "jobs",
    "Jobs",
    "Each job's sessions, their results and durations, and its newest good restore point"
    " against its schedule (the restore point objective).",
    ("repository", "job"),
    (
        Chart(
            "bargauge",
            "Sessions ended in the time range",
            "Sessions that ended, by job, kind and result (those with none left out).",
            units.Short,
            (
                Query(
                    "sum by (backup_job, kind, result)"
                    f" (increase({SESSIONS}{{{OF_JOB}}}[$__range])) > 0",
                    "{{backup_job}} {{kind}} {{result}}",
                ),
            ),
        ),
        Chart(
            "stat",
            "Failed sessions in the time range",
            "Sessions that failed, by job and kind: `blockferry sessions list --job JOB`"
            " shows them, `blockferry sessions show ID` why.",
            units.Short,
            (
                Query(
                    "sum by (backup_job, kind)"
                    f' (increase({SESSIONS}{{{OF_JOB}, result="failed"}}[$__range]))',
                    "{{backup_job}} {{kind}}",
                    nonzero=False,
                ),
            ),
            BAD_FROM_ONE,
        ),
        Chart(
            "timeseries",
            "Sessions ended",
            "Sessions that ended, by job and result.",
            units.Short,
            (
                Query(
                    "sum by (backup_job, result)"
                    f" (increase({SESSIONS}{{{OF_JOB}}}[$__rate_interval]))",
                    "{{backup_job}} {{result}}",
                    nonzero=False,
                ),
            ),
        ),
        Chart(
            "bargauge",
            "Session duration in the time range",
            "The median and 90th percentile of the sessions that ended, by job and kind.",
            units.Seconds,
            tuple(
                Query(
                    f"histogram_quantile({q}, sum by (le, backup_job, kind)"
                    f" (increase({SESSION_SECONDS}{{{OF_JOB}}}[$__range])))",
                    f"{{{{backup_job}}}} {{{{kind}}}} {name}",
                )
                for q, name in ((0.5, "p50"), (0.9, "p90"))
            ),
        ),
        Chart(
            "stat",
            "Newest good restore point",
            "When each job's newest restore point of a session that succeeded (or ended with"
            " warnings) was committed.",
            units.DateTimeFromNow,
            (
                Query(
                    f"max by (backup_job) ({LAST_GOOD}{{{OF_JOB}}}) * 1000",
                    "{{backup_job}}",
                ),
            ),
        ),
        Chart(
            "bargauge",
            "Restore point objective used",
            "Time since each job's newest good restore point as a share of its schedule"
            " interval; past 100 % the job missed its objective.",
            units.PercentUnit,
            (Query(objective_used(OF_JOB), "{{backup_job}}"),),
            OBJECTIVE,
        ),
        Chart(
            "timeseries",
            "Time since the newest good restore point, and the schedule interval",
            "A job is on time while its line stays under its schedule interval.",
            units.Seconds,
            (
                Query(
                    f"time() - max by (repository, backup_job) ({LAST_GOOD}{{{OF_JOB}}})",
                    "{{backup_job}}: since the newest good restore point",
                ),
                Query(
                    f"max by (repository, backup_job) ({INTERVAL}{{{OF_JOB}}})",
                    "{{backup_job}}: schedule interval",
                ),
            ),
            width=24,
        ),
    ),
)

ROLES = Board(
    "roles",
    "Roles",
    "What each role does: the source movers' blocks and tasks, the dedupe index's lookups,"
    " the guest proxy's scripts and snapshots.",
    (),
    (
        Chart(
            "stat",
            "Instances up",
            "Each instance Prometheus scrapes, 1 when the scrape succeeds.",
            units.Short,
            (Query('up{job="blockferry"}', "{{role}} {{instance}}"),),
            GOOD_FROM_ONE,
            width=24,
        ),
        Chart(
            "bargauge",
            "Source mover: blocks in the time range",
            "Blocks read, and what became of the changed ones: zero, deduplicated, sent.",
            units.Short,
            (Query(f"sum by (outcome) (increase({BLOCKS}[$__range]))", "{{outcome}}"),),
        ),
        Chart(
            "timeseries",
            "Source mover: bytes moved",
            "Bytes read from sources, sent before (sent_plain) and after compression, and"
            " restored, per second.",
            units.BytesPerSecondSI,
            (Query(f"sum by (kind) (rate({MOVED}[$__rate_interval]))", "{{kind}}", nonzero=False),),
        ),
        Chart(
            "bargauge",
            "Source mover: tasks in the time range",
            "Backup and restore tasks that finished, by result.",
            units.Short,
            (
                Query(
                    "sum by (kind, result)"
                    " (increase(blockferry_source_mover_tasks_total[$__range]))",
                    "{{kind}} {{result}}",
                ),
            ),
        ),
        Chart(
            "timeseries",
            "Source mover: tasks running",
            "Tasks each source mover runs now.",
            units.Short,
            (
                Query(
                    "sum by (instance) (blockferry_source_mover_tasks_running)",
                    "{{instance}}",
                    nonzero=False,
                ),
            ),
        ),
        Chart(
            "bargauge",
            "Dedupe lookups in the time range",
            "Lookups the source movers asked (answered, or timed out and sent anyway) and the"
            " dedupe index answered (in time, late, or not ready).",
            units.Short,
            (
                Query(
                    f"sum by (outcome) (increase({LOOKUPS}[$__range]))",
                    "source movers: {{outcome}}",
                ),
                Query(
                    "sum by (outcome) (increase(blockferry_dedupe_index_lookups_total[$__range]))",
                    "dedupe index: {{outcome}}",
                ),
            ),
        ),
        Chart(
            "stat",
            "Dedupe index: digests known",
            "Of the digests asked about in the time range, the share the repository held"
            " already (0 while every block backed up is new).",
            units.PercentUnit,
            (
                Query(
                    'sum(increase(blockferry_dedupe_index_digests_total{kind="known"}[$__range]))'
                    " / sum(increase("
                    'blockferry_dedupe_index_digests_total{kind="asked"}[$__range]))',
                    nonzero=False,
                ),
            ),
            width=6,
        ),
        Chart(
            "stat",
            "Dedupe index: shards and changelog",
            "Shards the instances answer for now, and index changelog records they applied"
            " in the time range.",
            units.Short,
            (
                Query("sum(blockferry_dedupe_index_shards)", "shards"),
                Query(
                    "sum(increase(blockferry_dedupe_index_changelog_records_total[$__range]))",
                    "changelog records",
                ),
            ),
            width=6,
        ),
        Chart(
            "bargauge",
            "Guest proxy: steps in the time range",
            "Guest scripts (freeze, thaw) and snapshot commands run, by outcome.",
            units.Short,
            (
                Query(
                    "sum by (action, outcome)"
                    " (increase(blockferry_guest_proxy_steps_total[$__range]))",
                    "{{action}} {{outcome}}",
                ),
            ),
        ),
        Chart(
            "timeseries",
            "Guest proxy: frozen guests",
            "Guests frozen now (between a freeze and its thaw), and those thawed because"
            " their freeze limit expired first.",
            units.Short,
            (
                Query("sum(blockferry_guest_proxy_frozen_guests)", "frozen", nonzero=False),
                Query(
                    "sum(increase(blockferry_guest_proxy_auto_thaws_total[$__rate_interval]))",
                    "auto-thawed",
                    nonzero=False,
                ),
            ),
        ),
    ),
)

REPOSITORIES = Board(
    "repositories",
    "Repositories",
    "Each repository's size and room, what its owner wrote and read, seal and storage"
    " latency, storage errors, verification, damage, quarantine and locks.",
    ("repository",),
    (
        Chart(
            "timeseries",
            "Size",
            "Bytes of the repository's sealed packs.",
            units.BytesIEC,
            (Query(f"sum by (repository) ({owner('repository_size_bytes')})", "{{repository}}"),),
        ),
        Chart(
            "timeseries",
            "Free space",
            "Free bytes of the file system a local repository lives on (none for a bucket or"
            " a share).",
            units.BytesIEC,
            (Query(f"sum by (repository) ({owner('repository_free_bytes')})", "{{repository}}"),),
        ),
        Chart(
            "bargauge",
            "Chunks received in the time range",
            "Chunks that reached the repository's owner: stored, duplicate (held already) or"
            " rejected.",
            units.Short,
            (
                Query(
                    f"sum by (repository, outcome) (increase({owner('chunks_total')}[$__range]))",
                    "{{repository}} {{outcome}}",
                ),
            ),
        ),
        Chart(
            "stat",
            "Written and restored in the time range",
            "Chunk bytes written to packs, and stored bytes read for restores.",
            units.BytesIEC,
            (
                Query(f"sum(increase({owner('bytes_written_total')}[$__range]))", "written"),
                Query(f"sum(increase({owner('bytes_restored_total')}[$__range]))", "restored"),
            ),
        ),
        Chart(
            "timeseries",
            "Pack seal time (p90)",
            "Time to seal a pack: fsync, rename, index file.",
            units.Seconds,
            (
                Query(
                    "histogram_quantile(0.9, sum by (le, repository)"
                    f" (rate({owner('pack_seal_seconds_bucket')}[$__rate_interval])))",
                    "{{repository}}",
                    nonzero=False,
                ),
            ),
        ),
        Chart(
            "timeseries",
            "Storage request time (p90)",
            "Time each request to the repository's storage took, by backend and operation (a"
            " local commit is the fsync of a file and its directory).",
            units.Seconds,
            (
                Query(
                    "histogram_quantile(0.9, sum by (le, backend, operation)"
                    f" (rate({owner('storage_request_seconds_bucket')}[$__rate_interval])))",
                    "{{backend}} {{operation}}",
                    nonzero=False,
                ),
            ),
        ),
        Chart(
            "bargauge",
            "Storage requests in the time range",
            "Requests made to the repository's storage, by backend and operation (those with"
            " none left out).",
            units.Short,
            (
                Query(
                    "sum by (backend, operation)"
                    f" (increase({owner('storage_requests_total')}[$__range])) > 0",
                    "{{backend}} {{operation}}",
                ),
            ),
        ),
        Chart(
            "stat",
            "Storage errors in the time range",
            "Requests to the repository's storage that failed, by backend.",
            units.Short,
            (
                Query(
                    f"sum by (backend) (increase({owner('storage_errors_total')}[$__range]))",
                    "{{backend}}",
                    nonzero=False,
                ),
            ),
            BAD_FROM_ONE,
        ),
        Chart(
            "stat",
            "Verifications in the time range",
            "Verifications run, by result: ok, or damaged.",
            units.Short,
            (
                Query(
                    f"sum by (result) (increase({owner('verifies_total')}[$__range]))",
                    "{{result}}",
                    nonzero=False,
                ),
            ),
            width=6,
        ),
        Chart(
            "stat",
            "Damage found in the time range",
            "Chunks, indexes or restore points that verification found unreadable or wrong"
            " (`blockferry verify` names them).",
            units.Short,
            (
                Query(
                    f"sum(increase({owner('verify_damage_total')}[$__range]))",
                    "damage",
                    nonzero=False,
                ),
            ),
            BAD_FROM_ONE,
            width=6,
        ),
        Chart(
            "stat",
            "Quarantined and unreadable",
            "Chunks set aside as damaged (the next backup that reads their blocks sends them"
            " again), and 1 where start-up found metadata it cannot read (GC and prune wait).",
            units.Short,
            (
                Query(
                    f"sum by (repository) ({owner('quarantined_chunks')})",
                    "{{repository}} quarantined chunks",
                    nonzero=False,
                ),
                Query(
                    f"sum by (repository) ({owner('unreadable_metadata')})",
                    "{{repository}} unreadable metadata",
                    nonzero=False,
                ),
            ),
            BAD_FROM_ONE,
            width=6,
        ),
        Chart(
            "stat",
            "Oldest lock",
            "How long the oldest lock on the repository has been held (0: none).",
            units.Seconds,
            (
                Query(
                    f"max by (repository) ({owner('oldest_lock_age_seconds')})",
                    "{{repository}}",
                    nonzero=False,
                ),
            ),
            width=6,
        ),
    ),
)

KAFKA = Board(
    "kafka",
    "Kafka",
    "The bus: each consumer group's lag per topic, dead letters, the chunks through it,"
    " and records refused as expired or superseded.",
    (),
    (
        Chart(
            "timeseries",
            "Consumer lag by group and topic",
            "Records each consumer group has yet to read on each topic (the orchestrator"
            " reads Kafka's offsets every 15 s).",
            units.Short,
            (Query(f"sum by (group, topic) ({LAG})", "{{group}} {{topic}}", nonzero=False),),
            width=24,
        ),
        Chart(
            "bargauge",
            "Records behind, by consumer group",
            "Each consumer group's lag now, over all its topics.",
            units.Short,
            (Query(f"sum by (group) ({LAG})", "{{group}}", nonzero=False),),
        ),
        Chart(
            "stat",
            "Dead letters in the time range",
            "Records set aside on the dead-letter topic: each role logs why, and the record"
            " names its topic, offset and consumer.",
            units.Short,
            (Query(f"sum(increase({DEAD_LETTERS}[$__range]))", "dead letters", nonzero=False),),
            BAD_FROM_ONE,
        ),
        Chart(
            "timeseries",
            "Chunks through Kafka",
            "Chunks the source movers sent, and the repository owners received, per second.",
            units.CountsPerSecond,
            (
                Query(
                    f'sum(rate({BLOCKS}{{outcome="sent"}}[$__rate_interval]))',
                    "sent",
                    nonzero=False,
                ),
                Query(
                    f"sum(rate({owner('chunks_total', '')}[$__rate_interval]))",
                    "received",
                    nonzero=False,
                ),
            ),
        ),
        Chart(
            "stat",
            "Chunks through Kafka in the time range",
            "Chunks the source movers sent, and the repository owners received (stored,"
            " duplicate or rejected); a lasting gap is chunks not yet consumed.",
            units.Short,
            (
                Query(f'sum(increase({BLOCKS}{{outcome="sent"}}[$__range]))', "sent"),
                Query(f"sum(increase({owner('chunks_total', '')}[$__range]))", "received"),
            ),
        ),
        Chart(
            "timeseries",
            "Dead letters",
            "Records set aside on the dead-letter topic.",
            units.Short,
            (
                Query(
                    f"sum(increase({DEAD_LETTERS}[$__rate_interval]))",
                    "dead letters",
                    nonzero=False,
                ),
            ),
        ),
        Chart(
            "bargauge",
            "Refused as expired or superseded, in the time range",
            "Records read but not acted on: expired (read again after their expiry, as a"
            " group that lost its offsets does) or superseded (sent by an earlier run of a"
            " session an orchestrator carries on).",
            units.Short,
            (
                Query(
                    "sum by (reason)"
                    " (increase(blockferry_source_mover_tasks_refused_total[$__range]))",
                    "source mover tasks: {{reason}}",
                    nonzero=False,
                ),
                Query(
                    "sum by (reason)"
                    " (increase(blockferry_guest_proxy_commands_refused_total[$__range]))",
                    "guest proxy commands: {{reason}}",
                    nonzero=False,
                ),
                Query(
                    f"sum by (reason) (increase({owner('commands_refused_total', '')}[$__range]))",
                    "repository owner commands: {{reason}}",
                    nonzero=False,
                ),
            ),
        ),
    ),
)

BOARDS = (OVERVIEW, JOBS, ROLES, REPOSITORIES, KAFKA)


def panels() -> list[PanelQuery]:
    """Every query of every panel, in dashboard order."""
    return [
        PanelQuery(board.uid, chart.title, query.expr, query.nonzero)
        for board in BOARDS
        for chart in board.charts
        for query in chart.queries
    ]


def dashboard_json() -> dict[str, str]:
    """Each dashboard's file name (``<name>.json``) and its JSON, as the SDK's encoder
    writes it (keys sorted, indented by 2, a newline at the end)."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    return {f"{board.name}.json": encoder.encode(build(board)) + "\n" for board in BOARDS}


def build(board: Board) -> model.Dashboard:
    """``board`` as the SDK's dashboard model."""
    dashboard = (
        builders.Dashboard(f"blockferry / {board.title}")
        .uid(board.uid)
        .description(
            f"{board.description} Generated by observability/dashboards.py"
            " (python -m observability.generate): change it there."
        )
        .tags(["blockferry"])
        .time("now-24h", "now")
        .refresh("1m")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(
            builders.DashboardLink("blockferry")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["blockferry"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .with_variable(
            builders.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
    )
    for name in board.variables:
        dashboard = dashboard.with_variable(_variable(name))
    for number, chart in enumerate(board.charts, start=1):
        dashboard = dashboard.with_panel(_panel(chart, number))
    return dashboard.build()


VARIABLE_QUERIES = {
    "repository": f"label_values({owner('chunks_total', '')}, repository)",
    "job": f"label_values({SESSIONS}{{{IN_REPOSITORY}}}, backup_job)",
}
"""Where each template variable's values come from: the repositories an owner serves,
the jobs with sessions in the repositories chosen."""


def _variable(name: Literal["repository", "job"]) -> Builder[model.VariableModel]:
    return (
        builders.QueryVariable(name)
        .label(name.capitalize())
        .datasource(DATASOURCE)
        .query(VARIABLE_QUERIES[name])
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def _panel(chart: Chart, number: int) -> Builder[model.Panel]:
    """The SDK's panel of ``chart``, the ``number``-th of its dashboard."""
    panel: timeseries.Panel | stat.Panel | bargauge.Panel
    if chart.kind == "timeseries":
        panel = (
            timeseries.Panel()
            .fill_opacity(10)
            .legend(
                common_builders.VizLegendOptions()
                .display_mode(common.LegendDisplayMode.LIST)
                .placement(common.LegendPlacement.BOTTOM)
                .show_legend(True)
            )
            .height(8)
        )
    elif chart.kind == "stat":
        panel = (
            stat.Panel()
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
            .graph_mode(common.BigValueGraphMode.NONE)
            .color_mode(common.BigValueColorMode.VALUE)
            .height(5)
        )
    else:
        panel = (
            bargauge.Panel()
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
            .orientation(common.VizOrientation.HORIZONTAL)
            .display_mode(common.BarGaugeDisplayMode.GRADIENT)
            .min(0)
            .height(8)
        )
    panel = (
        panel.id(number)
        .title(chart.title)
        .description(chart.description)
        .datasource(DATASOURCE)
        .unit(chart.unit)
        .span(chart.width)
        .thresholds(
            builders.ThresholdsConfig()
            .mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=value, color=color) for value, color in chart.steps])
        )
    )
    for index, query in enumerate(chart.queries):
        target = (
            prometheus.Dataquery()
            .ref_id(chr(ord("A") + index))
            .expr(query.expr)
            .datasource(DATASOURCE)
        )
        if query.legend:
            target = target.legend_format(query.legend)
        panel = panel.with_target(
            target.range() if chart.kind == "timeseries" else target.instant()
        )
    return panel
