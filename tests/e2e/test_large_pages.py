"""A pool whose resources total 50 MB lists completely, page by page, through REST (real
Envoy, whose transcoder buffers at most 4 MiB of a response) and through gRPC with a
client's default 4 MiB receive limit: pages are bounded in bytes as well as in items
(ListingSettings.page_max_bytes), and the Link continues where a page ended early."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc

from devstack.processes import wait_until
from devstack.stack import LocalStack, StackConfig

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

INV = "/o2ims-infrastructureInventory/v1"
POOL = "b16b16b1-6000-4000-8000-000000000050"
RESOURCES = 1100
DESCRIPTION_BYTES = 45_500  # 1,100 x 45.5 KB: 50 MB of descriptions
# Envoy's max_response_body_size (envoy/gateway.yaml.in) and gRPC's default receive limit.
FOUR_MIB = 4 * 1024 * 1024


def resource_id(number: int) -> str:
    return str(uuid.UUID(int=(0xB16 << 96) + number, version=4))


def write_inventory(path: Path) -> None:
    """The example inventory plus one pool of RESOURCES large resources. The description
    is written once as a YAML anchor and repeated by alias, so the file stays small and
    the adapter parses it in well under a second; every object the core holds and serves
    still carries the whole text (nothing on the way compresses or shares it)."""
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    site = document["sites"][0]["oCloudSiteId"]
    resource_type = document["resourceTypes"][0]["resourceTypeId"]
    document["resourcePools"].append(
        {"resourcePoolId": POOL, "name": "big", "oCloudSiteId": site, "description": "50 MB"}
    )
    existing = document.pop("resources")
    words = ["rack", "unit", "serial", "firmware", "inventory", "note", "fronthaul", "nic"]
    text = " ".join(words[n % len(words)] for n in range(DESCRIPTION_BYTES))[:DESCRIPTION_BYTES]
    lines = [yaml.safe_dump(document, sort_keys=False), "resources:\n"]
    lines.append(yaml.safe_dump(existing, sort_keys=False))
    for number in range(RESOURCES):
        description = f"&description {text}" if number == 0 else "*description"
        lines.append(
            f"- resourceId: {resource_id(number)}\n"
            f"  resourcePoolId: {POOL}\n"
            f"  resourceTypeId: {resource_type}\n"
            f"  name: big-{number:04d}\n"
            f"  description: {description}\n"
        )
    path.write_text("".join(lines))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    config = StackConfig.ephemeral(tmp_path_factory.mktemp("stack"))
    write_inventory(config.inventory)
    expected = len(yaml.safe_load(config.inventory.read_text())["resources"])
    running = LocalStack(config).start()
    try:
        # The adapter's snapshot reaches the served view in bounded batches: the pool can
        # be served before its last resources are. Wait for all of them, not for the pool.
        def served_resources() -> int:
            _, body = running.readiness()
            checks: Any = body.get("checks", {})
            return int(checks.get("inventory", {}).get("objects", {}).get("resource", 0))

        wait_until(lambda: served_resources() == expected, 30, f"{expected} served resources")
        yield running
    finally:
        running.stop()


def test_a_50_mb_pool_lists_completely_through_rest_following_link(stack: LocalStack) -> None:
    started = time.monotonic()
    ids: list[str] = []
    body_sizes: list[int] = []
    url = f"{INV}/resourcePools/{POOL}/resources"
    with httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), timeout=20) as rest:
        while url:
            response = rest.get(url)
            assert response.status_code == 200, response.text[:500]
            page = json.loads(response.content)
            assert isinstance(page, list) and page
            assert all(len(item["description"]) == DESCRIPTION_BYTES for item in page)
            ids += [item["resourceId"] for item in page]
            body_sizes.append(len(response.content))
            url = response.links.get("next", {}).get("url", "")
            assert len(body_sizes) <= RESOURCES, "the Link never ends"
    elapsed = time.monotonic() - started

    assert sorted(ids) == ids
    assert ids == sorted(resource_id(n) for n in range(RESOURCES))
    assert sum(body_sizes) >= 50_000_000
    # Pages ended by bytes (not by the 1,000-item page size), each within Envoy's buffer.
    assert len(body_sizes) >= 13
    assert max(body_sizes) < FOUR_MIB
    assert elapsed < 45, f"the walk took {elapsed:.1f} s"


def test_a_50_mb_pool_lists_completely_through_grpc_with_default_client_limits(
    stack: LocalStack,
) -> None:
    ids: list[str] = []
    pages = 0
    marker = ""
    # No grpc.max_receive_message_length: a client's default 4 MiB must suffice.
    with grpc.insecure_channel(stack.grpc_address) as channel:
        stub = v1_grpc.InventoryServiceStub(channel)
        while True:
            request = v1.ListResourcesRequest(resource_pool_id=POOL, nextpage_opaque_marker=marker)
            response = stub.ListResources(request, timeout=20)
            assert response.ByteSize() < FOUR_MIB
            ids += [resource.resource_id for resource in response.resources]
            pages += 1
            marker = response.next_page_token
            if not marker:
                break
            assert pages <= RESOURCES, "the marker never ends"

    assert ids == sorted(resource_id(n) for n in range(RESOURCES))
    assert pages >= 25
