"""The floor of the edge: a second, minimal Envoy with what a read through the edge cannot
do without, to measure Envoy's CPU per request against what the components allow on this
machine (issue 18: "close the gap to what the components allow").

It is cut from the running edge's own rendered config (envoy/gateway.yaml.in), so it is
the same where it must be and nothing else:

  floor gRPC   the edge's downstream TLS (server certificate, client certificate required
               and validated against the same CA, the same ALPN, no session resumption),
               an HTTP connection manager with the router alone, and the edge's cluster of
               cores: the core's edge listener over the same mutual TLS (the edge's client
               certificate of the internal PKI).
  floor REST   the same plus the edge's grpc_json_transcoder (same descriptor set, services
               and print options), nothing else.

The core's edge listener needs the caller's identity: the verified client certificate is
forwarded with the edge virtual host's own request_headers_to_add (%DOWNSTREAM_PEER_CERT%,
with the edge's marker). No access log, no Lua, no jwt_authn, no rate
limit, no telemetry, no health checks, no admin API.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devstack.processes import ManagedProcess, free_port, port_open, wait_until
from netweave.headers import CLIENT_CERT_HEADER
from rest_facade.envoy_process import LISTENER_NAME, validate
from rest_facade.envoy_routes import CORE_CLUSTER

TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
HCM = "envoy.filters.network.http_connection_manager"
# The listeners of the floor Envoy, as named in its config.
GRPC_LISTENER = "floor_grpc"
REST_LISTENER = "floor_rest"
# The edge's route timeout for unary calls (rest_facade/envoy_routes.py UNARY_TIMEOUT).
ROUTE_TIMEOUT = "15s"


@dataclass(frozen=True)
class FloorEnvoy:
    """The started floor Envoy: its process and the ports of its two listeners."""

    process: ManagedProcess
    grpc_port: int
    rest_port: int
    config_path: Path


class _EdgeConfigLoader(yaml.SafeLoader):
    """The edge's rendered config: its blocks are dumped one by one, so an anchor name
    (&id001) may be defined again further on, which YAML allows (an alias refers to the
    latest node of that anchor) and Envoy reads, but PyYAML refuses."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        if not isinstance(event, yaml.AliasEvent) and event.anchor is not None:
            self.anchors.pop(event.anchor, None)
        return super().compose_node(parent, index)


def read_edge_config(path: Path) -> dict[str, Any]:
    """The edge's rendered config file, parsed."""
    config: dict[str, Any] = yaml.load(path.read_text(), Loader=_EdgeConfigLoader)
    return config


def _named(items: list[dict[str, Any]], name: str, what: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise KeyError(f"the edge's config has no {what} named {name!r}")


def floor_config(edge: dict[str, Any], grpc_port: int, rest_port: int) -> dict[str, Any]:
    """The floor Envoy's bootstrap, from the edge's (the parsed YAML it runs)."""
    resources = edge["static_resources"]
    listener = _named(resources["listeners"], LISTENER_NAME, "listener")
    [chain] = listener["filter_chains"]
    edge_hcm = _named(chain["filters"], HCM, "network filter")["typed_config"]
    transcoder = _named(edge_hcm["http_filters"], TRANSCODER, "HTTP filter")
    [edge_host] = edge_hcm["route_config"]["virtual_hosts"]
    set_by_host = {item["header"]["key"] for item in edge_host["request_headers_to_add"]}
    if CLIENT_CERT_HEADER not in set_by_host:
        raise KeyError(f"the edge's virtual host does not set {CLIENT_CERT_HEADER}")
    cluster = copy.deepcopy(_named(resources["clusters"], CORE_CLUSTER, "cluster"))
    # Background work, not per request: the floor has no rotation to take cores out of.
    cluster.pop("health_checks", None)

    def http_listener(name: str, port: int, http_filters: list[dict[str, Any]]) -> dict[str, Any]:
        manager = {
            "@type": edge_hcm["@type"],
            "stat_prefix": name,
            "codec_type": "AUTO",
            # As the edge: the TCP peer is the client, every request is external.
            "use_remote_address": True,
            # The edge's HTTP/2 settings (stream cap, flow-control windows): the same framing.
            "http2_protocol_options": edge_hcm["http2_protocol_options"],
            "route_config": {
                "name": name,
                "virtual_hosts": [
                    {
                        "name": name,
                        "domains": ["*"],
                        # What the core's edge listener needs (server/auth/interceptor.py),
                        # as the edge sets it: the edge's marker and the verified client
                        # certificate.
                        "request_headers_to_add": edge_host["request_headers_to_add"],
                        "routes": [
                            {
                                "match": {"prefix": "/"},
                                "route": {"cluster": CORE_CLUSTER, "timeout": ROUTE_TIMEOUT},
                            }
                        ],
                    }
                ],
            },
            "http_filters": http_filters,
        }
        return {
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "per_connection_buffer_limit_bytes": listener["per_connection_buffer_limit_bytes"],
            "filter_chains": [
                {
                    # The edge's TLS, verbatim (its certificates are SDS files of the edge).
                    "transport_socket": chain["transport_socket"],
                    "filters": [{"name": HCM, "typed_config": manager}],
                }
            ],
        }

    return {
        # The SDS subscriptions of the edge's certificates need a node identity.
        "node": {"id": "netweave-edge-floor", "cluster": "netweave-edge-floor"},
        "static_resources": {
            "listeners": [
                http_listener(GRPC_LISTENER, grpc_port, [ROUTER]),
                http_listener(REST_LISTENER, rest_port, [transcoder, ROUTER]),
            ],
            "clusters": [cluster],
        },
    }


def start_like_edge(
    edge: ManagedProcess, name: str, config_path: Path, log: Path, ports: Sequence[int]
) -> ManagedProcess:
    """Another Envoy started with the edge's own command line (its --concurrency, log
    flags and dynamic base id) and `config_path` in place of the edge's config, once
    `envoy --mode validate` accepts it; returned when every one of `ports` accepts
    connections."""
    validate(config_path)
    argv = list(edge.argv)
    argv[argv.index("-c") + 1] = str(config_path)
    process = ManagedProcess(name, argv, log, env={"TZ": "UTC"}).start()
    try:
        wait_until(
            lambda: all(port_open(port) for port in ports),
            20,
            f"the {name} Envoy",
            require=process.require_alive,
        )
    except BaseException:
        process.stop()
        raise
    return process


def start_floor(edge: ManagedProcess, edge_config_path: Path, workdir: Path) -> FloorEnvoy:
    """Render the floor from the edge's config file and start it like the edge (as many
    worker threads), waiting until both listeners accept connections."""
    config = read_edge_config(edge_config_path)
    grpc_port, rest_port = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "floor.json"
    config_path.write_text(json.dumps(floor_config(config, grpc_port, rest_port), indent=1))
    process = start_like_edge(
        edge, "envoy-floor", config_path, workdir / "floor.log", (grpc_port, rest_port)
    )
    return FloorEnvoy(process, grpc_port, rest_port, config_path)
