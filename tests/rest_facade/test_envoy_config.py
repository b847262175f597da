"""The rendered Envoy config: accepted by `envoy --mode validate`, fully substituted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.pki import DevPki
from rest_facade.envoy_config import SHAPER_PATH, render, write
from rest_facade.envoy_process import EnvoyError, validate

from .support import envoy_config


def http_connection_manager(rendered: dict[str, Any]) -> dict[str, Any]:
    listener = rendered["static_resources"]["listeners"][0]
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
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
        admin_port=9901,
        require_client_certificate=True,
        access_log_path=Path("relative/access.log"),
    )

    text = render(config)

    assert not re.search(r"\$\{?\w", text), "an unsubstituted placeholder is left"
    rendered = yaml.safe_load(text)
    listener = rendered["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8443}
    assert rendered["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 9901,
    }
    tls = listener["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"] == str(
        pki.ca_cert
    )
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


def test_lua_shaper_is_inlined_verbatim_before_the_transcoder(
    pki: DevPki, descriptor: Path
) -> None:
    rendered = yaml.safe_load(render(envoy_config(pki, core_port=50051)))

    names = [item["name"] for item in http_connection_manager(rendered)["http_filters"]]
    assert names.index("envoy.filters.http.lua") < names.index(
        "envoy.filters.http.grpc_json_transcoder"
    )
    lua = http_filter(rendered, "envoy.filters.http.lua")
    assert lua["default_source_code"]["inline_string"] == SHAPER_PATH.read_text()


def test_paths_with_yaml_special_characters_are_quoted(pki: DevPki, tmp_path: Path) -> None:
    odd = tmp_path / "dir: with #odd 'chars'" / "o2ims.pb"

    rendered = yaml.safe_load(render(envoy_config(pki, core_port=50051, descriptor_path=odd)))

    transcoder = http_filter(rendered, "envoy.filters.http.grpc_json_transcoder")
    assert transcoder["proto_descriptor"] == str(odd)


def test_admin_must_stay_on_loopback(pki: DevPki) -> None:
    with pytest.raises(ValueError, match="loopback"):
        envoy_config(pki, core_port=50051, admin_host="0.0.0.0")


@pytest.mark.parametrize("field", ["listen_port", "core_port", "admin_port"])
def test_ports_are_checked(pki: DevPki, field: str) -> None:
    overrides: dict[str, Any] = {"core_port": 50051, field: 70000}
    with pytest.raises(ValueError, match=field):
        envoy_config(pki, **overrides)
