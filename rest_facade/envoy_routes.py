"""Envoy's route table for the O2ims edge, rendered from the HTTP rules of the descriptor set.

How a request is routed (the transcoder runs before the router):

1. A REST request that matches an HTTP rule (path AND method) is rewritten by the
   transcoder into a gRPC call, `/pkg.Service/Method` with content-type application/grpc,
   and takes that method's route to the core; the route's metadata tells the REST shaper
   what the response is (a list to unwrap, an Empty to drop). Native gRPC calls take the
   same routes, or their service's prefix route for methods without HTTP rules.
2. Anything the transcoder cannot map passes through unchanged (reject_unknown_method is
   off). If its path matches a REST path template, only the method was wrong: 405 with an
   `Allow` header listing the methods the .proto files define there.
3. `GET /openapi.json` serves the OpenAPI document generated from the same rules.
4. Everything else: 404. Envoy's local_reply_config turns the 404/405 direct responses into
   ProblemDetails for REST callers (direct responses are local replies), while a native gRPC
   call to an unknown service still sees HTTP 404, i.e. UNIMPLEMENTED.

Each REST path's route is named after its OpenAPI path (`/.../resourcePools/{resourcePoolId}`)
and carries it as metadata: the first HTTP filter (envoy/modules/request_context.c) sees the
request before the transcoder re-routes it and records that template, the `route` label of
the edge's request metrics. A request that matches no REST path has none (`unmatched`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rest_facade.http_rules import HttpRule, resource_paths, services_with_rules
from rest_facade.openapi import OPENAPI_PATH

CORE_CLUSTER = "o2ims_core"
# The REST shaper's HTTP filter name (envoy/modules/shaper.c, rendered by
# rest_facade/envoy_config.py): it reads the route metadata under this name.
SHAPER_FILTER = "netweave.shaper"
# The request context filter's name (envoy/modules/request_context.c reads the route's
# `route` metadata under it: the O2ims path template the request matched).
CONTEXT_FILTER = "netweave.request_context"
# Unary calls must not hang an SMO's poll loop (Envoy's default is 15 s too; explicit).
UNARY_TIMEOUT = "15s"
# Idempotent reads (GET rules, Get*/List* methods) are retried on another core replica when
# one fails without answering (connection refused or reset, a refused HTTP/2 stream after
# its GOAWAY, a try timed out) or answers UNAVAILABLE (or HTTP 503): what a
# replica restarting or dying mid-call looks like. Three tries of PER_TRY_TIMEOUT fit in
# UNARY_TIMEOUT. Writes (POST, PATCH, DELETE) are never retried: the core may have applied
# one whose answer was lost.
READ_RETRY_ON = "connect-failure,refused-stream,reset,unavailable,retriable-status-codes"
READ_RETRIES = 2
PER_TRY_TIMEOUT = "5s"
READ_METHOD_PREFIXES = ("Get", "List")
NOT_FOUND_DETAIL = "no such resource: the path matches no O2ims API served by this gateway"


def routes(
    rules: Iterable[HttpRule], openapi_json: str, path_keys: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The `routes:` list of the O2ims virtual host. `path_keys` names each REST path by
    its template's regex (rest_facade.openapi.path_keys)."""
    rules = list(rules)
    by_method: dict[str, list[HttpRule]] = {}
    for rule in rules:
        by_method.setdefault(rule.grpc_path, []).append(rule)
    table: list[dict[str, Any]] = [
        _grpc_method_route(bindings[0], idempotent=_idempotent(bindings))
        for bindings in by_method.values()
    ]
    table.extend(_grpc_route(service) for service in services_with_rules(rules))
    table.append(_labelled(_openapi_route(openapi_json), OPENAPI_PATH))
    table.append(_labelled(_method_not_allowed({"path": OPENAPI_PATH}, ("GET",)), OPENAPI_PATH))
    for path in resource_paths(rules):
        route = _method_not_allowed({"safe_regex": {"regex": path.template.regex}}, path.methods)
        label = path_keys[path.template.regex]
        route["name"] = label
        # Before transcoding this is the request's route. The shaper reads which bare query
        # flags (`?all_fields`) to complete as `=true`, and which query names are allowed:
        # the transcoder would let a query parameter named like a path field (e.g.
        # ?resource_pool_id=B) override the id in the path.
        route["metadata"] = {
            "filter_metadata": {
                SHAPER_FILTER: {
                    "flags": list(path.flags),
                    "query": list(path.query),
                    # The methods the path has (the shaper refuses an empty PUT/PATCH body
                    # only where one is defined; elsewhere the 405 stands).
                    "methods": list(path.methods),
                },
                CONTEXT_FILTER: {"route": label},
            }
        }
        table.append(route)
    table.append(
        {
            "name": "not_found",
            "match": {"prefix": "/"},
            "direct_response": {"status": 404, "body": {"inline_string": NOT_FOUND_DETAIL}},
        }
    )
    return table


def _labelled(route: dict[str, Any], label: str) -> dict[str, Any]:
    """`route`, named `label` and carrying it for the request context filter."""
    route["name"] = label
    route.setdefault("metadata", {}).setdefault("filter_metadata", {})[CONTEXT_FILTER] = {
        "route": label
    }
    return route


def _grpc_route(service: str) -> dict[str, Any]:
    return {
        "name": f"grpc:{service}",
        "match": {
            "prefix": f"/{service}/",
            # Transcoded REST calls carry application/grpc by now, as native calls do. A
            # REST client that POSTs JSON to a gRPC path directly must not reach the core
            # as junk gRPC: it falls through to the 404.
            "headers": [{"name": "content-type", "string_match": {"prefix": "application/grpc"}}],
        },
        "route": {"cluster": CORE_CLUSTER, "timeout": UNARY_TIMEOUT},
    }


def _idempotent(bindings: list[HttpRule]) -> bool:
    """A method safe to retry: a Get*/List* method, or one every HTTP binding of is GET."""
    method = bindings[0].method
    return method.startswith(READ_METHOD_PREFIXES) or all(
        rule.http_method == "GET" for rule in bindings
    )


def read_retry_policy() -> dict[str, Any]:
    """The retry policy of the idempotent reads' routes (see READ_RETRY_ON)."""
    return {
        "retry_on": READ_RETRY_ON,
        # The core answers gRPC (HTTP 200, its status in grpc-status: `unavailable`); an
        # HTTP 503 comes from something between (a sidecar proxy of a stopping pod).
        "retriable_status_codes": [503],
        "num_retries": READ_RETRIES,
        "per_try_timeout": PER_TRY_TIMEOUT,
        # The retry goes to another replica where there is one.
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }


def _grpc_method_route(rule: HttpRule, *, idempotent: bool = False) -> dict[str, Any]:
    route = _grpc_route(rule.service)
    if idempotent:
        route["route"]["retry_policy"] = read_retry_policy()
    route["name"] = f"grpc:{rule.grpc_path}"
    route["match"]["path"] = rule.grpc_path
    del route["match"]["prefix"]
    # What the REST shaper must do with this method's REST responses.
    shape: dict[str, Any] = {}
    if rule.collection is not None:
        shape["collection"] = rule.collection
    if rule.empty_response:
        shape["empty"] = True
    if shape:
        route["metadata"] = {"filter_metadata": {SHAPER_FILTER: shape}}
    return route


def _openapi_route(openapi_json: str) -> dict[str, Any]:
    return {
        "name": "openapi",
        "match": {
            "path": OPENAPI_PATH,
            "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
        },
        "direct_response": {"status": 200, "body": {"inline_string": openapi_json}},
        # A direct response with a body is text/plain unless told otherwise.
        "response_headers_to_add": [header_value_option("content-type", "application/json")],
    }


def _method_not_allowed(match: dict[str, Any], methods: Iterable[str]) -> dict[str, Any]:
    allowed = ", ".join(methods)
    return {
        "match": match,
        "direct_response": {
            "status": 405,
            # Becomes the ProblemDetails `detail` (local_reply_config, %LOCAL_REPLY_BODY%).
            "body": {"inline_string": f"method not allowed on this resource; allowed: {allowed}"},
        },
        "response_headers_to_add": [header_value_option("allow", allowed)],
    }


def header_value_option(name: str, value: str) -> dict[str, Any]:
    """An Envoy HeaderValueOption that sets `name`, replacing any value it had."""
    return {
        "header": {"key": name, "value": value},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }
