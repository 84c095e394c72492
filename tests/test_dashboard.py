"""The Grafana dashboard (config/grafana-dashboard.json) and the alert rules read only
what a supervisor exports: every metric name in their expressions is in a running
supervisor's `/metrics`. The dashboard's expressions are valid PromQL (promtool), and
it shows what an operator watches."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import promtool
from tests.harness.cluster import Cluster
from tests.harness.host import http_get
from tests.harness.paths import REPO
from tests.harness.promtool import alert_rules, metric_names, to_yaml

pytestmark = pytest.mark.timeout(60)

DASHBOARD = REPO / "config" / "grafana-dashboard.json"
#: Series Prometheus makes itself, which the rules may read.
PROMETHEUS_OWN = {"up"}
#: What the dashboard must show (the metrics of the items an operator watches).
SHOWN = {"corda_ha_state", "corda_ha_lease_held", "corda_ha_epoch",
         "corda_ha_last_renewal_age_seconds", "corda_ha_kill_after_seconds",
         "corda_ha_lease_renewals_total", "corda_ha_lease_renewal_failures_total",
         "corda_ha_node_restarts_total", "corda_ha_database_reachable",
         "corda_ha_can_take_over", "corda_ha_fencing_ready"}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def expressions(dash: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def variable_metrics(dash: dict[str, Any]) -> set[str]:
    """The metrics of the template variables' `label_values(metric, label)` queries."""
    names = set()
    for v in dash["templating"]["list"]:
        query = v.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        found = re.fullmatch(r"label_values\(\s*([A-Za-z_:][\w:]*)[^,]*,\s*\w+\s*\)", text)
        if v["type"] == "query":
            assert found, f"variable {v['name']}: {text!r}"
            names.add(found.group(1))
    return names


def dashboard_metrics() -> set[str]:
    dash = dashboard()
    names = set().union(*(metric_names(e) for e in expressions(dash)))
    return names | variable_metrics(dash)


def test_the_dashboard_is_well_formed() -> None:
    dash = dashboard()
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["lease"]["includeAll"] and variables["lease"]["allValue"] == ".*"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + \
            p["gridPos"]["w"] <= 24, p["title"]
        assert p["targets"] and p["description"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
    shown = dashboard_metrics()
    assert shown >= SHOWN, SHOWN - shown


def test_the_dashboard_queries_are_promql(tmp_path: Path) -> None:
    """Each expression, with Grafana's variables filled in, as a recording rule: promtool
    parses them all."""
    promtool.require()
    filled = [e.replace("$__rate_interval", "1m").replace("$lease", ".*")
              for e in expressions(dashboard())]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(filled)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(to_yaml(rules))
    assert promtool.check_rules(path) == len(filled)


def exported(port: int) -> tuple[set[str], str]:
    code, body = http_get(port, "/metrics")
    assert code == 200
    text = body.decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return names, text


def test_every_metric_the_dashboard_and_the_rules_read_is_exported(pair: Cluster) -> None:
    a = pair.add("a")
    a.start()
    a.wait_node_up(15)
    a.wait_event("lease_renewed", 10)
    names, text = exported(a.health_port())
    used = dashboard_metrics()
    assert len(used) >= 12, used  # the reader found the queries
    missing = used - names
    assert not missing, (f"config/grafana-dashboard.json reads metrics no supervisor "
                         f"exports: {missing}")
    for rule in alert_rules():
        missing = metric_names(rule.expr) - names - PROMETHEUS_OWN
        assert not missing, (f"config/prometheus-alerts.yml {rule.alert} reads metrics no "
                             f"supervisor exports: {missing}")
    # what the rules join on: the machine's name (and, once the daemon gives it, the lease)
    assert re.search(r'^corda_ha_supervisor_info\{.*machine_name="a".*\} 1\.0$', text, re.M)
    assert re.search(r"^corda_ha_kill_after_seconds 1\.8$", text, re.M)  # lab W - M
    assert re.search(r"^corda_ha_fencing_ready NaN$", text, re.M)  # no fencing here
