"""Acknowledge and clear alarms, ETag / If-Match, and the alarm service configuration through
the whole stack (real Redis, core, Envoy): O2ims checklist M2, M3, M5, and the retention
purge. Records are seeded with the store module, as the alarm source will write them."""

from __future__ import annotations

import datetime as dt
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.pki import issue_client_certificate
from devstack.processes import wait_until
from devstack.stack import LocalStack
from server.alarms.store import AlarmStore
from server.store import connect
from tests.e2e.conftest import problem, start_stack

ALARMS = "/o2ims-infrastructureMonitoring/v1/alarms"
CONFIG = "/o2ims-infrastructureMonitoring/v1/alarmServiceConfiguration"
MERGE_PATCH = {"content-type": "application/merge-patch+json"}
# From examples/ocloud.yaml's alarm dictionary.
MANUAL = "e80babbf-72de-4650-a4b5-c7874b0a841a"  # Fan failure
AUTOMATIC = "dd08dc2b-ad85-41c4-a08b-acb640067c55"  # PSU redundancy lost


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory, {"NETWEAVE_ALARM_PURGE_INTERVAL": "0.2"})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def alarms(stack: LocalStack) -> Iterator[AlarmStore]:
    client = connect(stack.redis_url)
    yield AlarmStore(client)
    client.close()


def seed(alarms: AlarmStore, definition: str = MANUAL, **extra: Any) -> str:
    alarm_id = str(uuid.uuid4())
    alarms.put_record(
        alarm_id,
        {
            "resourceTypeID": str(uuid.uuid4()),
            "resourceID": str(uuid.uuid4()),
            "alarmDefinitionID": definition,
            "probableCauseID": str(uuid.uuid4()),
            "alarmRaisedTime": "2025-01-02T03:04:05Z",
            "perceivedSeverity": 2,
            "extensions": {},
            **extra,
        },
    )
    return alarm_id


def patch(rest: httpx.Client, alarm_id: str, body: Any, **headers: str) -> httpx.Response:
    return rest.patch(f"{ALARMS}/{alarm_id}", json=body, headers={**MERGE_PATCH, **headers})


def test_acknowledge_m2(rest: httpx.Client, alarms: AlarmStore) -> None:
    alarm_id = seed(alarms)
    before = rest.get(f"{ALARMS}/{alarm_id}")
    assert before.status_code == 200 and before.json()["alarmAcknowledged"] is False
    etag = before.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    response = patch(rest, alarm_id, {"alarmAcknowledged": True}, **{"if-match": etag})
    assert response.status_code == 200, response.text
    assert response.json() == {"alarmAcknowledged": True}
    assert response.headers["content-type"] == "application/json"
    new_etag = response.headers["etag"]
    assert new_etag != etag
    after = rest.get(f"{ALARMS}/{alarm_id}")
    assert after.json()["alarmAcknowledged"] is True
    assert after.json()["alarmAcknowledgeTime"]
    assert after.headers["etag"] == new_etag
    assert [
        fields["event"] for _, fields in alarms.events() if fields["alarmEventRecordId"] == alarm_id
    ] == [
        "NEW",
        "ACKNOWLEDGE",
    ]
    # M3: a re-acknowledgement is a conflict.
    problem(patch(rest, alarm_id, {"alarmAcknowledged": True}), 409)


@pytest.mark.parametrize(
    "body",
    [
        {"alarmAcknowledged": True, "perceivedSeverity": 5},
        {},
        {"alarmAcknowledged": False},
        {"perceivedSeverity": 1},
        {"perceivedSeverity": 4},
        {"perceivedSeverity": None},
    ],
)
def test_bad_modifications_are_400_m3(
    rest: httpx.Client, alarms: AlarmStore, body: dict[str, Any]
) -> None:
    alarm_id = seed(alarms)
    problem(patch(rest, alarm_id, body), 400)
    assert rest.get(f"{ALARMS}/{alarm_id}").json()["alarmAcknowledged"] is False


def test_clear_follows_the_definition_m3(rest: httpx.Client, alarms: AlarmStore) -> None:
    manual = seed(alarms, MANUAL)
    response = patch(rest, manual, {"perceivedSeverity": 5})
    assert response.status_code == 200, response.text
    assert response.json() == {"perceivedSeverity": 5}
    cleared = rest.get(f"{ALARMS}/{manual}").json()
    assert cleared["perceivedSeverity"] == 5 and cleared["alarmClearedTime"]
    problem(patch(rest, manual, {"perceivedSeverity": 5}), 409)
    automatic = seed(alarms, AUTOMATIC)
    detail = problem(patch(rest, automatic, {"perceivedSeverity": 5}), 409)["detail"]
    assert AUTOMATIC in detail
    assert rest.get(f"{ALARMS}/{automatic}").json()["perceivedSeverity"] == 2


def test_unknown_alarm_is_404(rest: httpx.Client) -> None:
    problem(patch(rest, str(uuid.uuid4()), {"alarmAcknowledged": True}), 404)


def test_if_match_412_and_star(rest: httpx.Client, alarms: AlarmStore) -> None:
    alarm_id = seed(alarms)
    etag = rest.get(f"{ALARMS}/{alarm_id}").headers["etag"]
    alarms.put_record(alarm_id, {"perceivedSeverity": 1})  # someone else changed it
    problem(patch(rest, alarm_id, {"alarmAcknowledged": True}, **{"if-match": etag}), 412)
    problem(patch(rest, alarm_id, {"alarmAcknowledged": True}, **{"if-match": "W/" + etag}), 412)
    assert rest.get(f"{ALARMS}/{alarm_id}").json()["alarmAcknowledged"] is False
    response = patch(rest, alarm_id, {"alarmAcknowledged": True}, **{"if-match": "*"})
    assert response.status_code == 200, response.text


def test_alarm_service_configuration_m5(rest: httpx.Client) -> None:
    assert rest.get(CONFIG).json()["retentionPeriod"] >= 1
    put = rest.put(CONFIG, json={"retentionPeriod": 30, "extensions": {"a": 1, "b": {"c": 2}}})
    assert put.status_code == 200, put.text
    assert put.json() == {"retentionPeriod": 30, "extensions": {"a": 1, "b": {"c": 2}}}
    patched = rest.patch(
        CONFIG,
        json={"retentionPeriod": 20, "extensions": {"a": None, "b": {"d": 3}}},
        headers=MERGE_PATCH,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json() == {"retentionPeriod": 20, "extensions": {"b": {"c": 2, "d": 3}}}
    assert rest.get(CONFIG).json() == patched.json()
    problem(rest.put(CONFIG, json={"retentionPeriod": 0, "extensions": {}}), 400)
    problem(rest.put(CONFIG, json={"extensions": {}}), 400)
    problem(rest.patch(CONFIG, json={"retentionPeriod": 0}, headers=MERGE_PATCH), 400)
    # No body, or a JSON null (a merge patch deleting the resource): refused at the edge.
    problem(rest.patch(CONFIG, content=b"", headers=MERGE_PATCH), 400)
    problem(rest.patch(CONFIG, content=b" null", headers=MERGE_PATCH), 400)
    problem(rest.put(CONFIG), 400)
    assert rest.get(CONFIG).json()["retentionPeriod"] == 20
    restored = rest.put(CONFIG, json={"retentionPeriod": 14, "extensions": {}})
    assert restored.status_code == 200


def test_a_reader_may_not_acknowledge_or_configure(
    stack: LocalStack, alarms: AlarmStore, tmp_path: Path
) -> None:
    # smo-* certificates are readers and subscribers (examples/access-policy.yaml).
    reader = issue_client_certificate(stack.pki.directory, "smo-reader", tmp_path)
    tls = ssl.create_default_context(cafile=str(stack.pki.ca_cert))
    tls.load_cert_chain(str(reader.cert), str(reader.key))
    alarm_id = seed(alarms)
    with httpx.Client(base_url=stack.rest_url, verify=tls, timeout=5.0) as http:
        assert http.get(f"{ALARMS}/{alarm_id}").status_code == 200
        assert http.get(CONFIG).status_code == 200
        problem(patch(http, alarm_id, {"alarmAcknowledged": True}), 403)
        problem(http.put(CONFIG, json={"retentionPeriod": 1, "extensions": {}}), 403)
        problem(http.patch(CONFIG, json={"retentionPeriod": 1}, headers=MERGE_PATCH), 403)
    assert alarms.get(alarm_id) is not None
    assert not alarms.get(alarm_id).alarm_acknowledged  # type: ignore[union-attr]


def purged_total(stack: LocalStack) -> float:
    text = httpx.get(f"{stack.ops_url}/metrics", timeout=5.0).text
    for line in text.splitlines():
        if line.startswith("o2ims_alarms_purged_total "):
            return float(line.split()[1])
    return 0.0


def test_cleared_alarms_are_purged_after_retention(
    stack: LocalStack, rest: httpx.Client, alarms: AlarmStore
) -> None:
    retention_days = rest.get(CONFIG).json()["retentionPeriod"]
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=retention_days, hours=1)
    recently = dt.datetime.now(dt.UTC) - dt.timedelta(days=retention_days - 1)
    before = purged_total(stack)
    old = seed(alarms, perceivedSeverity=5, alarmClearedTime=long_ago.isoformat())
    young = seed(alarms, perceivedSeverity=5, alarmClearedTime=recently.isoformat())
    active = seed(alarms)
    wait_until(
        lambda: rest.get(f"{ALARMS}/{old}").status_code == 404,
        10.0,
        "the old cleared alarm to be purged",
    )
    wait_until(lambda: purged_total(stack) >= before + 1, 10.0, "o2ims_alarms_purged_total")
    assert rest.get(f"{ALARMS}/{young}").status_code == 200
    assert rest.get(f"{ALARMS}/{active}").status_code == 200
    listed = {alarm["alarmEventRecordId"] for alarm in rest.get(ALARMS).json()}
    assert old not in listed and {young, active} <= listed
