"""The subscription operations both servicers share: validate, create, list, get, delete,
with every failure raised as an ApiError (server/errors.py).

Subscriptions belong to their client: each records the owner of the call that created it
(`current_caller()`, set by the auth interceptor), and a caller lists, reads and deletes
only what it `may_see` (its own; an administrator everything). Another client's
subscription is answered exactly like an unknown id (same NOT_FOUND, reason and message),
so ids cannot be probed. Subscriptions created before owners were recorded have owner ""
and are visible to administrators only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import redis
import structlog

from netweave import correlation
from server.auth.caller import current_caller
from server.errors import (
    AlreadyExists,
    ApiError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from server.store import is_transient
from server.subscriptions.callbacks import CallbackPolicy
from server.subscriptions.store import (
    DuplicateSubscription,
    Subscription,
    SubscriptionKind,
    SubscriptionStore,
)
from server.subscriptions.validation import (
    callback_problem,
    consumer_subscription_id_problem,
    probe_problem,
    validate_filter,
)

log = structlog.get_logger()


@dataclass(frozen=True)
class SubscriptionResource:
    """One kind of subscription as the O2ims API exposes it."""

    kind: SubscriptionKind
    # For error messages and google.rpc.ResourceInfo, e.g. "AlarmSubscription".
    object_type: str
    # The REST location: {service_uri}/{api_name}/{major}/{collection}/{id}.
    api_name: str
    collection: str
    # The API majors it is served under (REST binds the major from the path).
    majors: tuple[str, ...]

    @property
    def reason_prefix(self) -> str:
        """UPPER_SNAKE stem of the error reasons, e.g. ALARM_SUBSCRIPTION."""
        return self.kind.name.upper()


@dataclass(frozen=True)
class SubscriptionDraft:
    """A create request, as sent by the client."""

    # Must be empty: the server assigns ids (a client-chosen one is rejected, not ignored).
    subscription_id: str
    callback: str
    filter: str
    consumer_subscription_id: str


class SubscriptionApi:
    """Subscriptions of one kind, over the shared SubscriptionStore."""

    def __init__(
        self,
        store: SubscriptionStore,
        resource: SubscriptionResource,
        *,
        service_uri: str,
        duplicate_status: int,
        callback_policy: CallbackPolicy | None = None,
    ) -> None:
        self._store = store
        self.resource = resource
        self._service_uri = service_uri.rstrip("/")
        self._duplicate_status = duplicate_status
        # Unset: the production posture (https only, public addresses only). The process's
        # configuration (NETWEAVE_CALLBACK_*) reaches here as an argument, never read here.
        self._callback_policy = callback_policy or CallbackPolicy()

    def check_major(self, api_version: str, *, required: bool) -> None:
        """REST binds the major from the path; gRPC callers may omit it where it does not
        matter (reads and deletes see one collection across majors)."""
        if api_version in self.resource.majors or (not api_version and not required):
            return
        raise InvalidArgument(
            f"INVALID_{self.resource.reason_prefix}",
            [("api_version", f"must be one of {', '.join(self.resource.majors)}")],
        )

    def create(self, draft: SubscriptionDraft, api_version: str) -> tuple[Subscription, str]:
        """Store a new subscription owned by the caller; returns it and its REST location.

        A caller without an owner that is not an administrator (`Caller(owner="")`: no
        interceptor set the caller, as every caller it admits has an owner) is refused with
        PERMISSION_DENIED rather than served: it could never read back or delete what it
        created, nor could anyone but an administrator, while notifications went on being
        POSTed to its callback; and ownerless callers would share one dedupe namespace, so
        a duplicate error could name another one's subscription. Failing closed also makes
        a missing interceptor loud. (An administrator without an owner may create: the
        subscription is then an administrators-only one, like those from before owners.)

        Duplicates are per owner: another client may hold an identical subscription, and
        the error names only the caller's own."""
        self.check_major(api_version, required=True)
        caller = current_caller()
        if not caller.owner and not caller.sees_all:
            raise PermissionDenied(
                f"{self.resource.reason_prefix}_OWNER_REQUIRED",
                "the call carries no client identity to own the subscription",
            )
        self._validate(draft, api_version)
        subscription_id = str(uuid.uuid4())
        owner = caller.owner
        with redis_errors(SUBSCRIPTION_STORE):
            try:
                created = self._store.create(
                    self.resource.kind,
                    subscription_id,
                    callback=draft.callback,
                    filter_=draft.filter,
                    consumer_subscription_id=draft.consumer_subscription_id,
                    api_version=api_version,
                    owner=owner,
                    correlation_id=correlation.current(),
                )
            except DuplicateSubscription as duplicate:
                raise AlreadyExists(
                    self.resource.object_type,
                    self.resource.kind.id_field,
                    duplicate.existing_id,
                    reason=f"DUPLICATE_{self.resource.reason_prefix}",
                    message=(
                        f"a subscription with the same callback, filter and "
                        f"consumerSubscriptionId already exists: "
                        f"{self.resource.kind.id_field} {duplicate.existing_id}"
                    ),
                    http_status=self._duplicate_status,
                ) from None
        log.info(
            "subscription_created",
            kind=self.resource.kind.name,
            subscription_id=subscription_id,
            api_version=api_version,
            owner=owner,
            # The host only: a callback URL may carry credentials in its query or userinfo.
            callback_host=urlsplit(draft.callback).hostname,
        )
        return created, self.location(api_version, subscription_id)

    def list(self) -> list[Subscription]:
        """The caller's subscriptions (an administrator's: all), oldest first. Filtered
        here, before any paging, so page sizes, markers and the last page hold only what
        the caller may see."""
        caller = current_caller()
        with redis_errors(SUBSCRIPTION_STORE):
            stored = self._store.list(self.resource.kind)
        return [subscription for subscription in stored if caller.may_see(subscription.owner)]

    def get(self, subscription_id: str) -> Subscription:
        self._require_id(subscription_id)
        with redis_errors(SUBSCRIPTION_STORE):
            found = self._store.get(self.resource.kind, subscription_id)
        if found is None or not current_caller().may_see(found.owner):
            raise self._not_found(subscription_id)
        return found

    def delete(self, subscription_id: str) -> None:
        self._require_id(subscription_id)
        caller = current_caller()
        # The owner is checked in the same Redis script that deletes: another client's
        # subscription is left exactly as it was.
        owned_by = None if caller.sees_all else caller.owner
        if owned_by == "":
            raise self._not_found(subscription_id)  # owns nothing, sees nothing
        with redis_errors(SUBSCRIPTION_STORE):
            deleted = self._store.delete(self.resource.kind, subscription_id, owned_by=owned_by)
        if not deleted:
            raise self._not_found(subscription_id)
        log.info(
            "subscription_deleted",
            kind=self.resource.kind.name,
            subscription_id=subscription_id,
            by=caller.owner,
        )

    def location(self, api_version: str, subscription_id: str) -> str:
        resource = self.resource
        return (
            f"{self._service_uri}/{resource.api_name}/{api_version}/"
            f"{resource.collection}/{subscription_id}"
        )

    # --- implementation --------------------------------------------------------------

    def _validate(self, draft: SubscriptionDraft, api_version: str) -> None:
        id_field = self.resource.kind.id_field
        checks = [
            (
                id_field,
                "is assigned by the server; leave it out" if draft.subscription_id else None,
            ),
            ("callback", callback_problem(draft.callback, self._callback_policy)),
            ("filter", validate_filter(self.resource.kind, draft.filter, api_version)),
            (
                "consumerSubscriptionId",
                consumer_subscription_id_problem(draft.consumer_subscription_id),
            ),
        ]
        violations = [(field, problem) for field, problem in checks if problem is not None]
        if not violations:
            # Last, and only for an otherwise valid request: it costs a round trip.
            unreachable = probe_problem(draft.callback, self._callback_policy)
            if unreachable is not None:
                violations.append(("callback", unreachable))
        if violations:
            raise InvalidArgument(f"INVALID_{self.resource.reason_prefix}", violations)

    def _require_id(self, subscription_id: str) -> None:
        if not subscription_id:
            raise InvalidArgument(
                f"INVALID_{self.resource.reason_prefix}",
                [(self.resource.kind.id_field, "is required")],
            )

    def _not_found(self, subscription_id: str) -> NotFound:
        """The one answer for an unknown id and for another client's: nothing in it may
        differ between the two."""
        return NotFound(
            self.resource.object_type,
            self.resource.kind.id_field,
            subscription_id,
            reason=f"{self.resource.reason_prefix}_NOT_FOUND",
        )


SUBSCRIPTION_STORE: Final = "subscription store"


@contextmanager
def redis_errors(store: str) -> Iterator[None]:
    """Raise a Redis failure as the ApiError a client can act on. `store` names the data
    for the message and the reason, e.g. "subscription store" -> SUBSCRIPTION_STORE_..."""
    stem = store.upper().replace(" ", "_")
    try:
        yield
    # A lost connection, a timeout, a Redis still loading its data, a replica after a
    # failover, too few replicas in sync: all transient (server/store.py is_transient), so
    # UNAVAILABLE (REST 503) tells the caller to retry.
    except redis.RedisError as error:
        if is_transient(error):
            log.warning("redis_unavailable", store=store, error=str(error))
            raise Unavailable(
                f"{stem}_UNAVAILABLE", f"the {store} is unavailable; retry later"
            ) from error
        log.error("redis_failed", store=store, error=str(error))
        raise ApiError(f"{stem}_FAILED", f"the {store} failed the request") from error
