"""The Kubernetes-native profile of a deployment manager, end to end: real Envoy, real client
certificates, the example access policy (examples/access-policy.yaml: `deployer-*`
certificates are readers and deployers, other certificates of the dev CA readers, the dev
client the admin) and the example inventory's manager. With `?profile=native_k8sapi` every
reader gets the cluster's endpoint and CA, the deployer and the admin its admin credentials
too; without it nobody does; an unknown profile is a 400; the credentials never reach the
audit trail or a log. REST on both majors, and native gRPC through the edge."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc
from o2ims.inventory.v2 import inventory_pb2 as v2
from o2ims.inventory.v2 import inventory_pb2_grpc as v2_grpc

from adapters.static.loader import load_inventory
from devstack.pki import IssuedCertificate, issue_client_certificate
from devstack.processes import wait_until
from devstack.stack import LocalStack

from .conftest import start_stack

pytestmark = pytest.mark.e2e

INVENTORY = "/o2ims-infrastructureInventory"
MAJORS = ("v1", "v2")
CREDENTIALS = ("admin_user", "admin_client_cert", "admin_client_key")
PUBLIC = ("cluster_api_endpoint", "cluster_ca_cert")
GRPC = {"v1": (v1, v1_grpc), "v2": (v2, v2_grpc)}


@dataclass
class Parties:
    certs: dict[str, IssuedCertificate]
    http: dict[str, httpx.Client]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory)  # the example access policy and inventory
    yield running
    running.stop()


@pytest.fixture(scope="module")
def parties(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parties]:
    out = tmp_path_factory.mktemp("clients")
    certs = {
        "reader": issue_client_certificate(stack.pki.directory, "lab-reader", out),
        "deployer": issue_client_certificate(stack.pki.directory, "deployer-ci", out),
        "admin": stack.pki.client,
    }
    http = {}
    for name, cert in certs.items():
        tls = ssl.create_default_context(cafile=str(stack.pki.ca_cert))
        tls.load_cert_chain(str(cert.cert), str(cert.key))
        http[name] = httpx.Client(base_url=stack.rest_url, verify=tls, timeout=10.0)
    yield Parties(certs, http)
    for client in http.values():
        client.close()


@pytest.fixture(scope="module")
def manager(stack: LocalStack) -> tuple[str, dict[str, Any]]:
    """The example manager's id and its stored native profile (ground truth)."""
    [stored] = [
        obj.deployment_manager
        for obj in load_inventory(stack.config.inventory)
        if obj.WhichOneof("kind") == "deployment_manager"
    ]
    profile = json_format.MessageToDict(stored.extensions)["profiles"]["native_k8sapi"]
    assert all(profile.get(field) for field in CREDENTIALS + PUBLIC)
    return stored.deployment_manager_id, profile


def secrets_of(profile: dict[str, Any]) -> list[str]:
    """The credential values, as they would appear in any text that leaked them."""
    return [profile[field] for field in CREDENTIALS]


def get(http: httpx.Client, major: str, manager_id: str, query: str = "") -> httpx.Response:
    return http.get(f"{INVENTORY}/{major}/deploymentManagers/{manager_id}{query}")


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("party", ["reader", "deployer", "admin"])
def test_a_plain_get_has_no_credentials_for_anybody(
    parties: Parties, manager: tuple[str, dict[str, Any]], party: str, major: str
) -> None:
    manager_id, profile = manager
    response = get(parties.http[party], major, manager_id, "?all_fields")
    assert response.status_code == 200, response.text
    assert not any(secret in response.text for secret in secrets_of(profile))
    assert not any(field in response.text for field in CREDENTIALS)
    extensions = response.json()["extensions"]
    assert extensions["profiles"]["native_k8sapi"] == {f: profile[f] for f in PUBLIC}
    assert "profileData" not in extensions


@pytest.mark.parametrize("major", MAJORS)
def test_the_reader_gets_the_native_profile_without_admin_credentials(
    parties: Parties, manager: tuple[str, dict[str, Any]], major: str
) -> None:
    manager_id, profile = manager
    response = get(parties.http["reader"], major, manager_id, "?profile=native_k8sapi")
    assert response.status_code == 200, response.text
    extensions = response.json()["extensions"]
    assert extensions["profileName"] == "native_k8sapi"
    assert extensions["profileData"] == {f: profile[f] for f in PUBLIC}
    assert not any(secret in response.text for secret in secrets_of(profile))


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("party", ["deployer", "admin"])
def test_deployer_and_admin_get_the_admin_credentials(
    parties: Parties, manager: tuple[str, dict[str, Any]], party: str, major: str
) -> None:
    manager_id, profile = manager
    response = get(parties.http[party], major, manager_id, "?profile=native_k8sapi")
    assert response.status_code == 200, response.text
    extensions = response.json()["extensions"]
    assert extensions["profileName"] == "native_k8sapi"
    assert extensions["profileData"] == profile


@pytest.mark.parametrize("major", MAJORS)
def test_an_unknown_profile_is_a_400_saying_which_are_served(
    parties: Parties, manager: tuple[str, dict[str, Any]], major: str
) -> None:
    manager_id, _ = manager
    response = get(parties.http["deployer"], major, manager_id, "?profile=sol018")
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400
    assert problem["detail"] == (
        "profile: unknown deployment manager profile 'sol018' (served: native_k8sapi)"
    )


def grpc_channel(stack: LocalStack, cert: IssuedCertificate) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=stack.pki.ca_cert.read_bytes(),
        private_key=cert.key.read_bytes(),
        certificate_chain=cert.cert.read_bytes(),
    )
    return grpc.secure_channel(f"localhost:{stack.config.rest_port}", credentials)


@pytest.mark.parametrize("major", MAJORS)
def test_native_grpc_through_the_edge_serves_the_same_profile(
    stack: LocalStack, parties: Parties, manager: tuple[str, dict[str, Any]], major: str
) -> None:
    manager_id, profile = manager
    pb, stubs = GRPC[major]
    served: dict[str, dict[str, Any]] = {}
    for party in ("reader", "deployer"):
        with grpc_channel(stack, parties.certs[party]) as channel:
            reply = stubs.InventoryServiceStub(channel).GetDeploymentManager(
                pb.GetDeploymentManagerRequest(
                    deployment_manager_id=manager_id, profile="native_k8sapi"
                ),
                timeout=5,
            )
            served[party] = json_format.MessageToDict(reply.extensions)
        with grpc_channel(stack, parties.certs[party]) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                stubs.InventoryServiceStub(channel).GetDeploymentManager(
                    pb.GetDeploymentManagerRequest(
                        deployment_manager_id=manager_id, profile="sol018"
                    ),
                    timeout=5,
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert served["reader"]["profileData"] == {f: profile[f] for f in PUBLIC}
    assert served["deployer"]["profileData"] == profile


def test_the_credentials_never_reach_the_audit_trail_or_a_log(
    stack: LocalStack, parties: Parties, manager: tuple[str, dict[str, Any]]
) -> None:
    manager_id, profile = manager
    request_ids = []
    for major in MAJORS:
        response = get(parties.http["deployer"], major, manager_id, "?profile=native_k8sapi")
        assert response.status_code == 200
        assert profile["admin_client_key"] in response.text
        request_ids.append(response.headers["x-request-id"])
    wait_until(
        lambda: all(request_id in stack.audit_log.read_text() for request_id in request_ids),
        5,
        "the calls audited",
    )
    leaked = {
        path.name: [field for field in CREDENTIALS if profile[field] in path.read_text()]
        for path in sorted(stack.logs.glob("*.log"))
    }
    assert stack.audit_log.name in leaked
    assert {name: fields for name, fields in leaked.items() if fields} == {}


@pytest.mark.parametrize("major", MAJORS)
def test_the_list_has_no_credentials_either(
    parties: Parties, manager: tuple[str, dict[str, Any]], major: str
) -> None:
    _, profile = manager
    response = parties.http["admin"].get(f"{INVENTORY}/{major}/deploymentManagers?all_fields")
    assert response.status_code == 200, response.text
    assert not any(secret in response.text for secret in secrets_of(profile))
