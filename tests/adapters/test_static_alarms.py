"""The `alarms:` section of the static adapter's inventory file: each entry an alarm
active now about a resource of the file, checked against that resource's alarm
dictionary."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format
from o2ims.adapter.v1 import domain_pb2

from adapters.static.loader import InventoryFileError, load_inventory, parse_inventory

SERVER_DICTIONARY = "20000000-0000-4000-8000-000000000001"
DIMM_DICTIONARY = "20000000-0000-4000-8000-000000000002"
PSU_LOST = "20000000-0000-4000-8000-0000000000a1"  # AUTOMATIC, server dictionary
FAN_FAILURE = "20000000-0000-4000-8000-0000000000a2"  # MANUAL, server dictionary
ECC_ERRORS = "20000000-0000-4000-8000-0000000000b1"  # DIMM dictionary
SERVER_TYPE = "30000000-0000-4000-8000-000000000001"
NIC_TYPE = "30000000-0000-4000-8000-000000000002"  # no alarm dictionary
DIMM_TYPE = "30000000-0000-4000-8000-000000000003"
SERVER = "50000000-0000-4000-8000-000000000001"
NIC = "50000000-0000-4000-8000-000000000011"
DIMM = "50000000-0000-4000-8000-000000000012"
ALARM = "70000000-0000-4000-8000-000000000001"
OTHER_ALARM = "70000000-0000-4000-8000-000000000002"
UNKNOWN = "99999999-0000-4000-8000-000000000009"

INVENTORY = f"""\
oCloud:
  oCloudId: 00000000-0000-4000-8000-000000000001
  globalCloudId: 00000000-0000-4000-8000-000000000002
locations:
  - globalLocationId: loc-a
    address: 1 Main Street
sites:
  - oCloudSiteId: 10000000-0000-4000-8000-000000000001
    globalLocationId: loc-a
alarmDictionaries:
  - alarmDictionaryId: {SERVER_DICTIONARY}
    alarmDefinition:
      - alarmDefinitionId: {PSU_LOST}
        alarmName: PSU redundancy lost
        clearingType: AUTOMATIC
      - alarmDefinitionId: {FAN_FAILURE}
        alarmName: Fan failure
        clearingType: MANUAL
  - alarmDictionaryId: {DIMM_DICTIONARY}
    alarmDefinition:
      - alarmDefinitionId: {ECC_ERRORS}
        alarmName: Correctable ECC errors over threshold
        clearingType: AUTOMATIC
resourceTypes:
  - resourceTypeId: {SERVER_TYPE}
    name: pserver
    alarmDictionaryId: {SERVER_DICTIONARY}
  - resourceTypeId: {NIC_TYPE}
    name: pserver_if
  - resourceTypeId: {DIMM_TYPE}
    name: pserver_mem
    alarmDictionaryId: {DIMM_DICTIONARY}
resourcePools:
  - resourcePoolId: 40000000-0000-4000-8000-000000000001
    oCloudSiteId: 10000000-0000-4000-8000-000000000001
resources:
  - resourceId: {SERVER}
    resourcePoolId: 40000000-0000-4000-8000-000000000001
    resourceTypeId: {SERVER_TYPE}
    elements:
      - resourceId: {NIC}
        resourceTypeId: {NIC_TYPE}
      - resourceId: {DIMM}
        resourceTypeId: {DIMM_TYPE}
"""


def with_alarms(*entries: str) -> str:
    """INVENTORY with an `alarms:` section of `entries` (each one entry's lines, from
    its `- `, unindented)."""
    lines = ["alarms:"]
    for entry in entries:
        lines += [f"  {line}" for line in entry.strip("\n").splitlines()]
    return INVENTORY + "\n".join(lines) + "\n"


def alarm_entry(
    alarm_id: str = ALARM,
    resource_id: str = SERVER,
    definition_id: str = PSU_LOST,
    severity: str = "MAJOR",
    extra: str = "",
) -> str:
    entry = (
        f"- alarmId: {alarm_id}\n"
        f"  resourceId: {resource_id}\n"
        f"  alarmDefinitionId: {definition_id}\n"
        f"  perceivedSeverity: {severity}\n"
    )
    return entry + "".join(f"  {line}\n" for line in extra.strip("\n").splitlines())


def alarms_of(text: str) -> list[domain_pb2.ActiveAlarm]:
    return [
        obj.alarm for obj in parse_inventory(text.encode(), "ocloud.yaml") if obj.alarm.alarm_id
    ]


def refusal(text: str) -> InventoryFileError:
    with pytest.raises(InventoryFileError) as raised:
        parse_inventory(text.encode(), "ocloud.yaml")
    return raised.value


def line_of(text: str, needle: str) -> int:
    """The 1-based number of the last line containing `needle`."""
    numbers = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert numbers, f"no line contains {needle!r}"
    return numbers[-1]


def test_an_inventory_without_alarms_has_none() -> None:
    assert alarms_of(INVENTORY) == []


def test_every_field_is_read_and_the_resource_type_comes_from_the_resource() -> None:
    cause = "70000000-0000-4000-8000-0000000000c1"
    [alarm] = alarms_of(
        with_alarms(
            alarm_entry(
                extra=f"""
probableCauseId: {cause}
raisedTime: "2026-01-05T09:30:00Z"
extensions: {{psu: PSU2, inputVoltage: 0, labels: {{rack: A1}}}}
"""
            )
        )
    )
    assert alarm.alarm_id == ALARM
    assert alarm.resource_id == SERVER
    assert alarm.resource_type_id == SERVER_TYPE
    assert alarm.alarm_definition_id == PSU_LOST
    assert alarm.probable_cause_id == cause
    assert alarm.perceived_severity == domain_pb2.ALARM_SEVERITY_MAJOR
    assert alarm.raised_time == "2026-01-05T09:30:00Z"
    assert json_format.MessageToDict(alarm.extensions) == {
        "psu": "PSU2",
        "inputVoltage": 0,
        "labels": {"rack": "A1"},
    }
    assert alarm.resource_name == ""


def test_optional_fields_default_probable_cause_to_the_definition() -> None:
    [alarm] = alarms_of(with_alarms(alarm_entry()))
    assert alarm.probable_cause_id == PSU_LOST
    assert alarm.raised_time == ""  # the core stamps when it first sees the alarm
    assert not alarm.extensions.fields


def test_an_alarm_on_a_nested_element_takes_the_elements_type() -> None:
    [alarm] = alarms_of(with_alarms(alarm_entry(resource_id=DIMM, definition_id=ECC_ERRORS)))
    assert (alarm.resource_id, alarm.resource_type_id) == (DIMM, DIMM_TYPE)


def test_alarms_come_after_the_inventory_in_file_order() -> None:
    objects = parse_inventory(
        with_alarms(
            alarm_entry(alarm_id=OTHER_ALARM, definition_id=FAN_FAILURE),
            alarm_entry(alarm_id=ALARM),
        ).encode(),
        "ocloud.yaml",
    )
    assert [obj.WhichOneof("kind") for obj in objects[-2:]] == ["alarm", "alarm"]
    assert [obj.alarm.alarm_id for obj in objects[-2:]] == [OTHER_ALARM, ALARM]


@pytest.mark.parametrize(
    ("written", "severity"),
    [
        ("CRITICAL", domain_pb2.ALARM_SEVERITY_CRITICAL),
        ("MAJOR", domain_pb2.ALARM_SEVERITY_MAJOR),
        ("MINOR", domain_pb2.ALARM_SEVERITY_MINOR),
        ("WARNING", domain_pb2.ALARM_SEVERITY_WARNING),
        ("INDETERMINATE", domain_pb2.ALARM_SEVERITY_INDETERMINATE),
        # The O2ims wire numbers.
        ("0", domain_pb2.ALARM_SEVERITY_CRITICAL),
        ("1", domain_pb2.ALARM_SEVERITY_MAJOR),
        ("2", domain_pb2.ALARM_SEVERITY_MINOR),
        ("3", domain_pb2.ALARM_SEVERITY_WARNING),
        ("4", domain_pb2.ALARM_SEVERITY_INDETERMINATE),
    ],
)
def test_severity_is_read_by_name_or_o2ims_number(written: str, severity: int) -> None:
    [alarm] = alarms_of(with_alarms(alarm_entry(severity=written)))
    assert alarm.perceived_severity == severity


@pytest.mark.parametrize(
    ("written", "served"),
    [
        ("2026-01-05T09:30:00Z", "2026-01-05T09:30:00Z"),
        ("2026-01-05T10:30:00+01:00", "2026-01-05T09:30:00Z"),
        ("2026-01-05T09:30:00.250Z", "2026-01-05T09:30:00.250000Z"),
        ("2026-01-05t09:30:00z", "2026-01-05T09:30:00Z"),
        ("2026-01-05 09:30:00-02:00", "2026-01-05T11:30:00Z"),
    ],
)
def test_raised_time_is_rfc3339_served_in_utc(written: str, served: str) -> None:
    for spelled in (written, f'"{written}"'):  # YAML timestamps stay text
        [alarm] = alarms_of(with_alarms(alarm_entry(extra=f"raisedTime: {spelled}")))
        assert alarm.raised_time == served


@pytest.mark.parametrize(
    ("entry", "needle", "problem"),
    [
        (
            alarm_entry(severity="SEVERE"),
            "perceivedSeverity",
            f"alarm '{ALARM}': perceivedSeverity 'SEVERE' is not one of CRITICAL, MAJOR, "
            "MINOR, WARNING, INDETERMINATE (or 0-4)",
        ),
        (
            alarm_entry(severity="7"),
            "perceivedSeverity",
            "perceivedSeverity '7' is not one of",
        ),
        (
            alarm_entry(severity="major"),
            "perceivedSeverity",
            "perceivedSeverity 'major' is not one of",
        ),
        (
            alarm_entry(severity="true"),
            "perceivedSeverity",
            "perceivedSeverity 'True' is not one of",
        ),
        (
            alarm_entry(severity="CLEARED"),
            "perceivedSeverity",
            f"alarm '{ALARM}': an active alarm cannot be CLEARED; remove its entry to clear it",
        ),
        (
            alarm_entry(severity="5"),
            "perceivedSeverity",
            "an active alarm cannot be CLEARED",
        ),
        (
            alarm_entry().replace("  perceivedSeverity: MAJOR\n", ""),
            f"alarmId: {ALARM}",
            f"alarm '{ALARM}': missing perceivedSeverity",
        ),
        (
            alarm_entry().replace(f"- alarmId: {ALARM}\n  ", "- "),
            f"resourceId: {SERVER}",
            "alarm alarms[1]: missing alarmId",
        ),
        (
            alarm_entry(alarm_id="alarm-1"),
            "alarmId",
            "alarmId 'alarm-1' is not a UUID",
        ),
        (
            alarm_entry().replace(f"  resourceId: {SERVER}\n", ""),
            f"alarmId: {ALARM}",
            f"alarm '{ALARM}': missing resourceId",
        ),
        (
            alarm_entry().replace(f"  alarmDefinitionId: {PSU_LOST}\n", ""),
            f"alarmId: {ALARM}",
            f"alarm '{ALARM}': missing alarmDefinitionId",
        ),
        (
            alarm_entry(extra="probableCauseId: psu"),
            "probableCauseId",
            "probableCauseId 'psu' is not a UUID",
        ),
        (
            alarm_entry(resource_id=UNKNOWN),
            f"resourceId: {UNKNOWN}",
            f"alarm '{ALARM}' names unknown resourceId '{UNKNOWN}'",
        ),
        (
            alarm_entry(definition_id=ECC_ERRORS),
            "alarmDefinitionId",
            f"alarm '{ALARM}': alarmDefinitionId '{ECC_ERRORS}' is not in alarm dictionary "
            f"'{SERVER_DICTIONARY}': resource '{SERVER}' is of resource type 'pserver' "
            f"({SERVER_TYPE})",
        ),
        (
            alarm_entry(definition_id=UNKNOWN),
            "alarmDefinitionId",
            f"alarmDefinitionId '{UNKNOWN}' is not in alarm dictionary '{SERVER_DICTIONARY}'",
        ),
        (
            alarm_entry(resource_id=NIC),
            "alarmDefinitionId",
            f"alarm '{ALARM}': alarmDefinitionId '{PSU_LOST}' is not in any alarm dictionary: "
            f"resource '{NIC}' is of resource type 'pserver_if' ({NIC_TYPE}), which has none",
        ),
        (
            alarm_entry(extra=f"resourceTypeId: {SERVER_TYPE}"),
            "resourceTypeId",
            f"alarm '{ALARM}': resourceTypeId is implied by the resource's type; remove it",
        ),
        (
            alarm_entry(extra="resourceName: server-1"),
            "resourceName",
            f"alarm '{ALARM}': name the resource by its resourceId",
        ),
        (
            alarm_entry(extra="raisedTime: 2026-01-05"),
            "raisedTime",
            f"alarm '{ALARM}': raisedTime '2026-01-05' is not an RFC 3339 date-time",
        ),
        (
            alarm_entry(extra="raisedTime: 2026-01-05T09:30:00"),
            "raisedTime",
            "raisedTime '2026-01-05T09:30:00' is not an RFC 3339 date-time",
        ),
        (
            alarm_entry(extra="raisedTime: 2026-13-05T09:30:00Z"),
            "raisedTime",
            "raisedTime '2026-13-05T09:30:00Z' is not an RFC 3339 date-time",
        ),
        (
            alarm_entry(extra="raisedTime: yesterday"),
            "raisedTime",
            "raisedTime 'yesterday' is not an RFC 3339 date-time",
        ),
        (
            alarm_entry(extra="extensions: [psu]"),
            "extensions",
            f"alarm '{ALARM}': 'extensions' must be a mapping",
        ),
        (
            alarm_entry(extra="severity: MAJOR"),
            "  severity: MAJOR",
            f"alarm '{ALARM}': unknown key 'severity' (allowed: alarmId, resourceId,",
        ),
    ],
)
def test_a_bad_alarm_is_refused_at_its_line(entry: str, needle: str, problem: str) -> None:
    text = with_alarms(alarm_entry(alarm_id=OTHER_ALARM, definition_id=FAN_FAILURE), entry)
    error = refusal(text)
    assert error.line == line_of(text, needle), error
    assert problem in error.problem


def test_alarms_must_be_a_list_of_mappings() -> None:
    text = INVENTORY + "alarms: {alarmId: x}\n"
    error = refusal(text)
    assert (error.line, error.problem) == (line_of(text, "alarms:"), "'alarms' must be a list")
    text = INVENTORY + "alarms:\n  - just text\n"
    error = refusal(text)
    assert error.line == line_of(text, "just text")
    assert error.problem == "each entry of 'alarms' must be a mapping"


def test_a_duplicate_alarm_id_names_the_first() -> None:
    text = with_alarms(alarm_entry(), alarm_entry(definition_id=FAN_FAILURE))
    error = refusal(text)
    assert error.line == line_of(text, f"alarmId: {ALARM}")
    first = text.splitlines().index(f"  - alarmId: {ALARM}") + 1
    assert error.problem == f"duplicate alarmId '{ALARM}' (first defined at line {first})"


def test_one_definition_is_active_at_most_once_per_resource() -> None:
    text = with_alarms(alarm_entry(), alarm_entry(alarm_id=OTHER_ALARM, severity="CRITICAL"))
    error = refusal(text)
    assert error.line == line_of(text, "alarmDefinitionId")
    first = text.splitlines().index(f"  - alarmId: {ALARM}") + 1
    assert error.problem == (
        f"alarm '{OTHER_ALARM}': alarmDefinitionId '{PSU_LOST}' is already active on "
        f"resource '{SERVER}' (alarm at line {first})"
    )
    # The same condition on another resource is another alarm.
    with_element = with_alarms(
        alarm_entry(resource_id=DIMM, definition_id=ECC_ERRORS),
        alarm_entry(alarm_id=OTHER_ALARM),
    )
    assert len(alarms_of(with_element)) == 2


def test_the_first_problem_by_line_is_reported() -> None:
    # A dangling resource type -> dictionary reference above a dangling alarm one.
    text = with_alarms(alarm_entry(resource_id=UNKNOWN)).replace(
        f"    name: pserver_mem\n    alarmDictionaryId: {DIMM_DICTIONARY}",
        f"    name: pserver_mem\n    alarmDictionaryId: {UNKNOWN}",
    )
    error = refusal(text)
    assert error.line == line_of(text, f"alarmDictionaryId: {UNKNOWN}")
    assert "names unknown alarmDictionaryId" in error.problem


def test_the_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "ocloud.yaml"
    text = with_alarms(alarm_entry(resource_id=UNKNOWN))
    path.write_text(text)
    with pytest.raises(InventoryFileError) as raised:
        load_inventory(path)
    line = line_of(text, f"resourceId: {UNKNOWN}")
    assert str(raised.value).startswith(f"{path}:{line}: alarm '{ALARM}' names unknown")


def test_the_example_declares_an_automatic_and_a_manual_alarm(example_inventory: Path) -> None:
    objects = load_inventory(example_inventory)
    definitions = {
        definition.alarm_definition_id: definition
        for obj in objects
        if obj.WhichOneof("kind") == "alarm_dictionary"
        for definition in obj.alarm_dictionary.alarm_definition
    }
    alarms = [obj.alarm for obj in objects if obj.WhichOneof("kind") == "alarm"]
    clearing = {definitions[alarm.alarm_definition_id].clearing_type for alarm in alarms}
    assert clearing == {domain_pb2.CLEARING_TYPE_AUTOMATIC, domain_pb2.CLEARING_TYPE_MANUAL}
    assert all(alarm.resource_type_id and alarm.raised_time for alarm in alarms)
