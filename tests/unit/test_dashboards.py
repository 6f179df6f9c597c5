"""The dashboards: held by the SDK's schema, current in the chart, every query naming
only series the roles serve (their evaluation on a real Prometheus is make observe-test)."""

from __future__ import annotations

import json
import re

from observability.dashboards import BOARDS, DATASOURCE, dashboard_json, panels, schema_problems
from observability.generate import stale
from tests.metric_names import exported_metric_names


def test_every_dashboard_holds_to_the_sdks_schema() -> None:
    for name, text in dashboard_json().items():
        assert schema_problems(text) == [], name
    broken = json.loads(dashboard_json()["overview.json"])
    broken["panels"][0]["surprise"] = 1
    broken["panels"][1]["type"] = "worldmap"
    problems = schema_problems(json.dumps(broken))
    assert len(problems) == 2 and "worldmap" in problems[1], problems


def test_the_shipped_files_are_what_the_code_makes() -> None:
    assert stale() == [], "run: .venv/bin/python -m observability.generate"


def test_each_dashboard_has_its_own_uid_and_every_panel_the_data_source_variable() -> None:
    assert len({board.uid for board in BOARDS}) == len(BOARDS) == 5
    for name, text in dashboard_json().items():
        document = json.loads(text)
        assert document["tags"] == ["blockferry"]
        variables = {v["name"] for v in document["templating"]["list"]}
        assert "datasource" in variables, name
        for panel in document["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE.uid}
            (target,) = panel["targets"]
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__range", "__rate_interval"}
            assert used <= variables, (name, panel["title"], used)


def test_every_query_names_only_series_the_roles_serve() -> None:
    known = exported_metric_names()
    for panel in panels():
        for pattern in re.findall(r'__name__=~"([^"]+)"', panel.expr):
            assert any(re.fullmatch(pattern, name) for name in known), (panel.title, pattern)
        without_patterns = re.sub(r"\{[^}]*\}", "", panel.expr)
        named = set(re.findall(r"\b(?:blockferry_[a-z_]+|up)\b", without_patterns))
        assert named <= known, (panel.title, named - known)
    assert sum(panel.nonzero for panel in panels()) >= 25
