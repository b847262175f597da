"""O-Cloud registration (spec §3.15, checklist R1): on start-up the O-Cloud Available
notification `{globalCloudId, oCloudId, IMS_EP}` is POSTed to the SMO's registration URL
and retried, with capped exponential backoff and full jitter, until the SMO answers 2xx.

The URL is the operator's own configuration, not client input, so it is not subject to
the callback policy (a lab SMO on a private address is normal). The request is signed like
every notification and carries the OAuth2 token when one is configured.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import redis
import structlog
from o2ims.adapter.v1 import domain_pb2

from netweave.redaction import redact_url
from server.notifier import keys
from server.notifier.config import RetrySchedule
from server.notifier.http import WebhookClient
from server.store import OBJECTS_PREFIX
from server.subscriptions.callbacks import CallbackPolicy, parse_cidrs

log = structlog.get_logger()

# 1 s, 2 s, 4 s ... up to a minute (full jitter), at least what a Retry-After asks; no
# deadline: the registration is retried until the SMO accepts it.
RETRY: Final = RetrySchedule(base_s=1.0, max_delay_s=60.0)

# The operator's registration URL may be anywhere.
TRUSTED: CallbackPolicy = CallbackPolicy(
    allow_http=True, allowed_networks=parse_cidrs("0.0.0.0/0,::/0")
)


class Registration:
    def __init__(
        self,
        url: str,
        service_uri: str,
        client: redis.Redis,
        webhooks: WebhookClient,
        stop: threading.Event,
    ) -> None:
        self._url = url
        self._service_uri = service_uri
        self._client = client
        self._webhooks = webhooks
        self._stop = stop
        self.accepted = False

    def body(self) -> dict[str, Any] | None:
        """The notification, once an adapter has reported the O-Cloud; None before."""
        stored: Any = self._client.hgetall(OBJECTS_PREFIX + "o_cloud")
        if not stored:
            return None
        _, payload = sorted(stored.items())[0]
        o_cloud = domain_pb2.InventoryObject.FromString(payload).o_cloud
        return {
            "globalCloudId": o_cloud.global_cloud_id,
            "oCloudId": o_cloud.o_cloud_id,
            "IMS_EP": self._service_uri,
        }

    def run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                body = self.body()
            except redis.RedisError as exc:
                log.warning("registration_redis_error", error=str(exc))
                body = None
            if body is None:
                self._stop.wait(1.0)  # no O-Cloud known yet
                continue
            attempt += 1
            result = self._webhooks.post(
                self._url, str(uuid.uuid4()), json.dumps(body, separators=(",", ":")).encode()
            )
            if result.ok:
                self.accepted = True
                log.info("registration_accepted", url=redact_url(self._url), attempts=attempt)
                with contextlib.suppress(redis.RedisError):  # informational only
                    self._client.hset(
                        keys.REGISTERED_KEY,
                        mapping={
                            "url": redact_url(self._url),
                            "at": datetime.now(UTC).isoformat(timespec="seconds"),
                            "oCloudId": body["oCloudId"],
                        },
                    )
                return
            delay = RETRY.delay(attempt, result.retry_after_s)
            log.warning(
                "registration_retry",
                url=redact_url(self._url),
                attempts=attempt,
                reason=result.reason,
                delay_s=round(delay, 2),
            )
            self._stop.wait(delay)
