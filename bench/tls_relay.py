"""A client-side TLS relay: h2load (which cannot present a client certificate) speaks
cleartext HTTP/2 to it, and it opens one TLS connection per client connection to the edge,
presenting the client certificate and offering ALPN h2, then copies bytes both ways.

It is a second Envoy with a plain `tcp_proxy`: no HTTP parsing, no multiplexing, so the
edge sees exactly the connections and streams h2load opens. Its CPU is the load
generator's, and bench/stack_bench.py reports it apart from the gateway's processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from devstack.processes import ManagedProcess, free_port, port_open, wait_until
from rest_facade.envoy_process import envoy_binary

TYPES = "type.googleapis.com/envoy.extensions."


@dataclass(frozen=True)
class RelayTls:
    """Who the relay is to the edge: its client certificate, and the CA it checks the
    edge's certificate against (for `server_name`, which is also the SNI sent)."""

    cert: Path
    key: Path
    ca: Path
    server_name: str = "localhost"


def relay_config(listen_port: int, upstream_port: int, tls: RelayTls) -> dict[str, object]:
    """The relay's Envoy bootstrap."""
    upstream_tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": TYPES + "transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": tls.server_name,
            # A full handshake on every connection, as h2load's own TLS would do: the edge
            # does not take a resumed session's certificate as validated (its Lua asks
            # peerCertificateValidated(), false after resumption) and answers 401.
            "max_session_keys": 0,
            "common_tls_context": {
                # The edge picks its codec by ALPN, as for any HTTP/2 client.
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(tls.cert)},
                        "private_key": {"filename": str(tls.key)},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": str(tls.ca)},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": tls.server_name}}
                    ],
                },
            },
        },
    }
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "relay",
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": listen_port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.tcp_proxy",
                                    "typed_config": {
                                        "@type": TYPES + "filters.network.tcp_proxy.v3.TcpProxy",
                                        "stat_prefix": "relay",
                                        "cluster": "edge",
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "edge",
                    "type": "STATIC",
                    "connect_timeout": "2s",
                    "load_assignment": {
                        "cluster_name": "edge",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": upstream_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    "transport_socket": upstream_tls,
                }
            ],
        }
    }


def start_relay(
    upstream_port: int, tls: RelayTls, workdir: Path, timeout: float = 20.0
) -> tuple[ManagedProcess, int]:
    """Start the relay (one worker thread) on a free port; returns it and its port."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "relay.json"
    config_path.write_text(json.dumps(relay_config(port, upstream_port, tls), indent=1))
    process = ManagedProcess(
        "tls-relay",
        [
            str(envoy_binary()),
            "-c",
            str(config_path),
            "--use-dynamic-base-id",
            "--concurrency",
            "1",
            "--log-level",
            "warn",
        ],
        workdir / "relay.log",
    ).start()
    try:
        wait_until(lambda: port_open(port), timeout, "the TLS relay", require=process.require_alive)
    except BaseException:
        process.stop()
        raise
    return process, port
