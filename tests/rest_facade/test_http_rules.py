"""The google.api.http reader that routing and OpenAPI share: templates, rules, paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rest_facade.http_rules import (
    HttpRule,
    PathTemplate,
    TemplateError,
    load_pool,
    read_rules,
    resource_paths,
    services_with_rules,
)

from .widgets import WIDGET_SERVICE

INV = "/o2ims-infrastructureInventory"


@pytest.mark.parametrize(
    ("template", "matching", "not_matching"),
    [
        (
            "/a/{x}/b",
            ["/a/1/b", "/a/1/b/", "/a/%2F/b", "/a/x.y/b"],
            ["/a/b", "/a/1/2/b", "/a//b", "/a/1/bb", "/xa/1/b"],
        ),
        ("/a/{x=*}", ["/a/1", "/a/1/"], ["/a", "/a/1/2"]),
        ("/a/{v=v1}/b", ["/a/v1/b", "/a/v1/b/"], ["/a/v2/b", "/a/x/b"]),
        ("/a/{name=shelves/*}", ["/a/shelves/s1"], ["/a/shelves", "/a/books/b1"]),
        ("/a/**", ["/a", "/a/", "/a/1", "/a/1/2/3"], ["/b", "/ab"]),
        ("/a/{x}:cancel", ["/a/1:cancel"], ["/a/1", "/a/1:cancel/", "/a/1:cancelx"]),
        ("/", ["/", ""], ["/a"]),
    ],
)
def test_template_regex_matches_what_the_transcoder_does(
    template: str, matching: list[str], not_matching: list[str]
) -> None:
    parsed = PathTemplate.parse(template)

    # The same regex goes into Envoy (RE2): no Python-only syntax.
    assert re.fullmatch(r"[\^$\w/\[\]+*?:()\\-]+", parsed.regex), parsed.regex
    for path in matching:
        assert parsed.matches(path), (template, path)
    for path in not_matching:
        assert not parsed.matches(path), (template, path)


def test_template_variables_parameters_and_resource_path() -> None:
    template = PathTemplate.parse("/o2ims/{api_version=v1}/subs/{sub_id}/x/{a.b=p/*}:do")

    assert template.variables == ("api_version", "sub_id", "a.b")
    # A variable bound to a literal is a fixed part of the path, not a parameter.
    assert template.parameters == ("sub_id", "a.b")
    assert template.verb == "do"
    assert template.resource_path({"sub_id": "subId"}) == "/o2ims/v1/subs/{subId}/x/{a.b}:do"


@pytest.mark.parametrize(
    "template",
    ["a/b", "/a//b", "/a/{x", "/a/x}", "/a/{x=**}/b", "/a/{1x}", "/a/{x}/{y=a{b}}", "/a/b=c"],
)
def test_malformed_templates_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        PathTemplate.parse(template)


def test_broader_templates_cover_narrower_ones() -> None:
    wide, narrow = PathTemplate.parse("/a/{id}"), PathTemplate.parse("/a/special")

    assert wide.covers(narrow)
    assert not narrow.covers(wide)
    assert PathTemplate.parse("/a/**").covers(PathTemplate.parse("/a/{x}/b"))
    assert not wide.covers(PathTemplate.parse("/a/{id}/b"))


def test_every_service_with_http_rules_is_found(descriptor: Path) -> None:
    rules = read_rules(descriptor)
    pool = load_pool(descriptor)

    services = services_with_rules(rules)
    assert "o2ims.inventory.v1.InventoryService" in services
    # Every rule names a real method with real message types.
    for rule in rules:
        method = pool.FindMethodByName(f"{rule.service}.{rule.method}")
        assert method.input_type.full_name == rule.input_type
        assert method.output_type.full_name == rule.output_type
        assert rule.template.source.startswith("/o2ims-")
    # The adapter API has no HTTP rules and is never published through the edge.
    assert not [name for name in services if ".adapter." in name]


def test_list_responses_name_their_collection(descriptor: Path) -> None:
    rules = {rule.method: rule for rule in read_rules(descriptor)}

    assert rules["ListResourcePools"].collection == "resourcePools"
    assert rules["ListDeploymentManagers"].collection == "deploymentManagers"
    # ApiVersionInformation has a repeated field but no page token: an object, not a list.
    assert rules["GetAllApiVersions"].collection is None
    assert rules["GetResourcePool"].collection is None


def test_additional_bindings_and_bodies_are_read(edge_descriptor: Path) -> None:
    rules = [rule for rule in read_rules(edge_descriptor) if rule.service == WIDGET_SERVICE]
    by_method = {(rule.method, rule.binding): rule for rule in rules}

    get_v1, get_v2 = by_method[("GetWidget", 0)], by_method[("GetWidget", 1)]
    assert get_v1.template.source == "/o2ims-edgeTest/{api_version=v1}/widgets/{widget_id}"
    assert get_v2.template.source == "/o2ims-edgeTest/{api_version=v2}/widgets/{widget_id}"
    create = by_method[("CreateWidget", 0)]
    assert (create.http_method, create.body) == ("POST", "widget")
    assert by_method[("PutSettings", 0)].body == "*"
    delete = by_method[("DeleteWidget", 0)]
    assert delete.empty_response
    assert not create.empty_response
    assert by_method[("ListWidgets", 0)].collection == "widgets"


def test_resource_paths_list_the_methods_defined_on_each_path(edge_descriptor: Path) -> None:
    paths = {
        path.template.resource_path(): path.methods
        for path in resource_paths(read_rules(edge_descriptor))
    }

    assert paths["/o2ims-edgeTest/v1/widgets"] == ("GET", "POST")
    assert paths["/o2ims-edgeTest/v1/widgets/{widget_id}"] == ("DELETE", "GET", "PATCH")
    assert paths["/o2ims-edgeTest/v2/widgets/{widget_id}"] == ("GET",)
    assert paths[f"{INV}/v1/resourcePools"] == ("GET",)


def test_resource_paths_put_literals_before_wildcards() -> None:
    order = [
        path.template.source
        for path in resource_paths(
            [_rule("/a/{id}", "GET"), _rule("/a/**", "PUT"), _rule("/a/special", "POST")]
        )
    ]

    assert order == ["/a/special", "/a/{id}", "/a/**"]
    allowed = {
        path.template.source: path.methods
        for path in resource_paths([_rule("/a/{id}", "GET"), _rule("/a/special", "POST")])
    }
    # GET /a/special is transcoded by the /a/{id} rule, so it is allowed there too.
    assert allowed == {"/a/special": ("GET", "POST"), "/a/{id}": ("GET",)}


def _rule(template: str, verb: str) -> HttpRule:
    return HttpRule(
        service="t.S",
        method=verb.title(),
        http_method=verb,
        template=PathTemplate.parse(template),
        body="",
        response_body="",
        input_type="t.Req",
        output_type="t.Resp",
    )
