"""Issue acceptance, against real processes: REST through Envoy, grpcurl, live edits,
and a Redis outage."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from google.protobuf import json_format
from o2ims.inventory.v1 import inventory_pb2 as v1

from devstack.processes import wait_until
from devstack.stack import LocalStack
from server.store import EVENTS_KEY, OBJECTS_PREFIX

pytestmark = pytest.mark.e2e

V1 = "/o2ims-infrastructureInventory/v1"
POOL_FIELDS = {
    "resourcePoolId",
    "name",
    "description",
    "oCloudId",
    "globalLocationId",
    "location",
    "extensions",
}
RESOURCE_FIELDS = {
    "resourceId",
    "resourcePoolId",
    "resourceTypeId",
    "description",
    "globalAssetId",
    "elements",
    "tags",
    "groups",
    "extensions",
}
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def _yaml(stack: LocalStack) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(stack.config.inventory.read_text())
    return loaded


def _json(response: httpx.Response) -> Any:
    return json.loads(response.content)


def test_resource_pools_are_a_bare_array_with_o2ims_field_names(
    stack: LocalStack, rest: httpx.Client
) -> None:
    response = rest.get(f"{V1}/resourcePools")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "grpc-status" not in response.headers
    pools = _json(response)
    assert isinstance(pools, list)
    expected = {p["resourcePoolId"] for p in _yaml(stack)["resourcePools"]}
    assert {p["resourcePoolId"] for p in pools} == expected
    for pool in pools:
        assert set(pool) >= POOL_FIELDS, pool
        assert pool["globalLocationId"], "1.x pools carry the location of their site"


def test_pool_resources_and_resource_detail_with_elements(
    stack: LocalStack, rest: httpx.Client
) -> None:
    document = _yaml(stack)
    pool_id = document["resourcePools"][0]["resourcePoolId"]
    expected = {r["resourceId"] for r in document["resources"] if r["resourcePoolId"] == pool_id}
    response = rest.get(f"{V1}/resourcePools/{pool_id}/resources")
    assert response.status_code == 200
    resources = _json(response)
    assert {r["resourceId"] for r in resources} == expected
    for resource in resources:
        assert set(resource) >= RESOURCE_FIELDS, resource
        assert resource["resourcePoolId"] == pool_id

    with_elements = next(r for r in document["resources"] if r.get("elements"))
    detail = rest.get(
        f"{V1}/resourcePools/{with_elements['resourcePoolId']}/resources/{with_elements['resourceId']}"
    )
    assert detail.status_code == 200
    body = _json(detail)
    assert [e["resourceId"] for e in body["elements"]] == [
        e["resourceId"] for e in with_elements["elements"]
    ]
    assert all(e["parentId"] == with_elements["resourceId"] for e in body["elements"])


def test_cloud_info_resource_types_and_deployment_managers(
    stack: LocalStack, rest: httpx.Client
) -> None:
    document = _yaml(stack)
    for path in (V1, V1 + "/"):
        cloud = rest.get(path)
        assert cloud.status_code == 200, path
        info = _json(cloud)
        assert info["oCloudId"] == document["oCloud"]["oCloudId"]
        assert info["globalcloudId"] == info["globalCloudId"] == document["oCloud"]["globalCloudId"]
        assert info["serviceUri"] == stack.rest_url
        assert {"name", "description", "extensions"} <= set(info)

    types = _json(rest.get(f"{V1}/resourceTypes"))
    assert {t["resourceTypeId"] for t in types} == {
        t["resourceTypeId"] for t in document["resourceTypes"]
    }
    one = types[0]
    detail = rest.get(f"{V1}/resourceTypes/{one['resourceTypeId']}")
    assert detail.status_code == 200 and _json(detail) == one
    assert one["resourceKind"] in {"PHYSICAL", "LOGICAL", "UNDEFINED"}
    assert any(
        t.get("alarmDictionary", {}).get("managementInterfaceId") == ["O2IMS"] for t in types
    )

    managers = _json(rest.get(f"{V1}/deploymentManagers"))
    assert {m["deploymentManagerId"] for m in managers} == {
        m["deploymentManagerId"] for m in document["deploymentManagers"]
    }
    manager = rest.get(f"{V1}/deploymentManagers/{managers[0]['deploymentManagerId']}")
    assert manager.status_code == 200
    assert {"serviceUri", "supportedLocations", "capabilities", "capacity", "oCloudId"} <= set(
        _json(manager)
    )


@pytest.mark.parametrize(
    "path",
    [
        "/resourcePools/3f1e2d4c-0000-4000-8000-000000000000",
        "/resourcePools/3f1e2d4c-0000-4000-8000-000000000000/resources",
        "/resourceTypes/3f1e2d4c-0000-4000-8000-000000000000",
        "/deploymentManagers/3f1e2d4c-0000-4000-8000-000000000000",
        "/resourcePools/not-a-uuid",
    ],
)
def test_unknown_ids_return_404_problem_details(rest: httpx.Client, path: str) -> None:
    response = rest.get(V1 + path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = _json(response)
    assert problem["status"] == 404 and problem["detail"]
    assert "instance" not in problem


def test_resource_under_the_wrong_pool_is_404(stack: LocalStack, rest: httpx.Client) -> None:
    document = _yaml(stack)
    pools = [p["resourcePoolId"] for p in document["resourcePools"]]
    resource = document["resources"][0]
    other_pool = next(p for p in pools if p != resource["resourcePoolId"])
    good = rest.get(
        f"{V1}/resourcePools/{resource['resourcePoolId']}/resources/{resource['resourceId']}"
    )
    wrong = rest.get(f"{V1}/resourcePools/{other_pool}/resources/{resource['resourceId']}")
    assert good.status_code == 200
    assert wrong.status_code == 404


def _grpcurl(stack: LocalStack, *args: str) -> str:
    result = subprocess.run(
        [GRPCURL, "-plaintext", *args[:-1], stack.grpc_address, *args[-1:]]
        if args and args[0] == "-d"
        else [GRPCURL, "-plaintext", stack.grpc_address, *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_lists_describes_and_calls_the_inventory_service(
    stack: LocalStack, rest: httpx.Client
) -> None:
    services = _grpcurl(stack, "list").split()
    assert "o2ims.inventory.v1.InventoryService" in services
    assert "grpc.health.v1.Health" in services
    description = _grpcurl(stack, "describe", "o2ims.inventory.v1.InventoryService")
    assert "rpc ListResourcePools" in description
    # grpcurl prints proto field names, REST the O2ims JSON names: compare typed messages.
    over_grpc = json_format.Parse(
        _grpcurl(stack, "o2ims.inventory.v1.InventoryService/ListResourcePools"),
        v1.ListResourcePoolsResponse(),
    )
    over_rest = json_format.ParseDict(
        {"resourcePools": _json(rest.get(f"{V1}/resourcePools"))}, v1.ListResourcePoolsResponse()
    )
    assert len(over_grpc.resource_pools) >= 2
    assert over_grpc == over_rest


def test_unknown_id_over_grpc_is_not_found_with_details(stack: LocalStack) -> None:
    result = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-format-error",
            "-d",
            '{"resource_pool_id": "3f1e2d4c-0000-4000-8000-000000000000"}',
            stack.grpc_address,
            "o2ims.inventory.v1.InventoryService/GetResourcePool",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode != 0
    error = json.loads(result.stdout or result.stderr)
    assert error["code"] == 5  # NOT_FOUND
    reasons = [d.get("reason") for d in error["details"]]
    assert "RESOURCE_POOL_NOT_FOUND" in reasons


def _pool_names(rest: httpx.Client) -> dict[str, str]:
    return {p["resourcePoolId"]: p["name"] for p in _json(rest.get(f"{V1}/resourcePools"))}


def test_editing_the_inventory_changes_rest_within_a_second(
    stack: LocalStack, rest: httpx.Client, inventory_file: Path
) -> None:
    document = _yaml(stack)
    pool_id = document["resourcePools"][0]["resourcePoolId"]
    document["resourcePools"][0]["name"] = "renamed-while-running"
    inventory_file.write_text(yaml.safe_dump(document, sort_keys=False))
    started = time.monotonic()
    wait_until(
        lambda: _pool_names(rest)[pool_id] == "renamed-while-running",
        timeout=3.0,
        what="the edit to reach REST",
    )
    assert time.monotonic() - started < 1.5

    # A broken edit: the last good inventory stays served and the reason is logged.
    inventory_file.write_text(inventory_file.read_text() + "\n  - [unbalanced\n")
    assert stack.adapter is not None
    wait_until(
        lambda: "inventory_rejected" in stack.adapter.log_tail(50),  # type: ignore[union-attr]
        timeout=3.0,
        what="the adapter to log the rejected edit",
    )
    rejected = [
        json.loads(line)
        for line in stack.adapter.log_tail(50).splitlines()
        if "inventory_rejected" in line
    ][-1]
    assert rejected["line"] > 0
    time.sleep(0.5)
    assert _pool_names(rest)[pool_id] == "renamed-while-running"


def _redis_state(url: str) -> tuple[dict[str, dict[Any, Any]], int]:
    client = redis.Redis.from_url(url)
    try:
        kinds = ("resource_pool", "resource", "resource_type", "deployment_manager", "o_cloud")
        return {k: client.hgetall(OBJECTS_PREFIX + k) for k in kinds}, int(client.xlen(EVENTS_KEY))
    finally:
        client.close()


def test_redis_outage_is_reported_served_through_and_recovered(
    stack: LocalStack, rest: httpx.Client, inventory_file: Path
) -> None:
    assert stack.redis is not None
    time.sleep(1.2)  # let the append-only file catch up (appendfsync everysec)
    before, events_before = _redis_state(stack.redis_url)
    stack.redis.kill()

    wait_until(lambda: stack.readiness()[0] == 503, timeout=5.0, what="/readyz to fail")
    _, body = stack.readiness()
    assert "redis" in body["failing"]  # type: ignore[operator]
    assert "Redis" in json.dumps(body)

    # Reads are served from the core's cache, promptly.
    started = time.monotonic()
    response = rest.get(f"{V1}/resourcePools")
    assert response.status_code == 200 and len(_json(response)) == len(before["resource_pool"])
    assert time.monotonic() - started < 1.0

    # An edit made during the outage is not lost.
    document = _yaml(stack)
    pool_id = document["resourcePools"][-1]["resourcePoolId"]
    document["resourcePools"][-1]["name"] = "renamed-during-outage"
    inventory_file.write_text(yaml.safe_dump(document, sort_keys=False))
    time.sleep(1.0)

    stack.redis.start()
    wait_until(lambda: stack.readiness()[0] == 200, timeout=10.0, what="/readyz to recover")
    wait_until(
        lambda: _pool_names(rest)[pool_id] == "renamed-during-outage",
        timeout=5.0,
        what="the outage edit to be applied",
    )
    after, events_after = _redis_state(stack.redis_url)
    # Nothing lost, nothing duplicated: the same objects, and exactly one new event.
    assert after.keys() == before.keys()
    for kind in before:
        assert after[kind].keys() == before[kind].keys(), kind
    assert events_after == events_before + 1
