"""AwsAdapter in this process (no gRPC), against a real moto server: the alarm seam's call
site, the assumed role, and what one poll costs in API calls."""

from __future__ import annotations

from typing import Any

import boto3  # type: ignore[import-untyped]
from o2ims.adapter.v1 import domain_pb2

from adapters.aws import alarms
from adapters.aws.adapter import AwsAdapter
from adapters.aws.clients import CallCounter, account_of, new_session, region_clients
from adapters.aws.mapping_file import MappingConfig
from adapters.aws.metrics import AwsMetrics
from adapters.publisher import ObjectSetPublisher
from devstack.moto_server import MotoServer
from tests.adapters.aws.conftest import ACCOUNT, REGIONS, launch, seed_account
from tests.adapters.aws.test_alarms import put_cpu_alarm

NAME = "aws-test"


def new_adapter(
    publisher: ObjectSetPublisher, *, role_arn: str = ""
) -> tuple[AwsAdapter, CallCounter]:
    session = new_session(role_arn)
    counter = CallCounter()
    clients = [region_clients(session, region, counter, 2) for region in REGIONS]
    adapter = AwsAdapter(
        clients,
        lambda: account_of(session, REGIONS[0], 2, counter),
        MappingConfig(),
        publisher,
        NAME,
        poll_interval=0.1,
        metrics=AwsMetrics(),
        counter=counter,
    )
    return adapter, counter


def kinds(publisher: ObjectSetPublisher, kind: str) -> list[Any]:
    _, objects = publisher.snapshot()
    return [getattr(obj, kind) for obj in objects if obj.WhichOneof("kind") == kind]


def test_cloudwatch_alarms_are_published_through_the_alarm_seam(moto: MotoServer) -> None:
    seeded = seed_account()
    instance_id = seeded.instances["gpu-1"]
    cloudwatch = boto3.client("cloudwatch", region_name="eu-west-1")
    put_cpu_alarm(cloudwatch, "gpu-hot", instance_id)
    publisher = ObjectSetPublisher()
    adapter, _ = new_adapter(publisher)
    adapter.poll_once()
    (dictionary,) = kinds(publisher, "alarm_dictionary")
    assert dictionary.alarm_dictionary_id == alarms.dictionary_id(NAME)
    assert "gpu-hot" in [d.alarm_name for d in dictionary.alarm_definition]
    assert {t.alarm_dictionary_id for t in kinds(publisher, "resource_type")} == {
        alarms.dictionary_id(NAME)
    }
    assert kinds(publisher, "alarm") == []

    cloudwatch.set_alarm_state(AlarmName="gpu-hot", StateValue="ALARM", StateReason="test")
    events = adapter.poll_once()
    assert [event.object.WhichOneof("kind") for event in events] == ["alarm"]
    (alarm,) = kinds(publisher, "alarm")
    resource = next(r for r in kinds(publisher, "resource") if r.name == "gpu-1")
    assert (alarm.resource_id, alarm.resource_type_id) == (
        resource.resource_id,
        resource.resource_type_id,
    )

    cloudwatch.set_alarm_state(AlarmName="gpu-hot", StateValue="OK", StateReason="test")
    events = adapter.poll_once()
    assert [event.object.WhichOneof("kind") for event in events] == ["alarm"]
    assert kinds(publisher, "alarm") == []


def test_an_assumed_role_is_used_for_every_call(moto: MotoServer) -> None:
    launch("eu-west-1", "m5.large", "eu-west-1a", name="one")
    role = f"arn:aws:iam::{ACCOUNT}:role/netweave-reader"
    publisher = ObjectSetPublisher()
    adapter, _ = new_adapter(publisher, role_arn=role)
    adapter.poll_once()
    assert [r.name for r in kinds(publisher, "resource")] == ["one"]
    identity = new_session(role).client("sts", region_name="eu-west-1").get_caller_identity()
    assert ":assumed-role/netweave-reader/" in identity["Arn"]


def test_a_steady_poll_costs_a_fixed_number_of_calls(moto: MotoServer) -> None:
    """Zones, instances (one page), the EKS list, and per cluster its description, its
    node groups' list and descriptions; instance types only the first time."""
    seed_account()
    publisher = ObjectSetPublisher()
    adapter, counter = new_adapter(publisher)
    adapter.poll_once()
    first = counter.total_calls()
    adapter.poll_once()
    steady = counter.total_calls() - first
    # ec2 (zones, instances), the eks list (+3 for its one cluster), alarms (cloudwatch 1, status 2)
    per_region = {"eu-west-1": 2 + 1 + 3 + 3, "us-east-1": 2 + 1 + 3}
    assert steady == sum(per_region.values())
    assert first - steady == 1 + len(REGIONS)  # sts once, describe_instance_types per region
    assert publisher.published


def test_objects_of_every_kind_but_the_o_cloud(moto: MotoServer) -> None:
    seed_account()
    publisher = ObjectSetPublisher()
    adapter, _ = new_adapter(publisher)
    adapter.poll_once()
    _, objects = publisher.snapshot()
    present = {obj.WhichOneof("kind") for obj in objects}
    assert {
        "location",
        "site",
        "resource_type",
        "resource_pool",
        "resource",
        "deployment_manager",
    } <= present
    assert "o_cloud" not in present
    assert isinstance(kinds(publisher, "location")[0], domain_pb2.Location)
