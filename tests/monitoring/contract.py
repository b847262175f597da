"""The metric contract of the monitoring artefacts, and what the tests need to hold them to it.

The dashboard and the alert rules may only name metrics listed here (a typo must fail a test),
and every PromQL expression they hold must parse; promtool is the parser.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deployments" / "monitoring"
ALERT_RULES = MONITORING / "prometheus-alerts-adapters.yaml"
ALERT_TESTS = MONITORING / "prometheus-alerts-adapters.test.yaml"
DASHBOARD = MONITORING / "grafana-dashboard-adapters.json"
RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/netweave/netweave/blob/main/docs/runbooks.md#"

# Counters and gauges of the core, the notifier and Prometheus itself, by exposed name.
METRICS = frozenset(
    {
        "up",
        "o2ims_http_requests_total",
        "o2ims_grpc_requests_total",
        "o2ims_auth_total",
        "o2ims_authz_total",
        "o2ims_redis_commands_total",
        "o2ims_redis_up",
        "o2ims_redis_connected_replicas",
        "o2ims_redis_unreplicated_writes_total",
        "o2ims_cache_reads_total",
        "o2ims_ready",
        "o2ims_build_info",
        "o2ims_certificate_expiry_seconds",
        "o2ims_inventory_objects",
        # Not in the list; named by docs/operations.md (bumped per applied change).
        "o2ims_inventory_version",
        "o2ims_adapter_connected",
        "o2ims_adapter_sync_lag_seconds",
        "o2ims_alarms",
        "o2ims_webhook_delivery_total",
        "o2ims_webhook_queue_depth",
        "o2ims_webhook_queue_depth_max",
        "o2ims_webhook_dead_letters",
        "o2ims_notifier_matcher_lag",
        "o2ims_subscriptions",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        # Envoy's statistics (job netweave-envoy), names as Envoy 1.40 exports them.
        "envoy_http_downstream_rq_xx",
        "envoy_http_downstream_rq_active",
        "envoy_cluster_upstream_rq_active",
        "envoy_cluster_upstream_rq_pending_active",
        "envoy_http_local_rate_limit_rate_limited",
        "envoy_listener_ssl_connection_error",
        "envoy_listener_ssl_fail_verify_error",
        "envoy_listener_ssl_fail_verify_no_cert",
        "envoy_listener_ssl_fail_verify_san",
    }
)
# Histograms, by base name: each exposes _bucket, _count and _sum.
HISTOGRAMS = frozenset(
    {
        "o2ims_http_request_duration_seconds",
        "o2ims_grpc_request_duration_seconds",
        "o2ims_adapter_backend_request_duration_seconds",
        "o2ims_webhook_delivery_latency_seconds",
        "envoy_cluster_upstream_rq_time",
    }
)

# Concrete values for Grafana's variables, so a dashboard query becomes plain PromQL.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "6h",
    "${datasource}": "prometheus",
    "$route": ".*",
}

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "bool", "inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_RANGE = re.compile(r"\[[^\[\]]*\]")
# Whole identifiers only (no backtracking into "su" of "sum("), not followed by "(".
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric (and recorded-series) names an expression selects.

    Strings, label matchers, grouping clauses and range durations are removed first, so what
    is left are function names (followed by a parenthesis), keywords and selectors."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _GROUPING.sub("", text)
    text = _RANGE.sub("", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def unknown_metrics(names: set[str], recorded: set[str]) -> set[str]:
    """The names that are neither in the contract nor recorded by the alert rules."""
    known = set(METRICS) | recorded
    for histogram in HISTOGRAMS:
        known |= {f"{histogram}_bucket", f"{histogram}_count", f"{histogram}_sum"}
    return names - known


def promtool() -> str:
    """Path of promtool (Debian package prometheus, installed by `make system-deps`)."""
    path = shutil.which("promtool")
    assert path is not None, "promtool not found: install the Debian package prometheus"
    return path


def run_promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def load_rules() -> list[dict[str, Any]]:
    """Every rule of the alert rules file, in file order."""
    document = yaml.safe_load(ALERT_RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def recorded_series() -> set[str]:
    return {rule["record"] for rule in load_rules() if "record" in rule}


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown document.

    Lower case, punctuation other than hyphens and underscores removed, spaces to hyphens; a
    repeated anchor gets -1, -2, ... Headings inside fenced code blocks are not headings."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_fence or match is None:
            continue
        title = re.sub(r"`|\*\*|\*", "", match.group(1)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors
