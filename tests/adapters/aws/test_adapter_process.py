"""`python -m adapters.aws` as a real process against a real moto server, watched through
a real gRPC WatchObjects stream: the first sync, one event per real change, none for an
unchanged account, a failing region, throttling, and the start-up refusals (exit 2).

Region failures are real: the adapter's AWS_ENDPOINT_URL is a proxy (proxy.py) in front of
moto that drops the connections, or answers RequestLimitExceeded, for the requests signed
for one region (moto keeps its state in memory, so stopping moto itself would lose it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from o2ims.adapter.v1 import adapter_pb2, adapter_pb2_grpc

from devstack.moto_server import MotoServer
from devstack.processes import metric_sum as metric
from devstack.processes import wait_until
from tests.adapters.aws.conftest import (
    REPO,
    AdapterProcess,
    Watch,
    ec2,
    launch,
    seed_account,
    synced_watch,
)
from tests.adapters.aws.proxy import DROP, FORWARD, THROTTLE, RegionProxy

ADDED = adapter_pb2.EVENT_TYPE_ADDED
MODIFIED = adapter_pb2.EVENT_TYPE_MODIFIED
DELETED = adapter_pb2.EVENT_TYPE_DELETED
INTERVAL = 0.5
# "Within one poll interval plus a second", with room for a poll's own duration on a
# loaded test machine.
WITHIN = INTERVAL + 2.5


def settle(
    watch: Watch,
    adapter: AdapterProcess,
    polls: int = 3,
    *,
    clear: bool = True,
    timeout: float = 30.0,
) -> None:
    """Let `polls` more polls of both regions pass, then (`clear`) forget the events seen
    so far."""
    start = metric(adapter.metrics(), "netweave_aws_polls_total")
    wait_until(
        lambda: metric(adapter.metrics(), "netweave_aws_polls_total") >= start + polls * 2,
        timeout,
        f"{polls} more polls",
    )
    if clear:
        watch.clear_events()


def test_first_sync_then_exactly_one_event_per_instance_change(
    moto: MotoServer, tmp_path: Path
) -> None:
    seeded = seed_account()
    adapter = AdapterProcess(tmp_path, moto.url, poll_interval=INTERVAL).start()
    watch = synced_watch(adapter.grpc_port)
    try:
        resources = watch.resources_by_instance()
        assert set(resources) == set(seeded.instances.values())
        assert resources[seeded.instances["gpu-1"]].name == "gpu-1"
        assert len(watch.of_kind("location")) == 2
        assert len(watch.of_kind("deployment_manager")) == 1
        type_names = {t.name for t in watch.of_kind("resource_type").values()}
        assert {"m5.large", "g5.xlarge", "c5.xlarge", "inf1.xlarge"} <= type_names
        assert len(watch.of_kind("resource_pool")) >= 6  # 3 zones in each region
        settle(watch, adapter)

        # Launched: one ADDED (same type, same zone as a seeded one: nothing else changes).
        started = time.monotonic()
        (new_id,) = launch("eu-west-1", "m5.large", "eu-west-1a", name="web-3")
        wait_until(lambda: new_id in watch.resources_by_instance(), WITHIN, "the launch")
        assert time.monotonic() - started < WITHIN
        resource_id = watch.resources_by_instance()[new_id].resource_id
        settle(watch, adapter, clear=False)  # any later event would be a duplicate
        assert watch.live_events() == [(ADDED, resource_id)]
        watch.clear_events()

        # Re-tagged: one MODIFIED.
        ec2("eu-west-1").create_tags(Resources=[new_id], Tags=[{"Key": "Name", "Value": "web-9"}])
        wait_until(
            lambda: watch.resources_by_instance()[new_id].name == "web-9", WITHIN, "the re-tag"
        )
        settle(watch, adapter, clear=False)
        assert watch.live_events() == [(MODIFIED, resource_id)]
        watch.clear_events()

        # Stopped: one MODIFIED, its state.
        ec2("eu-west-1").stop_instances(InstanceIds=[new_id])
        wait_until(
            lambda: watch.resources_by_instance()[new_id].extensions["state"] == "stopped",
            WITHIN,
            "the stop",
        )
        settle(watch, adapter, clear=False)
        assert watch.live_events() == [(MODIFIED, resource_id)]
        watch.clear_events()

        # Terminated: one DELETED.
        ec2("eu-west-1").terminate_instances(InstanceIds=[new_id])
        wait_until(lambda: new_id not in watch.resources_by_instance(), WITHIN, "the deletion")
        settle(watch, adapter, clear=False)
        assert watch.live_events() == [(DELETED, resource_id)]
        assert watch.error is None
    finally:
        watch.close()
        adapter.stop()


def test_an_unchanged_account_polled_many_times_sends_no_event(
    moto: MotoServer, tmp_path: Path
) -> None:
    seed_account()
    adapter = AdapterProcess(tmp_path, moto.url, poll_interval=0.1).start()
    watch = synced_watch(adapter.grpc_port)
    try:
        watch.clear_events()
        start = metric(adapter.metrics(), "netweave_aws_polls_total", outcome="success")
        wait_until(
            lambda: (
                metric(adapter.metrics(), "netweave_aws_polls_total", outcome="success")
                >= start + 2 * 30
            ),
            60,
            "30 more polls of both regions",
        )
        assert watch.live_events() == []
        _, problems = adapter.info()
        assert problems == []
        assert watch.error is None
    finally:
        watch.close()
        adapter.stop()


def test_a_failing_region_keeps_its_snapshot_is_reported_and_reconciles(
    moto: MotoServer, proxy: RegionProxy, tmp_path: Path
) -> None:
    seeded = seed_account()
    adapter = AdapterProcess(tmp_path, proxy.url, poll_interval=INTERVAL).start()
    watch = synced_watch(adapter.grpc_port)
    try:
        before = watch.resources_by_instance()
        settle(watch, adapter)

        proxy.set_mode("us-east-1", DROP)
        wait_until(
            lambda: any("us-east-1" in problem for problem in adapter.info()[1]),
            20,
            "the problem reported",
        )
        assert "serving its snapshot" in adapter.info()[1][0]
        assert metric(adapter.metrics(), "netweave_aws_region_up", region="us-east-1") == 0
        # Meanwhile: the other region goes on, the failing one's objects stay.
        (eu_id,) = launch("eu-west-1", "m5.large", "eu-west-1b", name="while-down")
        wait_until(lambda: eu_id in watch.resources_by_instance(), WITHIN, "eu-west-1 changes")
        (us_id,) = launch("us-east-1", "c5.xlarge", "us-east-1a", name="late")
        time.sleep(2 * INTERVAL)
        assert seeded.instances["db-1"] in watch.resources_by_instance()
        assert us_id not in watch.resources_by_instance()

        proxy.set_mode("us-east-1", FORWARD)
        wait_until(lambda: us_id in watch.resources_by_instance(), 30, "the region back")
        wait_until(lambda: adapter.info()[1] == [], 10, "the problem cleared")
        settle(watch, adapter, clear=False)
        # Everything since the region went away: the two launches, nothing deleted, nothing
        # re-added.
        resources = watch.resources_by_instance()
        assert watch.live_events() == [
            (ADDED, resources[eu_id].resource_id),
            (ADDED, resources[us_id].resource_id),
        ]
        assert set(resources) == set(before) | {eu_id, us_id}
        assert metric(adapter.metrics(), "netweave_aws_region_up", region="us-east-1") == 1
        assert (
            metric(
                adapter.metrics(), "netweave_aws_polls_total", region="us-east-1", outcome="failure"
            )
            >= 1
        )
    finally:
        watch.close()
        adapter.stop()


def test_no_watch_before_every_region_was_read_once(
    moto: MotoServer, proxy: RegionProxy, tmp_path: Path
) -> None:
    seed_account()
    proxy.set_mode("us-east-1", DROP)
    adapter = AdapterProcess(tmp_path, proxy.url, poll_interval=INTERVAL).start()
    try:
        wait_until(
            lambda: any("not read yet" in problem for problem in adapter.info()[1]),
            20,
            "the problem reported",
        )
        with grpc.insecure_channel(f"127.0.0.1:{adapter.grpc_port}") as channel:
            stub = adapter_pb2_grpc.AdapterServiceStub(channel)
            try:
                stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=5)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert "us-east-1" in str(error.details())
            else:
                raise AssertionError("ListObjects answered before the first complete poll")
        proxy.set_mode("us-east-1", FORWARD)
        watch = synced_watch(adapter.grpc_port)
        watch.close()
    finally:
        adapter.stop()


def test_throttling_slows_polls_without_errors_or_events(
    moto: MotoServer, proxy: RegionProxy, tmp_path: Path
) -> None:
    seed_account()
    adapter = AdapterProcess(tmp_path, proxy.url, poll_interval=INTERVAL).start()
    watch = synced_watch(adapter.grpc_port)
    try:
        settle(watch, adapter)
        # Every 6th request of one region (us-east-1 is read as usual meanwhile).
        proxy.throttle_every = 6
        proxy.set_mode("eu-west-1", THROTTLE)
        (new_id,) = launch("eu-west-1", "m5.large", "eu-west-1a", name="throttled")
        # botocore's adaptive mode slows the client down after each throttle: slow polls.
        wait_until(lambda: new_id in watch.resources_by_instance(), 120, "the launch")
        settle(watch, adapter, polls=2, clear=False, timeout=180)
        resource_id = watch.resources_by_instance()[new_id].resource_id
        assert watch.live_events() == [(ADDED, resource_id)]
        assert proxy.refused["eu-west-1"] > 0
        text = adapter.metrics()
        assert metric(text, "netweave_aws_http_requests_total") > metric(
            text, "netweave_aws_api_calls_total"
        )
        assert metric(text, "netweave_aws_polls_total", outcome="failure") == 0
        assert adapter.info()[1] == []
    finally:
        watch.close()
        adapter.stop()


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("NETWEAVE_")}
    return subprocess.run(
        [sys.executable, "-m", "adapters.aws", "--port", "0", *args],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_regions_is_exit_code_2_with_a_message() -> None:
    result = _run({})
    assert result.returncode == 2
    assert "NETWEAVE_AWS_REGIONS" in result.stderr


def test_a_bad_mapping_file_is_exit_code_2_naming_the_key(tmp_path: Path) -> None:
    mapping = tmp_path / "aws-mapping.yaml"
    mapping.write_text("pools:\n  eu-west-1a:\n    nmae: x\n")
    result = _run({"NETWEAVE_AWS_REGIONS": "eu-west-1", "NETWEAVE_AWS_MAPPING": str(mapping)})
    assert result.returncode == 2
    assert "pools.eu-west-1a.nmae: unknown key" in result.stderr


def test_a_bad_poll_interval_is_exit_code_2() -> None:
    result = _run({"NETWEAVE_AWS_REGIONS": "eu-west-1", "NETWEAVE_AWS_POLL_INTERVAL": "soon"})
    assert result.returncode == 2
    assert "NETWEAVE_AWS_POLL_INTERVAL" in result.stderr
