"""Alarms from a real source through the whole stack (redis-server, static adapter, core,
Envoy): the example inventory's declared alarms are served out of the box (M1), editing the
file raises, changes and clears them, a flap within the window keeps the record, and a
restarted core neither loses nor repeats one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from devstack.processes import wait_until
from devstack.stack import LocalStack

ALARMS = "/o2ims-infrastructureMonitoring/v1/alarms"
# examples/ocloud.yaml
PSU_ALARM = "5c4072be-6338-478e-b520-7c3334d1ebba"
FAN_ALARM = "b5b4e25b-ef94-494b-b1b9-b973062ff117"
PSU_RESOURCE = "7ccff921-32a0-40f0-ab74-c8caba3777d5"  # ber-fe01-du01
FAN_RESOURCE = "ee3c5dd5-6590-4d00-a35c-a855760ace2a"  # fra-rdc02-cp02
PSU_DEFINITION = "dd08dc2b-ad85-41c4-a08b-acb640067c55"
FAN_DEFINITION = "09706037-a2c7-4b64-b351-108b6092f0ad"


def alarms(rest: httpx.Client, **params: str) -> list[dict[str, Any]]:
    response = rest.get(ALARMS, params=params)
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


def by_resource(rest: httpx.Client) -> dict[str, dict[str, Any]]:
    return {alarm["resourceID"]: alarm for alarm in alarms(rest)}


def resource_type_of(rest: httpx.Client, resource_id: str) -> str:
    for pool in rest.get("/o2ims-infrastructureInventory/v1/resourcePools").json():
        found = rest.get(
            f"/o2ims-infrastructureInventory/v1/resourcePools/{pool['resourcePoolId']}/resources/"
            f"{resource_id}"
        )
        if found.status_code == 200:
            return str(found.json()["resourceTypeId"])
    raise AssertionError(f"resource {resource_id} not found")


def without_alarm(text: str, alarm_id: str) -> str:
    """The inventory file without the alarm entry whose alarmId is `alarm_id`."""
    pattern = re.compile(
        rf"(?:  #[^\n]*\n)?  - alarmId: {alarm_id}\n(?:    [^\n]*\n)*", re.MULTILINE
    )
    edited, count = pattern.subn("", text)
    assert count == 1, f"alarm {alarm_id} not in the file"
    return edited


def write(path: Path, text: str) -> None:
    staged = path.with_suffix(".edit")
    staged.write_text(text)
    staged.replace(path)


def test_the_example_inventory_raises_its_declared_alarms(rest: httpx.Client) -> None:
    wait_until(lambda: len(alarms(rest)) == 2, 15, "the example's two alarms")
    found = by_resource(rest)
    psu, fan = found[PSU_RESOURCE], found[FAN_RESOURCE]
    assert psu["alarmDefinitionID"] == psu["probableCauseID"] == PSU_DEFINITION
    assert (psu["perceivedSeverity"], fan["perceivedSeverity"]) == (1, 2)  # MAJOR, MINOR
    assert psu["alarmRaisedTime"] == "2026-01-05T09:30:00Z"
    assert fan["alarmRaisedTime"] == "2026-01-06T13:05:12Z"
    assert psu["alarmAcknowledged"] is False and "alarmClearedTime" not in psu
    assert psu["extensions"] == {"psu": "PSU2", "inputVoltage": 0, "redfishMessageId": "PSU0003"}
    assert psu["resourceTypeID"] == resource_type_of(rest, PSU_RESOURCE)
    # M1: the filters SMOs use on alarms, and all_fields with extensions an object.
    psu_type = psu["resourceTypeID"]
    assert [a["resourceID"] for a in alarms(rest, filter=f"(eq,resourceTypeID,{psu_type})")] == [
        PSU_RESOURCE
    ]
    assert len(alarms(rest, filter="(eq,alarmAcknowledged,false)")) == 2
    assert alarms(rest, filter="(eq,alarmAcknowledged,true)") == []
    assert [a["resourceID"] for a in alarms(rest, filter="(eq,perceivedSeverity,2)")] == [
        FAN_RESOURCE
    ]
    everything = alarms(rest, all_fields="")
    assert all(isinstance(a["extensions"], dict) for a in everything)
    single = rest.get(f"{ALARMS}/{psu['alarmEventRecordId']}")
    assert single.status_code == 200 and single.json() == psu
    assert re.fullmatch(r'"\d+"', single.headers["etag"])


def test_editing_the_file_clears_changes_and_re_raises(
    rest: httpx.Client, inventory_file: Path
) -> None:
    wait_until(lambda: len(alarms(rest)) == 2, 15, "the example's two alarms")
    original = inventory_file.read_text()
    record_id = by_resource(rest)[PSU_RESOURCE]["alarmEventRecordId"]

    write(inventory_file, without_alarm(original, PSU_ALARM))
    wait_until(
        lambda: by_resource(rest)[PSU_RESOURCE]["perceivedSeverity"] == 5, 15, "the PSU cleared"
    )
    cleared = rest.get(f"{ALARMS}/{record_id}").json()
    assert (
        cleared["alarmClearedTime"] and cleared["alarmChangedTime"] == cleared["alarmClearedTime"]
    )
    assert by_resource(rest)[FAN_RESOURCE]["perceivedSeverity"] == 2, "the other one stays"

    # Raised again within the flap window: the same record, active again.
    write(
        inventory_file, original.replace("perceivedSeverity: MAJOR", "perceivedSeverity: CRITICAL")
    )
    wait_until(
        lambda: by_resource(rest)[PSU_RESOURCE]["perceivedSeverity"] == 0, 15, "the PSU re-raised"
    )
    raised = rest.get(f"{ALARMS}/{record_id}").json()
    assert "alarmClearedTime" not in raised
    assert raised["alarmRaisedTime"] == "2026-01-05T09:30:00Z"
    assert len(alarms(rest)) == 2, "no new record for a flap"

    write(inventory_file, original)
    wait_until(
        lambda: by_resource(rest)[PSU_RESOURCE]["perceivedSeverity"] == 1, 15, "back to MAJOR"
    )
    assert rest.get(f"{ALARMS}/{record_id}").json()["alarmEventRecordId"] == record_id


def test_a_restarted_core_keeps_every_record_and_adds_none(
    stack: LocalStack, rest: httpx.Client
) -> None:
    wait_until(lambda: len(alarms(rest)) >= 2, 15, "the example's alarms")
    before = sorted(alarms(rest), key=lambda a: str(a["alarmEventRecordId"]))
    assert stack.core is not None
    stack.core.stop()
    stack.start_core()
    wait_until(lambda: rest.get(ALARMS).status_code == 200, 30, "REST to recover")
    after = sorted(alarms(rest), key=lambda a: str(a["alarmEventRecordId"]))
    assert after == before
