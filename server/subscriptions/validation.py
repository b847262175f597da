"""What a subscription must look like to be accepted: each check returns a problem
description (for a google.rpc.BadRequest field violation) or None."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from server.subscriptions import callbacks
from server.subscriptions.callbacks import CallbackPolicy, CallbackRefused
from server.subscriptions.filters import alarm_filter_problem, inventory_filter_problem
from server.subscriptions.store import ALARM_SUBSCRIPTIONS, SubscriptionKind

# Bounds on what one subscription may store; Envoy already caps the whole body at 1 MiB.
MAX_CALLBACK_LENGTH: Final = 2048
MAX_CONSUMER_SUBSCRIPTION_ID_LENGTH: Final = 256
MAX_FILTER_LENGTH: Final = 4096

_CALLBACK_SCHEMES: Final = ("http", "https")


def callback_problem(callback: str, policy: CallbackPolicy | None = None) -> str | None:
    """Why `callback` cannot receive notifications, or None if it can. With a policy, the
    scheme and the addresses the host resolves to are checked too (see
    server/subscriptions/callbacks.py); the reachability probe is `probe_problem`."""
    if not callback:
        return "is required (the absolute http or https URL notifications are POSTed to)"
    if len(callback) > MAX_CALLBACK_LENGTH:
        return f"must be at most {MAX_CALLBACK_LENGTH} characters"
    if any(char.isspace() or not char.isprintable() for char in callback):
        return "must not contain spaces or control characters"
    parts = urlsplit(callback)
    if parts.scheme.lower() not in _CALLBACK_SCHEMES or not parts.netloc:
        return f"must be an absolute http or https URL, got {callback!r}"
    if not parts.hostname:
        return f"must name a host, got {callback!r}"
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return f"has an invalid port, got {callback!r}"
    if policy is None:
        return None
    try:
        policy.check_url(callback)
    except CallbackRefused as refused:
        return str(refused)
    return None


def probe_problem(callback: str, policy: CallbackPolicy) -> str | None:
    """Why the callback failed the reachability probe, if the policy asks for one."""
    return callbacks.probe(callback, policy) if policy.probe else None


def consumer_subscription_id_problem(consumer_subscription_id: str) -> str | None:
    if len(consumer_subscription_id) > MAX_CONSUMER_SUBSCRIPTION_ID_LENGTH:
        return f"must be at most {MAX_CONSUMER_SUBSCRIPTION_ID_LENGTH} characters"
    return control_character_problem(consumer_subscription_id)


def control_character_problem(text: str) -> str | None:
    """NUL and other control characters (C0, DEL, C1) have no place in an identifier or
    expression: they break logs, terminals and the SMO's own parsers downstream."""
    for index, char in enumerate(text):
        if ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0:
            return f"must not contain control characters (U+{ord(char):04X} at {index})"
    return None


def validate_filter(kind: SubscriptionKind, expression: str, major: str = "v1") -> str | None:
    """Why `expression` is not a valid filter for `kind` (in API major `major`), or None.
    Empty means "everything".

    The expression is stored exactly as given; the notifier interprets it later
    (server/subscriptions/filters.py says how).
    """
    if len(expression) > MAX_FILTER_LENGTH:
        return f"must be at most {MAX_FILTER_LENGTH} characters"
    if not expression:
        return None
    control = control_character_problem(expression)
    if control is not None:
        return control
    # Parsed and bound now, so an unknown attribute or operator is a 400 at creation (as
    # OSC does), not a notification that silently never matches.
    if kind == ALARM_SUBSCRIPTIONS:
        # An event type (NEW, CHANGE, CLEAR, ACKNOWLEDGE) or an expression over the record.
        return alarm_filter_problem(expression)
    return inventory_filter_problem(expression, major)
