"""A development OAuth2 token issuer: an RS256 signing key, its JWKS, and minted tokens.

Envoy's jwt_authn verifies tokens against the JWKS file (`jwks.json`); this module holds the
matching private key and mints tokens for a named client and role, the way an SMO would get
them from the operator's authorization server with the client-credentials grant. Production
uses the operator's issuer (a JWKS URL); nothing here is used there.

    python -m devstack.tokens [--dir .netweave/pki/jwt] mint NAME --role o2ims-reader [--ttl 3600]
    python -m devstack.tokens [--dir ...] jwks        print the path of the JWKS file
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from devstack.pki import write_atomically

DEFAULT_DIR = Path(".netweave/pki/jwt")
DEV_ISSUER = "https://netweave.local/dev-issuer"
DEV_AUDIENCE = "o2ims"
DEFAULT_TTL_S = 3600
ROLES_CLAIM = "roles"


@dataclass(frozen=True)
class DevIssuer:
    """The issuer's files: `signing.key` (PEM, private) and `jwks.json` (public)."""

    directory: Path
    issuer: str = DEV_ISSUER
    audience: str = DEV_AUDIENCE

    @property
    def key_path(self) -> Path:
        return self.directory / "signing.key"

    @property
    def jwks_path(self) -> Path:
        return self.directory / "jwks.json"

    def _key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{self.key_path} is not an RSA private key")
        return key

    @property
    def key_id(self) -> str:
        return str(json.loads(self.jwks_path.read_text())["keys"][0]["kid"])

    def mint(
        self,
        subject: str,
        roles: Sequence[str] = (),
        *,
        ttl_s: int = DEFAULT_TTL_S,
        scope: str = "",
        audience: str | None = None,
        issuer: str | None = None,
        now: float | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed JWT for `subject`. Negative `ttl_s` mints an already expired token."""
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "aud": audience or self.audience,
            "sub": subject,
            "iat": issued,
            "nbf": issued - 60 if ttl_s > 0 else issued + ttl_s - 60,
            "exp": issued + ttl_s,
            "jti": str(uuid.uuid4()),
        }
        if roles:
            claims[ROLES_CLAIM] = list(roles)
        if scope:
            claims["scope"] = scope
        claims.update(extra_claims or {})
        header = {"alg": "RS256", "typ": "JWT", "kid": self.key_id}
        signing_input = f"{_b64(_json(header))}.{_b64(_json(claims))}".encode()
        signature = self._key().sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{_b64(signature)}"


def ensure_dev_issuer(directory: Path = DEFAULT_DIR) -> DevIssuer:
    """Create the signing key and JWKS under `directory` once; reuse them afterwards."""
    issuer = DevIssuer(directory)
    if issuer.key_path.exists() and issuer.jwks_path.exists():
        return issuer
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    jwk = {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": uuid.uuid4().hex[:16],
        "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": _b64(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
    }
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomically(issuer.key_path, pem, mode=0o600)
    issuer.jwks_path.write_text(json.dumps({"keys": [jwk]}, indent=2) + "\n")
    return issuer


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.tokens", description=__doc__)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="issuer directory")
    commands = parser.add_subparsers(dest="command", required=True)
    mint = commands.add_parser("mint", help="print a signed token for a client")
    mint.add_argument("name", help="the client: the token's sub claim")
    mint.add_argument("--role", action="append", default=[], help="a netweave role (repeatable)")
    mint.add_argument("--scope", default="", help="OAuth2 scopes, space-separated")
    mint.add_argument("--ttl", type=int, default=DEFAULT_TTL_S, help="lifetime in seconds")
    commands.add_parser("jwks", help="print the path of the JWKS file")
    args = parser.parse_args(argv)
    issuer = ensure_dev_issuer(args.dir)
    if args.command == "jwks":
        print(issuer.jwks_path)
        return 0
    print(issuer.mint(args.name, args.role, ttl_s=args.ttl, scope=args.scope))
    return 0


if __name__ == "__main__":
    sys.exit(main())
