"""Request headers the edge (Envoy) sets for the core, named once for both sides:
rest_facade renders Envoy to set them (and to strip client-sent copies), server/auth reads
them. Also the record of each REST request the edge sends the core's telemetry listener
(TELEMETRY_FIELDS, at the end).

None of them is a secret. The core believes the identity headers only on its edge
listener, which admits nothing but Envoy's own certificate (mutual TLS); on every other
listener a call carrying any of them is refused. See server/auth/identity.py.
"""

from __future__ import annotations

from typing import Final

# The verified client certificate, as Envoy's %DOWNSTREAM_PEER_CERT% gives it: the URL-encoded
# PEM of the certificate (set natively, rest_facade/envoy_config.py). Base64 inside PEM: nothing
# a certificate contains (a comma in a SAN, an escaped quote in a subject) can change how the
# header is read.
CLIENT_CERT_HEADER: Final = "x-netweave-client-cert"
# The verified bearer token's claims, base64url JSON (jwt_authn forward_payload_header).
JWT_PAYLOAD_HEADER: Final = "x-jwt-payload"
# Set by the edge on every call it forwards. Not a credential: it lets a core refuse a call
# that came through an edge on any listener other than its edge listener (an Envoy
# misconfigured to use the internal port), instead of treating it as an internal call.
EDGE_MARKER_HEADER: Final = "x-netweave-via-edge"
# Envoy's own certificate-forwarding header. Envoy drops what a client sends (SANITIZE);
# the core never reads it, and refuses a call carrying it outside the edge listener.
XFCC_HEADER: Final = "x-forwarded-client-cert"

# Headers that assert who the caller is: only the edge may send them.
IDENTITY_HEADERS: Final = (CLIENT_CERT_HEADER, JWT_PAYLOAD_HEADER, EDGE_MARKER_HEADER, XFCC_HEADER)

# How many query parameters the edge dropped as unknown to the path (REST, lenient mode):
# the core counts them (o2ims_ignored_query_parameters_total). Stripped from client requests.
IGNORED_QUERY_HEADER: Final = "x-netweave-ignored-query"

# The correlation id of a request and of every notification it causes (issue 16). A client's
# well-formed `x-correlation-id` is kept, else its `x-request-id`, else the edge generates one;
# the edge returns it on the response and forwards it to the core, which writes it into its
# log lines, the audit record and the inventory event; the notifier logs it and sends it on
# the webhook. CORRELATION_ID_PATTERN is what "well formed" means on both sides.
CORRELATION_ID_HEADER: Final = "x-correlation-id"
REQUEST_ID_HEADER: Final = "x-request-id"
CORRELATION_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"

# The record of each REST request the edge sends the core's telemetry listener (Envoy's
# OpenTelemetry access logger, server/edge_telemetry.py): one string, these fields in this
# order, separated by TELEMETRY_SEPARATOR (rest_facade/envoy_config.py TELEMETRY_COMMANDS
# says which Envoy command writes each). One string rather than an attribute per field:
# half the bytes, and a record costs the core one field to read instead of five.
TELEMETRY_FIELDS: Final = ("method", "route", "code", "duration_us", "duration_ms")
TELEMETRY_SEPARATOR: Final = " "
