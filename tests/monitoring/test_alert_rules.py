"""The alert rules: valid for promtool, unit-tested, tiered, and each with a runbook entry."""

from __future__ import annotations

from collections import Counter

import yaml

from tests.monitoring.contract import (
    ALERT_RULES,
    ALERT_TESTS,
    RUNBOOK_BASE,
    RUNBOOKS,
    github_anchors,
    load_rules,
    metric_names,
    recorded_series,
    run_promtool,
    unknown_metrics,
)

TIER_SEVERITY = {"P1": "critical", "P2": "warning", "P3": "info"}

# The operations guide's tiers (issue 16), as (alert, tier).
EXPECTED_ALERTS = {
    ("NetweaveGatewayReplicasLow", "P1"),
    ("NetweaveRedisPrimaryDown", "P1"),
    ("NetweaveAPIErrorRateHigh", "P1"),
    ("NetweaveAPILatencyHigh", "P1"),
    ("NetweaveCertificateExpiring", "P1"),
    ("NetweaveAPIErrorRateHigh", "P2"),
    ("NetweaveAPILatencyHigh", "P2"),
    ("NetweaveCacheHitRatioLow", "P2"),
    ("NetweaveRedisReplicaDown", "P2"),
    ("NetweaveCertificateExpiring", "P2"),
    ("NetweaveNotificationBacklogGrowing", "P2"),
    ("NetweaveDeadLettersAppearing", "P2"),
    ("NetweaveAdapterDown", "P2"),
    ("NetweaveResourcePoolCountDrop", "P3"),
    ("NetweaveNoSubscriptionActivity", "P3"),
    ("NetweaveBackendLatencyIncreasing", "P3"),
}

# Runbook entries for the errors an operator sees, beside the alerts' own.
ERROR_ENTRIES = {
    "401-unauthorized",
    "403-forbidden",
    "429-too-many-requests",
    "502-bad-gateway",
    "503-service-unavailable",
    "504-gateway-timeout",
    "tls-handshake-failures",
    "redis-down",
    "adapter-down",
    "notification-backlog",
    "dead-letters",
    "certificate-expiry-and-rotation",
    "slos",
}


def alerts() -> list[dict[str, object]]:
    return [rule for rule in load_rules() if "alert" in rule]


def test_promtool_check_rules_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", ALERT_RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", ALERT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_expected_alert_is_defined_at_its_tier() -> None:
    defined = {(str(rule["alert"]), rule["labels"]["tier"]) for rule in alerts()}  # type: ignore[index]
    assert EXPECTED_ALERTS - defined == set()


def test_every_alert_has_severity_tier_and_annotations() -> None:
    for rule in alerts():
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict) and isinstance(annotations, dict), rule["alert"]
        tier = str(labels.get("tier"))
        assert TIER_SEVERITY.get(tier) == labels.get("severity"), rule["alert"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), rule["alert"]
        assert rule.get("for") is not None, f"{rule['alert']} has no for: duration"


def test_every_runbook_url_names_an_existing_entry() -> None:
    anchors = github_anchors(RUNBOOKS.read_text())
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]  # type: ignore[index]
        assert url.startswith(RUNBOOK_BASE), url
        anchor = url.removeprefix(RUNBOOK_BASE)
        assert anchor == str(rule["alert"]).lower(), f"{rule['alert']} points at #{anchor}"
        assert anchor in anchors, f"docs/runbooks.md has no heading for #{anchor}"


def test_runbooks_cover_the_errors_an_operator_sees() -> None:
    assert ERROR_ENTRIES - github_anchors(RUNBOOKS.read_text()) == set()


def test_runbook_entries_have_symptoms_diagnosis_and_resolution() -> None:
    sections = RUNBOOKS.read_text().split("\n### ")[1:]
    assert len(sections) >= len({name for name, _ in EXPECTED_ALERTS}) + 12
    for section in sections:
        title = section.splitlines()[0]
        for part in ("**Symptoms.**", "**Diagnosis", "**Resolution"):
            assert part in section, f"runbook entry {title!r} lacks {part}"


def test_every_alert_rule_fires_and_stays_silent_in_the_unit_tests() -> None:
    """Per (alert, tier): one test case expecting it, one where the alert stays silent."""
    document = yaml.safe_load(ALERT_TESTS.read_text())
    fired: Counter[tuple[str, str]] = Counter()
    silent: Counter[str] = Counter()
    for case in document["tests"]:
        for check in case.get("alert_rule_test", []):
            expected = check.get("exp_alerts") or []
            if not expected:
                silent[check["alertname"]] += 1
            for alert in expected:
                fired[(check["alertname"], alert["exp_labels"]["tier"])] += 1
                assert "runbook_url" in alert.get("exp_annotations", {}), check["alertname"]
    for rule in alerts():
        key = (str(rule["alert"]), rule["labels"]["tier"])  # type: ignore[index]
        assert fired[key] > 0, f"no unit test where {key} fires"
        assert silent[key[0]] > 0, f"no unit test where {key[0]} stays silent"


def test_rules_name_only_contract_metrics() -> None:
    recorded = recorded_series()
    for rule in load_rules():
        names = metric_names(str(rule["expr"]))
        assert names, f"no metric found in {rule['expr']!r}"
        assert unknown_metrics(names, recorded) == set(), rule.get("alert", rule.get("record"))


def test_alert_names_are_unique_per_tier() -> None:
    keys = [(str(rule["alert"]), rule["labels"]["tier"]) for rule in alerts()]  # type: ignore[index]
    assert len(keys) == len(set(keys))
