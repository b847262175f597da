"""The rendered Envoy config: accepted by `envoy --mode validate`, fully substituted."""

from __future__ import annotations

import os
import re
import shutil
import string
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.pki import DevPki
from netweave.headers import IGNORED_QUERY_HEADER
from rest_facade import envoy_modules
from rest_facade.envoy_config import (
    JWT_REALM,
    MAX_REQUEST_BODY_BYTES,
    REST_METADATA_NAMESPACE,
    TEMPLATE_PATH,
    render,
    write,
)
from rest_facade.envoy_process import EnvoyError, validate
from rest_facade.envoy_routes import SHAPER_FILTER
from rest_facade.http_rules import read_rules, services_with_rules
from server.listing import COLLECTION_HEADER, NEXT_PAGE_HEADER
from server.subscriptions.rest import HTTP_STATUS_HEADER

from .support import envoy_config
from .widgets import WIDGET_SERVICE


def http_connection_manager(rendered: dict[str, Any]) -> dict[str, Any]:
    listener = rendered["static_resources"]["listeners"][0]
    # The last network filter (the per-source connection limit may come first).
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][-1]["typed_config"]
    return manager


def http_filter(rendered: dict[str, Any], name: str) -> dict[str, Any]:
    for candidate in http_connection_manager(rendered)["http_filters"]:
        if candidate["name"] == name:
            config: dict[str, Any] = candidate["typed_config"]
            return config
    raise AssertionError(f"no http filter {name}")


@pytest.mark.parametrize("require_client_certificate", [False, True])
def test_rendered_config_passes_envoy_validate(
    pki: DevPki, descriptor: Path, tmp_path: Path, require_client_certificate: bool
) -> None:
    config = envoy_config(
        pki,
        core_port=50051,
        listen_port=8443,
        require_client_certificate=require_client_certificate,
        access_log_path=tmp_path / "access.log",
    )

    validate(write(config, tmp_path / "envoy.yaml"))


def test_config_with_writes_and_a_service_subset_passes_envoy_validate(
    pki: DevPki, edge_descriptor: Path, tmp_path: Path
) -> None:
    # Bodies, PATCH/PUT/DELETE, additional bindings and literal-bound variables.
    validate(write(envoy_config(pki, 50051, descriptor_path=edge_descriptor), tmp_path / "a.yaml"))
    subset = envoy_config(pki, 50051, descriptor_path=edge_descriptor, services=(WIDGET_SERVICE,))
    validate(write(subset, tmp_path / "b.yaml"))


def test_transcoder_and_routes_come_from_the_descriptor(pki: DevPki, edge_descriptor: Path) -> None:
    rendered = yaml.safe_load(render(envoy_config(pki, 50051, descriptor_path=edge_descriptor)))
    transcoder = http_filter(rendered, "envoy.filters.http.grpc_json_transcoder")
    routes = http_connection_manager(rendered)["route_config"]["virtual_hosts"][0]["routes"]

    assert transcoder["services"] == services_with_rules(read_rules(edge_descriptor))
    assert WIDGET_SERVICE in transcoder["services"]
    assert transcoder["request_validation_options"]["reject_unknown_method"] is False
    by_name = {route.get("name"): route for route in routes}
    # Each method route tells the shaper what its REST responses are.
    list_route = by_name[f"grpc:/{WIDGET_SERVICE}/ListWidgets"]
    assert list_route["metadata"]["filter_metadata"][SHAPER_FILTER] == {"collection": "widgets"}
    delete_route = by_name[f"grpc:/{WIDGET_SERVICE}/DeleteWidget"]
    assert delete_route["metadata"]["filter_metadata"][SHAPER_FILTER] == {"empty": True}
    allows = {
        route["match"]["safe_regex"]["regex"]: route["response_headers_to_add"][0]["header"]
        for route in routes
        if "safe_regex" in route["match"]
    }
    assert allows[r"^/o2ims\-edgeTest/v1/widgets/?$"] == {"key": "allow", "value": "GET, POST"}
    assert routes[-1]["match"] == {"prefix": "/"}
    assert routes[-1]["direct_response"]["status"] == 404


def test_the_shaper_filter_name_matches_the_route_metadata_key(
    pki: DevPki, descriptor: Path
) -> None:
    rendered = yaml.safe_load(render(envoy_config(pki, core_port=50051)))

    assert http_filter(rendered, SHAPER_FILTER)


def test_unknown_services_are_refused(pki: DevPki, descriptor: Path) -> None:
    with pytest.raises(ValueError, match=r"no\.such\.Service"):
        render(envoy_config(pki, 50051, services=("no.such.Service",)))


def test_validate_reports_envoys_complaint(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("static_resources: {clusters: [{name: x, connect_timeout: forever}]}\n")

    with pytest.raises(EnvoyError, match=r"connect_timeout|Duration|forever"):
        validate(broken)


def test_every_placeholder_is_substituted(pki: DevPki, descriptor: Path, tmp_path: Path) -> None:
    config = envoy_config(
        pki,
        core_port=50051,
        core_host="core.o2ims-system.svc",
        listen_port=8443,
        listen_host="0.0.0.0",
        admin_socket=Path("/run/netweave/envoy-admin.sock"),
        require_client_certificate=True,
        access_log_path=Path("relative/access.log"),
    )

    text = render(config)

    # `$ref` (OpenAPI) and `$` (route regexes) are legitimate; template names are not.
    placeholders = string.Template(TEMPLATE_PATH.read_text()).get_identifiers()
    left = [name for name in placeholders if re.search(rf"\$\{{?{name}\b", text)]
    assert left == [], f"unsubstituted placeholders: {left}"
    rendered = yaml.safe_load(text)
    listener = rendered["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8443}
    # PyYAML reads the template's `mode: 0600` as octal, as Envoy does.
    assert rendered["admin"]["address"] == {
        "pipe": {"path": "/run/netweave/envoy-admin.sock", "mode": 0o600}
    }
    tls = listener["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    # The client CA is an SDS secret (rest_facade/envoy_sds.py), rendered beside the config.
    validation = tls["common_tls_context"]["combined_validation_context"]
    assert validation["validation_context_sds_secret_config"]["name"] == "edge_client_ca"
    endpoint = rendered["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
    assert endpoint["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "core.o2ims-system.svc",
        "port_value": 50051,
    }
    access_log = http_connection_manager(rendered)["access_log"][0]["typed_config"]["path"]
    assert Path(access_log).is_absolute()
    assert access_log.endswith("relative/access.log")


def test_access_log_goes_to_stdout_by_default(pki: DevPki, descriptor: Path) -> None:
    rendered = yaml.safe_load(render(envoy_config(pki, core_port=50051)))

    assert http_connection_manager(rendered)["access_log"][0]["typed_config"]["path"] == (
        "/dev/stdout"
    )


def shaper_settings(rendered: dict[str, Any]) -> dict[str, str]:
    """The REST shaper's filter config (`key=value` lines, envoy/modules/shaper.c)."""
    value: str = http_filter(rendered, SHAPER_FILTER)["filter_config"]["value"]
    return dict(line.split("=", 1) for line in value.splitlines())


def test_native_shaper_runs_before_the_transcoder_from_its_compiled_module(
    pki: DevPki, descriptor: Path
) -> None:
    rendered = yaml.safe_load(render(envoy_config(pki, core_port=50051)))

    names = [item["name"] for item in http_connection_manager(rendered)["http_filters"]]
    assert names.index(SHAPER_FILTER) < names.index("envoy.filters.http.grpc_json_transcoder")
    shaper = http_filter(rendered, SHAPER_FILTER)
    assert shaper["filter_name"] == envoy_modules.SHAPER
    module = Path(shaper["dynamic_module_config"]["module"]["local"]["filename"])
    assert module == envoy_modules.module_path(envoy_modules.SHAPER)
    assert shaper_settings(rendered) == {
        "max_request_body_bytes": str(MAX_REQUEST_BODY_BYTES),
        "strict_query": "false",
        "rest_namespace": REST_METADATA_NAMESPACE,
        "route_namespace": SHAPER_FILTER,
        "ignored_query_header": IGNORED_QUERY_HEADER,
        "unauthorized_challenge": f'Bearer realm="{JWT_REALM}"',
    }


def test_strict_query_parameters_reach_the_shaper(pki: DevPki, descriptor: Path) -> None:
    config = envoy_config(pki, core_port=50051, strict_query_parameters=True)

    assert shaper_settings(yaml.safe_load(render(config)))["strict_query"] == "true"


def test_paths_with_yaml_special_characters_are_quoted(
    pki: DevPki, descriptor: Path, tmp_path: Path
) -> None:
    odd = tmp_path / "dir: with #odd 'chars'" / "o2ims.pb"
    # The renderer reads the descriptor set (routes and OpenAPI come from its HTTP rules).
    odd.parent.mkdir()
    shutil.copy(descriptor, odd)

    rendered = yaml.safe_load(render(envoy_config(pki, core_port=50051, descriptor_path=odd)))

    transcoder = http_filter(rendered, "envoy.filters.http.grpc_json_transcoder")
    assert transcoder["proto_descriptor"] == str(odd)


def test_the_admin_api_listens_on_a_unix_socket_only(pki: DevPki, descriptor: Path) -> None:
    rendered = yaml.safe_load(render(envoy_config(pki, core_port=50051)))

    assert list(rendered["admin"]["address"]) == ["pipe"]
    assert rendered["admin"]["address"]["pipe"]["mode"] == 0o600
    listeners = rendered["static_resources"]["listeners"]
    assert [listener["name"] for listener in listeners] == ["o2ims_https"]


def test_an_admin_socket_path_too_long_for_unix_sockets_is_refused(pki: DevPki) -> None:
    with pytest.raises(ValueError, match="admin_socket"):
        envoy_config(pki, core_port=50051, admin_socket=Path("/tmp/" + "x" * 110))


@pytest.mark.parametrize("field", ["listen_port", "core_port"])
def test_ports_are_checked(pki: DevPki, field: str) -> None:
    overrides: dict[str, Any] = {"core_port": 50051, field: 70000}
    with pytest.raises(ValueError, match=field):
        envoy_config(pki, **overrides)


def test_shaper_body_limit_is_the_transcoders(pki: DevPki, descriptor: Path) -> None:
    rendered = yaml.safe_load(render(envoy_config(pki, core_port=50051)))
    transcoder = http_filter(rendered, "envoy.filters.http.grpc_json_transcoder")

    limit = int(shaper_settings(rendered)["max_request_body_bytes"])
    assert limit == transcoder["max_request_body_size"] == MAX_REQUEST_BODY_BYTES


def test_the_shaper_reads_the_cores_response_header_names() -> None:
    # The core's internal response headers are C literals in the module: kept in step here.
    source = (envoy_modules.SOURCE_DIR / f"{envoy_modules.SHAPER}.c").read_text()

    for name in (COLLECTION_HEADER, NEXT_PAGE_HEADER, HTTP_STATUS_HEADER):
        assert f'LITERAL("{name}")' in source, name


def test_a_module_is_rebuilt_when_its_source_or_a_shared_header_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = tmp_path / "modules"
    shutil.copytree(envoy_modules.SOURCE_DIR, sources)
    monkeypatch.setattr(envoy_modules, "SOURCE_DIR", sources)
    build = tmp_path / "build"

    built = envoy_modules.module_path(envoy_modules.SHAPER, build)
    first = built.stat().st_mtime_ns
    assert envoy_modules.module_path(envoy_modules.SHAPER, build).stat().st_mtime_ns == first

    header = sources / "http_filter.h"
    later = first + 5_000_000_000
    os.utime(header, ns=(later, later))
    assert envoy_modules.module_path(envoy_modules.SHAPER, build).stat().st_mtime_ns > first
