"""Request headers the edge (Envoy) sets for the core, named once for both sides:
rest_facade renders Envoy to set them (and to strip client-sent copies), server/auth reads
them."""

from __future__ import annotations

from typing import Final

# The verified client certificate (Envoy SANITIZE_SET).
XFCC_HEADER: Final = "x-forwarded-client-cert"
# The verified bearer token's claims, base64url JSON (jwt_authn forward_payload_header).
JWT_PAYLOAD_HEADER: Final = "x-jwt-payload"
# The shared edge secret: proof that a call came through Envoy.
EDGE_HEADER: Final = "x-netweave-edge"
