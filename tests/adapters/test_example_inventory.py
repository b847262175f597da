"""examples/ocloud.yaml looks like an O-Cloud conformance tools can run against: resource
type names are unique (tools select types by name), every pool has resources, every type
has its own alarm dictionary, and the deployment manager offers the Kubernetes-native
profile (server/deployment_profiles.py) with well-formed example certificates."""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf import json_format
from o2ims.adapter.v1 import domain_pb2

from adapters.static.loader import load_inventory


class Example:
    """The example inventory's objects by kind (resources with their nested elements)."""

    def __init__(self, path: Path) -> None:
        self.by_kind: dict[str, list[Any]] = {}
        for obj in load_inventory(path):
            kind = obj.WhichOneof("kind") or ""
            self.by_kind.setdefault(kind, []).append(getattr(obj, kind))

    def of(self, kind: str) -> list[Any]:
        return self.by_kind.get(kind, [])

    def every_resource(self) -> list[domain_pb2.Resource]:
        def walk(resource: domain_pb2.Resource) -> list[domain_pb2.Resource]:
            return [resource, *(r for element in resource.elements for r in walk(element))]

        return [r for top in self.of("resource") for r in walk(top)]


@pytest.fixture(scope="module")
def example() -> Example:
    return Example(Path(__file__).resolve().parents[2] / "examples" / "ocloud.yaml")


def decoded_pem(value: str, what: str) -> bytes:
    """A kubeconfig-style `*-data` value: base64 of PEM, one line."""
    try:
        pem = base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise AssertionError(f"{what} is not base64: {error}") from error
    assert pem.startswith(b"-----BEGIN "), f"{what} does not decode to PEM"
    return pem


def test_resource_type_names_are_unique(example: Example) -> None:
    names = Counter(resource_type.name for resource_type in example.of("resource_type"))
    assert [name for name, count in names.items() if count > 1] == []
    # The names the conformance tests filter on (CONF 7.3.5: in/nin on name) exist.
    assert {"pserver", "pserver_if", "pserver_mem"} <= set(names)


def test_every_pool_has_resources_and_every_type_is_used(example: Example) -> None:
    pools_with_resources = {resource.resource_pool_id for resource in example.of("resource")}
    for pool in example.of("resource_pool"):
        assert pool.resource_pool_id in pools_with_resources, pool.name
    used_types = {resource.resource_type_id for resource in example.every_resource()}
    unused = [t.name for t in example.of("resource_type") if t.resource_type_id not in used_types]
    assert unused == []


def test_every_type_has_its_own_alarm_dictionary(example: Example) -> None:
    dictionaries = {d.alarm_dictionary_id: d for d in example.of("alarm_dictionary")}
    types = example.of("resource_type")
    for resource_type in types:
        dictionary = dictionaries.get(resource_type.alarm_dictionary_id)
        assert dictionary is not None, f"{resource_type.name} has no alarm dictionary"
        assert dictionary.entity_type == resource_type.name
        assert list(dictionary.management_interface_id) == ["O2IMS"]
        assert dictionary.alarm_definition, f"{resource_type.name}: an empty dictionary"
    assert len({t.alarm_dictionary_id for t in types}) == len(types)


def test_the_deployment_manager_offers_the_kubernetes_native_profile(example: Example) -> None:
    [manager] = example.of("deployment_manager")
    extensions = json_format.MessageToDict(manager.extensions)
    profile = extensions["profiles"]["native_k8sapi"]
    assert profile["cluster_api_endpoint"] == manager.service_uri
    assert profile["cluster_api_endpoint"].startswith("https://")

    ca = x509.load_pem_x509_certificate(decoded_pem(profile["cluster_ca_cert"], "cluster_ca_cert"))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Example data, and says so: nobody mistakes it for a real cluster's.
    assert "EXAMPLE" in ca.subject.rfc4514_string()

    # The admin credentials: a client certificate the CA signed, and its key.
    assert profile["admin_user"]
    cert = x509.load_pem_x509_certificate(
        decoded_pem(profile["admin_client_cert"], "admin_client_cert")
    )
    key = serialization.load_pem_private_key(
        decoded_pem(profile["admin_client_key"], "admin_client_key"), password=None
    )
    cert.verify_directly_issued_by(ca)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    assert key.public_key().public_bytes(encoding, public) == cert.public_key().public_bytes(
        encoding, public
    )
