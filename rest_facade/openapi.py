"""The OpenAPI 3.1 document of the REST surface, generated from the descriptor set.

    python -m rest_facade.openapi --descriptor gen/o2ims.pb --out rest_facade/openapi/o2ims.json

Paths and operations come from the google.api.http rules (rest_facade/http_rules.py, the
same reader Envoy's routes are rendered from), schemas from the message descriptors. The
document describes what the edge sends, not what the transcoder alone would: lists are bare
arrays, creates answer 201 + Location, DELETE answers 200 with no body, and every error is
an RFC 7807 ProblemDetails (application/problem+json, no `instance`). The gateway serves it
at GET /openapi.json; rest_facade/openapi/o2ims.json is the checked-in copy (a test fails
when it drifts from the protos).
"""

from __future__ import annotations

import argparse
import http
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import descriptor, descriptor_pool

from rest_facade.http_rules import HttpRule, pool_of, read_file_set, read_rules, resource_paths
from rest_facade.openapi_query import filter_pattern, selector_pattern
from rest_facade.openapi_schemas import Comments, Schema, SchemaSet

OPENAPI_VERSION = "3.1.0"
DOCUMENT_VERSION = "0.1.0"
REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKED_IN = Path(__file__).resolve().parent / "openapi" / "o2ims.json"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
PROBLEM = "application/problem+json"
# Where the gateway serves this document (rest_facade/envoy_routes.py routes it).
OPENAPI_PATH = "/openapi.json"

# Errors any operation may answer: from the core (400, 404...), from Envoy itself (400
# bad query or body, 405, 408, 431, 502-504; 413 for a body over the limit, which a client
# can send with any method, a GET included), or from authentication (401, 403) and rate
# limiting (429) in front of everything.
COMMON_ERRORS = (400, 401, 403, 404, 405, 408, 413, 429, 431, 500, 502, 503, 504)
# Only where the request changes state.
WRITE_ERRORS = (409, 412)

PROBLEM_DETAILS: Schema = {
    "description": "RFC 7807 problem details (ETSI SOL013 6.4). `instance` is never sent.",
    "type": "object",
    "required": ["status", "title", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string", "minLength": 1},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "minLength": 1},
        "additionalAttributes": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}


def build_document(
    descriptor_path: Path, rules: Sequence[HttpRule] | None = None
) -> dict[str, Any]:
    """The OpenAPI document for `rules` (default: every HTTP rule in the descriptor set)."""
    rules = list(read_rules(descriptor_path) if rules is None else rules)
    file_set = read_file_set(descriptor_path)
    pool = pool_of(file_set)
    comments = Comments(file_set)
    schemas = SchemaSet(comments)
    paths: dict[str, dict[str, Any]] = {}
    for resource in resource_paths(rules):
        on_path = [rule for rule in rules if rule.template.regex == resource.template.regex]
        key, names = _path_key(on_path, pool)
        for rule in on_path:
            operations = paths.setdefault(key, {})
            method = rule.http_method.lower()
            if method in operations:
                continue  # one verb bound twice to one path is documented once
            operations[method] = _operation(rule, pool, schemas, comments, names)
    paths[OPENAPI_PATH] = {"get": _self_operation()}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "netweave O2ims REST API",
            "version": DOCUMENT_VERSION,
            "description": (
                "Generated from the gateway's protobuf descriptor set. Lists are bare JSON "
                "arrays. Every error is application/problem+json. A method not listed for a "
                "path answers 405 with an Allow header; an unknown path answers 404. A "
                "trailing slash is accepted on every path."
            ),
        },
        "tags": _tags(rules),
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"ProblemDetails": PROBLEM_DETAILS, **dict(sorted(schemas.schemas.items()))},
            "responses": {str(status): _problem_response(status) for status in _error_statuses()},
        },
    }


def render_json(document: Any) -> str:
    """The document as the checked-in file holds it (stable, diff-friendly)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def is_create(rule: HttpRule) -> bool:
    """Create methods (AIP-133: POST, named Create*) answer 201 + Location."""
    return rule.http_method == "POST" and rule.method.startswith("Create")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--descriptor", type=Path, default=REPO_ROOT / "gen" / "o2ims.pb")
    parser.add_argument("--out", type=Path, default=CHECKED_IN)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_json(build_document(args.descriptor)))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


# --- operations ------------------------------------------------------------------------------


def _operation(
    rule: HttpRule,
    pool: descriptor_pool.DescriptorPool,
    schemas: SchemaSet,
    comments: Comments,
    names: dict[str, str],
) -> dict[str, Any]:
    request = pool.FindMessageTypeByName(rule.input_type)
    response = pool.FindMessageTypeByName(rule.output_type)
    method_name = f"{rule.service}.{rule.method}"
    operation: dict[str, Any] = {
        "operationId": _operation_id(rule),
        "tags": [rule.template.segments[0].text],
    }
    comment = comments.get(method_name)
    if comment:
        summary, _, rest = comment.partition(". ")
        operation["summary"] = summary.rstrip(".")
        if rest:
            operation["description"] = comment
    parameters = _path_parameters(rule, request, schemas, names) + _query_parameters(
        rule, request, schemas, _object_type(rule, response)
    )
    if parameters:
        operation["parameters"] = parameters
    if rule.body:
        operation["requestBody"] = _request_body(rule, request, schemas)
    operation["responses"] = _responses(rule, response, schemas)
    return operation


def _operation_id(rule: HttpRule) -> str:
    # Unique even when one method has several bindings (the v1 and v2 subscription paths).
    suffix = f".binding{rule.binding}" if rule.binding else ""
    return f"{rule.service}.{rule.method}{suffix}"


def path_keys(descriptor_path: Path, rules: Sequence[HttpRule]) -> dict[str, str]:
    """Each REST path's OpenAPI key (`/o2ims-infrastructureInventory/v1/resourcePools/
    {resourcePoolId}`), by its template's regex: the document's paths, and the `route`
    label of the edge's request metrics (rest_facade/envoy_routes.py)."""
    pool = pool_of(read_file_set(descriptor_path))
    keys: dict[str, str] = {}
    for resource in resource_paths(rules):
        on_path = [rule for rule in rules if rule.template.regex == resource.template.regex]
        keys[resource.template.regex] = _path_key(on_path, pool)[0]
    return keys


def _path_key(
    on_path: Sequence[HttpRule], pool: descriptor_pool.DescriptorPool
) -> tuple[str, dict[str, str]]:
    """The OpenAPI key of the path the rules `on_path` share, and its parameter names."""
    names = _parameter_names(pool.FindMessageTypeByName(on_path[0].input_type), on_path[0])
    return on_path[0].template.resource_path(names), names


def _parameter_names(request: descriptor.Descriptor, rule: HttpRule) -> dict[str, str]:
    """OpenAPI names of the path parameters: the JSON name of the bound field."""
    names: dict[str, str] = {}
    for field_path in rule.template.parameters:
        field = _field(request, field_path)
        names[field_path] = field.json_name if field is not None else field_path
    return names


def _path_parameters(
    rule: HttpRule, request: descriptor.Descriptor, schemas: SchemaSet, names: dict[str, str]
) -> list[dict[str, Any]]:
    parameters = []
    for field_path in rule.template.parameters:
        field = _field(request, field_path)
        schema = schemas.field(field) if field is not None else {"type": "string"}
        parameters.append(
            {"name": names[field_path], "in": "path", "required": True, "schema": schema}
        )
    return parameters


def _object_type(rule: HttpRule, response: descriptor.Descriptor) -> descriptor.Descriptor | None:
    """The type of the objects an operation answers with (a list's items), or None."""
    if rule.empty_response:
        return None
    if rule.collection is None:
        return response
    return response.fields_by_name[_proto_name(response, rule.collection)].message_type


def _query_parameters(
    rule: HttpRule,
    request: descriptor.Descriptor,
    schemas: SchemaSet,
    object_type: descriptor.Descriptor | None,
) -> list[dict[str, Any]]:
    """What a query string can set (HttpRule.query_fields), by proto field name as the
    transcoder takes it. A boolean may also be sent bare (`?all_fields`). The SOL013
    query parameters get a pattern from `object_type` (rest_facade/openapi_query.py)."""
    patterns = {}
    if object_type is not None:
        patterns = {
            "filter": filter_pattern(object_type),
            "fields": selector_pattern(object_type),
            "exclude_fields": selector_pattern(object_type),
        }
    parameters = []
    for name in rule.query_fields:
        field = request.fields_by_name[name]
        schema = schemas.field(field)
        pattern = patterns.get(name)
        if pattern is not None:
            (schema["items"] if field.is_repeated else schema)["pattern"] = pattern
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
        }
        if name in rule.flags:
            parameter["allowEmptyValue"] = True
        if field.is_repeated:
            parameter.update(style="form", explode=True)
        parameters.append(parameter)
    return parameters


def _request_body(
    rule: HttpRule, request: descriptor.Descriptor, schemas: SchemaSet
) -> dict[str, Any]:
    if rule.body == "*":
        schema = schemas.ref(request, request=True)
    else:
        field = request.fields_by_name[rule.body]
        schema = schemas.field(field, request=True)
    # O2ims PATCH is a JSON merge patch; the transcoder parses either as JSON.
    media_types = [JSON, MERGE_PATCH] if rule.http_method == "PATCH" else [JSON]
    return {"required": True, "content": {media: {"schema": schema} for media in media_types}}


def _responses(
    rule: HttpRule, response: descriptor.Descriptor, schemas: SchemaSet
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if rule.empty_response:
        responses["200"] = {"description": "Done. The body is empty."}
    else:
        if rule.collection is not None:
            item_field = response.fields_by_name[_proto_name(response, rule.collection)]
            body = {"type": "array", "items": schemas.field(item_field)["items"]}
        else:
            body = schemas.ref(response)
        success: dict[str, Any] = {"description": "OK", "content": {JSON: {"schema": body}}}
        if is_create(rule):
            success["description"] = "Created"
            success["headers"] = {
                "Location": {
                    "description": "The URL of the new resource.",
                    "required": True,
                    "schema": {"type": "string", "format": "uri-reference"},
                }
            }
            responses["201"] = success
        else:
            responses["200"] = success
    writes = rule.http_method != "GET"
    for status in sorted((*COMMON_ERRORS, *(WRITE_ERRORS if writes else ()))):
        responses[str(status)] = {"$ref": f"#/components/responses/{status}"}
    return responses


def _self_operation() -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "This document.",
            "content": {JSON: {"schema": {"type": "object", "required": ["openapi", "paths"]}}},
        }
    }
    for status in COMMON_ERRORS:
        responses[str(status)] = {"$ref": f"#/components/responses/{status}"}
    return {
        "operationId": "netweave.GetOpenApiDocument",
        "tags": ["netweave"],
        "summary": "The OpenAPI document of this gateway's REST API",
        "responses": responses,
    }


def _problem_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": http.HTTPStatus(status).phrase,
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
    }
    if status == 405:
        response["description"] = "The method is not defined on this path."
        response["headers"] = {
            "Allow": {
                "description": "The methods defined on this path.",
                "required": True,
                "schema": {"type": "string"},
            }
        }
    return response


def _error_statuses() -> list[int]:
    return sorted({*COMMON_ERRORS, *WRITE_ERRORS})


def _tags(rules: Iterable[HttpRule]) -> list[dict[str, str]]:
    names = sorted({rule.template.segments[0].text for rule in rules} | {"netweave"})
    return [{"name": name} for name in names]


def _field(message: descriptor.Descriptor, field_path: str) -> descriptor.FieldDescriptor | None:
    """The field at a dotted path (`a.b`) below `message`, or None."""
    field = None
    current: descriptor.Descriptor | None = message
    for part in field_path.split("."):
        if current is None or part not in current.fields_by_name:
            return None
        field = current.fields_by_name[part]
        current = field.message_type
    return field


def _proto_name(message: descriptor.Descriptor, json_name: str) -> str:
    return next(field.name for field in message.fields if field.json_name == json_name)


if __name__ == "__main__":
    raise SystemExit(main())
