"""Deployment manager profiles: how an SMO reaches a deployment manager's own API, and
who may see the admin credentials that come with it.

Where the data lives, for every adapter (the static inventory, a Kubernetes adapter): the
deployment manager's `extensions.profiles`, one mapping per profile it offers, keyed by
the profile's O2ims name. Certificates and keys are base64-encoded PEM, as in a kubeconfig
(`certificate-authority-data`, `client-certificate-data`, `client-key-data`), so an SMO
puts them into a kubeconfig unchanged:

    extensions:
      profiles:
        native_k8sapi:
          cluster_api_endpoint: https://api.k8s.example.net:6443
          cluster_ca_cert: LS0tLS1CRUdJTi...       # base64 PEM of the cluster's CA
          admin_user: cluster-admin               # admin credentials: optional, served
          admin_client_cert: LS0tLS1CRUdJTi...    # only to the deployer role (and admins)
          admin_client_key: LS0tLS1CRUdJTi...

As served (both Inventory majors):
- GET .../deploymentManagers/{id}: the manager as stored, minus every admin credential
  (in every profile, and in an OSC-style top-level `profileData`), for every caller.
- GET .../deploymentManagers/{id}?profile=native_k8sapi (the form other implementations
  use): the same, plus `extensions.profileName` and `extensions.profileData` with
  `cluster_api_endpoint`, `cluster_ca_cert` and, when present and the caller holds a role
  that may read credentials (server/auth/policy.py, may_read_credentials), the admin ones.
- Any other `profile` is a 400 naming the profiles this gateway serves; a known profile
  the manager does not offer is a 400 too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from google.protobuf import struct_pb2

from server.errors import InvalidArgument

NATIVE_K8S_API: Final = "native_k8sapi"
# Key of the per-profile mappings in a deployment manager's extensions.
PROFILES_KEY: Final = "profiles"
# The keys of the profile in a response (the names OSC and the conformance tests use).
PROFILE_NAME_KEY: Final = "profileName"
PROFILE_DATA_KEY: Final = "profileData"


# Profile name -> (fields anyone who may read the inventory sees, admin credentials).
PROFILE_FIELDS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    NATIVE_K8S_API: (
        ("cluster_api_endpoint", "cluster_ca_cert"),
        ("admin_user", "admin_client_cert", "admin_client_key"),
    ),
}
CREDENTIAL_FIELDS: Final = frozenset(
    field for _, credentials in PROFILE_FIELDS.values() for field in credentials
)


def requested_profile(profile: str) -> str:
    """`profile` (a request's `?profile=`) if this gateway serves it ("" for none); an
    InvalidArgument naming the served profiles otherwise."""
    if profile and profile not in PROFILE_FIELDS:
        raise InvalidArgument(
            "UNKNOWN_PROFILE",
            [
                (
                    "profile",
                    f"unknown deployment manager profile '{profile:.64}' "
                    f"(served: {', '.join(PROFILE_FIELDS)})",
                )
            ],
        )
    return profile


def strip_credentials(extensions: struct_pb2.Struct) -> None:
    """Remove every admin credential from a deployment manager's `extensions` (in place):
    from each profile under `profiles` and from a top-level `profileData`."""
    for holder in _credential_holders(extensions):
        for field in CREDENTIAL_FIELDS.intersection(holder.fields):
            del holder.fields[field]


def has_credentials(extensions: struct_pb2.Struct) -> bool:
    """Whether strip_credentials would remove anything."""
    return any(
        not CREDENTIAL_FIELDS.isdisjoint(holder.fields)
        for holder in _credential_holders(extensions)
    )


def serve_deployment_manager(
    info: Any,
    deployment_manager_id: str,
    profile: str,
    may_read_credentials: bool,
    source: struct_pb2.Struct | None = None,
) -> Any:
    """A DeploymentManagerInfo (of any major; `info` itself is never modified: the cache
    shares it) as a caller gets it: without credentials, with `profile` (checked by
    requested_profile) in extensions.profileName/profileData when asked for. `source` holds
    the profiles as the adapter gave them (credentials included): the wire objects lists and
    notifications are built from have none (server/wire/common.py strips them)."""
    held = source if source is not None else info.extensions
    stored = _stored_profile(held, profile) if profile else None
    if profile and stored is None:
        raise InvalidArgument(
            "PROFILE_NOT_OFFERED",
            [
                (
                    "profile",
                    f"deployment manager '{deployment_manager_id}' does not offer the "
                    f"{profile} profile",
                )
            ],
        )
    if stored is None and not has_credentials(info.extensions):
        return info
    served = type(info)()
    served.CopyFrom(info)
    strip_credentials(served.extensions)
    if stored is not None:
        public, credentials = PROFILE_FIELDS[profile]
        shown = public + credentials if may_read_credentials else public
        data = struct_pb2.Struct()
        for field in shown:
            if field in stored.fields:
                data.fields[field].CopyFrom(stored.fields[field])
        served.extensions.fields[PROFILE_NAME_KEY].string_value = profile
        served.extensions.fields[PROFILE_DATA_KEY].struct_value.CopyFrom(data)
    return served


def _credential_holders(extensions: struct_pb2.Struct) -> Iterator[struct_pb2.Struct]:
    """The mappings of `extensions` that may hold admin credentials."""
    candidates = [extensions.fields.get(PROFILE_DATA_KEY)]
    profiles = extensions.fields.get(PROFILES_KEY)
    if profiles is not None and profiles.HasField("struct_value"):
        candidates.extend(profiles.struct_value.fields.values())
    for candidate in candidates:
        if candidate is not None and candidate.HasField("struct_value"):
            yield candidate.struct_value


def _stored_profile(extensions: struct_pb2.Struct, profile: str) -> struct_pb2.Struct | None:
    profiles = extensions.fields.get(PROFILES_KEY)
    if profiles is None or not profiles.HasField("struct_value"):
        return None
    stored = profiles.struct_value.fields.get(profile)
    if stored is None or not stored.HasField("struct_value"):
        return None
    return stored.struct_value
