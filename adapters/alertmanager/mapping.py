"""How Alertmanager alerts become O2ims alarms, and the optional mapping file
(NETWEAVE_ALERTMANAGER_MAPPING, --mapping) that changes it, read strictly: an unknown key or
a wrong type names the key path and the file.

Every key is optional; the defaults are the ones shown (examples/alertmanager-mapping.yaml):

    resource:
      id_label: o2ims_resource_id       # label holding the resource id (resource_id)
      name_labels: [node, instance, hostname]   # else the first of these present, its
                                        # ":port" stripped, is the resource name the core
                                        # resolves (resource_name)
      type_id_label: o2ims_resource_type_id     # label holding the resource type id
      default_id: ""                    # resource of alerts with none of the labels;
                                        # "": such alerts are ignored (and counted)
    severity:
      label: severity                   # label whose value gives perceivedSeverity
      values: {critical: CRITICAL, major: MAJOR, error: MAJOR, minor: MINOR,
               warning: WARNING, info: INDETERMINATE, none: INDETERMINATE}
                                        # merged over these defaults; case-insensitive
      default: INDETERMINATE            # any other (or no) value
    dictionary:
      entity_type: prometheus-alert     # the AlarmDictionary's entityType
      vendor: Prometheus Alertmanager   # and vendor
      schema_version: "1.0"
    default_clearing_type: AUTOMATIC    # AUTOMATIC | MANUAL
    alarms:                             # by alertname: definitions present from the start
      NodeDown:
        description: ""                 # default: the alert's description/summary annotation
        proposed_repair_actions: ""     # default: the runbook_url annotation, if any
        clearing_type: MANUAL           # default: default_clearing_type
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from o2ims.adapter.v1 import domain_pb2

from adapters import mapping_files as mf

SEVERITIES: Final[dict[str, domain_pb2.AlarmSeverity.ValueType]] = {
    "CRITICAL": domain_pb2.ALARM_SEVERITY_CRITICAL,
    "MAJOR": domain_pb2.ALARM_SEVERITY_MAJOR,
    "MINOR": domain_pb2.ALARM_SEVERITY_MINOR,
    "WARNING": domain_pb2.ALARM_SEVERITY_WARNING,
    "INDETERMINATE": domain_pb2.ALARM_SEVERITY_INDETERMINATE,
}
DEFAULT_SEVERITY_VALUES: Final[dict[str, str]] = {
    "critical": "CRITICAL",
    "major": "MAJOR",
    "error": "MAJOR",
    "minor": "MINOR",
    "warning": "WARNING",
    "info": "INDETERMINATE",
    "none": "INDETERMINATE",
}
CLEARING_TYPES: Final[dict[str, domain_pb2.ClearingType.ValueType]] = {
    "AUTOMATIC": domain_pb2.CLEARING_TYPE_AUTOMATIC,
    "MANUAL": domain_pb2.CLEARING_TYPE_MANUAL,
}


@dataclass(frozen=True)
class AlarmSpec:
    """What the mapping file says about one alert name's definition."""

    description: str = ""
    proposed_repair_actions: str = ""
    clearing_type: str = ""  # "": the default clearing type


@dataclass(frozen=True)
class MappingConfig:
    resource_id_label: str = "o2ims_resource_id"
    resource_name_labels: tuple[str, ...] = ("node", "instance", "hostname")
    resource_type_id_label: str = "o2ims_resource_type_id"
    default_resource_id: str = ""
    severity_label: str = "severity"
    severity_values: Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_SEVERITY_VALUES)
    )
    default_severity: str = "INDETERMINATE"
    entity_type: str = "prometheus-alert"
    vendor: str = "Prometheus Alertmanager"
    schema_version: str = "1.0"
    default_clearing_type: str = "AUTOMATIC"
    alarms: Mapping[str, AlarmSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class ResourceRef:
    """Which resource an alert is about: by id, or by name for the core to resolve."""

    resource_id: str = ""
    resource_name: str = ""
    resource_type_id: str = ""

    def __bool__(self) -> bool:
        return bool(self.resource_id or self.resource_name)


def strip_port(value: str) -> str:
    """`host:9100` -> `host`, `[::1]:9100` -> `::1`; anything else as it is (a bare IPv6
    address keeps its colons)."""
    if value.startswith("["):
        end = value.find("]")
        if end > 0 and (value[end + 1 :] == "" or value[end + 1 :].lstrip(":").isdigit()):
            return value[1:end]
        return value
    host, colon, port = value.rpartition(":")
    if colon and host and ":" not in host and port.isdigit():
        return host
    return value


def resource_of(labels: Mapping[str, str], config: MappingConfig) -> ResourceRef:
    """The resource an alert's labels name (empty when they name none and no default)."""
    type_id = labels.get(config.resource_type_id_label, "") if config.resource_type_id_label else ""
    resource_id = labels.get(config.resource_id_label, "") if config.resource_id_label else ""
    if resource_id:
        return ResourceRef(resource_id=resource_id, resource_type_id=type_id)
    for label in config.resource_name_labels:
        name = strip_port(labels.get(label, "").strip())
        if name:
            return ResourceRef(resource_name=name, resource_type_id=type_id)
    return ResourceRef(resource_id=config.default_resource_id, resource_type_id=type_id)


def severity_of(
    labels: Mapping[str, str], config: MappingConfig
) -> domain_pb2.AlarmSeverity.ValueType:
    """The AlarmSeverity of an alert's severity label."""
    value = labels.get(config.severity_label, "").strip().lower()
    return SEVERITIES[config.severity_values.get(value, config.default_severity)]


def clearing_type_of(alert_name: str, config: MappingConfig) -> domain_pb2.ClearingType.ValueType:
    spec = config.alarms.get(alert_name)
    return CLEARING_TYPES[(spec.clearing_type if spec else "") or config.default_clearing_type]


# --- the file ---------------------------------------------------------------------------------


def load_mapping_file(path: Path) -> MappingConfig:
    """The mapping file's configuration; MappingFileError naming the key on any problem."""
    return mf.load(path, _read_config)


def parse_mapping(document: Any, path: str | Path = "<mapping>") -> MappingConfig:
    """Like load_mapping_file, for an already parsed YAML document."""
    return mf.parse(document, path, _read_config)


def _mapping(value: Any, where: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    # A section given no value (`alarms:` alone) is an empty one.
    return mf.mapping(value, where, allowed, optional=True)


def _choice(value: Any, where: str, choices: Mapping[str, object]) -> str:
    text = mf.text(value, where).strip().upper()
    if text not in choices:
        raise mf.Problem(f"{where}: must be one of {', '.join(choices)} (got {value!r})")
    return text


def _read_config(document: Any) -> MappingConfig:
    top = _mapping(
        document, "", ("resource", "severity", "dictionary", "default_clearing_type", "alarms")
    )
    defaults = MappingConfig()
    resource = _mapping(
        top.get("resource"),
        "resource",
        ("id_label", "name_labels", "type_id_label", "default_id"),
    )
    names = resource.get("name_labels", list(defaults.resource_name_labels))
    if not isinstance(names, list):
        raise mf.Problem("resource.name_labels: must be a list of label names")
    name_labels = tuple(
        mf.text(name, f"resource.name_labels[{index}]") for index, name in enumerate(names)
    )
    severity = _mapping(top.get("severity"), "severity", ("label", "values", "default"))
    values = dict(defaults.severity_values)
    for key, value in _mapping(severity.get("values"), "severity.values").items():
        values[key.strip().lower()] = _choice(value, f"severity.values.{key}", SEVERITIES)
    dictionary = _mapping(
        top.get("dictionary"), "dictionary", ("entity_type", "vendor", "schema_version")
    )
    alarms: dict[str, AlarmSpec] = {}
    for name, entry in _mapping(top.get("alarms"), "alarms").items():
        where = f"alarms.{name}"
        spec = _mapping(entry, where, ("description", "proposed_repair_actions", "clearing_type"))
        alarms[name] = AlarmSpec(
            description=mf.text(spec.get("description", ""), f"{where}.description"),
            proposed_repair_actions=mf.text(
                spec.get("proposed_repair_actions", ""), f"{where}.proposed_repair_actions"
            ),
            clearing_type=(
                _choice(spec["clearing_type"], f"{where}.clearing_type", CLEARING_TYPES)
                if "clearing_type" in spec
                else ""
            ),
        )
    return MappingConfig(
        resource_id_label=mf.text(
            resource.get("id_label", defaults.resource_id_label), "resource.id_label"
        ),
        resource_name_labels=name_labels,
        resource_type_id_label=mf.text(
            resource.get("type_id_label", defaults.resource_type_id_label),
            "resource.type_id_label",
        ),
        default_resource_id=mf.text(resource.get("default_id", ""), "resource.default_id"),
        severity_label=mf.text(severity.get("label", defaults.severity_label), "severity.label"),
        severity_values=values,
        default_severity=_choice(
            severity.get("default", defaults.default_severity), "severity.default", SEVERITIES
        ),
        entity_type=mf.text(
            dictionary.get("entity_type", defaults.entity_type), "dictionary.entity_type"
        ),
        vendor=mf.text(dictionary.get("vendor", defaults.vendor), "dictionary.vendor"),
        schema_version=mf.text(
            dictionary.get("schema_version", defaults.schema_version), "dictionary.schema_version"
        ),
        default_clearing_type=_choice(
            top.get("default_clearing_type", defaults.default_clearing_type),
            "default_clearing_type",
            CLEARING_TYPES,
        ),
        alarms=alarms,
    )
