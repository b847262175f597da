"""GET deploymentManagers/{id} with and without `profile`, on both Inventory majors, over
the example inventory, through a real gRPC server with the core's auth interceptor (so the
caller's roles are the ones the access policy gives): the Kubernetes-native profile for
everybody who reads the inventory, its admin credentials for the deployer and the admin
only, no credentials at all without a profile, and 400 for a profile nobody serves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from o2ims.adapter.v1 import domain_pb2
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc
from o2ims.inventory.v2 import inventory_pb2 as v2
from o2ims.inventory.v2 import inventory_pb2_grpc as v2_grpc

from adapters.contract import KINDS, object_key, serialize
from adapters.static.loader import load_inventory
from netweave.grpc_server import new_server
from server.auth import AccessPolicy, AuthInterceptor
from server.auth.identity import Channel
from server.auth.policy import ADMIN, DEPLOYER, MAINTAINER, READER
from server.cache import InventoryCache
from server.deployment_profiles import serve_deployment_manager, strip_credentials
from server.errors import InvalidArgument
from server.inventory import InventoryV1Servicer, InventoryV2Servicer
from server.listing import Lister, ListingSettings
from server.metrics import GatewayMetrics
from server.store import Snapshot
from server.wire.v1 import MODEL as V1
from tests.conftest import EXAMPLE_INVENTORY

MANAGER_ID = "55b9ec44-ea9a-4822-bc5d-453c11697f87"  # examples/ocloud.yaml
CREDENTIALS = {"admin_user", "admin_client_cert", "admin_client_key"}
PUBLIC = {"cluster_api_endpoint", "cluster_ca_cert"}
MAJORS = {"v1": (v1, v1_grpc), "v2": (v2, v2_grpc)}


@pytest.fixture(scope="module")
def cache() -> InventoryCache:
    stored: dict[str, dict[str, bytes]] = {kind: {} for kind in KINDS}
    objects = load_inventory(EXAMPLE_INVENTORY)
    for obj in objects:
        kind, object_id = object_key(obj)
        stored[kind][object_id] = serialize(obj)
    cache = InventoryCache("https://o2ims.example.net")
    cache.load(Snapshot(version=len(objects), last_event_id="1-0", objects=stored))
    return cache


@pytest.fixture(scope="module")
def stored_profile() -> dict[str, Any]:
    """The native profile as the example inventory stores it (ground truth)."""
    manager = next(
        obj.deployment_manager
        for obj in load_inventory(EXAMPLE_INVENTORY)
        if obj.WhichOneof("kind") == "deployment_manager"
    )
    profile: dict[str, Any] = json_format.MessageToDict(manager.extensions)["profiles"][
        "native_k8sapi"
    ]
    assert set(profile) >= CREDENTIALS | PUBLIC
    return profile


@pytest.fixture(scope="module")
def channels(cache: InventoryCache) -> Iterator[dict[str, grpc.Channel]]:
    """A channel per role: each to a core whose policy gives direct callers that role."""
    servers, opened = [], {}
    lister = Lister(ListingSettings(secret=b"test-secret"))
    for role in (READER, DEPLOYER, ADMIN, MAINTAINER):
        policy = AccessPolicy(direct_calls=(role,))
        auth = AuthInterceptor(policy, None, GatewayMetrics(), Channel.INTERNAL)
        server = new_server(2, [auth])
        v1_grpc.add_InventoryServiceServicer_to_server(
            InventoryV1Servicer(cache, "https://o2ims.example.net", lister), server
        )
        v2_grpc.add_InventoryServiceServicer_to_server(
            InventoryV2Servicer(cache, "https://o2ims.example.net", lister), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        opened[role] = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield opened
    for channel in opened.values():
        channel.close()
    for server in servers:
        server.stop(None)


def get_manager(
    channels: dict[str, grpc.Channel], role: str, major: str, **request: Any
) -> dict[str, Any]:
    pb, stubs = MAJORS[major]
    stub = stubs.InventoryServiceStub(channels[role])
    reply = stub.GetDeploymentManager(
        pb.GetDeploymentManagerRequest(deployment_manager_id=MANAGER_ID, **request), timeout=5
    )
    served: dict[str, Any] = json_format.MessageToDict(reply)
    return served


def credential_fields_anywhere(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = CREDENTIALS & set(value)
        return found.union(*(credential_fields_anywhere(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(credential_fields_anywhere(v) for v in value))
    return set()


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("role", [READER, DEPLOYER, ADMIN])
def test_without_a_profile_nobody_gets_credentials(
    channels: dict[str, grpc.Channel], role: str, major: str, stored_profile: dict[str, Any]
) -> None:
    served = get_manager(channels, role, major)
    assert credential_fields_anywhere(served) == set()
    # Otherwise the manager as stored: the profile's public part stays where it was.
    native = served["extensions"]["profiles"]["native_k8sapi"]
    assert native == {field: stored_profile[field] for field in PUBLIC}
    assert "profileName" not in served["extensions"]
    assert served["capabilities"] and served["capacity"]


@pytest.mark.parametrize("major", MAJORS)
def test_the_reader_gets_the_native_profile_without_credentials(
    channels: dict[str, grpc.Channel], major: str, stored_profile: dict[str, Any]
) -> None:
    served = get_manager(channels, READER, major, profile="native_k8sapi")
    assert served["extensions"]["profileName"] == "native_k8sapi"
    assert served["extensions"]["profileData"] == {field: stored_profile[field] for field in PUBLIC}
    assert credential_fields_anywhere(served) == set()


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("role", [DEPLOYER, ADMIN])
def test_deployer_and_admin_get_the_admin_credentials_in_the_profile(
    channels: dict[str, grpc.Channel], role: str, major: str, stored_profile: dict[str, Any]
) -> None:
    served = get_manager(channels, role, major, profile="native_k8sapi")
    assert served["extensions"]["profileName"] == "native_k8sapi"
    assert served["extensions"]["profileData"] == stored_profile
    # Only there: the stored profiles mapping never carries them.
    assert credential_fields_anywhere(served["extensions"]["profiles"]) == set()


def test_selectors_apply_to_the_profile_response(channels: dict[str, grpc.Channel]) -> None:
    served = get_manager(channels, DEPLOYER, "v1", profile="native_k8sapi", exclude_default=True)
    assert "extensions" not in served
    served = get_manager(channels, DEPLOYER, "v1", profile="native_k8sapi", fields="extensions")
    assert served["extensions"]["profileData"]["admin_user"]


def bad_request(error: grpc.RpcError) -> tuple[str, str, list[str]]:
    """(ErrorInfo reason, message, BadRequest fields) of a refused call."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(details)
    info, violations = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(violations)
    return info.reason, status.message, [v.field for v in violations.field_violations]


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("profile", ["sol018", "NATIVE_K8SAPI", "native_k8sapi "])
def test_an_unknown_profile_is_invalid_argument_naming_the_served_ones(
    channels: dict[str, grpc.Channel], major: str, profile: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        get_manager(channels, DEPLOYER, major, profile=profile)
    reason, message, fields = bad_request(refused.value)
    assert reason == "UNKNOWN_PROFILE"
    assert fields == ["profile"]
    assert message == (
        f"profile: unknown deployment manager profile '{profile}' (served: native_k8sapi)"
    )


def test_an_unknown_profile_wins_over_an_unknown_manager(
    channels: dict[str, grpc.Channel],
) -> None:
    stub = v1_grpc.InventoryServiceStub(channels[READER])
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetDeploymentManager(
            v1.GetDeploymentManagerRequest(
                deployment_manager_id="00000000-0000-4000-8000-00000000dead", profile="x"
            ),
            timeout=5,
        )
    assert bad_request(refused.value)[0] == "UNKNOWN_PROFILE"


def test_a_role_without_inventory_read_is_refused_before_any_profile(
    channels: dict[str, grpc.Channel],
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        get_manager(channels, MAINTAINER, "v1", profile="native_k8sapi")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def manager_info(extensions: dict[str, Any]) -> v1.DeploymentManagerInfo:
    info = v1.DeploymentManagerInfo(deployment_manager_id=MANAGER_ID)
    info.extensions.update(extensions)
    return info


def test_a_manager_without_the_profile_is_a_bad_request_naming_it() -> None:
    with pytest.raises(InvalidArgument) as refused:
        serve_deployment_manager(manager_info({"site": "x"}), MANAGER_ID, "native_k8sapi", True)
    assert refused.value.reason == "PROFILE_NOT_OFFERED"
    assert refused.value.message == (
        f"profile: deployment manager '{MANAGER_ID}' does not offer the native_k8sapi profile"
    )


def test_serving_never_modifies_the_cached_message() -> None:
    info = manager_info(
        {"profiles": {"native_k8sapi": {"cluster_api_endpoint": "https://k", "admin_user": "a"}}}
    )
    before = info.SerializeToString(deterministic=True)
    serve_deployment_manager(info, MANAGER_ID, "native_k8sapi", True)
    serve_deployment_manager(info, MANAGER_ID, "", False)
    assert info.SerializeToString(deterministic=True) == before


def test_a_manager_without_credentials_is_served_as_is() -> None:
    info = manager_info({"profiles": {"native_k8sapi": {"cluster_api_endpoint": "https://k"}}})
    assert serve_deployment_manager(info, MANAGER_ID, "", False) is info


def test_credentials_go_from_every_profile_and_an_osc_style_profile_data() -> None:
    extensions = struct_pb2.Struct()
    extensions.update(
        {
            "profileName": "native_k8sapi",
            "profileData": {"cluster_api_endpoint": "https://k", "admin_client_key": "k"},
            "profiles": {
                "native_k8sapi": {"admin_user": "a", "cluster_ca_cert": "c"},
                "other": {"admin_client_cert": "c", "note": "kept"},
                "not_a_mapping": "kept",
            },
            "admin_user": "top-level keys are not a profile's: kept",
        }
    )
    strip_credentials(extensions)
    assert json_format.MessageToDict(extensions) == {
        "profileName": "native_k8sapi",
        "profileData": {"cluster_api_endpoint": "https://k"},
        "profiles": {
            "native_k8sapi": {"cluster_ca_cert": "c"},
            "other": {"note": "kept"},
            "not_a_mapping": "kept",
        },
        "admin_user": "top-level keys are not a profile's: kept",
    }


def test_an_empty_profile_still_names_itself() -> None:
    info = manager_info({"profiles": {"native_k8sapi": {}}})
    served = json_format.MessageToDict(
        serve_deployment_manager(info, MANAGER_ID, "native_k8sapi", False)
    )
    assert served["extensions"]["profileName"] == "native_k8sapi"
    assert served["extensions"]["profileData"] == {}


def test_the_example_manager_is_in_the_cache(cache: InventoryCache) -> None:
    # The ids this module relies on (a renamed example would otherwise fail obscurely).
    assert cache.get(V1, "deployment_manager", MANAGER_ID) is not None
    assert isinstance(cache.domain("deployment_manager", MANAGER_ID), domain_pb2.DeploymentManager)
