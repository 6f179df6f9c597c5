"""The dashboards: held to the SDK's schema, current in the chart, each reading the data
source variable, and every query naming only series the roles serve (evaluating them on
a real Prometheus is ``make observe-test``)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from observability.dashboards import DATASOURCE, dashboard_json, panels
from observability.generate import DASHBOARDS_DIR, ROOT, generated, main, stale, write
from observability.schema_check import SchemaError, check_dashboard
from tests.metric_names import exported_metric_names

VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$repository": ".*",
    "$job": ".*",
}
"""What the observability test puts in place of each variable a query may use."""


def documents() -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in dashboard_json().items()}


@pytest.mark.parametrize("name", sorted(dashboard_json()))
def test_every_dashboard_holds_to_the_sdks_schema(name: str) -> None:
    check_dashboard(dashboard_json()[name], name)


def _panel_of(kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def first(document: dict[str, Any]) -> dict[str, Any]:
        panel: dict[str, Any] = next(p for p in document["panels"] if p["type"] == kind)
        return panel

    return first


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda target: target.__setitem__(key, value)


TIMESERIES = _panel_of("timeseries")
STAT = _panel_of("stat")
BREAKS = [
    ("an unknown field", _set("owner", "me"), "owner: not a field of"),
    ("a title not text", _set("title", 5), "title: int 5 where str"),
    ("no schema version", lambda d: d.pop("schemaVersion"), "no 'schemaVersion'"),
    ("a tooltip outside its enum", _set("graphTooltip", 7), "graphTooltip: 7"),
    (
        "a panel type the SDK lacks",
        lambda d: _set("type", "worldmap")(TIMESERIES(d)),
        "'worldmap' is not a panel type",
    ),
    (
        "a panel width as text",
        lambda d: _set("w", "12")(TIMESERIES(d)["gridPos"]),
        r"gridPos\.w: str '12' where int",
    ),
    (
        "a panel option its plugin lacks",
        lambda d: _set("sparkles", True)(TIMESERIES(d)["options"]),
        r"options\.sparkles: not a field of timeseries\.Options",
    ),
    (
        "a stat colour mode outside its enum",
        lambda d: _set("colorMode", "rainbow")(STAT(d)["options"]),
        r"options\.colorMode: 'rainbow'",
    ),
    (
        "a custom field config of the wrong type",
        lambda d: _set("fillOpacity", "lots")(TIMESERIES(d)["fieldConfig"]["defaults"]["custom"]),
        r"custom\.fillOpacity: str 'lots' where float",
    ),
    (
        "a query without its expression",
        lambda d: TIMESERIES(d)["targets"][0].pop("expr"),
        r"targets\[0\]: no 'expr', which prometheus\.Dataquery requires",
    ),
    (
        "a data source type the SDK lacks",
        lambda d: _set("type", "influx")(TIMESERIES(d)["datasource"]),
        "'influx' is not a data source",
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"),
    [(change, expected) for _, change, expected in BREAKS],
    ids=[name for name, _, _ in BREAKS],
)
def test_the_schema_check_names_what_breaks_the_schema(
    change: Callable[[dict[str, Any]], object], expected: str
) -> None:
    document = copy.deepcopy(documents()["overview.json"])
    change(document)
    with pytest.raises(SchemaError, match=expected):
        check_dashboard(json.dumps(document), "overview.json")


def test_the_schema_check_refuses_what_is_not_json() -> None:
    with pytest.raises(SchemaError, match=r"checking overview\.json .*: Expecting property name"):
        check_dashboard("{", "overview.json")


def test_each_dashboard_has_its_own_uid_title_and_the_projects_tag() -> None:
    found = documents()
    assert sorted(found) == [
        "jobs.json",
        "kafka.json",
        "overview.json",
        "repositories.json",
        "roles.json",
    ]
    uids = [document["uid"] for document in found.values()]
    assert len(set(uids)) == len(uids)
    for name, document in found.items():
        assert document["uid"] == f"blockferry-{name.removesuffix('.json')}"
        assert len(document["uid"]) <= 40
        assert document["title"].startswith("blockferry / ")
        assert document["tags"] == ["blockferry"]
        assert 5 <= len(document["panels"]) <= 12, name
        ids = [panel["id"] for panel in document["panels"]]
        assert len(set(ids)) == len(ids), name


def test_every_panel_and_variable_reads_the_datasource_variable() -> None:
    reference = {"type": "prometheus", "uid": DATASOURCE.uid}
    assert DATASOURCE.uid == "${datasource}"
    for name, document in documents().items():
        variables = {v["name"]: v for v in document["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"] == reference, (name, variable["name"])
        for panel in document["panels"]:
            assert panel["datasource"] == reference, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"] == reference, (name, panel["title"])
                used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__range"}
                assert used <= set(variables), (name, panel["title"], used)


def test_panels_lists_every_query_of_every_dashboard() -> None:
    exprs = {
        (document["uid"], panel["title"], target["expr"])
        for document in documents().values()
        for panel in document["panels"]
        for target in panel["targets"]
    }
    assert {(p.dashboard, p.title, p.expr) for p in panels()} == exprs
    assert {p.dashboard for p in panels() if p.nonzero} == {d["uid"] for d in documents().values()}


def test_every_query_takes_the_variables_the_observability_test_substitutes() -> None:
    for panel in panels():
        for variable in ("$repository", "$job"):
            assert panel.expr.count(variable) == panel.expr.count(f'=~"{variable}"'), panel
        expr = panel.expr
        for variable, value in sorted(VARIABLES.items(), key=lambda item: -len(item[0])):
            expr = expr.replace(variable, value)
        assert "$" not in expr, panel


def named_series(expr: str) -> set[str]:
    """The series an expression reads: bare names, and each name a ``__name__=~``
    matcher's alternation (``blockferry_(a|b)_x``) spells out."""
    names = set()
    for pattern in re.findall(r'__name__=~"([^"]+)"', expr):
        group = re.search(r"\(([^()]+)\)", pattern)
        assert group is not None and not re.search(r"[.*+?\[\]]", pattern), pattern
        names |= {pattern.replace(group.group(0), choice) for choice in group[1].split("|")}
    bare = re.sub(r'__name__=~"[^"]+"', "", expr)
    names |= set(re.findall(r"\bblockferry_\w+", bare))
    names |= {"up"} if re.search(r"\bup\{", bare) else set()
    return names


def test_every_query_names_only_series_the_roles_serve() -> None:
    served = exported_metric_names()
    for panel in panels():
        named = named_series(panel.expr)
        assert named, panel
        assert named <= served, (panel.title, named - served)


def test_the_shipped_files_are_what_the_code_makes() -> None:
    assert stale() == [], "run: .venv/bin/python -m observability.generate"
    assert main(["--check"]) == 0


def test_check_names_each_stale_shipped_file(tmp_path: Path) -> None:
    dashboards = tmp_path / DASHBOARDS_DIR.relative_to(ROOT)
    assert set(stale(tmp_path)) == set(generated())
    assert set(write(tmp_path)) == set(generated())
    assert stale(tmp_path) == []
    (dashboards / "jobs.json").write_text("{}\n")
    (dashboards / "retired.json").write_text("{}\n")
    assert [path.name for path in stale(tmp_path)] == ["jobs.json", "retired.json"]
    assert [path.name for path in write(tmp_path)] == ["jobs.json", "retired.json"]
    assert not (dashboards / "retired.json").exists()
    assert stale(tmp_path) == []
