"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

webhook-id:        the notificationId (receivers deduplicate on it)
webhook-timestamp: unix seconds of the attempt (receivers reject stale ones: replays)
webhook-signature: "v1," + base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}"))
"""

from __future__ import annotations

import base64
import hmac


def signature(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.digest(secret, signed, "sha256")  # one-shot, in C
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }
