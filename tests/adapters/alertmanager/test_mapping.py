"""How alert labels map to resources and severities, and the strict mapping file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from o2ims.adapter.v1 import domain_pb2

from adapters.alertmanager.mapping import (
    MappingConfig,
    ResourceRef,
    clearing_type_of,
    load_mapping_file,
    parse_mapping,
    resource_of,
    severity_of,
    strip_port,
)
from adapters.mapping_files import MappingFileError

REPO = Path(__file__).resolve().parents[3]
DEFAULT = MappingConfig()


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"o2ims_resource_id": "r-1", "node": "n"}, ResourceRef(resource_id="r-1")),
        ({"node": "worker-1", "instance": "x:9100"}, ResourceRef(resource_name="worker-1")),
        ({"instance": "worker-2.example:9100"}, ResourceRef(resource_name="worker-2.example")),
        ({"instance": "10.0.0.7:9100"}, ResourceRef(resource_name="10.0.0.7")),
        ({"instance": "[fd00::7]:9100"}, ResourceRef(resource_name="fd00::7")),
        ({"instance": "fd00::7"}, ResourceRef(resource_name="fd00::7")),
        ({"hostname": "bmc-3"}, ResourceRef(resource_name="bmc-3")),
        (
            {"node": "n", "o2ims_resource_type_id": "t-1"},
            ResourceRef(resource_name="n", resource_type_id="t-1"),
        ),
        ({"job": "prometheus"}, ResourceRef()),
    ],
)
def test_the_resource_comes_from_the_id_label_else_the_first_name_label(
    labels: dict[str, str], expected: ResourceRef
) -> None:
    assert resource_of(labels, DEFAULT) == expected


def test_an_alert_naming_no_resource_is_none_unless_a_default_is_set() -> None:
    assert not resource_of({"job": "x"}, DEFAULT)
    config = parse_mapping({"resource": {"default_id": "cloud-1"}})
    assert resource_of({"job": "x"}, config) == ResourceRef(resource_id="cloud-1")


def test_strip_port_only_strips_ports() -> None:
    assert strip_port("host:9100") == "host"
    assert strip_port("host") == "host"
    assert strip_port("host:http") == "host:http"
    assert strip_port("[::1]") == "::1"


@pytest.mark.parametrize(
    ("value", "severity"),
    [
        ("critical", domain_pb2.ALARM_SEVERITY_CRITICAL),
        ("Critical", domain_pb2.ALARM_SEVERITY_CRITICAL),
        ("major", domain_pb2.ALARM_SEVERITY_MAJOR),
        ("error", domain_pb2.ALARM_SEVERITY_MAJOR),
        ("minor", domain_pb2.ALARM_SEVERITY_MINOR),
        ("warning", domain_pb2.ALARM_SEVERITY_WARNING),
        ("info", domain_pb2.ALARM_SEVERITY_INDETERMINATE),
        ("none", domain_pb2.ALARM_SEVERITY_INDETERMINATE),
        ("page", domain_pb2.ALARM_SEVERITY_INDETERMINATE),
        ("", domain_pb2.ALARM_SEVERITY_INDETERMINATE),
    ],
)
def test_severity_label_values_map_to_perceived_severity(value: str, severity: int) -> None:
    assert severity_of({"severity": value} if value else {}, DEFAULT) == severity


def test_the_mapping_file_overrides_labels_severities_and_clearing() -> None:
    config = parse_mapping(
        {
            "resource": {"id_label": "rid", "name_labels": ["host"], "type_id_label": "tid"},
            "severity": {"label": "priority", "values": {"P1": "critical"}, "default": "warning"},
            "default_clearing_type": "manual",
            "alarms": {"Flapping": {"clearing_type": "automatic", "description": "d"}},
        }
    )
    assert resource_of({"rid": "r", "tid": "t"}, config) == ResourceRef("r", "", "t")
    assert resource_of({"host": "h:1"}, config) == ResourceRef(resource_name="h")
    assert severity_of({"priority": "p1"}, config) == domain_pb2.ALARM_SEVERITY_CRITICAL
    assert severity_of({"priority": "critical"}, config) == domain_pb2.ALARM_SEVERITY_CRITICAL
    assert severity_of({"priority": "p9"}, config) == domain_pb2.ALARM_SEVERITY_WARNING
    assert clearing_type_of("Other", config) == domain_pb2.CLEARING_TYPE_MANUAL
    assert clearing_type_of("Flapping", config) == domain_pb2.CLEARING_TYPE_AUTOMATIC
    assert clearing_type_of("Other", DEFAULT) == domain_pb2.CLEARING_TYPE_AUTOMATIC


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"resources": {}}, "resources: unknown key"),
        ({"resource": {"id_lable": "x"}}, "resource.id_lable: unknown key"),
        ({"alarms": {"NodeDown": {"clearing": "MANUAL"}}}, "alarms.NodeDown.clearing: unknown"),
        ({"alarms": {"NodeDown": {"clearing_type": "SOMETIMES"}}}, "alarms.NodeDown.clearing_type"),
        ({"severity": {"values": {"p1": "URGENT"}}}, "severity.values.p1: must be one of"),
        ({"resource": {"name_labels": "node"}}, "resource.name_labels: must be a list"),
        ({"dictionary": {"vendor": 3}}, "dictionary.vendor: must be a string"),
        (["resource"], "the top level: must be a mapping"),
    ],
)
def test_the_mapping_file_is_strict_and_names_the_key_path(document: object, message: str) -> None:
    with pytest.raises(MappingFileError) as caught:
        parse_mapping(document, "m.yaml")
    assert str(caught.value).startswith("m.yaml: ")
    assert message in str(caught.value)


def test_the_shipped_example_mapping_loads_and_restates_the_defaults() -> None:
    example = REPO / "examples" / "alertmanager-mapping.yaml"
    config = load_mapping_file(example)
    defaults_only = yaml.safe_load(example.read_text())
    defaults_only.pop("alarms", None)
    assert parse_mapping(defaults_only) == MappingConfig()
    assert "NodeDown" in config.alarms
