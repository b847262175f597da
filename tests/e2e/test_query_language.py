"""SOL013 query semantics on every list, through REST (real Envoy) and gRPC (o2ims-spec.md
§4, §10; checklist Q1-Q10), against a stack whose page size is small enough to page."""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc

from devstack.processes import wait_until
from devstack.stack import LocalStack
from tests.e2e.conftest import start_stack
from tests.e2e.test_conformance_rest import assert_problem

pytestmark = pytest.mark.e2e

INV = "/o2ims-infrastructureInventory/v1"
PAGE_SIZE = 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Small pages, so that paging is exercised on the example inventory."""
    running = start_stack(tmp_path_factory, {"NETWEAVE_PAGE_SIZE": str(PAGE_SIZE)})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def inventory(stack: LocalStack) -> v1_grpc.InventoryServiceStub:
    return v1_grpc.InventoryServiceStub(grpc.insecure_channel(stack.grpc_address))


@pytest.fixture(scope="module")
def document(stack: LocalStack) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(stack.config.inventory.read_text())
    return loaded


def _big_pool(document: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for resource in document["resources"]:
        counts[resource["resourcePoolId"]] = counts.get(resource["resourcePoolId"], 0) + 1
    return max(counts, key=lambda pool: counts[pool])


def walk(rest: httpx.Client, url: str) -> list[dict[str, Any]]:
    """Follow Link rel="next" to the end; every page is a bare array."""
    items: list[dict[str, Any]] = []
    pages = 0
    while url:
        response = rest.get(url)
        assert response.status_code == 200, response.text
        page = json.loads(response.content)
        assert isinstance(page, list) and len(page) <= PAGE_SIZE
        items.extend(page)
        pages += 1
        assert pages < 100
        match = re.match(r'<([^>]+)>; rel="next"', response.headers.get("link", ""))
        url = match.group(1) if match else ""
    return items


def _link_target(link: str) -> str:
    match = re.match(r"<([^>]+)>", link)
    assert match is not None, link
    return match.group(1)


def ids(items: list[dict[str, Any]], field: str) -> list[str]:
    return [item[field] for item in items]


# --- Q1-Q5: the filter ---------------------------------------------------------------------


def test_q1_all_ten_operators_on_strings(rest: httpx.Client, document: dict[str, Any]) -> None:
    types = walk(rest, f"{INV}/resourceTypes")
    names = {t["name"] for t in types}
    comparisons = {
        "eq": operator.eq,
        "neq": operator.ne,
        "gt": operator.gt,
        "lt": operator.lt,
        "gte": operator.ge,
        "lte": operator.le,
    }
    for op, compare in comparisons.items():
        got = walk(rest, f"{INV}/resourceTypes?filter=({op},name,pserver_if)")
        expected = [t for t in types if compare(t["name"], "pserver_if")]
        assert sorted(ids(got, "resourceTypeId")) == sorted(ids(expected, "resourceTypeId")), op
    ethernet = walk(rest, f"{INV}/resourceTypes?filter=(cont,description,Ethernet)")
    assert ethernet and all("Ethernet" in t["description"] for t in ethernet)
    no_ethernet = walk(rest, f"{INV}/resourceTypes?filter=(ncont,description,Ethernet)")
    assert len(ethernet) + len(no_ethernet) == len(types)
    chosen = walk(rest, f"{INV}/resourceTypes?filter=(in,name,pserver,pserver_if,nothing)")
    assert {t["name"] for t in chosen} == {"pserver", "pserver_if"} & names
    rest_of = walk(rest, f"{INV}/resourceTypes?filter=(nin,name,pserver,pserver_if)")
    assert len(chosen) + len(rest_of) == len(types)

    pool = _big_pool(document)
    resource_id = next(
        r["resourceId"] for r in document["resources"] if r["resourcePoolId"] == pool
    )
    one = walk(rest, f"{INV}/resourcePools/{pool}/resources?filter=(eq,resourceId,{resource_id})")
    assert ids(one, "resourceId") == [resource_id]
    others = walk(
        rest, f"{INV}/resourcePools/{pool}/resources?filter=(neq,resourceId,{resource_id})"
    )
    assert resource_id not in ids(others, "resourceId") and others


def test_q2_types_are_coerced_and_uuids_compare_case_insensitively(
    rest: httpx.Client, document: dict[str, Any]
) -> None:
    realtime = walk(rest, f"{INV}/resourcePools?filter=(eq,extensions/realtimeKernel,true)")
    assert [p["extensions"]["realtimeKernel"] for p in realtime] == [True]
    pool = _big_pool(document)
    many_cores = walk(
        rest, f"{INV}/resourcePools/{pool}/resources?filter=(gte,extensions/cores,32)"
    )
    assert many_cores and all(r["extensions"]["cores"] >= 32 for r in many_cores)
    upper = walk(rest, f"{INV}/resourcePools?filter=(eq,resourcePoolId,{pool.upper()})")
    assert ids(upper, "resourcePoolId") == [pool]
    # A value that cannot be the attribute's type is a 400 for typed attributes; inside
    # free-form extensions each object's own value decides, so it is simply no match.
    assert_problem(rest.get(f"{INV}/resourceTypes?filter=(eq,resourceKind,BANANA)"), 400)
    physical = walk(rest, f"{INV}/resourceTypes?filter=(eq,resourceKind,PHYSICAL)")
    assert physical and all(t["resourceKind"] == "PHYSICAL" for t in physical)
    assert walk(rest, f"{INV}/resourcePools?filter=(eq,extensions/realtimeKernel,maybe)") == []


def test_q3_terms_and_repeated_filters_are_anded(
    rest: httpx.Client, document: dict[str, Any]
) -> None:
    pool = _big_pool(document)
    base = f"{INV}/resourcePools/{pool}/resources"
    type_id = next(
        r["resourceTypeId"] for r in document["resources"] if r["resourcePoolId"] == pool
    )
    combined = walk(rest, f"{base}?filter=(eq,resourceTypeId,{type_id});(cont,description,rack)")
    repeated = walk(
        rest, f"{base}?filter=(eq,resourceTypeId,{type_id})&filter=(cont,description,rack)"
    )
    assert combined == repeated and combined
    assert all(r["resourceTypeId"] == type_id and "rack" in r["description"] for r in combined)


def test_q4_quoted_values_keep_commas_spaces_and_quotes(rest: httpx.Client) -> None:
    location = "Frankfurt regional data centre, hall 2, rows C-D"
    found = walk(rest, f"{INV}/resourcePools?filter=" + quote(f"(eq,location,'{location}')"))
    assert [p["location"] for p in found] == [location]
    none = walk(rest, f"{INV}/resourcePools?filter=" + quote("(eq,name,'it''s, (odd)')"))
    assert none == []


def test_q5_nested_paths(rest: httpx.Client) -> None:
    vdu = walk(rest, f"{INV}/resourcePools?filter=(eq,extensions/workload,vDU)")
    assert [p["extensions"]["workload"] for p in vdu] == ["vDU"]
    # Arrays match when any element does.
    ric = walk(rest, f"{INV}/resourcePools?filter=(eq,extensions/workload,near-RT-RIC)")
    assert len(ric) == 1 and "near-RT-RIC" in ric[0]["extensions"]["workload"]


# --- Q6-Q8: errors --------------------------------------------------------------------------


LISTS = [
    f"{INV}/resourceTypes",
    f"{INV}/resourcePools",
    f"{INV}/deploymentManagers",
    f"{INV}/alarmDictionaries",
    f"{INV}/subscriptions",
    "/o2ims-infrastructureInventory/v2/locations",
    "/o2ims-infrastructureInventory/v2/oCloudSites",
    "/o2ims-infrastructureMonitoring/v1/alarms",
    "/o2ims-infrastructureMonitoring/v1/alarmSubscriptions",
]


@pytest.mark.parametrize("path", LISTS)
def test_q6_q8_unknown_attributes_are_400_on_every_list(rest: httpx.Client, path: str) -> None:
    problem = assert_problem(rest.get(f"{path}?filter=(eq,WrongAttrName,anyvalue)"), 400)
    assert "WrongAttrName" in problem["detail"]
    problem = assert_problem(rest.get(f"{path}?fields=(xId,WrongAttrName)"), 400)
    assert "(xId" in problem["detail"]
    assert_problem(rest.get(f"{path}?exclude_fields=WrongAttrName"), 400)


def test_q8_selectors_on_the_o_cloud_are_validated(rest: httpx.Client) -> None:
    assert_problem(rest.get(f"{INV}?fields=WrongAttrName"), 400)
    assert rest.get(f"{INV}?fields=extensions").status_code == 200


@pytest.mark.parametrize(
    ("expression", "points_at"),
    [
        ("invalid-syntax", "position"),
        ("(eq,name,pserver", "')'"),
        ("(eqq,name,pserver)", "eqq"),
        ("(eq,name,a,b)", "exactly 1"),
        ("(eq,name,x);(gt,name)", "term 2"),
    ],
)
def test_q7_bad_syntax_is_400_pointing_at_the_problem(
    rest: httpx.Client, expression: str, points_at: str
) -> None:
    problem = assert_problem(rest.get(f"{INV}/resourceTypes?filter=" + quote(expression)), 400)
    assert points_at in problem["detail"], problem["detail"]


# --- Q9: selectors -------------------------------------------------------------------------


def test_q9_attribute_selectors(rest: httpx.Client) -> None:
    full = walk(rest, f"{INV}/deploymentManagers?all_fields")
    assert all({"capabilities", "capacity", "extensions"} <= set(m) for m in full)
    trimmed = walk(rest, f"{INV}/deploymentManagers?exclude_fields=extensions")
    assert all("extensions" not in m and "capabilities" in m for m in trimmed)
    names = walk(rest, f"{INV}/deploymentManagers?fields=name")
    assert all({"deploymentManagerId", "name", "oCloudId"} <= set(m) for m in names)
    assert all("capacity" not in m for m in names)
    default = walk(rest, f"{INV}/deploymentManagers?exclude_default")
    assert all("capabilities" not in m and "extensions" not in m for m in default)
    types = walk(rest, f"{INV}/resourceTypes?exclude_fields=extensions")
    # CONF 7.3.5: the embedded alarm dictionary stays when only extensions are excluded.
    assert any("alarmDictionary" in t for t in types)
    assert all("extensions" not in t for t in types)


# --- Q10: paging -----------------------------------------------------------------------------


def test_q10_link_paging_walks_every_item_exactly_once(
    rest: httpx.Client, document: dict[str, Any]
) -> None:
    pool = _big_pool(document)
    expected = sorted(r["resourceId"] for r in document["resources"] if r["resourcePoolId"] == pool)
    assert len(expected) > 2 * PAGE_SIZE
    first = rest.get(f"{INV}/resourcePools/{pool}/resources")
    assert 'rel="next"' in first.headers["link"]
    walked = walk(rest, f"{INV}/resourcePools/{pool}/resources")
    assert ids(walked, "resourceId") == expected


def test_q10_items_removed_or_added_between_pages_never_duplicate(
    stack: LocalStack, rest: httpx.Client, document: dict[str, Any]
) -> None:
    pool = _big_pool(document)
    url = f"{INV}/resourcePools/{pool}/resources"
    first = rest.get(url)
    seen = ids(json.loads(first.content), "resourceId")
    next_url = _link_target(first.headers["link"])
    original = stack.config.inventory.read_text()
    removed = ""
    try:
        edited = yaml.safe_load(original)
        later = [
            r
            for r in edited["resources"]
            if r["resourcePoolId"] == pool and r["resourceId"] not in seen
        ]
        removed = later[0]["resourceId"]
        edited["resources"] = [r for r in edited["resources"] if r["resourceId"] != removed]
        stack.config.inventory.write_text(yaml.safe_dump(edited, sort_keys=False))
        wait_until(lambda: removed not in ids(walk(rest, url), "resourceId"), 5.0, "the removal")
        rest_of = walk(rest, next_url)
        all_ids = seen + ids(rest_of, "resourceId")
        assert len(all_ids) == len(set(all_ids)), "no duplicates"
        assert removed not in all_ids
        survivors = {r["resourceId"] for r in edited["resources"] if r["resourcePoolId"] == pool}
        assert set(all_ids) == survivors
    finally:
        stack.config.inventory.write_text(original)
        wait_until(lambda: removed in ids(walk(rest, url), "resourceId"), 5.0, "the restore")


def test_q10_markers_are_tamper_proof_but_the_conformance_marker_passes(
    rest: httpx.Client, document: dict[str, Any]
) -> None:
    pool = _big_pool(document)
    url = f"{INV}/resourcePools/{pool}/resources"
    link = rest.get(url).headers["link"]
    found = re.search(r"nextpage_opaque_marker=([^&>]+)", link)
    assert found is not None, link
    marker = found.group(1)
    forged = marker[:-2] + ("AA" if not marker.endswith("AA") else "BB")
    assert_problem(rest.get(f"{url}?nextpage_opaque_marker={forged}"), 400)
    # A marker from one query is refused on another.
    assert_problem(
        rest.get(f"{url}?nextpage_opaque_marker={marker}&filter=(cont,description,rack)"), 400
    )
    # ITT 7.3.5: `nextpage_opaque_marker=2` when everything fits in one page -> 200.
    type_id = document["resourceTypes"][0]["resourceTypeId"]
    small = rest.get(
        f"{INV}/resourceTypes?nextpage_opaque_marker=2&filter=(eq,resourceTypeId,{type_id})"
    )
    assert small.status_code == 200 and len(json.loads(small.content)) == 1
    assert_problem(rest.get(f"{url}?nextpage_opaque_marker=2"), 400)


# --- the same engine over gRPC -------------------------------------------------------------------


def test_grpc_filters_pages_and_reports_bad_queries_with_details(
    inventory: v1_grpc.InventoryServiceStub, document: dict[str, Any]
) -> None:
    pool = _big_pool(document)
    expected = sorted(r["resourceId"] for r in document["resources"] if r["resourcePoolId"] == pool)
    walked: list[str] = []
    token = ""
    while True:
        page = inventory.ListResources(
            v1.ListResourcesRequest(resource_pool_id=pool, nextpage_opaque_marker=token)
        )
        walked.extend(r.resource_id for r in page.resources)
        token = page.next_page_token
        if not token:
            break
    assert walked == expected

    only = inventory.ListResourceTypes(
        v1.ListResourceTypesRequest(filter=["(eq,name,pserver_mem)"], exclude_default=True)
    )
    assert [t.name for t in only.resource_types] == ["pserver_mem"]
    assert not only.resource_types[0].HasField("extensions")

    with pytest.raises(grpc.RpcError) as raised:
        inventory.ListResourcePools(v1.ListResourcePoolsRequest(filter=["(eq,WrongAttrName,x)"]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)
    assert status is not None
    violations = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(bad.field_violations)
    assert [v.field for v in violations] == ["filter"]
    assert "WrongAttrName" in violations[0].description


PARITY_FILTERS = [
    "(eq,name,pserver_if)",
    "(neq,name,pserver_if)",
    "(gt,name,pserver_if)",
    "(lte,name,pserver_if)",
    "(cont,description,Ethernet)",
    "(ncont,description,Ethernet)",
    "(in,name,pserver,pserver_mem)",
    "(nin,name,pserver,pserver_mem)",
    "(eq,resourceKind,PHYSICAL);(cont,description,server)",
    "(eq,description,'4x25GbE Ethernet network adapter, GNSS')",
    "(eq,extensions/nothing/here,x)",
    # errors: unknown attribute, syntax, arity, type
    "(eq,WrongAttrName,x)",
    "(eq,name,x",
    "(eq,name,a,b)",
    "(eq,resourceKind,BANANA)",
]


@pytest.mark.parametrize("expression", PARITY_FILTERS)
def test_rest_and_grpc_answer_every_query_alike(
    rest: httpx.Client, inventory: v1_grpc.InventoryServiceStub, expression: str
) -> None:
    response = rest.get(f"{INV}/resourceTypes?filter=" + quote(expression))
    try:
        reply = inventory.ListResourceTypes(v1.ListResourceTypesRequest(filter=[expression]))
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        problem = assert_problem(response, 400)
        assert problem["detail"] == error.details()
        return
    assert response.status_code == 200, response.text
    assert ids(json.loads(response.content), "resourceTypeId") == [
        t.resource_type_id for t in reply.resource_types
    ]
