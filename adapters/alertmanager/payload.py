"""Alertmanager's webhook payload (`webhook_config`, version "4"), parsed strictly: anything
that is not one is a PayloadError naming the field (`alerts[2].startsAt`).

    {"version": "4", "groupKey": "...", "truncatedAlerts": 0, "status": "firing",
     "receiver": "...", "groupLabels": {...}, "commonLabels": {...},
     "commonAnnotations": {...}, "externalURL": "...",
     "alerts": [{"status": "firing", "labels": {...}, "annotations": {...},
                 "startsAt": "...", "endsAt": "...", "generatorURL": "...",
                 "fingerprint": "..."}]}

Alertmanager sends a firing alert's endsAt as the zero time (0001-01-01T00:00:00Z) and
gives a resolved one its real end; other senders may give a firing alert a future endsAt,
after which it counts as resolved (Alertmanager's own rule).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

SUPPORTED_VERSION: Final = "4"
FIRING: Final = "firing"
RESOLVED: Final = "resolved"
STATUSES: Final = (FIRING, RESOLVED)

# Prometheus' label-set fingerprint (prometheus/common model.LabelSet.Fingerprint): FNV-1a
# 64 over the sorted names and values, each followed by the separator byte 0xff.
_FNV_OFFSET: Final = 14695981039346656037
_FNV_PRIME: Final = 1099511628211
_SEPARATOR: Final = 0xFF
_MASK: Final = (1 << 64) - 1


class PayloadError(ValueError):
    """Not a version 4 webhook payload; `field` names what is wrong (may be "")."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


@dataclass(frozen=True)
class Alert:
    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    # None: no end known (Alertmanager's zero time, or absent).
    ends_at: datetime | None
    generator_url: str
    # As sent ("" when absent); fingerprint() is what identifies the alert.
    sent_fingerprint: str

    @property
    def alert_name(self) -> str:
        return self.labels.get("alertname", "")

    def fingerprint(self) -> str:
        return label_fingerprint(self.labels)


@dataclass(frozen=True)
class Notification:
    version: str
    group_key: str
    truncated_alerts: int
    status: str
    receiver: str
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    alerts: tuple[Alert, ...]


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of an alert: a hash of its labels, 16 hex digits."""
    digest = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                digest = ((digest ^ byte) * _FNV_PRIME) & _MASK
            digest = ((digest ^ _SEPARATOR) * _FNV_PRIME) & _MASK
    return f"{digest:016x}"


def parse_time(value: Any, where: str) -> datetime | None:
    """An RFC 3339 time (nanoseconds allowed) as an aware UTC datetime; None for Go's zero
    time, which Alertmanager sends for "no end"."""
    if not isinstance(value, str) or not value:
        raise PayloadError(where, "must be an RFC 3339 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError(where, f"not an RFC 3339 date-time: {value[:64]!r}") from None
    if parsed.tzinfo is None:
        raise PayloadError(where, f"has no time zone: {value[:64]!r}")
    if parsed.year <= 1:
        return None
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, microseconds only when there are any."""
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(where, "must be a JSON object")
    return value


def _labels(value: Any, where: str, required: bool = False) -> dict[str, str]:
    if value is None and not required:
        return {}
    found = _object(value, where)
    for key, item in found.items():
        if not isinstance(item, str):
            raise PayloadError(f"{where}.{key}", "must be a string")
    return found


def _string(document: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    if key not in document or document[key] is None:
        if required:
            raise PayloadError(_at(where, key), "is required")
        return ""
    value = document[key]
    if not isinstance(value, str):
        raise PayloadError(_at(where, key), "must be a string")
    return value


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _status(document: dict[str, Any], where: str) -> str:
    status = _string(document, "status", where, required=True)
    if status not in STATUSES:
        raise PayloadError(_at(where, "status"), f"must be firing or resolved, got {status!r}")
    return status


def _alert(value: Any, where: str) -> Alert:
    document = _object(value, where)
    status = _status(document, where)
    if "labels" not in document:
        raise PayloadError(f"{where}.labels", "is required")
    labels = _labels(document["labels"], f"{where}.labels", required=True)
    if not labels.get("alertname"):
        raise PayloadError(f"{where}.labels.alertname", "is required")
    if "startsAt" not in document:
        raise PayloadError(f"{where}.startsAt", "is required")
    starts_at = parse_time(document["startsAt"], f"{where}.startsAt")
    if starts_at is None:
        raise PayloadError(f"{where}.startsAt", "must not be the zero time")
    ends_at = parse_time(document["endsAt"], f"{where}.endsAt") if document.get("endsAt") else None
    return Alert(
        status=status,
        labels=labels,
        annotations=_labels(document.get("annotations"), f"{where}.annotations"),
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url=_string(document, "generatorURL", where),
        sent_fingerprint=_string(document, "fingerprint", where),
    )


def parse_notification(body: bytes) -> Notification:
    """The webhook payload in `body`; PayloadError naming the field if it is not one."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise PayloadError("", f"the body is not JSON: {error}") from None
    top = _object(document, "the body")
    version = _string(top, "version", "", required=True)
    if version != SUPPORTED_VERSION:
        raise PayloadError(
            "version", f"unsupported webhook payload version {version!r} (expected '4')"
        )
    if "alerts" not in top:
        raise PayloadError("alerts", "is required")
    if not isinstance(top["alerts"], list):
        raise PayloadError("alerts", "must be a JSON array")
    truncated = top.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise PayloadError("truncatedAlerts", "must be a non-negative integer")
    return Notification(
        version=version,
        group_key=_string(top, "groupKey", ""),
        truncated_alerts=truncated,
        status=_status(top, ""),
        receiver=_string(top, "receiver", ""),
        group_labels=_labels(top.get("groupLabels"), "groupLabels"),
        common_labels=_labels(top.get("commonLabels"), "commonLabels"),
        common_annotations=_labels(top.get("commonAnnotations"), "commonAnnotations"),
        external_url=_string(top, "externalURL", ""),
        alerts=tuple(
            _alert(alert, f"alerts[{index}]") for index, alert in enumerate(top["alerts"])
        ),
    )
