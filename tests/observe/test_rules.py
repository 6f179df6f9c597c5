"""The alert rules as Prometheus's own tool reads them: the shipped file is valid and
current, and every alert fires on its firing series and stays quiet on its calm one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from observability.alerts import ALERTS, RULES_FILE, promtool_tests, rules_yaml
from tests.metric_names import exported_metric_names
from tests.system import need_commands


def test_the_shipped_rules_file_is_current_and_valid() -> None:
    need_commands("prometheus", "promtool")
    assert RULES_FILE.read_text() == rules_yaml(), "run: .venv/bin/python -m observability.generate"
    checked = subprocess.run(
        ["promtool", "check", "rules", str(RULES_FILE)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_every_alert_fires_on_its_case_and_not_on_its_calm_one(tmp_path: Path) -> None:
    need_commands("prometheus", "promtool")
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump(promtool_tests(str(RULES_FILE)), sort_keys=False))
    run = subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    cases = yaml.safe_load(tests.read_text())["tests"]
    fired = {
        (case["alert_rule_test"][0]["alertname"], bool(case["alert_rule_test"][0]["exp_alerts"]))
        for case in cases
    }
    assert fired == {(alert.name, firing) for alert in ALERTS for firing in (True, False)}


def test_alert_rules_name_metrics_the_roles_export_and_tell_what_to_do() -> None:
    known = exported_metric_names()
    assert len({alert.name for alert in ALERTS}) == len(ALERTS)
    for alert in ALERTS:
        named = set(re.findall(r"\bblockferry_[a-z_]+", alert.expr + " " + alert.signal))
        for pattern in re.findall(r'__name__=~"([^"]+)"', alert.expr + alert.signal):
            matched = {name for name in known if re.fullmatch(pattern, name)}
            assert matched, f"{alert.name}: no metric matches {pattern}"
        assert named <= known | {"blockferry_"}, f"{alert.name}: {named - known}"
        assert alert.severity in ("warning", "critical")
        assert len(alert.runbook) > 100 and alert.summary
