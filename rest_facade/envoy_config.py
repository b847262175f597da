"""Render Envoy's configuration from the one template, `envoy/gateway.yaml.in`.

Development and production differ only in the values of an `EnvoyConfig`; the structure of
the config (filters, their order, every comment on why) lives in the template. The Lua
shaper and the ProblemDetails mappers are inlined, so the rendered file is self-contained.
"""

from __future__ import annotations

import http
import ipaddress
import json
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rest_facade import envoy_routes, openapi
from rest_facade.http_rules import HttpRule, read_rules, services_with_rules

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = REPO_ROOT / "envoy" / "gateway.yaml.in"
SHAPER_PATH = Path(__file__).resolve().parent / "shaper.lua"

# Envoy's file access logger writes here when no path is given (container-friendly).
STDOUT = Path("/dev/stdout")

# Statuses Envoy itself produces (transcoder, HCM, router, later JWT and rate limiting),
# each mapped to a ProblemDetails with the standard reason phrase as title.
LOCAL_REPLY_STATUSES = (400, 401, 403, 404, 405, 408, 413, 415, 429, 431, 500, 502, 503, 504)
# 5xx details are fixed: Envoy's own text for them describes upstream internals (a core
# that is down gives "upstream connect error or disconnect/reset before headers. reset
# reason: remote connection failure"). 4xx details keep Envoy's text, which tells the client
# what was wrong with its request ('Could not find field "typo" in the type ...').
SERVER_ERROR_DETAILS = {
    500: "the gateway failed to process the request",
    502: "the inventory service sent an invalid response",
    503: "the inventory service is unavailable; retry later",
    504: "the inventory service did not answer in time; retry later",
}
GENERIC_SERVER_ERROR_DETAIL = "the gateway could not complete the request"
# Envoy's response code details name the check that failed (e.g. "http1.codec_error"); they
# are about the request only, as nothing upstream happened yet.
PRE_FILTER_DETAIL = "the request is malformed (%RESPONSE_CODE_DETAILS%)"
# Where the Lua shaper records "this is a REST request" (rest_facade/shaper.lua NAMESPACE).
REST_METADATA_NAMESPACE = "netweave.rest"
PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True)
class EnvoyConfig:
    """The values that differ between deployments of the Envoy edge.

    Ports may be 0 (except the core's): the kernel picks one and `start_envoy` reads the
    bound port back from the admin API. Paths are made absolute without resolving symlinks:
    Kubernetes mounts Secrets through `..data` symlinks that must stay followable after a
    rotation.
    """

    listen_port: int
    core_port: int
    descriptor_path: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    listen_host: str = "127.0.0.1"
    core_host: str = "127.0.0.1"
    admin_host: str = "127.0.0.1"
    admin_port: int = 0
    # False: validate a client certificate when one is presented. True: demand one.
    require_client_certificate: bool = False
    # None: the access log goes to Envoy's stdout.
    access_log_path: Path | None = None
    # The gRPC services published through the edge (REST and native gRPC). None: every
    # service of the descriptor set that has HTTP rules. Services left out answer 404.
    services: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("listen_port", "core_port", "admin_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ValueError(f"{name} {port} is not a TCP port")
        if self.core_port == 0:
            raise ValueError("core_port must be a real port")
        if not _is_loopback(self.admin_host):
            raise ValueError(
                f"admin_host {self.admin_host!r} is not loopback: the admin API can stop Envoy"
            )


def render(config: EnvoyConfig) -> str:
    """The Envoy configuration for `config`, as YAML text."""
    template_text = TEMPLATE_PATH.read_text()
    template = string.Template(template_text)
    values = _template_values(config, template_text)
    missing = set(template.get_identifiers()) - values.keys()
    unused = values.keys() - set(template.get_identifiers())
    if missing or unused:
        raise RuntimeError(f"template/renderer drift: missing {missing}, unused {unused}")
    return template.substitute(values)


def write(config: EnvoyConfig, path: Path) -> Path:
    """Render `config` into `path` (parents created); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(config))
    return path


# --- implementation ------------------------------------------------------------------


def _template_values(config: EnvoyConfig, template_text: str) -> dict[str, str]:
    access_log = config.access_log_path or STDOUT
    # Scalars are JSON-quoted: JSON strings are valid YAML, whatever the path contains.
    scalars: dict[str, str] = {
        "listen_host": json.dumps(config.listen_host),
        "listen_port": str(config.listen_port),
        "admin_host": json.dumps(config.admin_host),
        "admin_port": str(config.admin_port),
        "core_host": json.dumps(config.core_host),
        "core_port": str(config.core_port),
        "descriptor_path": _path(config.descriptor_path),
        "server_cert": _path(config.server_cert),
        "server_key": _path(config.server_key),
        "client_ca": _path(config.client_ca),
        "require_client_certificate": "true" if config.require_client_certificate else "false",
        "access_log_path": _path(access_log),
    }
    rules = served_rules(config)
    openapi_json = openapi.render_json(openapi.build_document(config.descriptor_path, rules))
    scalars["transcoded_services"] = json.dumps(services_with_rules(rules))
    # Room for the document plus the other direct responses (short ProblemDetails texts).
    scalars["max_direct_response_body_size_bytes"] = str(len(openapi_json.encode()) + 4096)
    blocks = {
        "routes": _yaml_block(envoy_routes.routes(rules, openapi_json)),
        "shaper_lua": SHAPER_PATH.read_text(),
        "local_reply_mappers": _yaml_block(_local_reply_mappers()),
    }
    for name, text in blocks.items():
        scalars[name] = _indent_continuation(text, _placeholder_indent(template_text, name))
    return scalars


def served_rules(config: EnvoyConfig) -> list[HttpRule]:
    """The HTTP rules of the services `config` publishes, read from its descriptor set."""
    rules = read_rules(config.descriptor_path)
    if config.services is None:
        return rules
    unknown = set(config.services) - set(services_with_rules(rules))
    if unknown:
        raise ValueError(f"services without HTTP rules in {config.descriptor_path}: {unknown}")
    return [rule for rule in rules if rule.service in config.services]


def _yaml_block(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=1000)


def _path(path: Path) -> str:
    return json.dumps(os.path.abspath(path))


def _placeholder_indent(template_text: str, name: str) -> int:
    """The column of a block placeholder, which must stand alone on its line."""
    match = re.search(rf"^( *)\$\{{{name}\}}$", template_text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"block placeholder ${{{name}}} must stand alone on a line")
    return len(match.group(1))


def _indent_continuation(text: str, indent: int) -> str:
    """Indent every line but the first (which takes the placeholder's place)."""
    lines = text.rstrip("\n").split("\n")
    pad = " " * indent
    return "\n".join([lines[0], *[pad + line if line else "" for line in lines[1:]]])


def _local_reply_mappers() -> list[dict[str, Any]]:
    mappers: list[dict[str, Any]] = []
    for status in LOCAL_REPLY_STATUSES:
        title = http.HTTPStatus(status).phrase
        if status in SERVER_ERROR_DETAILS:
            mappers.append(
                _problem_mapper(
                    [_status_filter("EQ", status)], status, title, SERVER_ERROR_DETAILS[status]
                )
            )
            continue
        # Inside the filter chain every local reply has a body that says what was wrong
        # (the transcoder's parse error, a route's 404/405 text, the shaper's 400).
        mappers.append(
            _problem_mapper(
                [_status_filter("EQ", status), _in_filter_chain()],
                status,
                title,
                "%LOCAL_REPLY_BODY%",
            )
        )
        # The HTTP codec and connection manager reject some requests before any filter
        # runs, with an empty body (a path with %00, too many headers): say which check.
        mappers.append(
            _problem_mapper([_status_filter("EQ", status)], status, title, PRE_FILTER_DETAIL)
        )
    # Whatever else Envoy may produce: a problem, never a leak of internal detail.
    mappers.append(
        _problem_mapper([_status_filter("GE", 500)], None, "Error", GENERIC_SERVER_ERROR_DETAIL)
    )
    mappers.append(
        _problem_mapper(
            [_status_filter("GE", 400), _in_filter_chain()], None, "Error", "%LOCAL_REPLY_BODY%"
        )
    )
    mappers.append(_problem_mapper([_status_filter("GE", 400)], None, "Error", PRE_FILTER_DETAIL))
    return mappers


def _in_filter_chain() -> dict[str, Any]:
    """Matches replies to requests the Lua shaper has seen (it marks every REST request)."""
    return {
        "metadata_filter": {
            "matcher": {
                "filter": REST_METADATA_NAMESPACE,
                "path": [{"key": "rest"}],
                "value": {"string_match": {"exact": "1"}},
            },
            "match_if_key_not_found": False,
        }
    }


def _status_filter(op: str, status: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {
                "op": op,
                # runtime_key is mandatory; nothing sets it, so default_value applies.
                "value": {"default_value": status, "runtime_key": f"netweave.local_reply.{status}"},
            }
        }
    }


def _rest_request() -> dict[str, Any]:
    """An access-log filter matching REST requests, as the request headers stand at reply time.

    Before transcoding, REST is "content-type is not application/grpc*". The transcoder then
    switches the content-type to application/grpc, so a reply the router makes afterwards
    (503, 504) is recognised by x-envoy-original-path, which the transcoder adds. A client
    cannot forge that header: with use_remote_address Envoy strips x-envoy-* from requests.
    """
    return {
        "or_filter": {
            "filters": [
                {
                    "header_filter": {
                        "header": {
                            "name": "content-type",
                            "string_match": {"prefix": "application/grpc"},
                            "invert_match": True,
                            # A GET has no content-type at all, and is REST.
                            "treat_missing_header_as_empty": True,
                        }
                    }
                },
                {
                    "header_filter": {
                        "header": {"name": "x-envoy-original-path", "present_match": True}
                    }
                },
            ]
        }
    }


def _problem_mapper(
    filters: list[dict[str, Any]], status: int | None, title: str, detail: str
) -> dict[str, Any]:
    return {
        "filter": {"and_filter": {"filters": [_rest_request(), *filters]}},
        "body_format_override": {
            "json_format": {
                # A number, not a string: %RESPONSE_CODE% alone keeps its type in json_format.
                "status": "%RESPONSE_CODE%" if status is None else status,
                "title": title,
                "detail": detail,
            },
            "content_type": PROBLEM_CONTENT_TYPE,
        },
    }


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
