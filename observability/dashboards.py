"""The Grafana dashboards: overview, jobs, roles, repositories and Kafka, built with the
Grafana Foundation SDK's builders. Each panel is a :class:`Panel` first, so that the
tests can evaluate every query on a real Prometheus (:func:`panels`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
"""Every panel's and variable's: the dashboard's data source variable."""

OWNER = "blockferry_(target_mover|gateway)"
"""The roles that own repositories, as their metrics' prefixes."""

IN_REPOSITORY = 'repository=~"$repository"'
OF_JOB = 'repository=~"$repository", job=~"$job"'
SESSIONS = "blockferry_orchestrator_sessions_total"
LAST_GOOD = "blockferry_orchestrator_job_last_good_restore_point_timestamp_seconds"
INTERVAL = "blockferry_orchestrator_job_schedule_interval_seconds"
SOURCE_BYTES = "blockferry_source_mover_bytes_total"
SOURCE_BLOCKS = "blockferry_source_mover_blocks_total"
BLOCKS_READ = f'{SOURCE_BLOCKS}{{outcome="read"}}'
BLOCKS_SENT = f'{SOURCE_BLOCKS}{{outcome="sent"}}'
BYTES_SENT = f'{SOURCE_BYTES}{{kind="sent"}}'
BYTES_SENT_PLAIN = f'{SOURCE_BYTES}{{kind="sent_plain"}}'
DIGESTS_KNOWN = 'blockferry_dedupe_index_digests_total{kind="known"}'
DIGESTS_ASKED = 'blockferry_dedupe_index_digests_total{kind="asked"}'


def owner(name: str) -> str:
    """An owning role's metric ``blockferry_<role>_<name>`` (either role) in the
    repositories chosen."""
    return f'{{__name__=~"{OWNER}_{name}", {IN_REPOSITORY}}}'


def in_range(selector: str, by: str = "") -> str:
    """How much a counter grew over the dashboard's time range."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (increase({selector}[$__range]))"


def per_second(selector: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({selector}[$__rate_interval]))"


def quantile(q: float, buckets: str, by: str = "") -> str:
    """The ``q`` quantile of a histogram over the dashboard's time range."""
    grouping = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({grouping}) (increase({buckets}[$__range])))"


@dataclass(frozen=True)
class Panel:
    """One panel: its title and PromQL (with Grafana's variables), its unit and kind,
    and whether a healthy backup, incremental and restore make its query non-zero
    (``nonzero``; else it need only return data: errors, damage and lag stay at 0)."""

    title: str
    expr: str
    unit: str
    nonzero: bool
    kind: Literal["stat", "timeseries"] = "timeseries"
    legend: str = ""


@dataclass(frozen=True)
class Board:
    name: str
    """The file's name and the uid's end: ``blockferry-<name>``."""
    title: str
    description: str
    variables: tuple[str, ...]
    """Of ``repository`` and ``job``: the template variables its queries use."""
    panels: tuple[Panel, ...]

    @property
    def uid(self) -> str:
        return f"blockferry-{self.name}"


@dataclass(frozen=True)
class PanelQuery:
    """A panel's query, as the tests evaluate it."""

    dashboard: str
    title: str
    expr: str
    nonzero: bool


BOARDS = (
    Board(
        "overview",
        "Overview",
        "Is every role up, are backups succeeding, how fast, and how much is saved.",
        (),
        (
            Panel("Roles up", 'sum(up{job="blockferry"})', "short", True, "stat"),
            Panel(
                "Sessions succeeded",
                in_range(f'{SESSIONS}{{result=~"success|warning"}}'),
                "short",
                True,
                "stat",
            ),
            Panel(
                "Sessions failed",
                in_range(f'{SESSIONS}{{result="failed"}}'),
                "short",
                False,
                "stat",
            ),
            Panel(
                "Oldest newest good restore point",
                f"time() - min({LAST_GOOD})",
                "s",
                True,
                "stat",
            ),
            Panel(
                "Blocks read but not sent (zero, deduplicated, unchanged)",
                f"1 - {in_range(BLOCKS_SENT)} / {in_range(BLOCKS_READ)}",
                "percentunit",
                True,
                "stat",
            ),
            Panel(
                "Compression ratio",
                f"{in_range(BYTES_SENT_PLAIN)} / {in_range(BYTES_SENT)}",
                "short",
                True,
                "stat",
            ),
            Panel(
                "Dead letters",
                in_range("blockferry_kafka_dead_letters_total"),
                "short",
                False,
                "stat",
            ),
            Panel(
                "Backup read throughput", per_second(f'{SOURCE_BYTES}{{kind="read"}}'), "Bps", True
            ),
            Panel("Sent throughput (compressed)", per_second(BYTES_SENT), "Bps", True),
            Panel(
                "Restore throughput", per_second(f'{SOURCE_BYTES}{{kind="restored"}}'), "Bps", True
            ),
        ),
    ),
    Board(
        "jobs",
        "Jobs",
        "Each job's sessions, durations, guest steps and newest good restore point against"
        " its schedule (the restore point objective).",
        ("repository", "job"),
        (
            Panel(
                "Sessions by result",
                in_range(f"{SESSIONS}{{{OF_JOB}}}", "job, kind, result"),
                "short",
                True,
                legend="{{job}} {{kind}} {{result}}",
            ),
            Panel(
                "Session duration (p90)",
                quantile(
                    0.9,
                    f"blockferry_orchestrator_session_duration_seconds_bucket{{{OF_JOB}}}",
                    "job, kind",
                ),
                "s",
                True,
                legend="{{job}} {{kind}}",
            ),
            Panel(
                "Time since the newest good restore point",
                f"time() - {LAST_GOOD}{{{OF_JOB}}}",
                "s",
                True,
                legend="{{repository}}/{{job}}",
            ),
            Panel(
                "Schedule interval (restore point objective)",
                f"{INTERVAL}{{{OF_JOB}}}",
                "s",
                True,
                legend="{{repository}}/{{job}}",
            ),
            Panel(
                "Share of the objective used",
                f"(time() - {LAST_GOOD}{{{OF_JOB}}}) / on (repository, job) {INTERVAL}{{{OF_JOB}}}",
                "percentunit",
                True,
                legend="{{repository}}/{{job}}",
            ),
            Panel(
                "Guest scripts and snapshot commands",
                in_range("blockferry_guest_proxy_steps_total", "action, outcome"),
                "short",
                True,
                legend="{{action}} {{outcome}}",
            ),
            Panel(
                "Guests frozen now",
                "sum(blockferry_guest_proxy_frozen_guests)",
                "short",
                False,
                "stat",
            ),
        ),
    ),
    Board(
        "roles",
        "Roles",
        "What each role does: up, tasks, blocks, lookups, chunks, refusals.",
        (),
        (
            Panel("Up", 'up{job="blockferry"}', "short", True, legend="{{role}} {{instance}}"),
            Panel(
                "Source mover tasks running",
                "sum(blockferry_source_mover_tasks_running)",
                "short",
                False,
                "stat",
            ),
            Panel(
                "Source mover tasks by result",
                in_range("blockferry_source_mover_tasks_total", "kind, result"),
                "short",
                True,
                legend="{{kind}} {{result}}",
            ),
            Panel(
                "Blocks by outcome",
                per_second(SOURCE_BLOCKS, "outcome"),
                "ops",
                True,
                legend="{{outcome}}",
            ),
            Panel(
                "Dedupe index lookups",
                in_range("blockferry_dedupe_index_lookups_total", "outcome"),
                "short",
                True,
                legend="{{outcome}}",
            ),
            Panel(
                "Digests the index knew",
                f"{in_range(DIGESTS_KNOWN)} / {in_range(DIGESTS_ASKED)}",
                "percentunit",
                False,
                "stat",
            ),
            Panel(
                "Chunks received by outcome",
                in_range(f'{{__name__=~"{OWNER}_chunks_total"}}', "role, outcome"),
                "short",
                True,
                legend="{{role}} {{outcome}}",
            ),
            Panel(
                "Commands and tasks refused",
                in_range(
                    '{__name__=~"blockferry_.+_(commands|tasks)_refused_total"}', "role, reason"
                ),
                "short",
                False,
                legend="{{role}} {{reason}}",
            ),
        ),
    ),
    Board(
        "repositories",
        "Repositories",
        "Each repository's size and room, its writes and their latency, storage errors,"
        " verification, damage and locks.",
        ("repository",),
        (
            Panel("Size", owner("repository_size_bytes"), "bytes", True, legend="{{repository}}"),
            Panel(
                "Free space", owner("repository_free_bytes"), "bytes", True, legend="{{repository}}"
            ),
            Panel(
                "Free share of the file system",
                f"{owner('repository_free_bytes')} / {owner('repository_filesystem_size_bytes')}",
                "percentunit",
                True,
                legend="{{repository}}",
            ),
            Panel(
                "Written to packs",
                per_second(owner("bytes_written_total"), "repository"),
                "Bps",
                True,
                legend="{{repository}}",
            ),
            Panel(
                "Read for restores",
                per_second(owner("bytes_restored_total"), "repository"),
                "Bps",
                True,
                legend="{{repository}}",
            ),
            Panel(
                "Pack seal time (p99)",
                quantile(0.99, owner("pack_seal_seconds_bucket"), "repository"),
                "s",
                True,
                legend="{{repository}}",
            ),
            Panel(
                "Storage request time (p99)",
                quantile(0.99, owner("storage_request_seconds_bucket"), "backend, operation"),
                "s",
                True,
                legend="{{backend}} {{operation}}",
            ),
            Panel(
                "Storage errors",
                in_range(owner("storage_errors_total"), "backend, operation"),
                "short",
                False,
                legend="{{backend}} {{operation}}",
            ),
            Panel(
                "Verifications",
                in_range(owner("verifies_total"), "repository, result"),
                "short",
                True,
                legend="{{repository}} {{result}}",
            ),
            Panel(
                "Damage found", in_range(owner("verify_damage_total"), "repository"), "short", False
            ),
            Panel(
                "Quarantined chunks",
                owner("quarantined_chunks"),
                "short",
                False,
                legend="{{repository}}",
            ),
            Panel(
                "Oldest lock", owner("oldest_lock_age_seconds"), "s", False, legend="{{repository}}"
            ),
        ),
    ),
    Board(
        "kafka",
        "Kafka",
        "The bus: each consumer group's lag per topic, dead letters, lookups that timed out.",
        (),
        (
            Panel(
                "Consumer lag",
                "sum by (group, topic) (blockferry_kafka_consumer_lag_records)",
                "short",
                False,
                legend="{{group}} {{topic}}",
            ),
            Panel(
                "Consumer lag growth",
                "sum by (group) (deriv(blockferry_kafka_consumer_lag_records[10m]))",
                "short",
                False,
                legend="{{group}}",
            ),
            Panel(
                "Dead letters",
                in_range("blockferry_kafka_dead_letters_total"),
                "short",
                False,
                "stat",
            ),
            Panel(
                "Chunks sent",
                per_second(BLOCKS_SENT),
                "ops",
                True,
            ),
            Panel(
                "Dedupe lookups timed out",
                in_range('blockferry_source_mover_lookups_total{outcome="timed-out"}'),
                "short",
                False,
                "stat",
            ),
        ),
    ),
)


def panels() -> list[PanelQuery]:
    """Every panel's query, in dashboard order."""
    return [
        PanelQuery(board.uid, panel.title, panel.expr, panel.nonzero)
        for board in BOARDS
        for panel in board.panels
    ]


def build(board: Board) -> model.Dashboard:
    """``board`` as the SDK's dashboard."""
    built = (
        dashboard.Dashboard(board.title)
        .uid(board.uid)
        .description(board.description)
        .tags(["blockferry"])
        .editable()
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
    )
    for name in board.variables:
        built = built.with_variable(
            dashboard.QueryVariable(name)
            .label(name.capitalize())
            .datasource(DATASOURCE)
            .query(f"label_values({LAST_GOOD}, {name})")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    for panel in board.panels:
        built = built.with_panel(_panel(panel))
    return built.build()


def _panel(panel: Panel) -> Builder[model.Panel]:
    query = prometheus.Dataquery().expr(panel.expr).range().ref_id("A")
    if panel.legend:
        query = query.legend_format(panel.legend)
    if panel.kind == "stat":
        return (
            stat.Panel()
            .title(panel.title)
            .datasource(DATASOURCE)
            .unit(panel.unit)
            .with_target(query)
            .height(4)
            .span(6)
        )
    return (
        timeseries.Panel()
        .title(panel.title)
        .datasource(DATASOURCE)
        .unit(panel.unit)
        .with_target(query)
        .height(8)
        .span(12)
    )


def dashboard_json() -> dict[str, str]:
    """Each dashboard's file name and JSON text, as the SDK encodes it."""
    return {
        f"{board.name}.json": json.dumps(build(board), cls=JSONEncoder, indent=2, sort_keys=True)
        + "\n"
        for board in BOARDS
    }


def schema_problems(text: str) -> list[str]:
    """What in a dashboard's JSON the SDK's dashboard schema does not hold: decoded into
    its models and encoded again, the JSON must come back unchanged (a field the schema
    lacks, or a value of the wrong type, does not), and every panel must be of a kind
    the SDK builds."""
    problems = []
    document = json.loads(text)
    again = json.loads(json.dumps(model.Dashboard.from_json(document), cls=JSONEncoder))
    if again != document:
        extra = sorted(set(document) ^ set(again))
        problems.append(f"not the SDK's dashboard schema (fields differing: {extra or 'nested'})")
    for panel in document.get("panels", []):
        if panel.get("type") not in PANEL_KINDS:
            problems.append(f"panel {panel.get('title')!r}: unknown kind {panel.get('type')!r}")
    return problems


PANEL_KINDS = {"stat", "timeseries"}
"""The panel plugins the dashboards use, as the SDK's builders name them."""
