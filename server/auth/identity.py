"""Who is calling: the identity Envoy verified, read from the headers only Envoy may set.

Envoy (envoy/gateway.yaml.in) forwards, on every call it lets through:
  x-forwarded-client-cert  the verified client certificate (SANITIZE_SET: whatever a client
                           sent under that name was dropped first)
  x-jwt-payload            the verified bearer token's claims (base64url JSON), if any
  x-netweave-edge          the edge secret shared with the core: proof the call came
                           through Envoy, and so that the two headers above are Envoy's
A call without the edge secret came to the core's port directly (an internal client, a
health probe, grpcurl on the pod): the identity headers it carries are ignored.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from netweave.headers import EDGE_HEADER, JWT_PAYLOAD_HEADER, XFCC_HEADER


@dataclass(frozen=True)
class Identity:
    """A caller. `via` is how it was established: certificate, token, both, internal, none."""

    via: str
    certificate_uri: str = ""
    certificate_subject: str = ""
    certificate_cn: str = ""
    token_subject: str = ""
    claims: Mapping[str, Any] = field(default_factory=dict)
    peer: str = ""

    @property
    def authenticated(self) -> bool:
        return self.via != "none"

    @property
    def client(self) -> str:
        """The principal, as audit records name it: token subject, else certificate
        identity (URI SAN, else CN), else the peer address of an internal call."""
        if self.token_subject:
            return self.token_subject
        if self.certificate_uri:
            return self.certificate_uri
        if self.certificate_cn:
            return self.certificate_cn
        if self.via == "internal":
            return f"internal:{self.peer}"
        return ""

    def names(self) -> list[str]:
        """The names an access policy can match this identity by (most specific first)."""
        found: list[str] = []
        if self.token_subject:
            found.append(f"sub:{self.token_subject}")
        if self.certificate_uri:
            found.append(self.certificate_uri)
        if self.certificate_cn:
            found.append(f"cn:{self.certificate_cn}")
        return found


def identify(metadata: Mapping[str, str], edge_secret: str, peer: str = "") -> Identity:
    """The caller of a call with `metadata` (lower-case keys)."""
    if edge_secret:
        sent = metadata.get(EDGE_HEADER, "")
        from_edge = hmac.compare_digest(sent.encode(), edge_secret.encode())
    else:
        # No secret configured: only Envoy can reach the core's port (documented), so
        # identity headers are trusted whenever they are present.
        from_edge = XFCC_HEADER in metadata or JWT_PAYLOAD_HEADER in metadata
    if not from_edge:
        return Identity(via="internal", peer=peer)
    certificate = parse_xfcc(metadata.get(XFCC_HEADER, ""))
    claims = decode_jwt_payload(metadata.get(JWT_PAYLOAD_HEADER, ""))
    uri = certificate.get("URI", "")
    subject = certificate.get("Subject", "")
    cn = common_name(subject)
    token_subject = str(claims.get("sub", "")) if claims else ""
    has_certificate = bool(uri or subject)
    has_token = bool(claims)
    via = (
        "certificate_and_token"
        if has_certificate and has_token
        else "certificate"
        if has_certificate
        else "token"
        if has_token
        else "none"
    )
    return Identity(
        via=via,
        certificate_uri=uri,
        certificate_subject=subject,
        certificate_cn=cn,
        token_subject=token_subject,
        claims=claims,
        peer=peer,
    )


def parse_xfcc(value: str) -> dict[str, str]:
    """The key/value pairs of the LAST element of an XFCC header (the one our Envoy
    appended; with SANITIZE_SET it is the only one). Quoted values may contain ; , and
    escaped quotes. Repeated keys (several URI SANs): the first is kept."""
    elements: list[dict[str, str]] = [{}]
    key, quoted, escaped, in_value = "", False, False, False
    buffer: list[str] = []

    def finish_pair() -> None:
        nonlocal key, buffer, in_value
        if key:
            elements[-1].setdefault(key, "".join(buffer))
        key, buffer, in_value = "", [], False

    for char in value:
        if escaped:
            buffer.append(char)
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            else:
                buffer.append(char)
        elif char == '"' and in_value:
            quoted = True
        elif char == "=" and not in_value:
            key, buffer, in_value = "".join(buffer).strip(), [], True
        elif char == ";":
            finish_pair()
        elif char == ",":
            finish_pair()
            elements.append({})
        else:
            buffer.append(char)
    finish_pair()
    return elements[-1]


def common_name(subject: str) -> str:
    """CN of an RFC 4514 distinguished name ("CN=smo-north,O=netweave"), or ''."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in subject:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    for part in parts:
        name, _, value = part.partition("=")
        if name.strip().upper() == "CN":
            return value.strip()
    return ""


def decode_jwt_payload(value: str) -> dict[str, Any]:
    """The claims Envoy forwarded (base64url JSON, padding optional); {} when absent or
    unreadable (which only Envoy could have sent, so it is treated as no token)."""
    if not value:
        return {}
    try:
        decoded = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return {}
    return decoded if isinstance(decoded, dict) else {}
