"""Who may do what: roles, the permission each gRPC method needs, and the access policy
that maps identities to roles.

Roles (a client may hold several):
  o2ims-reader      read the inventory and alarms
  o2ims-subscriber  create, read and delete subscriptions (inventory and alarm)
  o2ims-maintainer  read, acknowledge and clear alarms; change the alarm service
                    configuration (PatchAlarm, Update/PatchAlarmServiceConfiguration:
                    alarms.write; readers may only read alarms and the configuration)
  o2ims-deployer    read the inventory, and the deployment managers' admin credentials
                    (the Kubernetes-native profile); nobody else ever sees them
  o2ims-admin       everything, including the operational services (gRPC reflection), and
                    every client's subscriptions (others see only their own)

The permission of a method follows from its service and its verb (Get/List read, anything
else writes), so every method of the .proto files has one without a hand-kept table; a
method of a service this module does not know needs `ops` (admin only): new APIs are
closed until someone decides otherwise.

The policy file (NETWEAVE_AUTH_POLICY, YAML):

    clients:                 # first match wins; a trailing * matches a prefix
    - match: spiffe://netweave.local/client/ops-console     # a certificate's URI SAN
      roles: [o2ims-admin]
    - match: cn:smo-north                                   # a certificate's CN
      roles: [o2ims-reader, o2ims-subscriber]
    - match: sub:smo-south                                  # a token's subject
      roles: [o2ims-reader]
    tokens:
      roles_claim: roles     # a claim listing netweave roles directly (trusted issuer)
      scopes:                # OAuth2 scope -> role
        o2ims.read: o2ims-reader
    direct_calls: [o2ims-admin]   # calls to the core's internal (loopback) listener
    rate_limits:             # requests/s per client at the edge (read when Envoy's
      roles: {o2ims-admin: 500}   # configuration is rendered; the core ignores it)
      clients: {spiffe://netweave.local/client/smo-north: 50}

A rate for a role applies to every client the `clients` rules name exactly (no `*`) with
that role; a rate for a client (its certificate URI SAN, or `jwt:<sub>` for a token-only
client) overrides it. Everyone else gets the edge's default rate.

A caller with a verified token gets the roles of its token (claim, scopes, `sub:` entries);
otherwise those of its certificate. An authenticated caller that matches nothing has no role.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from server.auth.identity import Identity

READER: Final = "o2ims-reader"
SUBSCRIBER: Final = "o2ims-subscriber"
MAINTAINER: Final = "o2ims-maintainer"
DEPLOYER: Final = "o2ims-deployer"
ADMIN: Final = "o2ims-admin"
ROLES: Final = (READER, SUBSCRIBER, MAINTAINER, DEPLOYER, ADMIN)

INVENTORY_READ: Final = "inventory.read"
ALARMS_READ: Final = "alarms.read"
ALARMS_WRITE: Final = "alarms.write"
SUBSCRIPTIONS_READ: Final = "subscriptions.read"
SUBSCRIPTIONS_WRITE: Final = "subscriptions.write"
# Not a method's permission: what a servicer checks before it puts a deployment manager's
# admin credentials into a response (see may_read_credentials).
CREDENTIALS_READ: Final = "deployment_managers.credentials.read"
OPS: Final = "ops"
PUBLIC: Final = "public"

ROLE_PERMISSIONS: Final[Mapping[str, frozenset[str]]] = {
    READER: frozenset({INVENTORY_READ, ALARMS_READ}),
    SUBSCRIBER: frozenset({SUBSCRIPTIONS_READ, SUBSCRIPTIONS_WRITE}),
    MAINTAINER: frozenset({ALARMS_READ, ALARMS_WRITE}),
    DEPLOYER: frozenset({INVENTORY_READ, CREDENTIALS_READ}),
    ADMIN: frozenset(
        {
            INVENTORY_READ,
            ALARMS_READ,
            ALARMS_WRITE,
            SUBSCRIPTIONS_READ,
            SUBSCRIPTIONS_WRITE,
            OPS,
            CREDENTIALS_READ,
        }
    ),
}


def may_read_credentials(roles: Iterable[str]) -> bool:
    """Whether a caller holding `roles` may see a deployment manager's admin credentials."""
    return any(CREDENTIALS_READ in ROLE_PERMISSIONS.get(role, frozenset()) for role in roles)


def required_permission(full_method: str) -> str:
    """The permission a call of `/package.Service/Method` needs."""
    service, _, method = full_method.lstrip("/").partition("/")
    reads = method.startswith(("Get", "List"))
    if service.startswith("grpc.health."):
        return PUBLIC
    if service.startswith("o2ims.inventory."):
        return INVENTORY_READ if reads else OPS
    if service.startswith("o2ims.subscriptions."):
        return SUBSCRIPTIONS_READ if reads else SUBSCRIPTIONS_WRITE
    if service.startswith("o2ims.monitoring."):
        if "Subscription" in method:
            return SUBSCRIPTIONS_READ if reads else SUBSCRIPTIONS_WRITE
        return ALARMS_READ if reads else ALARMS_WRITE
    return OPS


@dataclass(frozen=True)
class ClientRule:
    match: str
    roles: tuple[str, ...]

    def matches(self, names: Iterable[str]) -> bool:
        if self.match.endswith("*"):
            prefix = self.match[:-1]
            return any(name.startswith(prefix) for name in names)
        return self.match in names


@dataclass(frozen=True)
class Decision:
    allowed: bool
    permission: str
    roles: tuple[str, ...]
    # The role that granted the call ("" when denied or public).
    granted_by: str = ""


@dataclass(frozen=True)
class AccessPolicy:
    clients: tuple[ClientRule, ...] = ()
    roles_claim: str = "roles"
    scopes: Mapping[str, str] = field(default_factory=dict)
    direct_calls: tuple[str, ...] = ()
    # Edge rate limits: (per role, per client) requests per second; see the module doc.
    rate_limits: tuple[Mapping[str, int], Mapping[str, int]] = ({}, {})
    # No policy configured: every caller is an admin (development and tests only; the core
    # logs a warning at start-up).
    open: bool = False

    @classmethod
    def open_policy(cls) -> AccessPolicy:
        return cls(open=True)

    @classmethod
    def load(cls, path: Path) -> AccessPolicy:
        raw = yaml.safe_load(path.read_text()) or {}
        return cls.from_mapping(raw, str(path))

    @classmethod
    def from_mapping(cls, raw: Any, origin: str = "policy") -> AccessPolicy:
        if not isinstance(raw, dict):
            raise ValueError(f"{origin}: the policy must be a mapping")
        unknown = set(raw) - {"clients", "tokens", "direct_calls", "rate_limits"}
        if unknown:
            raise ValueError(f"{origin}: unknown keys {sorted(unknown)}")
        clients = []
        for index, entry in enumerate(raw.get("clients") or []):
            where = f"{origin}: clients[{index}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("match"), str):
                raise ValueError(f"{where} needs a `match` string")
            if not entry["match"] or entry["match"] == "*":
                raise ValueError(f"{where}: `match` must name clients (not all of them)")
            clients.append(ClientRule(entry["match"], _roles(entry.get("roles"), where)))
        tokens = raw.get("tokens") or {}
        if not isinstance(tokens, dict):
            raise ValueError(f"{origin}: `tokens` must be a mapping")
        scopes = tokens.get("scopes") or {}
        if not isinstance(scopes, dict):
            raise ValueError(f"{origin}: tokens.scopes must map scopes to roles")
        for scope, role in scopes.items():
            _roles([role], f"{origin}: tokens.scopes[{scope}]")
        rates = _rate_limits(raw.get("rate_limits") or {}, origin)
        return cls(
            rate_limits=rates,
            clients=tuple(clients),
            roles_claim=str(tokens.get("roles_claim", "roles")),
            scopes={str(k): str(v) for k, v in scopes.items()},
            direct_calls=_roles(raw.get("direct_calls") or [], f"{origin}: direct_calls"),
        )

    def roles_of(self, identity: Identity) -> tuple[str, ...]:
        if self.open:
            return (ADMIN,)
        if identity.via == "internal":
            return self.direct_calls
        if not identity.authenticated:
            return ()
        if identity.token_subject or identity.claims:
            found = list(self._token_roles(identity.claims))
            names = [f"sub:{identity.token_subject}"] if identity.token_subject else []
        else:
            found = []
            names = identity.names()
        for rule in self.clients:
            if rule.matches(names):
                found.extend(rule.roles)
                break
        return tuple(dict.fromkeys(role for role in found if role in ROLES))

    def _token_roles(self, claims: Mapping[str, Any]) -> Iterable[str]:
        listed = claims.get(self.roles_claim)
        if isinstance(listed, str):
            listed = listed.split()
        if isinstance(listed, list):
            yield from (role for role in listed if isinstance(role, str))
        scope = claims.get("scope")
        granted = scope.split() if isinstance(scope, str) else []
        for name in granted:
            if name in self.scopes:
                yield self.scopes[name]

    def client_rates(self) -> dict[str, int]:
        """Requests/s per client identity (as Envoy keys its buckets) from `rate_limits`."""
        by_role, by_client = self.rate_limits
        rates: dict[str, int] = {}
        for rule in self.clients:
            if rule.match.endswith("*") or rule.match.startswith("cn:"):
                continue
            key = "jwt:" + rule.match[4:] if rule.match.startswith("sub:") else rule.match
            granted = [by_role[role] for role in rule.roles if role in by_role]
            if granted:
                rates[key] = max(granted)
        rates.update(by_client)
        return rates

    def sees_all(self, roles: Iterable[str]) -> bool:
        """Whether a caller holding `roles` sees every client's subscriptions (admins;
        everybody under the open development policy)."""
        return self.open or ADMIN in roles

    def decide(self, full_method: str, roles: Sequence[str]) -> Decision:
        permission = required_permission(full_method)
        if permission == PUBLIC:
            return Decision(True, permission, tuple(roles))
        for role in roles:
            if permission in ROLE_PERMISSIONS.get(role, frozenset()):
                return Decision(True, permission, tuple(roles), granted_by=role)
        return Decision(False, permission, tuple(roles))


def _rate_limits(raw: Any, origin: str) -> tuple[dict[str, int], dict[str, int]]:
    where = f"{origin}: rate_limits"
    if not isinstance(raw, dict) or set(raw) - {"roles", "clients"}:
        raise ValueError(f"{where} may have only `roles` and `clients` mappings")
    by_role, by_client = raw.get("roles") or {}, raw.get("clients") or {}
    for name, table in (("roles", by_role), ("clients", by_client)):
        if not isinstance(table, dict):
            raise ValueError(f"{where}.{name} must be a mapping")
        for key, rate in table.items():
            if not isinstance(rate, int) or isinstance(rate, bool) or rate < 1:
                raise ValueError(f"{where}.{name}[{key}] must be a whole number >= 1")
    _roles(list(by_role), f"{where}.roles")
    return {str(k): int(v) for k, v in by_role.items()}, {
        str(k): int(v) for k, v in by_client.items()
    }


def _roles(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(role, str) for role in value):
        raise ValueError(f"{where}: roles must be a list of role names")
    unknown = [role for role in value if role not in ROLES]
    if unknown:
        raise ValueError(f"{where}: unknown roles {unknown} (known: {', '.join(ROLES)})")
    return tuple(value)
