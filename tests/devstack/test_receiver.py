"""The dev receiver (python -m devstack.receiver) accepts what the notifier signs and
nothing else."""

from __future__ import annotations

import base64

from devstack.receiver import decode_secret, signature_ok
from server.notifier.signing import headers

SECRET = b"0123456789abcdef0123456789abcdef"


def test_notifier_signatures_verify_and_tampering_does_not() -> None:
    body = b'{"notificationId":"n-1"}'
    signed = headers(SECRET, "n-1", 1_800_000_000, body)
    assert signature_ok(SECRET, signed, body)
    assert not signature_ok(SECRET, signed, body + b" ")
    assert not signature_ok(b"another-secret", signed, body)
    assert not signature_ok(SECRET, {**signed, "webhook-id": "n-2"}, body)


def test_secret_forms() -> None:
    assert decode_secret("whsec_" + base64.b64encode(SECRET).decode() + "\n") == SECRET
    assert decode_secret("plain") == b"plain"
