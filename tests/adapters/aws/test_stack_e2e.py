"""The AWS adapter in the whole stack (`make run`'s LocalStack) beside the static adapter's
lab: a moto account of two regions, four zones, 40 instances of five types (GPU types among
them) and an EKS cluster, served through Envoy in both majors; instance changes reach REST
within a poll interval plus a second, as exactly one notification each; us-east-1
becomes unreachable as the module starts and stays so for a minute while the other tests run:
its objects stay served and /readyz degraded, then it reconciles without duplicates.

The adapter's AWS_ENDPOINT_URL is a proxy (proxy.py) in front of a moto server of this
module's own, so one region can be made unreachable while moto keeps its state."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import pytest

from adapters.aws.mapping import instance_arn
from devstack.moto_server import MotoServer
from devstack.processes import wait_until
from devstack.stack import LocalStack, StackConfig
from tests.adapters.aws.conftest import ACCOUNT, REGIONS, create_eks, ec2, launch
from tests.adapters.aws.proxy import DROP, FORWARD, RegionProxy
from tests.adapters.aws.test_alarms import put_cpu_alarm
from tests.notifier.receiver import Receiver

pytestmark = pytest.mark.e2e

INV = "/o2ims-infrastructureInventory"
INTERVAL = 1.0
ZONES = ("eu-west-1a", "eu-west-1b", "us-east-1a", "us-east-1b")
TYPES = ("m5.large", "c5.xlarge", "t3.micro", "g5.xlarge", "g4dn.xlarge")
# How long us-east-1 is unreachable (from the module's start; the last test waits out the rest).
OUTAGE_S = 60.0


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.environment().items():
            patch.setenv(key, value)
        patch.delenv("AWS_PROFILE", raising=False)
        yield server
    server.stop()


@pytest.fixture(scope="module")
def seeded(moto: MotoServer) -> dict[str, str]:
    """40 instances: two of each of the five types in each of the four zones; an EKS
    cluster in eu-west-1. Instance id -> ARN."""
    arns = {}
    for zone in ZONES:
        region = zone[:-1]
        for index, instance_type in enumerate(TYPES):
            for instance_id in launch(
                region, instance_type, zone, count=2, name=f"{zone}-{index}", tags={"lab": "e2e"}
            ):
                arns[instance_id] = instance_arn(region, ACCOUNT, instance_id)
    create_eks("eu-west-1", "ran-core", [("workers", "m5.large", 3)])
    return arns


@pytest.fixture(scope="module")
def proxy(moto: MotoServer) -> Iterator[RegionProxy]:
    running = RegionProxy(moto.port).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    moto: MotoServer,
    proxy: RegionProxy,
    seeded: dict[str, str],
) -> Iterator[LocalStack]:
    environment = {**moto.environment(), "AWS_ENDPOINT_URL": proxy.url}
    running = LocalStack(
        StackConfig.ephemeral(
            tmp_path_factory.mktemp("stack"),
            aws_regions=REGIONS,
            aws_adapter_args=("--poll-interval", str(INTERVAL), "--max-attempts", "2"),
            aws_env=environment,
        )
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rest(stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), timeout=10) as client:
        yield client


def fetch_all(rest: httpx.Client, path: str) -> list[dict[str, Any]]:
    response = rest.get(path)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    return items


def aws_resources(rest: httpx.Client, major: str) -> dict[str, dict[str, Any]]:
    """The served resources whose globalAssetId is an EC2 instance ARN, by ARN."""
    found = {}
    for pool in fetch_all(rest, f"{INV}/{major}/resourcePools"):
        for resource in fetch_all(
            rest, f"{INV}/{major}/resourcePools/{pool['resourcePoolId']}/resources"
        ):
            if str(resource.get("globalAssetId", "")).startswith("arn:aws:ec2:"):
                found[resource["globalAssetId"]] = resource
    return found


def reasons(stack: LocalStack) -> list[str]:
    body: Any = stack.readiness()[1]
    return [str(reason) for reason in body.get("reasons", [])]


def test_the_account_appears_in_both_majors_beside_the_lab(
    stack: LocalStack, rest: httpx.Client, seeded: dict[str, str]
) -> None:
    wait_until(
        lambda: set(aws_resources(rest, "v1")) == set(seeded.values()),
        60,
        "the 40 instances in REST",
    )
    for major in ("v1", "v2"):
        served = aws_resources(rest, major)
        assert set(served) == set(seeded.values()), major
        pools = {p["resourcePoolId"]: p for p in fetch_all(rest, f"{INV}/{major}/resourcePools")}
        used = {resource["resourcePoolId"] for resource in served.values()}
        assert {pools[pool_id]["name"] for pool_id in used} == set(ZONES)
        assert len(pools) > len(used)  # the static lab's pools (and empty zones) too
        type_ids = {resource["resourceTypeId"] for resource in served.values()}
        types = [rest.get(f"{INV}/{major}/resourceTypes/{tid}").json() for tid in type_ids]
        assert {t["name"] for t in types} == set(TYPES)
        managers = fetch_all(rest, f"{INV}/{major}/deploymentManagers")
        (eks,) = [m for m in managers if m["name"] == "ran-core"]
        assert eks["serviceUri"].startswith("https://")
    gpu = next(r for r in aws_resources(rest, "v1").values() if r["name"].endswith("-3"))
    assert "gpu0" in [element["name"] for element in gpu["elements"]]
    sites = {s["name"] for s in fetch_all(rest, f"{INV}/v2/oCloudSites")}
    assert set(ZONES) <= sites
    locations = {loc["name"] for loc in fetch_all(rest, f"{INV}/v2/locations")}
    assert set(REGIONS) <= locations


def _subscribe(rest: httpx.Client, receiver: Receiver, path: str) -> str:
    response = rest.post(f"{INV}/v1/subscriptions", json={"callback": receiver.url + path})
    assert response.status_code == 201, response.text
    return str(response.json()["subscriptionId"])


def test_instance_changes_reach_rest_in_a_poll_plus_a_second_as_one_notification_each(
    stack: LocalStack, rest: httpx.Client, seeded: dict[str, str]
) -> None:
    wait_until(lambda: len(aws_resources(rest, "v1")) >= len(seeded), 60, "the account")
    receiver = Receiver().start()
    path = f"/{uuid.uuid4().hex[:8]}/aws"
    subscription = _subscribe(rest, receiver, path)
    try:
        (instance_id,) = launch("eu-west-1", "m5.large", "eu-west-1a", name="e2e-new")
        arn = instance_arn("eu-west-1", ACCOUNT, instance_id)

        def served() -> dict[str, Any] | None:
            return aws_resources(rest, "v1").get(arn)

        def about() -> list[int]:
            return [
                n["notificationEventType"]
                for n in receiver.notifications(path)
                if n.get("postObjectState", n.get("priorObjectState") or {}).get("globalAssetId")
                == arn
                or (n.get("priorObjectState") or {}).get("globalAssetId") == arn
            ]

        changes: list[tuple[str, Callable[[], object], Callable[[Any], bool], list[int]]] = [
            ("launched", lambda: None, lambda r: r is not None, [0]),
            (
                "re-tagged",
                lambda: ec2("eu-west-1").create_tags(
                    Resources=[instance_id], Tags=[{"Key": "Name", "Value": "e2e-renamed"}]
                ),
                lambda r: r is not None and r["name"] == "e2e-renamed",
                [0, 1],
            ),
            (
                "stopped",
                lambda: ec2("eu-west-1").stop_instances(InstanceIds=[instance_id]),
                lambda r: r is not None and r["extensions"]["state"] == "stopped",
                [0, 1, 1],
            ),
            (
                "terminated",
                lambda: ec2("eu-west-1").terminate_instances(InstanceIds=[instance_id]),
                lambda r: r is None,
                [0, 1, 1, 2],
            ),
        ]
        for what, change, check, notified in changes:
            started = time.monotonic()
            change()

            def in_rest(check: Callable[[Any], bool] = check) -> bool:
                return check(served())

            def notified_so(expected: list[int] = notified) -> bool:
                return about() == expected

            wait_until(in_rest, 30, f"the instance {what} in REST")
            # A poll interval plus a second, with room for the poll itself and the core.
            assert time.monotonic() - started < INTERVAL + 2.5, what
            wait_until(notified_so, 20, f"the {what} notification")
        time.sleep(3 * INTERVAL)
        assert about() == [0, 1, 1, 2]  # nothing more: exactly one notification each
    finally:
        rest.delete(f"{INV}/v1/subscriptions/{subscription}")
        receiver.stop()


def test_the_stack_runs_the_aws_adapter(stack: LocalStack) -> None:
    assert ("adapter-aws", True) in stack.processes()
    assert f"127.0.0.1:{stack.config.aws_adapter_port}" in stack.adapter_addresses
    assert Path(stack.logs / "adapter-aws.log").exists()
    assert os.environ.get("AWS_ENDPOINT_URL")  # the test's own boto3 talks to moto


def test_make_run_moto_demo_serves_its_account(tmp_path: Path) -> None:
    """NETWEAVE_AWS_MOTO: the stack starts moto, seeds the demo account and points the
    adapter at it; its instances are served through Envoy, and stopping the stack stops
    moto too."""
    from devstack.moto_server import DEMO_INSTANCES, DEMO_REGIONS

    running = LocalStack(
        StackConfig.ephemeral(tmp_path, aws_regions=DEMO_REGIONS, aws_moto=True)
    ).start()
    try:
        assert running.moto is not None
        with httpx.Client(
            base_url=running.rest_url, verify=running.client_tls(), timeout=10
        ) as client:
            wait_until(
                lambda: (
                    {r["name"] for r in aws_resources(client, "v1").values()}
                    == {name for name, *_ in DEMO_INSTANCES}
                ),
                60,
                "the demo account in REST",
            )
        assert ("moto", True) in running.processes()
    finally:
        running.stop()
    assert running.moto is not None and not running.moto.alive()


def test_a_cloudwatch_alarm_reaches_an_alarm_subscriber_as_new_then_clear(
    stack: LocalStack, rest: httpx.Client, seeded: dict[str, str]
) -> None:
    """ALARM -> a NEW AlarmEventNotification about the instance's resource; OK -> CLEAR."""
    wait_until(lambda: len(aws_resources(rest, "v1")) >= len(seeded), 60, "the account")
    # An instance of the region that is reachable (us-east-1 is away during the module).
    instance_id, arn = next(item for item in sorted(seeded.items()) if ":eu-west-1:" in item[1])
    region = arn.split(":")[3]
    resource = aws_resources(rest, "v1")[arn]
    receiver = Receiver().start()
    cloudwatch = boto3.client("cloudwatch", region_name=region)
    name = f"cpu-high-{uuid.uuid4().hex[:6]}"
    try:
        created = rest.post(
            "/o2ims-infrastructureMonitoring/v1/alarmSubscriptions",
            json={"callback": f"{receiver.url}/aws-alarms", "consumerSubscriptionId": "smo-aws"},
        )
        assert created.status_code == 201, created.text
        put_cpu_alarm(cloudwatch, name, instance_id)
        cloudwatch.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="e2e")
        (new,) = (r.json() for r in receiver.wait_for("/aws-alarms", 1, timeout=30))
        assert new["notificationEventType"] == 0
        assert (new["resourceID"], new["resourceTypeID"]) == (
            resource["resourceId"],
            resource["resourceTypeId"],
        )
        assert new["perceivedSeverity"] == 1  # MAJOR: CloudWatch alarms carry no severity
        assert new["extensions"]["alarmName"] == name
        # Its definition is in the dictionary of the instance's resource type (1.x embeds it).
        resource_type = rest.get(f"{INV}/v1/resourceTypes/{resource['resourceTypeId']}").json()
        definitions = resource_type["alarmDictionary"]["alarmDefinition"]
        assert new["alarmDefinitionID"] in [d["alarmDefinitionId"] for d in definitions]

        cloudwatch.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="e2e")
        bodies = [r.json() for r in receiver.wait_for("/aws-alarms", 2, timeout=30)]
        assert [b["notificationEventType"] for b in bodies] == [0, 2]
        assert bodies[1]["alarmEventRecordId"] == new["alarmEventRecordId"]
        assert bodies[1]["perceivedSeverity"] == 5
    finally:
        cloudwatch.delete_alarms(AlarmNames=[name])
        receiver.stop()


@dataclass
class Outage:
    """us-east-1, unreachable since `since`; a sampler checks every 2 s that its last
    snapshot stays served through REST."""

    since: float
    before: dict[str, dict[str, Any]]
    late_arn: str
    samples: int = 0
    missing: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def sample(self, stack: LocalStack) -> None:
        us_east = {arn for arn in self.before if ":us-east-1:" in arn}
        with httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), timeout=10) as rest:
            while not self.done.wait(2.0):
                served = set(aws_resources(rest, "v1"))
                self.samples += 1
                if not us_east <= served:
                    self.missing.append(f"after {time.monotonic() - self.since:.1f} s")


@pytest.fixture(scope="module", autouse=True)
def us_east_outage(
    stack: LocalStack, rest: httpx.Client, proxy: RegionProxy, seeded: dict[str, str]
) -> Iterator[Outage]:
    """Makes us-east-1 unreachable as the module starts (and launches an instance there
    behind the adapter's back), so its minute passes while the other tests run."""
    wait_until(lambda: len(aws_resources(rest, "v1")) >= len(seeded), 60, "the account")
    before = aws_resources(rest, "v1")
    assert any(":us-east-1:" in arn for arn in before)
    started = time.monotonic()
    proxy.set_mode("us-east-1", DROP)
    try:
        wait_until(
            lambda: any("us-east-1" in reason for reason in reasons(stack)),
            30,
            "/readyz degraded naming the region",
        )
        (late,) = launch("us-east-1", "c5.xlarge", "us-east-1b", name="while-away")
        outage = Outage(started, before, instance_arn("us-east-1", ACCOUNT, late))
        sampler = threading.Thread(target=outage.sample, args=(stack,), daemon=True)
        sampler.start()
        yield outage
        outage.done.set()
        sampler.join()
    finally:
        proxy.set_mode("us-east-1", FORWARD)


def test_a_region_unreachable_for_a_minute_stays_served_degrades_readyz_and_reconciles(
    stack: LocalStack, rest: httpx.Client, proxy: RegionProxy, us_east_outage: Outage
) -> None:
    """Last in the module: what is left of the minute, then the region returns."""
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - us_east_outage.since)))
    us_east_outage.done.set()
    assert us_east_outage.samples >= OUTAGE_S / 4
    assert us_east_outage.missing == []
    assert any("us-east-1" in reason for reason in reasons(stack))
    proxy.set_mode("us-east-1", FORWARD)
    late_arn = us_east_outage.late_arn
    wait_until(lambda: late_arn in aws_resources(rest, "v1"), 60, "the region reconciled")
    wait_until(lambda: not any("us-east-1" in r for r in reasons(stack)), 30, "/readyz ready")
    # Exactly its instances: the snapshot's and the one launched while it was away.
    us_east = {arn for arn in aws_resources(rest, "v1") if ":us-east-1:" in arn}
    assert us_east == {arn for arn in us_east_outage.before if ":us-east-1:" in arn} | {late_arn}
