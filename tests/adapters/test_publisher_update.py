"""ObjectSetPublisher.update(): replace()'s semantics at the cost of the change."""

from __future__ import annotations

import random

import pytest
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import ObjectKey, object_key, serialize
from adapters.publisher import ObjectSetPublisher
from tests.adapters.test_publisher import ADDED, COMMIT, DELETED, MODIFIED, pool, resource, summary


def site(number: int) -> domain_pb2.InventoryObject:
    return domain_pb2.InventoryObject(
        site=domain_pb2.Site(o_cloud_site_id=f"30000000-0000-4000-8000-{number:012d}")
    )


def test_update_adds_modifies_and_deletes_only_what_it_names() -> None:
    publisher = ObjectSetPublisher()
    publisher.replace([pool(), resource(1), resource(2)])
    events = publisher.update([resource(1, "changed"), resource(3)], [object_key(resource(2))])
    assert summary(events) == [
        ("EVENT_TYPE_MODIFIED", "resource", resource(1).resource.resource_id),
        ("EVENT_TYPE_ADDED", "resource", resource(3).resource.resource_id),
        ("EVENT_TYPE_DELETED", "resource", resource(2).resource.resource_id),
    ]
    assert {event.revision for event in events} == {"2"}
    revision, objects = publisher.snapshot()
    assert revision == "2"
    assert [object_key(obj) for obj in objects] == [
        object_key(pool()),
        object_key(resource(1)),
        object_key(resource(3)),
    ]


def test_an_update_that_changes_nothing_sends_nothing() -> None:
    publisher = ObjectSetPublisher()
    publisher.replace([pool(), resource(1)])
    subscription = publisher.subscribe(send_initial=False)
    assert publisher.update([resource(1), pool()], [object_key(resource(9))]) == []
    assert publisher.revision == "1"
    with pytest.raises(TimeoutError):
        subscription.next_event(timeout=0.05)


def test_one_update_is_one_change_set_parents_first_then_commit() -> None:
    publisher = ObjectSetPublisher()
    publisher.replace([pool(), resource(1)])
    subscription = publisher.subscribe(send_initial=False)
    publisher.update([resource(2), site(1)], [object_key(resource(1))])
    received = [subscription.next_event(timeout=1) for _ in range(4)]
    assert [event.type if event else None for event in received] == [
        ADDED,
        ADDED,
        DELETED,
        COMMIT,
    ]
    assert received[0] is not None and received[0].object.HasField("site")


def test_naming_a_key_twice_is_refused() -> None:
    publisher = ObjectSetPublisher()
    with pytest.raises(ValueError, match="named twice"):
        publisher.update([resource(1)], [object_key(resource(1))])
    with pytest.raises(ValueError, match="share the key"):
        publisher.update([resource(1), resource(1)])
    assert publisher.revision == "0"


def test_an_oversized_upsert_keeps_the_last_state_until_offered_again_or_deleted() -> None:
    publisher = ObjectSetPublisher(max_object_bytes=200)
    publisher.update([resource(1)])
    assert publisher.update([resource(1, "x" * 300)]) == []
    (refused,) = publisher.refused
    assert refused.held_previous and refused.object_id == resource(1).resource.resource_id
    assert publisher.problems == [str(refused)]
    # Another update that does not name it leaves the refusal in place.
    publisher.update([resource(2)])
    assert len(publisher.refused) == 1
    publisher.update([resource(1, "fits")])
    assert publisher.refused == []
    publisher.update([resource(3, "y" * 300)])
    assert [r.held_previous for r in publisher.refused] == [False]
    publisher.update([], [object_key(resource(3))])
    assert publisher.refused == []


def _random_object(rng: random.Random) -> domain_pb2.InventoryObject:
    number = rng.randrange(8)
    if rng.random() < 0.2:
        return site(number)
    return resource(number, rng.choice(["a", "b", "c", "x" * 300]))


def test_update_is_replace_of_the_edited_set_on_random_sequences() -> None:
    rng = random.Random(7)
    incremental = ObjectSetPublisher(max_object_bytes=250)
    whole = ObjectSetPublisher(max_object_bytes=250)
    desired: dict[ObjectKey, domain_pb2.InventoryObject] = {}
    seen_types: set[int] = set()
    for _ in range(400):
        upserts: dict[ObjectKey, domain_pb2.InventoryObject] = {}
        for _ in range(rng.randrange(4)):
            obj = _random_object(rng)
            upserts[object_key(obj)] = obj
        deletions = {
            key for key in rng.sample(sorted(desired), min(len(desired), 2)) if key not in upserts
        }
        deletions = {key for key in deletions if rng.random() < 0.5}
        desired.update(upserts)
        for key in deletions:
            del desired[key]
        got = incremental.update(upserts.values(), deletions)
        expected = whole.replace(desired.values())
        assert [(e.type, serialize(e.object), e.revision) for e in got] == [
            (e.type, serialize(e.object), e.revision) for e in expected
        ]
        assert [serialize(obj) for obj in incremental.snapshot()[1]] == [
            serialize(obj) for obj in whole.snapshot()[1]
        ]
        assert incremental.refused == whole.refused
        seen_types.update(event.type for event in got)
    assert seen_types == {ADDED, MODIFIED, DELETED}
