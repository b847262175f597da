"""CloudWatch alarms and EC2 status checks as O2ims alarms, against a real moto server.

moto never reports a status check impaired, so the mapping of impairments is tested with
describe_instance_status entries written as the EC2 API documents them."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import botocore.config  # type: ignore[import-untyped]
import botocore.exceptions  # type: ignore[import-untyped]
import pytest
from google.protobuf import json_format
from o2ims.adapter.v1 import domain_pb2

from adapters.aws import alarms
from adapters.aws.alarms import RegionAlarmState
from adapters.aws.ids import object_id
from devstack.processes import ManagedProcess, free_port, port_open, wait_until

REPO = Path(__file__).resolve().parents[3]
REGION = "eu-west-1"
ADAPTER = "aws-test"
IMAGE = "ami-12c6146b"  # one of moto's built-in AMIs


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    server = ManagedProcess(
        "moto_server",
        [str(REPO / ".venv" / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        tmp_path_factory.mktemp("moto") / "moto.log",
    ).start()
    try:
        wait_until(lambda: port_open(port), 30, "moto_server", require=server.require_alive)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def endpoint(moto_endpoint: str) -> str:
    """The moto server, emptied of what earlier tests created."""
    request = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    return moto_endpoint


def client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def ec2(endpoint: str) -> Any:
    return client("ec2", endpoint)


@pytest.fixture
def cloudwatch(endpoint: str) -> Any:
    return client("cloudwatch", endpoint)


def launch(ec2: Any, count: int = 1) -> list[str]:
    reservation = ec2.run_instances(
        ImageId=IMAGE, MinCount=count, MaxCount=count, InstanceType="t3.micro"
    )
    return sorted(instance["InstanceId"] for instance in reservation["Instances"])


def put_cpu_alarm(
    cloudwatch: Any, name: str, instance_id: str, description: str | None = None
) -> None:
    extra = {"AlarmDescription": description} if description else {}
    cloudwatch.put_metric_alarm(
        AlarmName=name,
        MetricName="CPUUtilization",
        Namespace="AWS/EC2",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=3,
        Threshold=80.0,
        ComparisonOperator="GreaterThanThreshold",
        Dimensions=[{"Name": "InstanceId", "Value": instance_id}],
        **extra,
    )


def set_state(cloudwatch: Any, name: str, state: str) -> None:
    cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason=f"test: {state}")


def inventory(*instance_ids: str) -> dict[str, tuple[str, str]]:
    """instance id -> (resource id, resource type id), as the poller's inventory knows them."""
    return {
        instance_id: (object_id("resource", instance_id), object_id("resource_type", "t3.micro"))
        for instance_id in instance_ids
    }


def serialized(active: list[domain_pb2.ActiveAlarm]) -> list[bytes]:
    return [alarm.SerializeToString(deterministic=True) for alarm in active]


def test_alarm_is_fetched_only_while_in_alarm(cloudwatch: Any, ec2: Any) -> None:
    (instance_id,) = launch(ec2)
    put_cpu_alarm(cloudwatch, "cpu-high", instance_id)
    quiet = alarms.fetch_region_alarms(cloudwatch, ec2)
    assert quiet.metric_alarms == ()
    # Its definition exists from the start: the dictionary does not flip with the alarm.
    assert alarms.alarm_names(quiet) == {"cpu-high"}

    set_state(cloudwatch, "cpu-high", "ALARM")
    state = alarms.fetch_region_alarms(cloudwatch, ec2)
    assert [alarm["AlarmName"] for alarm in state.metric_alarms] == ["cpu-high"]
    assert alarms.alarm_names(state) == {"cpu-high"}

    set_state(cloudwatch, "cpu-high", "OK")
    state = alarms.fetch_region_alarms(cloudwatch, ec2)
    assert state.metric_alarms == ()
    assert alarms.active_alarms(ADAPTER, REGION, state, inventory(instance_id).get) == []
    assert alarms.alarm_names(state) == {"cpu-high"}
    assert alarms.alarm_dictionary(ADAPTER, alarms.alarm_names(state)) == alarms.alarm_dictionary(
        ADAPTER, alarms.alarm_names(quiet)
    )


def test_alarm_in_alarm_maps_to_the_instance_resource(cloudwatch: Any, ec2: Any) -> None:
    (instance_id,) = launch(ec2)
    put_cpu_alarm(cloudwatch, "cpu-high", instance_id)
    set_state(cloudwatch, "cpu-high", "ALARM")
    state = alarms.fetch_region_alarms(cloudwatch, ec2)
    known = inventory(instance_id)

    (active,) = alarms.active_alarms(ADAPTER, REGION, state, known.get)

    arn = state.metric_alarms[0]["AlarmArn"]
    assert arn == f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:cpu-high"
    assert active.alarm_id == object_id("cloudwatch-alarm", arn, instance_id)
    assert (active.resource_id, active.resource_type_id) == known[instance_id]
    definition_id = alarms.cloudwatch_definition_id(ADAPTER, "cpu-high")
    assert active.alarm_definition_id == active.probable_cause_id == definition_id
    assert active.perceived_severity == domain_pb2.ALARM_SEVERITY_MAJOR
    assert active.raised_time == state.metric_alarms[0]["StateUpdatedTimestamp"]
    assert datetime.fromisoformat(active.raised_time).tzinfo == UTC
    assert active.raised_time.endswith("Z")
    assert dict(active.extensions) == {
        "source": "cloudwatch",
        "alarmName": "cpu-high",
        "alarmArn": arn,
        "region": REGION,
        "instanceId": instance_id,
        "metricName": "CPUUtilization",
        "namespace": "AWS/EC2",
        "statistic": "Average",
        "threshold": 80.0,
        "period": 60.0,
        "evaluationPeriods": 3.0,
        "comparisonOperator": "GreaterThanThreshold",
        "stateReason": "test: ALARM",
    }


def test_alarm_on_an_instance_not_in_the_inventory_is_skipped(cloudwatch: Any, ec2: Any) -> None:
    known_id, unknown_id = launch(ec2, 2)
    put_cpu_alarm(cloudwatch, "cpu-known", known_id)
    put_cpu_alarm(cloudwatch, "cpu-unknown", unknown_id)
    set_state(cloudwatch, "cpu-known", "ALARM")
    set_state(cloudwatch, "cpu-unknown", "ALARM")
    state = alarms.fetch_region_alarms(cloudwatch, ec2)
    assert alarms.alarm_names(state) == {"cpu-known", "cpu-unknown"}

    active = alarms.active_alarms(ADAPTER, REGION, state, inventory(known_id).get)

    assert [alarm.extensions["instanceId"] for alarm in active] == [known_id]


def test_alarm_without_an_instance_dimension_is_not_fetched(cloudwatch: Any, ec2: Any) -> None:
    cloudwatch.put_metric_alarm(
        AlarmName="queue-depth",
        MetricName="ApproximateNumberOfMessagesVisible",
        Namespace="AWS/SQS",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=100.0,
        ComparisonOperator="GreaterThanThreshold",
        Dimensions=[{"Name": "QueueName", "Value": "jobs"}],
    )
    set_state(cloudwatch, "queue-depth", "ALARM")

    assert alarms.fetch_region_alarms(cloudwatch, ec2).metric_alarms == ()


def test_unchanged_account_maps_to_identical_bytes(cloudwatch: Any, ec2: Any) -> None:
    instance_ids = launch(ec2, 3)
    for number, instance_id in enumerate(instance_ids):
        put_cpu_alarm(cloudwatch, f"cpu-high-{number}", instance_id, "CPU above 80%")
        set_state(cloudwatch, f"cpu-high-{number}", "ALARM")
    known = inventory(*instance_ids)

    first = alarms.fetch_region_alarms(cloudwatch, ec2)
    second = alarms.fetch_region_alarms(cloudwatch, ec2)

    assert first == second
    first_alarms = alarms.active_alarms(ADAPTER, REGION, first, known.get)
    assert len(first_alarms) == 3
    assert serialized(first_alarms) == serialized(
        alarms.active_alarms(ADAPTER, REGION, second, known.get)
    )
    # The state is JSON-safe: a poller that keeps it as JSON maps it to the same bytes.
    reloaded = RegionAlarmState(
        *(
            tuple(json.loads(json.dumps(list(part))))
            for part in (first.metric_alarms, first.impaired)
        )
    )
    assert serialized(alarms.active_alarms(ADAPTER, REGION, reloaded, known.get)) == serialized(
        first_alarms
    )
    dictionary = alarms.alarm_dictionary(
        ADAPTER, alarms.alarm_names(first), alarms.alarm_descriptions(first)
    )
    again = alarms.alarm_dictionary(
        ADAPTER, alarms.alarm_names(second), alarms.alarm_descriptions(second)
    )
    assert dictionary.SerializeToString(deterministic=True) == again.SerializeToString(
        deterministic=True
    )


def test_severity_is_overridable_by_alarm_name(cloudwatch: Any, ec2: Any) -> None:
    (instance_id,) = launch(ec2)
    put_cpu_alarm(cloudwatch, "cpu-high", instance_id)
    set_state(cloudwatch, "cpu-high", "ALARM")
    state = alarms.fetch_region_alarms(cloudwatch, ec2)

    (active,) = alarms.active_alarms(
        ADAPTER,
        REGION,
        state,
        inventory(instance_id).get,
        {"cpu-high": domain_pb2.ALARM_SEVERITY_WARNING},
    )

    assert active.perceived_severity == domain_pb2.ALARM_SEVERITY_WARNING


def test_dictionary_has_a_definition_per_alarm_name_and_the_status_checks(
    cloudwatch: Any, ec2: Any
) -> None:
    instance_ids = launch(ec2, 2)
    put_cpu_alarm(cloudwatch, "cpu-high", instance_ids[0], "CPU above 80% for 3 minutes")
    put_cpu_alarm(cloudwatch, "b-cpu-high", instance_ids[1])
    set_state(cloudwatch, "cpu-high", "ALARM")
    set_state(cloudwatch, "b-cpu-high", "ALARM")
    state = alarms.fetch_region_alarms(cloudwatch, ec2)

    dictionary = alarms.alarm_dictionary(
        ADAPTER, alarms.alarm_names(state), alarms.alarm_descriptions(state)
    )

    assert dictionary.alarm_dictionary_id == alarms.dictionary_id(ADAPTER)
    assert dictionary.alarm_dictionary_id == object_id("alarm-dictionary", ADAPTER)
    assert list(dictionary.management_interface_id) == ["O2IMS"]
    assert list(dictionary.pk_notification_field) == ["alarmDefinitionID", "resourceID"]
    assert (dictionary.entity_type, dictionary.vendor) == (
        "aws-ec2-instance",
        "Amazon Web Services",
    )
    names = [definition.alarm_name for definition in dictionary.alarm_definition]
    assert names == ["b-cpu-high", "cpu-high", *alarms.STATUS_CHECK_NAMES]
    by_name = {definition.alarm_name: definition for definition in dictionary.alarm_definition}
    assert by_name["cpu-high"].alarm_description == "CPU above 80% for 3 minutes"
    assert "AWS/EC2/CPUUtilization" in by_name["b-cpu-high"].alarm_description
    for definition in dictionary.alarm_definition:
        assert definition.clearing_type == domain_pb2.CLEARING_TYPE_AUTOMATIC
        assert definition.alarm_change_type == domain_pb2.ALARM_CHANGE_TYPE_ADDED
        assert definition.alarm_last_change == "1.0"
        assert list(definition.management_interface_id) == ["O2IMS"]
        assert list(definition.pk_notification_field) == ["alarmDefinitionID", "resourceID"]
        assert definition.alarm_description and definition.proposed_repair_actions
    assert "stop" in by_name["EC2SystemStatusCheckImpaired"].proposed_repair_actions
    # Ids are stable over the adapter name and the alarm name, whatever else is in the set.
    alone = alarms.alarm_dictionary(ADAPTER, ["cpu-high"])
    alone_ids = {d.alarm_name: d.alarm_definition_id for d in alone.alarm_definition}
    assert alone_ids["cpu-high"] == by_name["cpu-high"].alarm_definition_id
    assert alone_ids["cpu-high"] == object_id("cloudwatch-alarm-definition", ADAPTER, "cpu-high")
    assert len({d.alarm_definition_id for d in dictionary.alarm_definition}) == 4
    other = alarms.alarm_dictionary("other-adapter", ["cpu-high"])
    assert other.alarm_definition[0].alarm_definition_id != alone_ids["cpu-high"]


def test_moto_reports_no_impaired_status_check(cloudwatch: Any, ec2: Any) -> None:
    launch(ec2, 2)
    statuses = ec2.describe_instance_status()["InstanceStatuses"]
    assert {status["InstanceStatus"]["Status"] for status in statuses} == {"ok"}
    assert {status["SystemStatus"]["Status"] for status in statuses} == {"ok"}

    assert alarms.fetch_region_alarms(cloudwatch, ec2).impaired == ()


def impaired_status(instance_id: str, *, instance: bool, system: bool) -> dict[str, Any]:
    """A describe_instance_status entry as the EC2 API documents it (boto3's types)."""
    since = datetime(2026, 12, 3, 9, 14, tzinfo=UTC)

    def summary(impaired: bool) -> dict[str, Any]:
        if not impaired:
            return {"Details": [{"Name": "reachability", "Status": "passed"}], "Status": "ok"}
        return {
            "Details": [{"ImpairedSince": since, "Name": "reachability", "Status": "failed"}],
            "Status": "impaired",
        }

    return {
        "AvailabilityZone": f"{REGION}a",
        "InstanceId": instance_id,
        "Events": [
            {
                "InstanceEventId": "instance-event-0d59937288b749b32",
                "Code": "instance-retirement",
                "Description": "The instance is running on degraded hardware",
                "NotBefore": datetime(2026, 12, 10, 0, 0, tzinfo=UTC),
            }
        ]
        if system
        else [],
        "InstanceState": {"Code": 16, "Name": "running"},
        "InstanceStatus": summary(instance),
        "SystemStatus": summary(system),
    }


def test_impaired_status_checks_map_to_alarms_on_the_instance() -> None:
    both, only_instance, unknown = (
        "i-0aaaaaaaaaaaaaaa1",
        "i-0bbbbbbbbbbbbbbb2",
        "i-0ccccccccccccccc3",
    )
    state = RegionAlarmState(
        metric_alarms=(),
        impaired=tuple(
            alarms.json_safe(entry)
            for entry in (
                impaired_status(both, instance=True, system=True),
                impaired_status(only_instance, instance=True, system=False),
                impaired_status(unknown, instance=False, system=True),
            )
        ),
    )
    known = inventory(both, only_instance)

    active = alarms.active_alarms(ADAPTER, REGION, state, known.get)

    by_key = {(a.extensions["instanceId"], a.extensions["statusCheck"]): a for a in active}
    assert set(by_key) == {
        (both, "InstanceStatus"),
        (both, "SystemStatus"),
        (only_instance, "InstanceStatus"),
    }
    system = by_key[(both, "SystemStatus")]
    assert system.alarm_id == object_id("ec2-status-check", REGION, both, "system")
    assert system.perceived_severity == domain_pb2.ALARM_SEVERITY_CRITICAL
    assert system.raised_time == "2026-12-03T09:14:00Z"
    assert (system.resource_id, system.resource_type_id) == known[both]
    definitions = {
        d.alarm_name: d.alarm_definition_id
        for d in alarms.alarm_dictionary(ADAPTER, []).alarm_definition
    }
    assert system.alarm_definition_id == definitions["EC2SystemStatusCheckImpaired"]
    assert system.probable_cause_id == system.alarm_definition_id
    extensions = json_format.MessageToDict(system.extensions)
    assert extensions["failingChecks"] == [
        {"name": "reachability", "status": "failed", "impairedSince": "2026-12-03T09:14:00Z"}
    ]
    assert extensions["scheduledEvents"] == [
        {
            "code": "instance-retirement",
            "description": "The instance is running on degraded hardware",
            "notBefore": "2026-12-10T00:00:00Z",
            "notAfter": "",
        }
    ]
    instance = by_key[(only_instance, "InstanceStatus")]
    assert instance.perceived_severity == domain_pb2.ALARM_SEVERITY_MAJOR
    assert instance.alarm_definition_id == definitions["EC2InstanceStatusCheckImpaired"]
    assert instance.alarm_id != by_key[(both, "InstanceStatus")].alarm_id
    # Identical input, identical bytes; the raw datetimes map as their JSON-safe strings do.
    raw = RegionAlarmState(
        metric_alarms=(),
        impaired=(
            impaired_status(both, instance=True, system=True),
            impaired_status(only_instance, instance=True, system=False),
        ),
    )
    assert serialized(alarms.active_alarms(ADAPTER, REGION, raw, known.get)) == serialized(active)
    overridden = alarms.active_alarms(
        ADAPTER,
        REGION,
        state,
        known.get,
        {"EC2SystemStatusCheckImpaired": domain_pb2.ALARM_SEVERITY_MAJOR},
    )
    assert {a.perceived_severity for a in overridden} == {domain_pb2.ALARM_SEVERITY_MAJOR}


def test_json_safe_turns_datetimes_into_rfc3339_utc() -> None:
    value = {
        "When": datetime(2026, 12, 3, 10, 0, 0, 58000, tzinfo=UTC),
        "Naive": datetime(2026, 12, 3, 10, 0),
        "List": (1, "a", {"Nested": datetime(2026, 1, 1, tzinfo=UTC)}),
    }

    assert alarms.json_safe(value) == {
        "When": "2026-12-03T10:00:00.058000Z",
        "Naive": "2026-12-03T10:00:00Z",
        "List": [1, "a", {"Nested": "2026-01-01T00:00:00Z"}],
    }


def test_metric_math_alarm_names_the_instances_of_its_metrics(cloudwatch: Any, ec2: Any) -> None:
    first, second = launch(ec2, 2)

    def cpu(query_id: str, instance_id: str) -> dict[str, Any]:
        metric = {
            "Namespace": "AWS/EC2",
            "MetricName": "CPUUtilization",
            "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
        }
        return {
            "Id": query_id,
            "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Average"},
            "ReturnData": False,
        }

    cloudwatch.put_metric_alarm(
        AlarmName="pair-cpu-high",
        EvaluationPeriods=1,
        Threshold=150.0,
        ComparisonOperator="GreaterThanThreshold",
        Metrics=[
            cpu("a", first),
            cpu("b", second),
            {"Id": "total", "Expression": "a + b", "ReturnData": True},
        ],
    )
    set_state(cloudwatch, "pair-cpu-high", "ALARM")
    state = alarms.fetch_region_alarms(cloudwatch, ec2)

    active = alarms.active_alarms(ADAPTER, REGION, state, inventory(first, second).get)

    arn = state.metric_alarms[0]["AlarmArn"]
    assert sorted(a.alarm_id for a in active) == sorted(
        object_id("cloudwatch-alarm", arn, instance_id) for instance_id in (first, second)
    )
    assert {a.alarm_definition_id for a in active} == {
        alarms.cloudwatch_definition_id(ADAPTER, "pair-cpu-high")
    }


def test_raised_time_is_when_the_alarm_last_changed_state() -> None:
    # StateUpdatedTimestamp also moves when only the evaluation state changes; the newer
    # StateTransitionedTimestamp (which moto does not return) moves with StateValue alone.
    alarm = {
        "AlarmName": "cpu-high",
        "AlarmArn": f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:cpu-high",
        "StateValue": "ALARM",
        "StateTransitionedTimestamp": datetime(2026, 12, 3, 8, 0, tzinfo=UTC),
        "StateUpdatedTimestamp": datetime(2026, 12, 3, 8, 30, tzinfo=UTC),
        "Dimensions": [{"Name": "InstanceId", "Value": "i-0aaaaaaaaaaaaaaa1"}],
    }
    state = RegionAlarmState(metric_alarms=(alarms.json_safe(alarm),), impaired=())

    (active,) = alarms.active_alarms(ADAPTER, REGION, state, inventory("i-0aaaaaaaaaaaaaaa1").get)

    assert active.raised_time == "2026-12-03T08:00:00Z"


def test_an_unreachable_region_raises_the_botocore_error() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=1)
    unreachable = {
        service: boto3.client(
            service,
            region_name=REGION,
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
        )
        for service in ("cloudwatch", "ec2")
    }

    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        alarms.fetch_region_alarms(unreachable["cloudwatch"], unreachable["ec2"])
