"""The Grafana dashboard: its shape, every query valid PromQL (promtool), contract metrics only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.contract import (
    DASHBOARD,
    GRAFANA_VARIABLES,
    metric_names,
    recorded_series,
    run_promtool,
    unknown_metrics,
)

# What the dashboard must show (issue 16), each as a metric some query reads.
REQUIRED_METRICS = {
    "o2ims_http_requests_total": "traffic and errors per route",
    "o2ims_http_request_duration_seconds_bucket": "latency p50/p95/p99",
    "process_cpu_seconds_total": "saturation: CPU",
    "envoy_http_downstream_rq_active": "saturation: requests in flight",
    "o2ims_auth_total": "authentication failures",
    "o2ims_authz_total": "authorization denials",
    "envoy_http_local_rate_limit_rate_limited": "rate limiting",
    "o2ims_cache_reads_total": "cache hit ratio",
    "o2ims_redis_commands_total": "Redis commands",
    "o2ims_redis_up": "Redis health",
    "o2ims_adapter_sync_lag_seconds": "adapter sync lag",
    "o2ims_inventory_objects": "adapter objects",
    "o2ims_adapter_connected": "adapter up",
    "o2ims_webhook_delivery_total": "notifications delivered, retried",
    "o2ims_webhook_dead_letters": "dead letters",
    "o2ims_webhook_delivery_latency_seconds_bucket": "notification latency",
    "o2ims_webhook_queue_depth": "notification backlog",
    "o2ims_alarms": "alarms by severity",
    "o2ims_certificate_expiry_seconds": "certificate expiry",
}


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of every panel, rows' nested panels included."""
    found: list[tuple[str, str]] = []
    for panel in dashboard()["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], t["expr"]) for t in inner.get("targets", []) if "expr" in t]
    return found


def concrete(expr: str) -> str:
    """The expression with Grafana's variables replaced by values PromQL accepts."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable is left unsubstituted in {expr!r}"
    return expr


def test_dashboard_shape() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert len(rows) >= 8, rows
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], f"panel {panel['title']!r} has no query"


def test_dashboard_covers_what_the_operator_needs() -> None:
    used = set().union(*(metric_names(concrete(expr)) for _, expr in queries()))
    missing = {name: why for name, why in REQUIRED_METRICS.items() if name not in used}
    assert missing == {}


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each query, written as a recording rule with the variables filled in."""
    rules = [
        {"record": f"dashboard:query_{index}", "expr": concrete(expr)}
        for index, (_, expr) in enumerate(queries())
    ]
    assert len(rules) >= 40
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_promtool_refuses_a_broken_query(tmp_path: Path) -> None:
    """The parse check above can fail: a query missing a parenthesis is refused."""
    path = tmp_path / "broken.yaml"
    broken = {"record": "dashboard:broken", "expr": "sum(rate(o2ims_http_requests_total[5m])"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "broken", "rules": [broken]}]}))
    result = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode != 0


@pytest.mark.parametrize(("title", "expr"), queries())
def test_dashboard_names_only_contract_metrics(title: str, expr: str) -> None:
    names = metric_names(concrete(expr))
    assert names, f"{title}: no metric in {expr!r}"
    assert unknown_metrics(names, recorded_series()) == set(), title
