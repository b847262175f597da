"""Certificate rotation without restarts (issue 17), on a whole stack of real processes:
renewed certificates (new key, new serial, same CA) written as an operator's `mv` would and
as kubelet updates a mounted Secret (the `..data` symlink swap) are used for new handshakes
by Envoy (its server certificate; its client certificate towards the core), by the core's
edge listener and by the notifier's webhook client, while open connections keep working
and every process keeps its PID."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.connection
import h2.events
import httpx
import pytest
import yaml
from cryptography import x509

from devstack.pki import (
    EDGE_URI,
    IssuedCertificate,
    ensure_dev_pki,
    issue_client_certificate,
    publish_secret,
    reissue,
    renew,
)
from devstack.processes import wait_until
from devstack.stack import LocalStack, StackConfig
from rest_facade.envoy_process import admin_get
from tests.notifier.receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

INVENTORY = "/o2ims-infrastructureInventory"
# How often the notifier looks at its client certificate's files in this test.
NOTIFIER_TLS_CHECK_S = 0.2


@dataclass
class Rotation:
    stack: LocalStack
    receiver: Receiver
    # The notifier's client certificate, mounted as a Kubernetes Secret would be.
    webhook_dir: Path
    webhook_source: IssuedCertificate


@pytest.fixture(scope="module")
def rotation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rotation]:
    state = tmp_path_factory.mktemp("rotation")
    pki = ensure_dev_pki(state / "pki")  # the stack reuses it
    source = issue_client_certificate(pki.directory, "notifier", state / "issued")
    webhook_dir = state / "webhook-tls"
    publish_secret(
        webhook_dir, {"tls.crt": source.cert.read_bytes(), "tls.key": source.key.read_bytes()}
    )
    # An HTTPS subscriber that demands a client certificate of the dev CA.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    receiver = Receiver(tls=context).start()
    config = StackConfig.ephemeral(
        state,
        extra_notifier_env={
            "NETWEAVE_NOTIFY_TLS_CERT": str(webhook_dir / "tls.crt"),
            "NETWEAVE_NOTIFY_TLS_KEY": str(webhook_dir / "tls.key"),
            "NETWEAVE_NOTIFY_TLS_CA": str(pki.ca_cert),
            "NETWEAVE_NOTIFY_TLS_CHECK_S": str(NOTIFIER_TLS_CHECK_S),
        },
    )
    stack = LocalStack(config).start()
    yield Rotation(stack, receiver, webhook_dir, source)
    stack.stop()
    receiver.stop()


def serial(der: bytes | None) -> int:
    assert der, "no peer certificate"
    return int(x509.load_der_x509_certificate(der).serial_number)


def served_serial(port: int, context: ssl.SSLContext) -> int:
    """The serial of the certificate a fresh TLS handshake on `port` is given."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return serial(tls.getpeercert(binary_form=True))


def http2_server_speaks(port: int, context: ssl.SSLContext) -> bool:
    """Whether the TLS server on `port` accepts our client certificate: with TLS 1.3 it
    checks the certificate after the handshake, then either sends an alert or begins
    HTTP/2 with its SETTINGS frame."""
    context.set_alpn_protocols(["h2"])
    http2 = h2.connection.H2Connection()
    http2.initiate_connection()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(http2.data_to_send())
        while True:
            try:
                data = tls.recv(65536)
            except ssl.SSLError:
                return False
            if not data:
                return False
            events = http2.receive_data(data)
            if any(isinstance(event, h2.events.RemoteSettingsChanged) for event in events):
                return True


def tls_connection(response: httpx.Response) -> Any:
    """The TLS connection that carried `response` (its httpcore network stream's)."""
    return response.extensions["network_stream"].get_extra_info("ssl_object")


def pids(stack: LocalStack) -> dict[str, int]:
    return {process.name: process.pid for process in stack.managed()}


def expiry_seconds(metrics_url: str, role: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    pattern = rf'^o2ims_certificate_expiry_seconds\{{certificate="{role}"\}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    assert match is not None, f"no expiry sample for {role}"
    return float(match.group(1))


def test_envoy_serves_a_renewed_certificate_to_new_handshakes_and_keeps_open_connections(
    rotation: Rotation,
) -> None:
    stack = rotation.stack
    pki = stack.pki
    before = pids(stack)
    context = stack.client_tls()
    # One HTTP/2 connection at most: every request below must share it and its handshake.
    connection = httpx.Client(
        base_url=stack.rest_url,
        http2=True,
        limits=httpx.Limits(max_connections=1),
        verify=stack.client_tls(),
        timeout=10,
    )
    responses = [connection.get(f"{INVENTORY}/v1")]
    assert responses[0].status_code == 200
    handshake = tls_connection(responses[0])
    original = serial(handshake.getpeercert(True))

    # An operator's renewal: the key, then the certificate, each renamed into place.
    renamed = reissue(pki.server, pki.ca)
    wait_until(
        lambda: served_serial(stack.config.rest_port, context) == renamed,
        10,
        "Envoy serving the certificate renamed into place",
    )
    responses.append(connection.get(f"{INVENTORY}/v1"))
    assert responses[-1].status_code == 200

    # kubelet's update of a mounted Secret: the files become `..data/` symlinks, then a
    # renewal swaps the `..data` symlink alone (one rename: cert and key at once).
    for days in (365, 30):
        renewed = renew(pki.server, pki.ca, days=days)
        publish_secret(
            pki.directory, {"server.crt": renewed.cert_pem, "server.key": renewed.key_pem}
        )
        assert os.readlink(pki.server_cert) == "..data/server.crt"
        wait_until(
            lambda: served_serial(stack.config.rest_port, context) == renewed.serial,  # noqa: B023
            10,
            "Envoy serving the certificate of the swapped ..data",
        )
        responses.append(connection.get(f"{INVENTORY}/v1"))
        assert responses[-1].status_code == 200

    # Still the first connection and its handshake: four requests on one HTTP/2 connection
    # (streams 1, 3, 5, 7), the peer certificate still the original one.
    assert [response.http_version for response in responses] == ["HTTP/2"] * 4
    assert all(tls_connection(response) is handshake for response in responses)
    assert [response.extensions["stream_id"] for response in responses] == [1, 3, 5, 7]
    assert serial(handshake.getpeercert(True)) == original
    connection.close()
    assert pids(stack) == before
    # The core's expiry gauge follows the renewal (30 days now, 365 before).
    wait_until(
        lambda: expiry_seconds(f"{stack.ops_url}/metrics", "server") < 31 * 86400,
        10,
        "o2ims_certificate_expiry_seconds{certificate=server} of the renewed certificate",
    )


def test_the_edge_channel_rotates_on_both_sides_while_rest_calls_keep_working(
    rotation: Rotation,
) -> None:
    stack = rotation.stack
    internal = stack.internal_pki
    before = pids(stack)
    edge_port = stack.config.edge_port
    # The edge listener as Envoy reaches it (its CA, Envoy's client certificate).
    core_context = ssl.create_default_context(cafile=str(internal.ca_cert))
    core_context.load_cert_chain(str(internal.edge.cert), str(internal.edge.key))
    with httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), timeout=5) as rest:
        assert rest.get(f"{INVENTORY}/v1").status_code == 200
        connections_before = envoy_stat(stack, "cluster.o2ims_core.upstream_cx_total")
        updates_before = envoy_stat(
            stack, "cluster.o2ims_core.client_ssl_socket_factory.ssl_context_update_by_sds"
        )

        core_serial = reissue(internal.core, internal.ca)
        edge_serial = reissue(internal.edge, internal.ca)

        # The core's edge listener: a new handshake gets the renewed certificate.
        wait_until(
            lambda: served_serial(edge_port, core_context) == core_serial,
            10,
            "the core's edge listener serving its renewed certificate",
        )
        # Envoy loaded its renewed client certificate (admin /certs) ...
        wait_until(
            lambda: edge_serial in envoy_certificate_serials(stack, EDGE_URI),
            10,
            "Envoy holding its renewed client certificate",
        )
        # ... and the core accepts it on a new connection, as it will from Envoy.
        renewed_context = ssl.create_default_context(cafile=str(internal.ca_cert))
        renewed_context.load_cert_chain(str(internal.edge.cert), str(internal.edge.key))
        assert http2_server_speaks(edge_port, renewed_context)
        for _ in range(5):
            assert rest.get(f"{INVENTORY}/v1").status_code == 200
    # The Envoy->core connection opened before the renewal carried those calls: open
    # connections are never cut. Envoy's new connections use the renewed certificate
    # (tests/rest_facade/test_tls_rotation.py watches a core see it); the core's
    # listener closes connections after 5 minutes, so an old one does not stay for long.
    assert envoy_stat(stack, "cluster.o2ims_core.upstream_cx_total") == connections_before
    updates = "cluster.o2ims_core.client_ssl_socket_factory.ssl_context_update_by_sds"
    assert envoy_stat(stack, updates) > updates_before
    assert pids(stack) == before


def test_deliveries_after_a_renewal_present_the_renewed_client_certificate(
    rotation: Rotation,
) -> None:
    stack, receiver = rotation.stack, rotation.receiver
    before = pids(stack)
    path = f"/rotation/{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), timeout=5) as rest:
        created = rest.post(f"{INVENTORY}/v1/subscriptions", json={"callback": receiver.url + path})
        assert created.status_code == 201, created.text
    pem = (rotation.webhook_dir / "tls.crt").read_bytes()
    original = x509.load_pem_x509_certificate(pem).serial_number

    edit_inventory(stack, "before the renewal")
    first = receiver.wait_for(path, 1, timeout=20)
    assert serial(first[-1].peer_certificate) == original

    renewed = renew(rotation.webhook_source, stack.pki.ca, days=30)
    publish_secret(rotation.webhook_dir, {"tls.crt": renewed.cert_pem, "tls.key": renewed.key_pem})
    time.sleep(NOTIFIER_TLS_CHECK_S * 2)
    edit_inventory(stack, "after the renewal")
    wait_until(
        lambda: serial(receiver.delivered_to(path)[-1].peer_certificate) == renewed.serial,
        20,
        "a delivery with the renewed client certificate",
    )
    assert pids(stack) == before
    wait_until(
        lambda: expiry_seconds(f"{stack.notifier_ops_url}/metrics", "webhook_client") < 31 * 86400,
        10,
        "o2ims_certificate_expiry_seconds{certificate=webhook_client} of the renewal",
    )


# --- helpers ---------------------------------------------------------------------------


def edit_inventory(stack: LocalStack, description: str) -> None:
    """Change the first pool's description, written aside and renamed into place."""
    document = yaml.safe_load(stack.config.inventory.read_text())
    document["resourcePools"][0]["description"] = f"{description} {uuid.uuid4().hex[:6]}"
    staged = stack.config.inventory.with_suffix(".edit")
    staged.write_text(yaml.safe_dump(document, sort_keys=False))
    staged.replace(stack.config.inventory)


def envoy_stat(stack: LocalStack, name: str) -> int:
    assert stack.envoy is not None
    text = admin_get(stack.envoy.admin_socket, f"/stats?filter=^{re.escape(name)}$")
    return int(text.split(":")[1])


def envoy_certificate_serials(stack: LocalStack, uri: str) -> set[int]:
    """Serials of the certificates for URI SAN `uri` Envoy holds (admin /certs; SDS
    secrets show as `<inline>`, so found by their SAN, not their path)."""
    assert stack.envoy is not None
    held = json.loads(admin_get(stack.envoy.admin_socket, "/certs"))
    return {
        int(entry["serial_number"], 16)
        for context in held.get("certificates", [])
        for entry in context.get("cert_chain", [])
        if {"uri": uri} in entry.get("subject_alt_names", [])
    }
