"""The OpenAPI document generated from the descriptor set, its checked-in copy, and the
contract checker the REST tests run every response through."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from rest_facade import openapi
from rest_facade.http_rules import read_rules, resource_paths
from tests.openapi_contract import ContractRecorder, ContractValidator, normalize_path

INV = "/o2ims-infrastructureInventory"
WIDGETS = "/o2ims-edgeTest/v1/widgets"
WIDGET = f"{WIDGETS}/{{widgetId}}"
PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}


def _schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


def test_checked_in_document_matches_the_protos(descriptor: Path, tmp_path: Path) -> None:
    regenerated = tmp_path / "o2ims.json"

    assert openapi.main(["--descriptor", str(descriptor), "--out", str(regenerated)]) == 0

    assert openapi.CHECKED_IN.read_text() == regenerated.read_text(), (
        f"{openapi.CHECKED_IN} is stale: run `make openapi` and commit the result"
    )


@pytest.mark.parametrize("which", ["openapi_document", "edge_openapi_document"])
def test_document_is_valid_openapi_3_1(request: pytest.FixtureRequest, which: str) -> None:
    document = request.getfixturevalue(which)

    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_http_rule_is_an_operation(
    edge_descriptor: Path, edge_openapi_document: dict[str, Any]
) -> None:
    paths = edge_openapi_document["paths"]
    validator = ContractValidator(edge_openapi_document)
    for resource in resource_paths(read_rules(edge_descriptor)):
        key, _ = validator.operation("GET", _concrete(resource.template.resource_path()))

        assert key is not None, resource.template.source
        assert {method.upper() for method in paths[key]} == set(resource.methods), key


def test_both_inventory_majors_and_every_api_are_documented(
    openapi_document: dict[str, Any],
) -> None:
    paths = openapi_document["paths"]

    for major in ("v1", "v2"):
        assert f"{INV}/{major}/resourcePools/{{resourcePoolId}}" in paths
        # Bound to a literal ({api_version=v1}): a fixed path, no parameter.
        assert f"{INV}/{major}/subscriptions/{{subscriptionId}}" in paths
    tags = {tag["name"] for tag in openapi_document["tags"]}
    assert {"o2ims-infrastructureInventory", "o2ims-infrastructureMonitoring"} <= tags


def test_lists_are_documented_as_bare_arrays(openapi_document: dict[str, Any]) -> None:
    response = openapi_document["paths"][f"{INV}/v1/resourcePools"]["get"]["responses"]["200"]

    assert response["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/o2ims.inventory.v1.ResourcePoolInfo"},
    }


def test_parameters_use_json_names_in_the_path_and_proto_names_in_the_query(
    edge_openapi_document: dict[str, Any],
) -> None:
    get_widget = edge_openapi_document["paths"][WIDGET]["get"]
    list_widgets = edge_openapi_document["paths"][WIDGETS]["get"]

    assert [(p["name"], p["in"]) for p in get_widget["parameters"]] == [("widgetId", "path")]
    query = {p["name"]: p for p in list_widgets["parameters"]}
    assert set(query) == {"filter", "page_size", "color", "names", "all_fields"}
    assert query["all_fields"]["allowEmptyValue"] is True
    assert query["page_size"]["schema"]["type"] == "integer"
    assert query["color"]["schema"]["enum"] == ["COLOR_UNSPECIFIED", "RED", "GREEN"]
    assert query["names"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert query["names"]["explode"] is True


def test_writes_document_bodies_201_location_and_empty_deletes(
    edge_openapi_document: dict[str, Any],
) -> None:
    paths = edge_openapi_document["paths"]
    create = paths[WIDGETS]["post"]
    patch = paths[WIDGET]["patch"]
    delete = paths[WIDGET]["delete"]

    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/netweave.edgetest.v1.Widget.Input"}
    assert "200" not in create["responses"]
    assert create["responses"]["201"]["headers"]["Location"]["required"] is True
    assert set(patch["requestBody"]["content"]) == {
        "application/json",
        "application/merge-patch+json",
    }
    assert delete["responses"]["200"] == {"description": "Done. The body is empty."}
    put = paths["/o2ims-edgeTest/v1/settings"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/netweave.edgetest.v1.Settings.Input"
    }


def test_message_schemas_follow_the_proto3_json_mapping(
    edge_openapi_document: dict[str, Any],
) -> None:
    widget = _schema(edge_openapi_document, "netweave.edgetest.v1.Widget")
    props = widget["properties"]

    assert widget["additionalProperties"] is False
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert props["extensions"] == {"type": "object", "additionalProperties": True}
    assert props["anything"] == {}
    assert props["createdTime"] == {"type": "string", "format": "date-time"}
    assert props["color"]["enum"] == ["COLOR_UNSPECIFIED", "RED", "GREEN"]
    assert props["bigNumber"]["type"] == "string"  # 64-bit integers are JSON strings
    assert props["blob"]["contentEncoding"] == "base64"
    assert "legacyID" in props  # json_name wins
    assert props["mainPart"]["$ref"] == "#/components/schemas/netweave.edgetest.v1.Part"
    # Printed always (always_print_primitive_fields) unless the field has presence.
    assert "size" not in widget["required"]  # proto3 optional
    assert "mainPart" not in widget["required"]  # a message
    assert "createdTime" not in widget["required"]
    assert {"widgetId", "name", "tags", "labels", "color", "parts"} <= set(widget["required"])
    assert props["widgetId"]["description"] == "Server-assigned."
    # The request variant requires nothing and tolerates unknown members.
    widget_input = _schema(edge_openapi_document, "netweave.edgetest.v1.Widget.Input")
    assert "required" not in widget_input
    assert "additionalProperties" not in widget_input
    assert widget_input["properties"]["bigNumber"]["type"] == ["string", "integer"]


def test_every_error_is_problem_details_without_instance(
    edge_openapi_document: dict[str, Any],
) -> None:
    components = edge_openapi_document["components"]
    problem = components["schemas"]["ProblemDetails"]

    assert "instance" not in problem["properties"]
    assert problem["additionalProperties"] is False
    assert set(problem["required"]) == {"status", "title", "detail"}
    for path, operations in edge_openapi_document["paths"].items():
        for method, operation in operations.items():
            statuses = {int(status) for status in operation["responses"]}
            assert {400, 404, 405, 500, 503} <= statuses, (method, path)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response == {"$ref": f"#/components/responses/{status}"}
    for response in components["responses"].values():
        assert response["content"] == {"application/problem+json": {"schema": PROBLEM_REF}}
    assert components["responses"]["405"]["headers"]["Allow"]["required"] is True


# --- the contract checker --------------------------------------------------------------------


def _concrete(key: str) -> str:
    return key.replace("{", "x").replace("}", "")


def _problem(status: int, **extra: Any) -> bytes:
    return json.dumps({"status": status, "title": "T", "detail": "D", **extra}).encode()


PROBLEM_HEADERS = {"content-type": "application/problem+json"}
JSON_HEADERS = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "status", "headers", "body", "complaint"),
    [
        ("GET", WIDGETS, 200, JSON_HEADERS, b"[]", None),
        ("GET", WIDGETS + "/", 200, JSON_HEADERS, b"[]", None),
        ("GET", WIDGETS, 200, JSON_HEADERS, b'{"widgets": []}', "is not of type 'array'"),
        ("GET", WIDGETS, 201, JSON_HEADERS, b"[]", "not documented"),
        ("GET", WIDGETS, 200, PROBLEM_HEADERS, b"[]", "content-type"),
        ("GET", WIDGETS, 404, PROBLEM_HEADERS, _problem(404), None),
        ("GET", WIDGETS, 404, PROBLEM_HEADERS, _problem(404, instance="/x"), "instance"),
        ("GET", WIDGETS, 404, PROBLEM_HEADERS, b'{"status": 404}', "'title' is a required"),
        ("GET", WIDGETS, 404, JSON_HEADERS, _problem(404), "content-type"),
        ("GET", WIDGET, 200, JSON_HEADERS, b"{}", "'widgetId' is a required"),
        ("DELETE", WIDGET, 200, {}, b"", None),
        ("DELETE", WIDGET, 200, JSON_HEADERS, b"{}", "without a body"),
        ("POST", WIDGETS, 201, JSON_HEADERS, b"{}", "Location is missing"),
        ("PUT", WIDGETS, 405, PROBLEM_HEADERS, _problem(405), "Allow is missing"),
        ("PUT", WIDGETS, 405, {**PROBLEM_HEADERS, "allow": "GET, POST"}, _problem(405), None),
        ("HEAD", WIDGETS, 405, {"allow": "GET, POST"}, b"", None),
        ("GET", "/nowhere", 404, PROBLEM_HEADERS, _problem(404), None),
        ("GET", "/nowhere", 200, JSON_HEADERS, b"{}", "no operation"),
        ("GET", "/nowhere", 418, PROBLEM_HEADERS, _problem(418), "not documented"),
        ("GET", "/openapi.json", 200, JSON_HEADERS, b'{"openapi": "3.1.0", "paths": {}}', None),
    ],
)
def test_contract_validator_finds_what_is_undocumented(
    *,
    edge_openapi_document: dict[str, Any],
    method: str,
    path: str,
    status: int,
    headers: dict[str, str],
    body: bytes,
    complaint: str | None,
) -> None:
    errors = ContractValidator(edge_openapi_document).check(
        method, _concrete(path), status, headers, body
    )

    if complaint is None:
        assert errors == []
    else:
        assert errors
        assert any(complaint in error for error in errors), errors


def test_contract_recorder_collects_and_reports(edge_openapi_document: dict[str, Any]) -> None:
    recorder = ContractRecorder(edge_openapi_document)
    request = httpx.Request("GET", f"https://gateway{WIDGETS}?filter=x")

    recorder.record(httpx.Response(200, json=[], request=request))
    recorder.record(httpx.Response(200, json={"widgets": []}, request=request))

    assert recorder.checked == 2
    with pytest.raises(AssertionError, match=r"1 response\(s\) broke the OpenAPI contract"):
        recorder.assert_all_valid()
    recorder.assert_all_valid()  # reported once, then cleared


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("/a//b", "/a/b"),
        ("/a/b/../c", "/a/c"),
        ("/a/%2e%2E/c", "/c"),
        ("/a/./b/", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/a/%2Fb", "/a/%2Fb"),
    ],
)
def test_paths_are_matched_as_normalized(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized


# --- what the edge enforces: request bodies, optional attributes, formats ---------------------

SUBSCRIPTION_BODIES = [
    (
        f"{INV}/v1/subscriptions",
        "o2ims.subscriptions.v1.InventorySubscriptionInfo",
        "subscriptionId",
    ),
    (
        "/o2ims-infrastructureMonitoring/v1/alarmSubscriptions",
        "o2ims.monitoring.v1.AlarmSubscriptionInfo",
        "alarmSubscriptionId",
    ),
]


@pytest.mark.parametrize(("path", "message", "id_attribute"), SUBSCRIPTION_BODIES)
def test_subscription_bodies_require_a_callback_and_take_no_id(
    openapi_document: dict[str, Any], path: str, message: str, id_attribute: str
) -> None:
    body = openapi_document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": f"#/components/schemas/{message}.Input"}
    request = _schema(openapi_document, f"{message}.Input")
    assert request["required"] == ["callback"]
    assert id_attribute not in request["properties"]  # server-assigned, refused on input
    response = _schema(openapi_document, message)
    assert response["properties"][id_attribute]["readOnly"] is True
    assert response["properties"][id_attribute]["format"] == "uuid"
    assert set(response["required"]) == {id_attribute, "callback"}


def test_optional_attributes_are_not_required_and_never_empty(
    openapi_document: dict[str, Any],
) -> None:
    v2_type = _schema(openapi_document, "o2ims.inventory.v2.ResourceTypeInfo")
    assert "alarmDictionaryId" not in v2_type["required"]
    assert v2_type["properties"]["alarmDictionaryId"] == {
        "type": "string",
        "format": "uuid",
        "minLength": 1,
        "description": "Left out when the type has no alarm dictionary.",
    }
    # An alarm subscription's filter: an event type or a SOL013 expression. Requests are held
    # to a pattern the core always accepts; responses echo whatever was stored.
    alarm_subscription = _schema(openapi_document, "o2ims.monitoring.v1.AlarmSubscriptionInfo")
    assert "enum" not in alarm_subscription["properties"]["filter"]
    request = _schema(openapi_document, "o2ims.monitoring.v1.AlarmSubscriptionInfo.Input")
    pattern = re.compile(request["properties"]["filter"]["pattern"])
    for accepted in ("", "NEW", "ACKNOWLEDGE", "(eq,resourceTypeID,abc-1)"):
        assert pattern.fullmatch(accepted), accepted
    for refused in ("new", "NEW,CLEAR", "(eq,name,x)", "(eq,resourceTypeID,a;b)"):
        assert not pattern.fullmatch(refused), refused
    # The 1.x embedded dictionary: the AlarmDictionary object or null, never anything else.
    v1_type = _schema(openapi_document, "o2ims.inventory.v1.ResourceTypeInfo")
    assert v1_type["properties"]["alarmDictionary"]["anyOf"] == [
        {"$ref": "#/components/schemas/o2ims.inventory.v1.AlarmDictionary"},
        {"type": "null"},
    ]


def test_uuid_format_only_on_attributes_whose_values_are_uuids(
    openapi_document: dict[str, Any],
) -> None:
    def uuid_attributes(name: str) -> set[str]:
        properties = _schema(openapi_document, name)["properties"]
        return {key for key, value in properties.items() if value.get("format") == "uuid"}

    # SMO-defined or free-text identifiers are plain strings.
    assert uuid_attributes("o2ims.inventory.v2.LocationInfo") == set()
    assert uuid_attributes("o2ims.inventory.v2.OCloudSiteInfo") == {"oCloudSiteId"}
    assert uuid_attributes("o2ims.inventory.v1.ResourceInfo") == {
        "resourceId",
        "resourcePoolId",
        "parentId",
    }
    assert "consumerSubscriptionId" not in uuid_attributes(
        "o2ims.subscriptions.v1.InventorySubscriptionInfo"
    )


V1_TYPE_ID = "8f0c7e6a-1d2b-4c3e-9f00-000000000001"
V1_TYPE: dict[str, Any] = {
    "resourceTypeId": V1_TYPE_ID,
    "name": "pserver",
    "description": "",
    "vendor": "",
    "model": "",
    "version": "",
    "resourceKind": "PHYSICAL",
    "resourceClass": "COMPUTE",
    "extensions": {},
    "alarmDictionary": None,
}


@pytest.mark.parametrize(
    ("path", "body", "complaint"),
    [
        # The 1.x model requires the key; null says "no dictionary".
        (f"{INV}/v1/resourceTypes/{V1_TYPE_ID}", V1_TYPE, None),
        (
            f"{INV}/v1/resourceTypes/{V1_TYPE_ID}",
            {**V1_TYPE, "alarmDictionaryId": ""},
            "/alarmDictionaryId: '' should be non-empty",
        ),
        (f"{INV}/v1/resourceTypes/{V1_TYPE_ID}", {**V1_TYPE, "resourceTypeId": ""}, "'uuid'"),
        (f"{INV}/v1/resourceTypes/{V1_TYPE_ID}", {**V1_TYPE, "alarmDictionary": ""}, "alarm"),
        (
            f"{INV}/v2/resourceTypes/{V1_TYPE_ID}",
            {
                **{k: v for k, v in V1_TYPE.items() if k != "alarmDictionary"},
                "alarmDictionaryId": "",
            },
            "/alarmDictionaryId: '' should be non-empty",
        ),
        (
            "/o2ims-infrastructureMonitoring/v1/alarmSubscriptions/x",
            {"alarmSubscriptionId": V1_TYPE_ID, "callback": "https://smo/cb", "filter": ""},
            "/filter: '' should be non-empty",
        ),
        (
            f"{INV}/v1/resourcePools/{V1_TYPE_ID}/resources/{V1_TYPE_ID}",
            {
                "resourceId": V1_TYPE_ID,
                "resourcePoolId": V1_TYPE_ID,
                "resourceTypeId": V1_TYPE_ID,
                "name": "",
                "description": "",
                "globalAssetId": "",
                "elements": [],
                "tags": [],
                "groups": [],
            },
            "/name: '' should be non-empty",
        ),
    ],
)
def test_empty_strings_for_optional_uuid_or_enum_attributes_break_the_contract(
    openapi_document: dict[str, Any], path: str, body: dict[str, Any], complaint: str | None
) -> None:
    errors = ContractValidator(openapi_document).check(
        "GET", path, 200, {"content-type": "application/json"}, json.dumps(body).encode()
    )

    if complaint is None:
        assert errors == []
    else:
        assert any(complaint in error for error in errors), errors
