"""Envoy's certificates come from file-based SDS: renewed files are used for new
connections without a restart. Here the channel to the core: a core double behind the
edge's mutual TLS records the client certificate of every call it gets from Envoy."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc

from devstack.pki import CORE_URI, DevPki, InternalPki, ensure_internal_pki, reissue
from devstack.processes import wait_until
from netweave.grpc_server import (
    ReloadingServerCredentials,
    add_health_and_reflection,
    new_server,
    set_serving,
)
from rest_facade.envoy_config import CoreTls, render, sds_secrets, write
from rest_facade.envoy_process import RunningEnvoy, validate

from .support import EnvoyFactory, FakeInventory, envoy_config, rest_client

INVENTORY_SERVICE = "o2ims.inventory.v1.InventoryService"
CLOUD = "/o2ims-infrastructureInventory/v1"


class PeerRecordingInventory(FakeInventory):
    """Records the serial of the client certificate each GetCloudInfo came with."""

    def __init__(self) -> None:
        super().__init__()
        self.peer_serials: list[int] = []
        self._peers_lock = threading.Lock()

    def GetCloudInfo(
        self, request: v1.GetCloudInfoRequest, context: grpc.ServicerContext
    ) -> v1.OCloudInfo:
        [pem] = context.auth_context()["x509_pem_cert"]
        with self._peers_lock:
            self.peer_serials.append(x509.load_pem_x509_certificate(pem).serial_number)
        return super().GetCloudInfo(request, context)


@dataclass
class TlsCore:
    inventory: PeerRecordingInventory
    server: grpc.Server
    port: int
    pki: InternalPki


@pytest.fixture
def tls_core(tmp_path: Path) -> Iterator[TlsCore]:
    """A core double on the edge's mutual TLS (the core's edge listener credentials),
    closing connections after half a second so Envoy keeps opening new ones."""
    internal = ensure_internal_pki(tmp_path / "internal")
    # The double implements only the RPCs the edge calls here (as support.start_fake_core).
    inventory = PeerRecordingInventory()  # type: ignore[abstract]
    server = new_server(
        max_workers=8,
        options=[("grpc.max_connection_age_ms", 500), ("grpc.max_connection_age_grace_ms", 500)],
    )
    v1_grpc.add_InventoryServiceServicer_to_server(inventory, server)
    health_servicer = add_health_and_reflection(server, [INVENTORY_SERVICE])
    credentials = ReloadingServerCredentials(
        str(internal.core.cert), str(internal.core.key), client_ca=str(internal.ca_cert)
    )
    port = server.add_secure_port("127.0.0.1:0", credentials.credentials)
    server.start()
    set_serving(health_servicer, [INVENTORY_SERVICE], True)
    yield TlsCore(inventory, server, port, internal)
    server.stop(grace=None).wait()


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def cloud_ok(envoy: RunningEnvoy, pki: DevPki) -> bool:
    with rest_client(envoy, pki) as client:
        return client.get(CLOUD).status_code == 200


def test_envoy_presents_its_renewed_client_certificate_on_new_connections_to_the_core(
    tls_core: TlsCore, envoy_factory: EnvoyFactory, pki: DevPki
) -> None:
    internal = tls_core.pki
    envoy = envoy_factory(
        tls_core.port,
        core_tls=CoreTls(internal.edge.cert, internal.edge.key, internal.ca_cert, CORE_URI),
    )
    wait_until(lambda: cloud_ok(envoy, pki), 10, "a REST call through to the TLS core")
    assert tls_core.inventory.peer_serials[-1] == serial_of(internal.edge.cert)
    pid = envoy.process.pid

    renewed_edge = reissue(internal.edge, internal.ca)
    renewed_core = reissue(internal.core, internal.ca)

    wait_until(
        lambda: cloud_ok(envoy, pki) and tls_core.inventory.peer_serials[-1] == renewed_edge,
        15,
        "the core seeing Envoy's renewed client certificate",
    )
    # The core double served its renewed certificate to those connections, and Envoy
    # (which checks the core's URI SAN and CA) accepted it; nobody restarted.
    context = ssl.create_default_context(cafile=str(internal.ca_cert))
    context.load_cert_chain(str(internal.edge.cert), str(internal.edge.key))
    with (
        socket.create_connection(("127.0.0.1", tls_core.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
    assert served.serial_number == renewed_core
    assert envoy.process.pid == pid


def test_every_certificate_envoy_uses_is_a_file_watched_sds_secret(
    tls_core: TlsCore, pki: DevPki, tmp_path: Path
) -> None:
    internal = tls_core.pki
    config = envoy_config(
        pki,
        tls_core.port,
        core_tls=CoreTls(internal.edge.cert, internal.edge.key, internal.ca_cert, CORE_URI),
        telemetry_port=50053,
    )

    path = write(config, tmp_path / "envoy.yaml")

    validate(path)
    text = path.read_text()
    # No certificate is named inline in the config: each is an SDS secret in its file.
    assert "certificate_chain" not in text and "trusted_ca" not in text
    sds_dir = tmp_path / "sds"
    resources = {
        file.stem: yaml.safe_load(file.read_text())["resources"][0]
        for file in sds_dir.glob("*.yaml")
    }
    assert set(resources) == {secret.name for secret in sds_secrets(config)}
    server = resources["edge_server_certificate"]["tls_certificate"]
    assert server["certificate_chain"]["filename"] == str(pki.server_cert)
    assert server["watched_directory"]["path"] == str(pki.directory)
    core_ca = resources["core_ca"]["validation_context"]
    assert core_ca["trusted_ca"]["filename"] == str(internal.ca_cert)
    assert core_ca["watched_directory"]["path"] == str(internal.directory)
    rendered = yaml.safe_load(text)
    clusters = {cluster["name"]: cluster for cluster in rendered["static_resources"]["clusters"]}
    for name in ("o2ims_core", "netweave_edge_telemetry"):
        context = clusters[name]["transport_socket"]["typed_config"]["common_tls_context"]
        [reference] = context["tls_certificate_sds_secret_configs"]
        assert reference["name"] == "core_client_certificate"
        source = reference["sds_config"]["path_config_source"]
        assert source == {
            "path": str(sds_dir / "core_client_certificate.yaml"),
            "watched_directory": {"path": str(sds_dir)},
        }
        # The core's identity stays in the config, beside the CA from SDS.
        validation = context["combined_validation_context"]
        assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
            {"san_type": "URI", "matcher": {"exact": CORE_URI}}
        ]


def test_a_key_outside_its_certificates_directory_is_refused(pki: DevPki, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "server.key"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(pki.server_key.read_bytes())
    config = envoy_config(pki, 50051, server_key=elsewhere)

    with pytest.raises(ValueError, match="one directory"):
        render(config)
