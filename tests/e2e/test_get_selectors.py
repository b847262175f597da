"""SOL013 attribute selectors on every single-object GET, and query parameters a path does not
know: ignored (and counted), never a 400, while bad values of known parameters stay 400."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from devstack.stack import REPO, LocalStack
from rest_facade.http_rules import HttpRule, read_rules

from .conftest import start_stack

CALLBACK_ENV = {
    "NETWEAVE_CALLBACK_ALLOW_HTTP": "1",
    "NETWEAVE_CALLBACK_ALLOWED_CIDRS": "127.0.0.0/8",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory, CALLBACK_ENV)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def admin(stack: LocalStack) -> Iterator[httpx.Client]:
    seed_alarm(stack)
    with httpx.Client(
        base_url=stack.rest_url, verify=stack.client_tls(), timeout=10.0, trust_env=False
    ) as client:
        yield client


def seed_alarm(stack: LocalStack) -> None:
    """One alarm record in the layout the alarm source writes (server/monitoring_v1.py):
    nothing raises alarms yet, and GET .../alarms/{id} must be covered too."""
    alarm_id = str(uuid.uuid4())
    client = redis.Redis.from_url(stack.redis_url)
    try:
        client.hset(
            f"alarm:{alarm_id}",
            mapping={
                "resourceTypeID": "rt-1",
                "resourceID": "r-1",
                "alarmDefinitionID": "ad-1",
                "probableCauseID": "pc-1",
                "alarmRaisedTime": "2025-01-02T03:04:05Z",
                "alarmAcknowledged": "false",
                "perceivedSeverity": "2",
                "extensions": '{"node": "edge-1"}',
            },
        )
        client.sadd("alarms", alarm_id)
    finally:
        client.close()


def single_object_gets() -> list[HttpRule]:
    """Every GET whose path ends in an object id (not a list, not api_versions), and the
    resource type's alarm dictionary."""
    return [
        rule
        for rule in read_rules(REPO / "gen" / "o2ims.pb")
        if rule.http_method == "GET"
        and (
            rule.template.segments[-1].variable is not None
            or rule.method == "GetResourceTypeAlarmDictionary"
        )
    ]


def id_field(rule: HttpRule) -> str:
    """The JSON name of the returned object's id attribute."""
    if rule.method == "GetResourceTypeAlarmDictionary":
        return "alarmDictionaryId"
    variable = rule.template.segments[-1].variable or ""
    return re.sub(r"_(\w)", lambda m: m.group(1).upper(), variable)


def concrete(admin: httpx.Client, rule: HttpRule) -> str:
    """The rule's path with real ids, found by listing as the admin (subscriptions: made)."""
    parts: list[str] = []
    for segment in rule.template.segments:
        if segment.variable is None or segment.text != "*":
            parts.append(segment.text)
            continue
        collection = "/" + "/".join(parts)
        if collection.endswith("ubscriptions"):
            created = admin.post(
                collection, json={"callback": f"http://127.0.0.1:9/{uuid.uuid4()}"}
            ).raise_for_status()
            parts.append(created.headers["location"].rsplit("/", 1)[1])
            continue
        items = admin.get(collection).raise_for_status().json()
        assert items, f"nothing at {collection}"
        field = re.sub(r"_(\w)", lambda m: m.group(1).upper(), segment.variable)
        parts.append(str(items[0][field]))
    return "/" + "/".join(parts)


RULES = single_object_gets()


def is_complex(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and any(isinstance(item, dict) for item in value)
    )


def test_every_single_object_get_is_covered(admin: httpx.Client) -> None:
    methods = {rule.method for rule in RULES}
    for expected in ("GetResourcePool", "GetResource", "GetDeploymentManager", "GetSubscription"):
        assert any(name.endswith(expected) for name in methods), expected
    assert len(RULES) >= 15


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: f"{rule.service}.{rule.method}")
def test_selectors_and_unknown_parameters_on_a_single_get(
    admin: httpx.Client, rule: HttpRule
) -> None:
    path = concrete(admin, rule)
    full = admin.get(path)
    assert full.status_code == 200, full.text
    whole: dict[str, Any] = full.json()
    identity = id_field(rule)
    assert identity in whole
    # Complex attributes (objects, arrays of objects) are the ones selectors remove.
    complex_keys = [key for key, value in whole.items() if is_complex(value)]
    # all_fields (bare, as O2ims sends it): the full representation.
    assert admin.get(f"{path}?all_fields").json() == whole
    # exclude_default: the default representation, without the complex attributes.
    default = admin.get(f"{path}?exclude_default")
    assert default.status_code == 200, default.text
    # (An array attribute removed still prints as [], as on the lists: the transcoder prints
    # every repeated field.)
    assert not any(default.json().get(key) for key in complex_keys)
    assert default.json()[identity] == whole[identity]
    if complex_keys:
        # fields: the default representation plus the attribute asked for.
        picked = admin.get(path, params={"fields": complex_keys[0]})
        assert picked.status_code == 200, picked.text
        assert {k for k in complex_keys if picked.json().get(k)} == {complex_keys[0]}
        # exclude_fields: that attribute goes, the rest stays.
        trimmed = admin.get(path, params={"exclude_fields": complex_keys[0]})
        assert trimmed.status_code == 200, trimmed.text
        assert not trimmed.json().get(complex_keys[0])
        assert {k for k, v in trimmed.json().items() if v} == {k for k, v in whole.items() if v} - {
            complex_keys[0]
        }
    # A parameter the path does not know: ignored.
    ignored = admin.get(path, params={"noSuchParameter": "1", "x_conformance_probe": "y"})
    assert ignored.status_code == 200, ignored.text
    assert ignored.json() == whole
    # A bad value of a known parameter: still 400.
    bad = admin.get(path, params={"fields": "noSuchAttribute"})
    assert bad.status_code == 400, bad.text
    assert bad.headers["content-type"] == "application/problem+json"


def test_ignored_parameters_are_counted(stack: LocalStack, admin: httpx.Client) -> None:
    pools = "/o2ims-infrastructureInventory/v1/resourcePools"

    def counted() -> float:
        text = httpx.get(f"{stack.ops_url}/metrics", timeout=5).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("o2ims_ignored_query_parameters_total{")
            and "ListResourcePools" in line
        )

    before = counted()
    assert admin.get(pools, params={"a": "1", "b": "2"}).status_code == 200
    assert counted() == before + 2
