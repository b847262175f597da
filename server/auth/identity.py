"""Who is calling, established from the channel a call arrived on, never from a header
anyone could send.

The core listens on two kinds of channel (server/app.py):

  edge      mutual TLS; the peer must present a certificate of the edge CA whose URI SAN is
            the configured edge identity (Envoy's own certificate). Only here are the
            identity headers Envoy sets believed (netweave/headers.py):
              x-netweave-client-cert  the SMO's verified certificate, URL-encoded PEM, read
                                      with `cryptography` (SANs and subject attributes as
                                      parsed X.509, never split from a string)
              x-jwt-payload           the verified bearer token's claims, base64url JSON
  internal  plaintext on loopback: operators' grpcurl, in-pod tools. Callers get the
            policy's `direct_calls` roles; a call carrying any identity header (or the
            edge's marker) is refused, never downgraded to an internal call.

A certificate whose identity is ambiguous (several URI SANs, several CNs) is refused.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from netweave.headers import CLIENT_CERT_HEADER, IDENTITY_HEADERS, JWT_PAYLOAD_HEADER


class Channel(enum.Enum):
    """The kind of listener a call arrived on."""

    EDGE = "edge"
    INTERNAL = "internal"


class IdentityRefused(Exception):
    """The call cannot be attributed to anybody safely; `reason` is an UPPER_SNAKE code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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

    @property
    def owner(self) -> str:
        """The principal that owns what this caller creates, in a namespace per kind of
        credential, so that a token subject can never equal a certificate identity."""
        if self.token_subject:
            return f"token:{self.token_subject}"
        if self.certificate_uri:
            return f"cert-uri:{self.certificate_uri}"
        if self.certificate_cn:
            return f"cert-cn:{self.certificate_cn}"
        if self.via == "internal":
            return "internal"
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


@dataclass(frozen=True)
class CertificateIdentity:
    uri: str
    subject: str
    common_name: str


def identify(metadata: Mapping[str, str], channel: Channel, peer: str = "") -> Identity:
    """The caller of a call with `metadata` (lower-case keys) that arrived on `channel`
    (for the edge: from a peer already checked to be the edge). Raises IdentityRefused."""
    if channel is Channel.INTERNAL:
        sent = sorted(name for name in IDENTITY_HEADERS if name in metadata)
        if sent:
            raise IdentityRefused(
                "IDENTITY_HEADERS_OUTSIDE_EDGE",
                f"identity headers ({', '.join(sent)}) are accepted only on the core's edge "
                "listener; this call came to the internal listener",
            )
        return Identity(via="internal", peer=peer)
    certificate = certificate_identity(metadata.get(CLIENT_CERT_HEADER, ""))
    claims = decode_jwt_payload(metadata.get(JWT_PAYLOAD_HEADER, ""))
    token_subject = str(claims.get("sub", "")) if claims else ""
    has_certificate = certificate is not None
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
        certificate_uri=certificate.uri if certificate else "",
        certificate_subject=certificate.subject if certificate else "",
        certificate_cn=certificate.common_name if certificate else "",
        token_subject=token_subject,
        claims=claims,
        peer=peer,
    )


def certificate_identity(header: str) -> CertificateIdentity | None:
    """The identity in a forwarded certificate (URL-encoded PEM), None when there is none.
    Raises IdentityRefused for an unreadable or ambiguous certificate."""
    if not header:
        return None
    return _parse_certificate(header)


@functools.lru_cache(maxsize=4096)
def _parse_certificate(header: str) -> CertificateIdentity:
    # Cached: an SMO sends the same certificate on every call, and parsing is the costly
    # part. Exceptions are not cached, so a bad header costs a parse each time (the edge
    # only forwards certificates it verified: this is not a path attackers can reach).
    try:
        certificate = x509.load_pem_x509_certificate(urllib.parse.unquote(header).encode())
    except ValueError as exc:
        raise IdentityRefused(
            "UNREADABLE_CLIENT_CERTIFICATE",
            f"the forwarded client certificate is unreadable: {exc}",
        ) from exc
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if len(uris) > 1:
        raise IdentityRefused(
            "AMBIGUOUS_CLIENT_CERTIFICATE",
            f"the client certificate has {len(uris)} URI SANs; a client identity needs "
            "exactly one (SPIFFE)",
        )
    common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(common_names) > 1:
        raise IdentityRefused(
            "AMBIGUOUS_CLIENT_CERTIFICATE",
            f"the client certificate's subject has {len(common_names)} common names",
        )
    common_name = common_names[0].value if common_names else ""
    return CertificateIdentity(
        uri=uris[0] if uris else "",
        subject=certificate.subject.rfc4514_string(),
        common_name=common_name if isinstance(common_name, str) else common_name.decode(),
    )


def decode_jwt_payload(value: str) -> dict[str, Any]:
    """The claims Envoy forwarded (base64url JSON, padding optional); {} when absent.
    Raises IdentityRefused when present but unreadable (only the edge can send it, so
    that is a broken edge, never a reason to fall back to certificate-only identity)."""
    if not value:
        return {}
    try:
        decoded = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise IdentityRefused(
            "UNREADABLE_TOKEN_CLAIMS", "the forwarded token claims are unreadable"
        ) from exc
    if not isinstance(decoded, dict):
        raise IdentityRefused(
            "UNREADABLE_TOKEN_CLAIMS", "the forwarded token claims are not an object"
        )
    return decoded
