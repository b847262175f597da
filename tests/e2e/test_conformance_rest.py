"""The O2ims REST contract at the edge, walked item by item (o2ims-spec.md §9: G1-G9,
I1-I7; §12: CONF 7.3.5, 7.3.6, 7.3.9, 7.3.11, 7.3.12) against the real stack.

Query-language items (filters, selectors, paging: Q1-Q10) have their own module."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import yaml

from devstack.stack import LocalStack

pytestmark = pytest.mark.e2e

INV = "/o2ims-infrastructureInventory"
MON = "/o2ims-infrastructureMonitoring"
UNKNOWN_UUID = "3f1e2d4c-0000-4000-8000-000000000000"


def _body(response: httpx.Response) -> Any:
    return json.loads(response.content)


def _document(stack: LocalStack) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(stack.config.inventory.read_text())
    return loaded


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """G2: an RFC 7807 body whose status is the HTTP status, with no gRPC leakage."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    for header in ("grpc-status", "grpc-message", "grpc-status-details-bin"):
        assert header not in response.headers
    problem: dict[str, Any] = _body(response)
    assert problem["status"] == status
    assert isinstance(problem["detail"], str) and problem["detail"]
    assert isinstance(problem.get("title"), str)
    assert "instance" not in problem
    return problem


# --- G1: lists are bare arrays ----------------------------------------------------------


LIST_PATHS = [
    f"{INV}/v1/resourceTypes",
    f"{INV}/v1/resourcePools",
    f"{INV}/v1/deploymentManagers",
    f"{INV}/v1/alarmDictionaries",
    f"{INV}/v2/resourceTypes",
    f"{INV}/v2/resourcePools",
    f"{INV}/v2/deploymentManagers",
    f"{INV}/v2/alarmDictionaries",
    f"{INV}/v2/locations",
    f"{INV}/v2/oCloudSites",
]


@pytest.mark.parametrize("path", LIST_PATHS)
def test_g1_every_list_is_a_bare_json_array(rest: httpx.Client, path: str) -> None:
    response = rest.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    items = _body(response)
    assert isinstance(items, list) and items, path


def test_g1_pool_resources_are_a_bare_array_in_both_majors(
    stack: LocalStack, rest: httpx.Client
) -> None:
    pool_id = _document(stack)["resourcePools"][0]["resourcePoolId"]
    for major in ("v1", "v2"):
        items = _body(rest.get(f"{INV}/{major}/resourcePools/{pool_id}/resources"))
        assert isinstance(items, list) and items


# --- G4, G9: unknown paths, majors and ids ------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"{INV}/v1/deploymentManagersWrongURL",  # CONF 7.3.9
        f"{INV}/v3/deploymentManagers",  # a major that is not served
        f"{INV}/v3",
        f"{INV}/v1/resourcePools/{UNKNOWN_UUID}",
        f"{INV}/v2/resourcePools/{UNKNOWN_UUID}",
        f"{INV}/v1/resourcePools/{UNKNOWN_UUID}/resources",  # unknown pool: 404, not []
        f"{INV}/v1/resourcePools/{UNKNOWN_UUID}/resources/{UNKNOWN_UUID}",
        f"{INV}/v1/resourceTypes/{UNKNOWN_UUID}",
        f"{INV}/v1/resourceTypes/{UNKNOWN_UUID}/alarmDictionary",
        f"{INV}/v1/deploymentManagers/{UNKNOWN_UUID}",  # CONF 7.3.9
        f"{INV}/v1/alarmDictionaries/{UNKNOWN_UUID}",
        f"{INV}/v2/locations/no-such-location",
        f"{INV}/v2/oCloudSites/{UNKNOWN_UUID}",
        "/o2ims-infrastructureNothing/v1/resourcePools",
        "/",
    ],
)
def test_g4_unknown_paths_majors_and_ids_are_404_problem_details(
    rest: httpx.Client, path: str
) -> None:
    assert_problem(rest.get(path), 404)


@pytest.mark.parametrize(
    "bad_id",
    ["not-a-uuid", "a" * 300, "%00", "'; DROP TABLE x;--", "%F0%9F%92%A5", "-1", "%2F", "~"],
)
def test_g9_invalid_ids_are_4xx_never_5xx(rest: httpx.Client, bad_id: str) -> None:
    for template in (
        "{inv}/v1/resourcePools/{id}",
        "{inv}/v1/resourcePools/{id}/resources",
        "{inv}/v2/resourceTypes/{id}",
        "{inv}/v1/deploymentManagers/{id}",
    ):
        response = rest.get(template.format(inv=INV, id=bad_id))
        assert 400 <= response.status_code < 500, (template, bad_id, response.text)
        assert_problem(response, response.status_code)


@pytest.mark.parametrize("segment", ["..", "%2e%2e", ".", "%2E"])
def test_dot_segments_are_normalised_never_5xx(rest: httpx.Client, segment: str) -> None:
    # RFC 3986 removes dot-segments: `/v1/resourcePools/..` *is* `/v1`. Whatever it
    # resolves to, it must be a defined answer, not a server error.
    response = rest.get(f"{INV}/v1/resourcePools/{segment}")
    assert response.status_code < 500
    if response.status_code >= 400:
        assert_problem(response, response.status_code)


def test_a_resource_under_the_wrong_pool_is_404(stack: LocalStack, rest: httpx.Client) -> None:
    document = _document(stack)
    resource = document["resources"][0]
    other_pool = next(
        p["resourcePoolId"]
        for p in document["resourcePools"]
        if p["resourcePoolId"] != resource["resourcePoolId"]
    )
    for major in ("v1", "v2"):
        right = rest.get(
            f"{INV}/{major}/resourcePools/{resource['resourcePoolId']}/resources/{resource['resourceId']}"
        )
        assert right.status_code == 200
        wrong = rest.get(
            f"{INV}/{major}/resourcePools/{other_pool}/resources/{resource['resourceId']}"
        )
        assert_problem(wrong, 404)


# --- G3: 405 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "{inv}/v1/resourceTypes/{type_id}"),
        ("POST", "{inv}/v1/resourcePools"),
        ("POST", "{inv}/v1/resourcePools/{pool_id}/resources"),
        ("POST", "{inv}/v1/deploymentManagers"),
        ("POST", "{inv}/v1"),
        ("PATCH", "{inv}/v1/subscriptions"),
        ("POST", "{mon}/v1/alarms"),
        ("PATCH", "{mon}/v1/alarmSubscriptions"),
        ("DELETE", "{inv}/v2/locations"),
        ("PUT", "{inv}/v2/resourcePools/{pool_id}"),
    ],
)
def test_g3_undefined_methods_are_405_with_allow(
    stack: LocalStack, rest: httpx.Client, method: str, path: str
) -> None:
    document = _document(stack)
    url = path.format(
        inv=INV,
        mon=MON,
        type_id=document["resourceTypes"][0]["resourceTypeId"],
        pool_id=document["resourcePools"][0]["resourcePoolId"],
    )
    response = rest.request(method, url, json={} if method != "DELETE" else None)
    assert_problem(response, 405)
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert method not in allowed
    assert "GET" in allowed


# --- G5: malformed bodies --------------------------------------------------------------


@pytest.mark.parametrize("path", [f"{INV}/v1/subscriptions", f"{MON}/v1/alarmSubscriptions"])
@pytest.mark.parametrize(
    ("content_type", "payload"),
    [
        ("application/json", b'{"callback": "https://smo.example/cb",'),
        ("application/json", b"not json at all"),
        ("application/xml", b"<subscription><callback>https://smo/cb</callback></subscription>"),
    ],
)
def test_g5_malformed_or_non_json_bodies_are_400(
    rest: httpx.Client, path: str, content_type: str, payload: bytes
) -> None:
    response = rest.post(path, content=payload, headers={"content-type": content_type})
    assert_problem(response, 400)


# --- G7: api_versions ----------------------------------------------------------------------


def test_g7_api_versions_at_api_and_major_level(stack: LocalStack, rest: httpx.Client) -> None:
    everything = _body(rest.get(f"{INV}/api_versions"))
    assert {v["version"] for v in everything["apiVersions"]} == {"1.2.0", "2.0.0"}
    assert everything["uriPrefix"].endswith(INV)
    for major, version in (("v1", "1.2.0"), ("v2", "2.0.0")):
        info = _body(rest.get(f"{INV}/{major}/api_versions"))
        assert info["uriPrefix"] == f"{stack.rest_url}{INV}/{major}"
        assert [v["version"] for v in info["apiVersions"]] == [version]
    monitoring = rest.get(f"{MON}/v1/api_versions")
    assert monitoring.status_code == 200
    assert _body(monitoring)["apiVersions"]
    assert rest.get(f"{MON}/api_versions").status_code == 200


# --- G8: trailing slash ------------------------------------------------------------------


@pytest.mark.parametrize("path", [f"{INV}/v1", f"{INV}/v2", f"{INV}/v1/resourcePools"])
def test_g8_trailing_slash_is_tolerated(rest: httpx.Client, path: str) -> None:
    plain = rest.get(path)
    slashed = rest.get(path + "/")
    assert plain.status_code == slashed.status_code == 200
    assert _body(plain) == _body(slashed)


# --- I1-I7 ---------------------------------------------------------------------------------


def test_i1_cloud_info(stack: LocalStack, rest: httpx.Client) -> None:
    document = _document(stack)
    v1 = _body(rest.get(f"{INV}/v1/"))
    assert v1["oCloudId"] == document["oCloud"]["oCloudId"]
    assert v1["globalcloudId"] == document["oCloud"]["globalCloudId"]
    assert v1["globalCloudId"] == document["oCloud"]["globalCloudId"]
    assert v1["serviceUri"] == stack.rest_url  # the externally reachable root
    assert isinstance(v1["extensions"], dict)
    v2 = _body(rest.get(f"{INV}/v2"))
    assert "globalcloudId" not in v2 and v2["globalCloudId"] == v1["globalCloudId"]


def test_i2_resource_types_with_the_embedded_dictionary(rest: httpx.Client) -> None:
    types = _body(rest.get(f"{INV}/v1/resourceTypes"))
    for item in types:
        assert {"resourceTypeId", "name", "description", "vendor", "model", "version"} <= set(item)
        detail = rest.get(f"{INV}/v1/resourceTypes/{item['resourceTypeId']}")
        assert _body(detail) == item
    embedded = [t["alarmDictionary"] for t in types if "alarmDictionary" in t]
    assert embedded and all(d["managementInterfaceId"] == ["O2IMS"] for d in embedded)


def test_i3_i4_pools_and_resources(stack: LocalStack, rest: httpx.Client) -> None:
    pools = _body(rest.get(f"{INV}/v1/resourcePools"))
    for pool in pools:
        assert {"oCloudId", "globalLocationId", "location", "extensions"} <= set(pool)
        resources = _body(rest.get(f"{INV}/v1/resourcePools/{pool['resourcePoolId']}/resources"))
        for resource in resources:
            assert resource["resourcePoolId"] == pool["resourcePoolId"]
            assert {"elements", "extensions", "globalAssetId"} <= set(resource)


def test_i5_deployment_managers(rest: httpx.Client) -> None:
    managers = _body(rest.get(f"{INV}/v1/deploymentManagers"))
    assert managers
    for manager in managers:
        detail = _body(rest.get(f"{INV}/v1/deploymentManagers/{manager['deploymentManagerId']}"))
        assert {"capabilities", "capacity", "extensions", "serviceUri"} <= set(detail)


def test_i6_v2_locations_and_sites_cross_reference(rest: httpx.Client) -> None:
    locations = _body(rest.get(f"{INV}/v2/locations"))
    sites = _body(rest.get(f"{INV}/v2/oCloudSites"))
    pools = _body(rest.get(f"{INV}/v2/resourcePools"))
    site_by_id = {s["oCloudSiteId"]: s for s in sites}
    for location in locations:
        detail = _body(rest.get(f"{INV}/v2/locations/{location['globalLocationId']}"))
        assert detail == location
        for site_id in location["oCloudSiteIds"]:
            assert site_by_id[site_id]["globalLocationId"] == location["globalLocationId"]
    for pool in pools:
        site = _body(rest.get(f"{INV}/v2/oCloudSites/{pool['oCloudSiteId']}"))
        assert pool["resourcePoolId"] in site["resourcePools"]
        assert pool["globalLocationId"] == site["globalLocationId"]


def test_i7_alarm_dictionaries(rest: httpx.Client) -> None:
    for major in ("v1", "v2"):
        dictionaries = _body(rest.get(f"{INV}/{major}/alarmDictionaries"))
        assert dictionaries
        for dictionary in dictionaries:
            one = rest.get(f"{INV}/{major}/alarmDictionaries/{dictionary['alarmDictionaryId']}")
            assert _body(one) == dictionary
        types = _body(rest.get(f"{INV}/v2/resourceTypes"))
        typed = next(t for t in types if t.get("alarmDictionaryId"))  # optional
        via_type = rest.get(
            f"{INV}/{major}/resourceTypes/{typed['resourceTypeId']}/alarmDictionary"
        )
        assert _body(via_type)["alarmDictionaryId"] == typed["alarmDictionaryId"]


@pytest.mark.parametrize(
    "query",
    [
        "resource_pool_id={other}",
        "resourcePoolId={other}",
        "resource%5Fpool%5Fid={other}",
        "api_version=v2",
        "typo=1",
    ],
)
def test_query_parameters_cannot_override_the_path(
    stack: LocalStack, rest: httpx.Client, query: str
) -> None:
    # Unknown to the path, so dropped at the edge (lenient mode): never bound to the path.
    pools = [p["resourcePoolId"] for p in _document(stack)["resourcePools"]]
    url = f"{INV}/v1/resourcePools/{pools[0]}?{query.format(other=pools[1])}"
    assert _body(rest.get(url))["resourcePoolId"] == pools[0]
    listed = rest.get(f"{INV}/v1/subscriptions?{query.format(other='x')}")
    assert listed.status_code == 200, listed.text
