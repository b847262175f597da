"""The in-process inventory view that serves every read.

It is loaded from a Redis snapshot and then kept coherent by applying the
inventory:events stream in version order (see server.store), so a steady SMO poll
never costs a Redis round trip, every replica converges on the same view, and reads
keep working from the last known state while Redis is away.

Wire objects of each served major version are built from the domain objects lazily
and memoized. Resources (the one large collection) embed nothing from other objects,
so a change to a resource drops only its own memos. Every other kind is small, and
some wire objects embed or derive from others (a 1.x resource type embeds its alarm
dictionary, a 2.0 site lists its pools), so a change to any of them drops the memos of
all the small kinds: always correct, and cheap.

Memory (100,000 resources): a protobuf message parsed or built on its own costs ~2.5-3.3
KB in its own upb arena, several times its ~0.5 KB of serialized bytes. So resources are
held as their stored bytes (parsed when a wire object is built, an index changes or a
caller asks for the domain object), and their wire memos are built into shared arenas,
CHUNK messages per arena (~1.5 KB each). A changed resource's old wire message stays in
its arena until the arena is dropped: once fewer than half of a full chunk's messages
are still memoized, the rest are dropped too and rebuilt on their next read.
"""

from __future__ import annotations

import bisect
import functools
import math
import random
import re
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from google.protobuf.message import Message
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import KINDS
from netweave.protowire import read_varint, tag
from server.query import JsonPrefilter, index_key, json_getter, json_key, json_value
from server.query.evaluate import UUID_PATTERN, TermError, parse_number
from server.query.filter import below_extensions
from server.query.schema import PathError
from server.store import Snapshot, StoredEvent
from server.struct_bytes import order_pattern, value_bytes
from server.wire import BuildContext, WireModel

# Resource attributes SMOs filter on with eq/in, indexed so such a filter never scans the
# whole inventory: JSON name -> domain field.
RESOURCE_INDEXES: Final = {
    "resourcePoolId": "resource_pool_id",
    "resourceTypeId": "resource_type_id",
    "resourceId": "resource_id",
    "name": "name",
}


# Wire messages per shared arena (see the module docstring).
CHUNK: Final = 512
# Free-form paths (extensions/...) indexed on demand for filters on them, least recently
# used dropped first. One costs ~0.5 s of CPU to build over 100,000 resources (outside
# the lock) and a few MB; a value held by one resource costs a dict entry, not a set.
MAX_JSON_INDEXES: Final = 8
# A path is indexed when it is filtered on for the second time (a one-off query scans).
INDEX_AFTER_USES: Final = 2
# Paths whose uses are counted, at most (the counts restart beyond).
_MAX_COUNTED_PATHS: Final = 1024
# The extensions bytes are rebuilt once events have changed more resources than this (or
# an eighth of them, if more).
REBUILD_BYTES_AFTER: Final = 1024
# cont on an indexed path walks its index when it holds at most this many distinct values,
# else searches the extensions bytes.
WALK_INDEX_UP_TO: Final = 1024
# A prefilter whose candidates exceed 1/UNSELECTIVE of the pool is not used.
UNSELECTIVE: Final = 4
# Resources sampled to tell early whether a search of the extensions bytes is unselective.
SAMPLED: Final = 1024

# An index: key -> the id holding it (the usual, unique case) or a set of several ids.
Index = dict[str, str | set[str]]


def _index_add(index: Index, key: str, object_id: str) -> None:
    members = index.get(key)
    if members is None:
        index[key] = object_id
    elif isinstance(members, str):
        if members != object_id:
            index[key] = {members, object_id}
    else:
        members.add(object_id)


def _index_discard(index: Index, key: str, object_id: str) -> None:
    members = index.get(key)
    if isinstance(members, str):
        if members == object_id:
            del index[key]
    elif members is not None:
        members.discard(object_id)
        if not members:
            del index[key]


def _index_members(index: Index, key: str) -> Collection[str]:
    members = index.get(key)
    if members is None:
        return ()
    return (members,) if isinstance(members, str) else members


class _OrderView:
    """An index's distinct values in order, for gt/gte/lt/lte: its string keys sorted
    (json_key's "s" + the string: key order is the strings' code-point order, which the
    filter compares by), and its numbers sorted with their keys beside them (NaN, which
    passes no order term, left out). A term's passing values are then one or two ranges
    found by bisection, not a predicate run on every distinct value."""

    __slots__ = ("number_keys", "numbers", "strings")

    def __init__(self, keys: Iterable[str]) -> None:
        strings: list[str] = []
        numbered: list[tuple[float, str]] = []
        for key in keys:
            if key[:1] == "s":
                strings.append(key)
            elif key[:1] == "n":
                number = float(key[1:])
                if not math.isnan(number):  # NaN passes no order term
                    numbered.append((number, key))
        strings.sort()
        numbered.sort()
        self.strings = strings
        self.numbers = [number for number, _ in numbered]
        self.number_keys = [key for _, key in numbered]

    def add(self, key: str) -> None:
        """A key new to the index."""
        if key[:1] == "s":
            bisect.insort(self.strings, key)
        elif key[:1] == "n":
            number = float(key[1:])
            if not math.isnan(number):
                at = bisect.bisect_right(self.numbers, number)
                self.numbers.insert(at, number)
                self.number_keys.insert(at, key)

    def remove(self, key: str) -> None:
        """A key no longer in the index."""
        if key[:1] == "s":
            at = bisect.bisect_left(self.strings, key)
            if at < len(self.strings) and self.strings[at] == key:
                del self.strings[at]
        elif key[:1] == "n":
            number = float(key[1:])
            at = bisect.bisect_left(self.numbers, number)
            # Only 0.0 and -0.0 are two keys of one value.
            while at < len(self.numbers) and self.numbers[at] == number:
                if self.number_keys[at] == key:
                    del self.numbers[at], self.number_keys[at]
                    return
                at += 1

    def _cuts(self, op: str, bound: str) -> tuple[bool, int, int | None]:
        """Whether `op` takes the values below its cuts (else those from them on), the
        cut in the strings, and the one in the numbers (None: the bound is no number)."""
        # gt and lte part equal values from the greater (right), gte and lt from the less.
        find = bisect.bisect_right if op in {"gt", "lte"} else bisect.bisect_left
        number = parse_number(bound)
        return (
            op in {"lt", "lte"},
            find(self.strings, "s" + bound),
            None if number is None else find(self.numbers, number),
        )

    def passing(self, op: str, bound: str) -> list[str]:
        """The keys of the values `(op, <path>, bound)` passes: strings compared with the
        bound's text, numbers with its number when it is one (the filter's rule)."""
        below, strings, numbers = self._cuts(op, bound)
        keys = self.strings[:strings] if below else self.strings[strings:]
        if numbers is not None:
            keys += self.number_keys[:numbers] if below else self.number_keys[numbers:]
        return keys

    def count(self, op: str, bound: str) -> int:
        """len(passing(op, bound)), without the list."""
        below, strings, numbers = self._cuts(op, bound)
        count = strings if below else len(self.strings) - strings
        if numbers is not None:
            count += numbers if below else len(self.numbers) - numbers
        return count


class _JsonIndex:
    """The index of one free-form resource path: json_key(leaf value) -> resource ids,
    and, for the UUID-shaped strings held in other than lower case, their lower-cased
    json_key -> the json_keys held (eq/in compare UUIDs without case). Once it holds more
    than WALK_INDEX_UP_TO distinct values when built, also its values in order
    (_OrderView), kept up to date with every change."""

    __slots__ = ("folded", "getter", "ids", "order")

    def __init__(self, getter: Callable[[Any], list[Any]]) -> None:
        self.getter = getter
        self.ids: Index = {}
        self.folded: dict[str, set[str]] = {}
        self.order: _OrderView | None = None

    @staticmethod
    def _folded_key(key: str) -> str | None:
        # "s" + a UUID: 37 characters; most keys stop at the length test.
        if len(key) != 37 or key[0] != "s" or key.islower():
            return None
        return key.lower() if UUID_PATTERN.fullmatch(key, 1) else None

    def order_values(self) -> None:
        """Keep the values in order from now on, if they are many (sorted once here:
        ~50 ms for 100,000 distinct strings, so not under the cache's lock)."""
        if len(self.ids) > WALK_INDEX_UP_TO:
            self.order = _OrderView(self.ids)

    def add(self, key: str, resource_id: str) -> None:
        if self.order is not None and key not in self.ids:
            self.order.add(key)
        _index_add(self.ids, key, resource_id)
        folded = self._folded_key(key)
        if folded is not None:
            self.folded.setdefault(folded, set()).add(key)

    def discard(self, key: str, resource_id: str) -> None:
        _index_discard(self.ids, key, resource_id)
        if key in self.ids:
            return
        if self.order is not None:
            self.order.remove(key)
        folded = self._folded_key(key)
        if folded is not None:
            held = self.folded.get(folded)
            if held is not None:
                held.discard(key)
                if not held:
                    del self.folded[folded]

    def candidates(self, prefilter: JsonPrefilter) -> list[Collection[str]]:
        """The ids of every value `prefilter` passes, one collection per value: looked up
        for eq/in, found by bisection for an order term once the values are in order,
        else the predicate runs once per distinct value."""
        ids = self.ids
        if prefilter.keys is None:
            if prefilter.order is not None and self.order is not None:
                _, op, bound = prefilter.order
                return [_index_members(ids, key) for key in self.order.passing(op, bound)]
            passes = prefilter.passes
            return [_index_members(ids, key) for key in ids if passes(json_value(key))]
        keys = set(prefilter.keys)
        for folded in prefilter.folded:
            keys.add(folded)
            keys.update(self.folded.get(folded, ()))
        return [_index_members(ids, key) for key in keys]


class _ExtensionsBytes:
    """Every resource's extensions, each its Struct serialized by this process, end to end in
    one bytes string: what answers a filter's first use of an extensions path no index holds
    yet (docs/operations.md "Filters on resource extensions"). A resource holding a value
    anywhere in its extensions holds that Value's serialized bytes (value_bytes), a string
    containing a cont term's text holds that text's UTF-8, and a resource whose value at a
    path passes an order term holds a map entry of the path's last key that order_pattern
    matches, so searching the string finds every resource an eq/in/cont/gt/gte/lt/lte term
    can match, and a few it cannot (the value under another key, or bytes that straddle
    two resources): a pre-selection the filter then decides, like an index's. Searching
    100,000 resources' (5.7 MB) takes 2-5 ms for a value, ~20 ms for an order term,
    where evaluating the filter on each took 65-150 ms.

    Built with the resources' indexes at load, then kept by `changed`: the resources events
    added, changed or removed since, always candidates. Rebuilt (InventoryCache) once they
    are many."""

    __slots__ = ("changed", "data", "ids", "offsets")

    def __init__(self) -> None:
        self.ids: list[str] = []
        # Where each of `ids`' extensions start in `data` (never changed once built).
        self.offsets = array("Q")
        self.data = bytearray()
        self.changed: set[str] = set()

    @classmethod
    def of(cls, resources: Iterator[tuple[str, Any]]) -> _ExtensionsBytes:
        """From (id, domain resource) pairs."""
        built = cls()
        # Grown in place: no list of 100,000 small bytes objects to join (their memory
        # would stay the process's after the join).
        data = bytearray()
        for resource_id, resource in resources:
            built.ids.append(resource_id)
            built.offsets.append(len(data))
            data += resource.extensions.SerializeToString()
        built.data = data
        return built

    def search(self, prefilter: JsonPrefilter, limit: int) -> set[str] | None:
        """The resources that may hold a value `prefilter` passes (`changed` not included);
        None when it cannot tell or they are more than `limit` (a term that selects that
        many is scanned: the search stops there rather than find them all). cont looks for
        its strings' UTF-8 anywhere (a value holding one holds it)."""
        finders: list[Callable[[int, int], int]] = []
        if prefilter.order is not None:
            pattern = order_pattern(*prefilter.order)
            if pattern is None:
                return None
            finders.append(functools.partial(_found_at, pattern.search, self.data))
        elif prefilter.keys is None:
            if not prefilter.substrings or "" in prefilter.substrings:
                return None
            for substring in prefilter.substrings:
                try:
                    finders.append(functools.partial(self.data.find, substring.encode()))
                except UnicodeEncodeError:  # no protobuf string holds it
                    continue
        for key in prefilter.keys or ():
            needle = value_bytes(key)
            if needle is not None:
                finders.append(functools.partial(self.data.find, needle))
        for key in prefilter.folded:
            # A UUID-shaped string passes in any case (ASCII: bytes patterns fold just that).
            needle = value_bytes(key)
            if needle is not None:
                pattern = re.compile(re.escape(needle), re.IGNORECASE)
                finders.append(functools.partial(_found_at, pattern.search, self.data))
        offsets, ids = self.offsets, self.ids
        last, end = len(ids) - 1, len(self.data)
        found: set[str] = set()
        # Past this many, a sample tells whether the rest would pass `limit` (an
        # unselective term is given up in a few ms, not after finding `limit`); a small
        # limit is reached before any sample is worth its ~1 ms.
        checkpoint = max(limit // 32, 64)
        for find in finders:
            at = find(0, end)
            while at >= 0:
                index = bisect.bisect_right(offsets, at) - 1
                found.add(ids[index])
                if index == last:
                    break
                if len(found) > checkpoint:
                    if len(found) > limit or self._sampled(finders) > limit:
                        return None
                    checkpoint = limit
                at = find(offsets[index + 1], end)  # on to the next resource
        return found

    def _sampled(self, finders: Sequence[Callable[[int, int], int]]) -> int:
        """How many resources `finders` find, estimated from one in every len/SAMPLED, less
        a quarter as a margin (~1 ms: 1,024 samples of a term a quarter of the resources
        pass put it within 1.4% of that a standard deviation, so the estimate passes a
        quarter only past a third, 6 deviations away)."""
        offsets, count = self.offsets, len(self.ids)
        step = max(1, count // SAMPLED)
        # One resource at a random place in each stretch of `step`: a fixed stride could
        # fall in step with values that repeat along the load order (every other resource).
        place = random.Random(count).randrange
        hits = 0
        for stretch in range(0, count, step):
            index = stretch + place(min(step, count - stretch))
            start = offsets[index]
            end = offsets[index + 1] if index + 1 < count else len(self.data)
            hits += any(find(start, end) >= 0 for find in finders)
        return hits * step * 3 // 4


def _found_at(
    search: Callable[[bytearray, int, int], re.Match[bytes] | None],
    data: bytearray,
    at: int,
    end: int,
) -> int:
    match = search(data, at, end)
    return -1 if match is None else match.start()


def _pool_key(pool_id: str) -> str:
    """Where InventoryCache._sorted keeps a pool's sorted resource ids."""
    return "resource@" + pool_id


def _pool_members(index: Mapping[str, Index], pool_id: str) -> Collection[str]:
    """A pool's resource ids, from the resource indexes."""
    return _index_members(index["resourcePoolId"], index_key(pool_id))


# Up to this many members added (or removed) since a sort are put in place one by one, by
# bisection (each a copy of the pointers after it, in C); more are merged by one sort,
# which finds the sorted list's run and the sorted additions' (Timsort: ~5 ms at 100,000).
FEW_MEMBER_CHANGES: Final = 64


class _MemberChanges:
    """The members added to and removed from one sorted id list since it was sorted, so
    the next list updates it instead of sorting every member again (~50 ms at 100,000):
    a delete and a re-creation, or a move there and back, cancel out."""

    __slots__ = ("added", "removed")

    def __init__(self) -> None:
        self.added: set[str] = set()
        self.removed: set[str] = set()

    def __len__(self) -> int:
        return len(self.added) + len(self.removed)

    def add(self, member: str) -> None:
        if member in self.removed:
            self.removed.discard(member)
        else:
            self.added.add(member)

    def remove(self, member: str) -> None:
        if member in self.added:
            self.added.discard(member)
        else:
            self.removed.add(member)

    def applied(self, ids: list[str]) -> list[str]:
        """`ids` (sorted) with these changes, as a new sorted list: `ids` is left as it
        is, for the readers walking it outside the lock."""
        if len(self.removed) <= FEW_MEMBER_CHANGES:
            result = list(ids)
            for member in self.removed:
                at = bisect.bisect_left(result, member)
                if at < len(result) and result[at] == member:
                    del result[at]
        else:
            removed = self.removed
            result = [member for member in ids if member not in removed]
        if len(self.added) <= FEW_MEMBER_CHANGES:
            for member in self.added:
                bisect.insort(result, member)
        else:
            result.extend(sorted(self.added))
            result.sort()
        return result


def _related(objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What wire builders may read of `objects`: the small kinds' dicts themselves (changed
    in place by apply, so this stays current), never resources (held as bytes: leaving them
    out makes a builder that tries fail loudly)."""
    return {kind: held for kind, held in objects.items() if kind != "resource"}


def _parse(kind: str, payload: bytes) -> Any:
    obj = domain_pb2.InventoryObject.FromString(payload)
    return getattr(obj, kind)


# A stored resource is an InventoryObject holding only its `resource` (field 7).
_RESOURCE_TAG: Final = tag(domain_pb2.InventoryObject.DESCRIPTOR.fields_by_name["resource"].number)


def _resource_bytes(payload: bytes) -> bytes | None:
    """The domain Resource's bytes inside a stored resource; None if the payload is
    anything but that one field."""
    if not payload.startswith(_RESOURCE_TAG):
        return None
    length = read_varint(payload, len(_RESOURCE_TAG))
    if length is None or length[0] + length[1] != len(payload):
        return None
    return payload[length[1] :]


def _present_extensions(wire: Message) -> None:
    """O2ims always sends extensions ({} when empty), the builders' rule: set them on a
    resource parsed from its bytes and on each of its elements."""
    wire.extensions.SetInParent()  # type: ignore[attr-defined]
    for element in wire.elements:  # type: ignore[attr-defined]
        _present_extensions(element)


def _held(kind: str, payload: bytes) -> Any:
    """What the view holds for a stored object: resources stay bytes (parsed on use),
    every other (small) kind is parsed once."""
    return payload if kind == "resource" else _parse(kind, payload)


class _Chunk:
    """One shared arena of memoized wire resources: a list response whose `resources`
    are the memoized messages."""

    __slots__ = ("container", "ids", "live")

    def __init__(self, model: WireModel) -> None:
        self.container = model.pb.ListResourcesResponse()
        self.ids: list[str] = []
        # How many of `ids` are still memoized from this chunk.
        self.live = 0


class _ResourceMemo:
    """The wire memo of resources of one major: id -> message in a shared arena."""

    __slots__ = ("chunk_of", "messages", "model", "open")

    def __init__(self, model: WireModel) -> None:
        self.model = model
        self.messages: dict[str, Message] = {}
        self.chunk_of: dict[str, _Chunk] = {}
        self.open = _Chunk(model)

    def put(self, object_id: str, built: Message) -> Message:
        slot = self._slot(object_id)
        slot.MergeFrom(built)
        return slot

    def put_bytes(self, object_id: str, resource: bytes) -> Message:
        """The wire resource parsed from the domain Resource's bytes, when the model's
        ResourceInfo is the Resource field for field (WireModel.resource_parses_from_domain):
        one parse in C instead of a builder in Python (~6x less CPU)."""
        slot = self._slot(object_id)
        try:
            slot.MergeFromString(resource)
        except Exception:
            self.drop(object_id)  # no half-parsed message stays memoized
            raise
        # What a newer adapter's schema adds is not this version's: the builder drops it.
        slot.DiscardUnknownFields()
        _present_extensions(slot)
        return slot

    def _slot(self, object_id: str) -> Message:
        chunk = self.open
        if len(chunk.ids) >= CHUNK:
            chunk = self.open = _Chunk(self.model)
        slot: Message = chunk.container.resources.add()
        chunk.ids.append(object_id)
        chunk.live += 1
        self.messages[object_id] = slot
        self.chunk_of[object_id] = chunk
        return slot

    def drop(self, object_id: str) -> None:
        """Forget a changed resource's message; drop a mostly dead full chunk."""
        self.messages.pop(object_id, None)
        chunk = self.chunk_of.pop(object_id, None)
        if chunk is None:
            return
        chunk.live -= 1
        if chunk is not self.open and chunk.live * 2 < len(chunk.ids):
            for other in chunk.ids:
                if self.chunk_of.get(other) is chunk:
                    del self.chunk_of[other]
                    del self.messages[other]
            chunk.live = 0


class InventoryCache:
    """Thread-safe: one writer (the event tailer), many readers (gRPC handlers)."""

    def __init__(
        self,
        service_uri: str,
        *,
        index_in_background: bool = True,
        indexed_paths: Sequence[tuple[str, ...]] = (),
    ) -> None:
        """`index_in_background`: build extensions indexes in a thread of their own (the
        request that asks for one scans meanwhile) rather than in the request's.
        `indexed_paths`: extensions paths indexed at every load, before any filter uses them
        (NETWEAVE_INDEXED_EXTENSIONS), and never dropped for others: a filter's first use
        on them is indexed too. They come on top of the MAX_JSON_INDEXES built on demand."""
        for path in indexed_paths:
            if not below_extensions(path):
                raise ValueError(f"not a path below extensions: {'/'.join(path)!r}")
            try:
                json_getter(domain_pb2.Resource.DESCRIPTOR, path)
            except (PathError, TermError) as exc:
                raise ValueError(f"cannot index {'/'.join(path)!r}: {exc}") from exc
        self._service_uri = service_uri
        self._index_in_background = index_in_background
        self._indexed_paths = tuple(indexed_paths)
        self._lock = threading.RLock()
        self._objects: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self._related = _related(self._objects)
        # attribute -> index_key(value) -> resource ids
        self._resource_index: dict[str, Index] = {a: {} for a in RESOURCE_INDEXES}
        # free-form path -> its index of values, built on demand
        self._json_indexes: OrderedDict[tuple[str, ...], _JsonIndex] = OrderedDict()
        # free-form path -> how often a filter used it while it had no index
        self._json_uses: dict[tuple[str, ...], int] = {}
        # path being indexed outside the lock -> resources changed by events meanwhile
        self._json_building: dict[tuple[str, ...], set[str]] = {}
        # Every resource's extensions searchable at once (None before the first load), and
        # while it is rebuilt outside the lock, the resources events change meanwhile.
        self._extensions_bytes: _ExtensionsBytes | None = None
        self._bytes_building: set[str] | None = None
        # Incremented by every load: an index built across a load is dropped.
        self._generation = 0
        # Sorted ids: each kind's, and each pool's resources' (_pool_key), with the
        # members added and removed since (applied by the next read, _sorted_ids).
        self._sorted: dict[str, list[str]] = {}
        self._sorted_changes: dict[str, _MemberChanges] = {}
        # (major, kind) -> id -> wire message, for every kind but resources
        self._memo: dict[tuple[str, str], dict[str, Message]] = {}
        # major -> the wire memo of resources
        self._resource_memo: dict[str, _ResourceMemo] = {}
        self._version = 0
        self._last_event_id = "0-0"
        self._loaded = False

    # --- state -----------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def version(self) -> int:
        return self._version

    @property
    def last_event_id(self) -> str:
        return self._last_event_id

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {kind: len(objects) for kind, objects in self._objects.items()}

    def load(self, snapshot: Snapshot) -> None:
        """Replace the whole view by a snapshot."""
        objects = {
            kind: {oid: _held(kind, payload) for oid, payload in snapshot.objects[kind].items()}
            for kind in KINDS
        }
        index: dict[str, Index] = {a: {} for a in RESOURCE_INDEXES}

        def indexed() -> Iterator[tuple[str, Any]]:
            for resource_id, payload in objects["resource"].items():
                resource = _parse("resource", payload)
                for attribute, domain_field in RESOURCE_INDEXES.items():
                    value = getattr(resource, domain_field)
                    key = index_key(value)
                    # One string object for key and value where they are equal.
                    _index_add(index[attribute], value if key == value else key, resource_id)
                yield resource_id, resource

        extensions_bytes = _ExtensionsBytes.of(indexed())
        # Each pool's resource ids in the order every list of it walks them: sorted by the
        # load, not by the first list after it (~50 ms for 100,000, on a request).
        sorted_pools = {
            _pool_key(pool_id): sorted(_pool_members(index, pool_id))
            for pool_id in objects["resource_pool"]
        }
        with self._lock:
            self._objects = objects
            self._related = _related(objects)
            self._resource_index = index
            self._extensions_bytes = extensions_bytes
            self._bytes_building = None
            self._sorted.clear()
            self._sorted.update(sorted_pools)
            self._sorted_changes.clear()
            self._memo.clear()
            self._resource_memo.clear()
            self._json_indexes.clear()
            self._generation += 1
            self._version = snapshot.version
            self._last_event_id = snapshot.last_event_id
            self._loaded = True
        for path in self._indexed_paths:
            self._prepare_json_index(path, declared=True)

    def apply(self, event: StoredEvent) -> bool:
        """Apply the next event. False means a gap (trimmed stream, reset Redis): reload."""
        with self._lock:
            if event.version <= self._version:
                self._last_event_id = event.stream_id
                return True  # already part of the loaded snapshot
            if event.version != self._version + 1:
                return False
            kind, object_id = event.kind, event.object_id
            objects = self._objects[kind]
            previous = objects.get(object_id)
            if event.event == "delete":
                objects.pop(object_id, None)
            else:
                objects[object_id] = _held(kind, event.post)
            if (previous is None) != (object_id not in objects):
                self._member_change(kind, object_id, added=previous is None)
            if kind == "resource":
                current = objects.get(object_id)
                self._reindex_resource(
                    object_id,
                    None if previous is None else _parse(kind, previous),
                    None if current is None else _parse(kind, current),
                )
                for resource_memo in self._resource_memo.values():
                    resource_memo.drop(object_id)
                for changed in self._json_building.values():
                    changed.add(object_id)
                self._note_extensions_change(object_id)
            else:
                for (_, memo_kind), memo in self._memo.items():
                    if memo_kind != "resource":
                        memo.clear()
            self._version = event.version
            self._last_event_id = event.stream_id
            return True

    def _reindex_resource(self, resource_id: str, previous: Any, current: Any) -> None:
        pools = {
            resource.resource_pool_id for resource in (previous, current) if resource is not None
        }
        if previous is None or current is None or len(pools) > 1:
            # A pool's sorted ids change only with its members: a resource modified in
            # place (most events) keeps them. A resource added, removed or moved is noted
            # for the next list, which puts it in place rather than sorting 100,000 ids
            # again (~50 ms).
            if previous is not None:
                self._member_change(_pool_key(previous.resource_pool_id), resource_id, added=False)
            if current is not None:
                self._member_change(_pool_key(current.resource_pool_id), resource_id, added=True)
        for resource, add in ((previous, False), (current, True)):
            if resource is None:
                continue
            change = _index_add if add else _index_discard
            for attribute, domain_field in RESOURCE_INDEXES.items():
                key = index_key(getattr(resource, domain_field))
                change(self._resource_index[attribute], key, resource_id)
            for json_index in self._json_indexes.values():
                change_json = json_index.add if add else json_index.discard
                for value in json_index.getter(resource):
                    change_json(json_key(value), resource_id)

    def _member_change(self, key: str, member: str, *, added: bool) -> None:
        """(Under the lock.) `member` added to or removed from the sorted ids under `key`:
        noted for the next read (_sorted_ids); once the changes are more than a quarter of
        the list, the list is dropped and sorted again by that read (cheaper by then)."""
        ids = self._sorted.get(key)
        if ids is None:
            return  # sorted from the members by the next read
        changes = self._sorted_changes.get(key)
        if changes is None:
            changes = self._sorted_changes[key] = _MemberChanges()
        if added:
            changes.add(member)
        else:
            changes.remove(member)
        if len(changes) > max(len(ids) // 4, FEW_MEMBER_CHANGES):
            del self._sorted[key], self._sorted_changes[key]

    def _sorted_ids(self, key: str, members: Callable[[], list[str]]) -> list[str]:
        """(Under the lock.) The sorted ids under `key`: kept, updated with the changes
        noted since, or `members()` (sorted) if there are none yet."""
        ids = self._sorted.get(key)
        changes = self._sorted_changes.pop(key, None)
        if ids is None:
            ids = members()
        elif changes:
            ids = changes.applied(ids)
        else:
            return ids
        self._sorted[key] = ids
        return ids

    def _note_extensions_change(self, resource_id: str) -> None:
        """(Under the lock.) A resource an event changed: a candidate of every search of
        the extensions bytes until they are rebuilt, which starts once such resources
        are more than an eighth of them (at least REBUILD_BYTES_AFTER)."""
        extensions_bytes = self._extensions_bytes
        if extensions_bytes is None:
            return
        extensions_bytes.changed.add(resource_id)
        if self._bytes_building is not None:
            self._bytes_building.add(resource_id)
            return
        if len(extensions_bytes.changed) <= max(
            REBUILD_BYTES_AFTER, len(extensions_bytes.ids) // 8
        ):
            return
        building = self._bytes_building = set()
        build = (building, dict(self._objects["resource"]))
        if self._index_in_background:
            threading.Thread(
                target=self._rebuild_extensions_bytes,
                args=build,
                name="index extensions bytes",
                daemon=True,
            ).start()
        else:
            self._rebuild_extensions_bytes(*build)

    def _rebuild_extensions_bytes(self, building: set[str], payloads: dict[str, bytes]) -> None:
        """The extensions bytes of `payloads` (the resources when the rebuild started),
        built outside the lock; `building` collects the resources events change meanwhile,
        which stay candidates. Installed only if this is still the rebuild under way: a
        load meanwhile built its own (and reset what is being built)."""
        rebuilt: _ExtensionsBytes | None = None
        try:
            rebuilt = _ExtensionsBytes.of(
                (resource_id, _parse("resource", payload))
                for resource_id, payload in payloads.items()
            )
        finally:
            with self._lock:
                if self._bytes_building is building:
                    self._bytes_building = None
                    if rebuilt is not None:
                        rebuilt.changed = building
                        self._extensions_bytes = rebuilt

    def _prepare_json_index(self, path: tuple[str, ...], *, declared: bool = False) -> None:
        """Start indexing the free-form resource path `path` (below `extensions`) if it
        is used often enough (or `declared`: at once) and has no index yet (see
        _build_json_index)."""
        if not below_extensions(path):
            return
        with self._lock:
            if path in self._json_indexes:
                self._json_indexes.move_to_end(path)
                return
            if len(self._json_uses) >= _MAX_COUNTED_PATHS:
                self._json_uses.clear()
            uses = self._json_uses[path] = self._json_uses.get(path, 0) + 1
            if (uses < INDEX_AFTER_USES and not declared) or path in self._json_building:
                return
            try:
                getter = json_getter(domain_pb2.Resource.DESCRIPTOR, path)
            except (PathError, TermError):
                return
            self._json_building[path] = set()
            build = (path, getter, self._generation, dict(self._objects["resource"]))
        if self._index_in_background:
            name = "index " + "/".join(path)
            threading.Thread(
                target=self._build_json_index, args=build, name=name, daemon=True
            ).start()
        else:
            self._build_json_index(*build)

    def _build_json_index(
        self,
        path: tuple[str, ...],
        getter: Callable[[Any], list[Any]],
        generation: int,
        payloads: dict[str, bytes],
    ) -> None:
        """Index `path` over `payloads` (the resources when the build started), outside
        the lock: readers and the event tailer are not held up. The resources events
        changed meanwhile are re-indexed when it is installed; a load meanwhile drops it
        (and a declared path is then indexed again, from the new resources)."""
        dropped = False
        try:
            index = _JsonIndex(getter)
            for resource_id, payload in payloads.items():
                for value in getter(_parse("resource", payload)):
                    index.add(json_key(value), resource_id)
            index.order_values()
            with self._lock:
                if self._generation != generation:
                    dropped = True
                    return
                current = self._objects["resource"]
                for resource_id in self._json_building[path]:
                    for held, change in ((payloads, index.discard), (current, index.add)):
                        stored = held.get(resource_id)
                        if stored is not None:
                            for value in getter(_parse("resource", stored)):
                                change(json_key(value), resource_id)
                self._json_indexes[path] = index
                self._json_uses.pop(path, None)
                # The least recently used path built on demand out (a declared one stays).
                on_demand = [p for p in self._json_indexes if p not in self._indexed_paths]
                for indexed in on_demand[: max(0, len(on_demand) - MAX_JSON_INDEXES)]:
                    del self._json_indexes[indexed]
        finally:
            with self._lock:
                self._json_building.pop(path, None)
            if dropped and path in self._indexed_paths:
                # The load that dropped it found this build running and did not start one.
                self._prepare_json_index(path, declared=True)

    def json_indexes_idle(self) -> bool:
        """True when no extensions index is being built (for tests and benchmarks)."""
        with self._lock:
            return not self._json_building

    # --- reads -------------------------------------------------------------------

    def _ordered_ids(self, kind: str) -> list[str]:
        return self._sorted_ids(kind, lambda: sorted(self._objects[kind]))

    def _o_cloud_id(self) -> str:
        ids = self._ordered_ids("o_cloud")
        return ids[0] if ids else ""

    def _memo_of(self, model: WireModel, kind: str) -> dict[str, Message]:
        if kind == "resource":
            resource_memo = self._resource_memo.get(model.major)
            if resource_memo is None:
                resource_memo = self._resource_memo[model.major] = _ResourceMemo(model)
            return resource_memo.messages
        return self._memo.setdefault((model.major, kind), {})

    def _wire(self, model: WireModel, kind: str, object_id: str) -> Message | None:
        memo = self._memo_of(model, kind)
        wire = memo.get(object_id)
        if wire is not None:
            return wire
        if kind == "resource" and model.resource_parses_from_domain:
            held = self._objects[kind].get(object_id)
            resource = None if held is None else _resource_bytes(held)
            if resource is not None:
                return self._resource_memo[model.major].put_bytes(object_id, resource)
        domain = self._domain(kind, object_id)
        if domain is None:
            return None
        context = BuildContext(self._related, self._o_cloud_id(), self._service_uri)
        built = model.builders[kind](domain, context)
        if kind == "resource":
            return self._resource_memo[model.major].put(object_id, built)
        memo[object_id] = built
        return built

    def _domain(self, kind: str, object_id: str) -> Any | None:
        held = self._objects[kind].get(object_id)
        if held is None or kind != "resource":
            return held
        return _parse(kind, held)

    def domain(self, kind: str, object_id: str) -> Any | None:
        """The domain object itself (for checks the wire model cannot answer). A
        resource is parsed from its bytes on each call: a new object, the caller's own."""
        with self._lock:
            return self._domain(kind, object_id)

    def resources_named(self, name: str) -> list[Any]:
        """Every top-level domain resource with this name (index lookup)."""
        with self._lock:
            ids = _index_members(self._resource_index["name"], index_key(name))
            resources = self._objects["resource"]
            return [_parse("resource", resources[oid]) for oid in sorted(ids) if oid in resources]

    def alarm_clearing_type(self, alarm_definition_id: str) -> int | None:
        """The clearingType (domain ClearingType) of the alarm definition with this id in
        any alarm dictionary of the inventory; None if there is no such definition."""
        with self._lock:
            for dictionary in self._objects["alarm_dictionary"].values():
                for definition in dictionary.alarm_definition:
                    if definition.alarm_definition_id == alarm_definition_id:
                        return int(definition.clearing_type)
        return None

    def cloud_info(self, model: WireModel) -> Any | None:
        """The O-Cloud in `model`'s wire form; None until an adapter provides it."""
        with self._lock:
            o_cloud_id = self._o_cloud_id()
            return self._wire(model, "o_cloud", o_cloud_id) if o_cloud_id else None

    def iter_wire(
        self, model: WireModel, kind: str, ids: Sequence[str], chunk: int = 512
    ) -> Iterator[tuple[str, Any]]:
        """(id, wire object) for each of `ids` that still exists, in order. The lock is
        taken once per chunk, not per object: a full scan of 100,000 resources is
        dominated by per-object overhead otherwise, while other threads still get in."""
        for start in range(0, len(ids), chunk):
            with self._lock:
                memo = self._memo_of(model, kind)
                found = []
                for object_id in ids[start : start + chunk]:
                    wire = memo.get(object_id)
                    if wire is None:
                        wire = self._wire(model, kind, object_id)
                        if wire is None:
                            continue  # removed since the ids were taken
                    found.append((object_id, wire))
            yield from found

    def get(self, model: WireModel, kind: str, object_id: str) -> Any | None:
        with self._lock:
            return self._wire(model, kind, object_id)

    def ids(self, kind: str) -> list[str]:
        """Every id of a kind, sorted. The list is never mutated afterwards (a change
        replaces it), so callers may keep iterating it without the lock."""
        with self._lock:
            return self._ordered_ids(kind)

    def json_indexed_paths(self) -> list[tuple[str, ...]]:
        """The free-form resource paths indexed now, least recently used first."""
        with self._lock:
            return list(self._json_indexes)

    def resource_ids(
        self,
        pool_id: str,
        constraints: Mapping[str, set[str]] | None = None,
        json_prefilters: Sequence[tuple[tuple[str, ...], JsonPrefilter]] = (),
    ) -> list[str] | None:
        """Sorted ids of a pool's resources, narrowed by index constraints (indexed
        attribute -> acceptable index keys) and by prefilters (free-form path under
        extensions, and what one of a resource's leaf values there must pass).
        A path's index of values is built once filters have used it INDEX_AFTER_USES
        times; eq/in look their values up in it, the order operators bisect its values in
        order once it holds more than WALK_INDEX_UP_TO of them, and otherwise a term's
        predicate runs once per distinct value. Until it is ready, the extensions bytes are
        searched (by cont also once the index holds many distinct values); a term they
        cannot narrow scans the pool. None if the pool is unknown.
        A pre-selection: the caller's filter still decides. It relies on a wire
        resource's extensions being its domain extensions (resource_info copies them)."""
        searched: dict[tuple[str, ...], set[str] | None] = {}
        extensions_bytes = self._extensions_bytes
        for path, prefilter in json_prefilters:
            self._prepare_json_index(path)
            json_index = self._json_indexes.get(path)
            if extensions_bytes is not None and (
                json_index is None
                # cont (and an order term without the values in order) walks an index's
                # every distinct value: the bytes are searched faster once they are many
                # (100,000 unique serials: 21 against 4 ms).
                or (
                    prefilter.keys is None
                    and (prefilter.order is None or json_index.order is None)
                    and len(json_index.ids) > WALK_INDEX_UP_TO
                )
            ):
                # Outside the lock (a few ms over 100,000 resources): the bytes never
                # change, only which resources changed since (read under the lock below).
                # The pool's size, read without the lock, only bounds the search.
                pool_size = len(_pool_members(self._resource_index, pool_id))
                searched[path] = extensions_bytes.search(prefilter, pool_size // UNSELECTIVE)
        with self._lock:
            if pool_id not in self._objects["resource_pool"]:
                return None
            pool_members = _pool_members(self._resource_index, pool_id)
            ids = self._sorted_ids(_pool_key(pool_id), lambda: sorted(pool_members))
            candidates: list[set[str]] = []
            for attribute, keys in (constraints or {}).items():
                index = self._resource_index[attribute]
                candidates.append(set().union(*(_index_members(index, key) for key in keys)))
            for path, prefilter in json_prefilters:
                json_index = self._json_indexes.get(path)
                found: list[Collection[str]]
                if (
                    searched.get(path) is not None
                    and self._extensions_bytes is extensions_bytes
                    and extensions_bytes is not None
                ):
                    found = [searched[path] or set(), extensions_bytes.changed]
                elif json_index is not None:
                    if (
                        prefilter.order is not None
                        and json_index.order is not None
                        and json_index.order.count(*prefilter.order[1:]) * UNSELECTIVE > len(ids)
                    ):
                        continue  # unselective (below): each value has a resource at least
                    found = json_index.candidates(prefilter)
                else:
                    continue
                # An unselective term is cheaper scanned: a page of a filter most
                # resources pass ends after a few more objects than the page holds.
                if sum(map(len, found)) * UNSELECTIVE <= len(ids):
                    candidates.append(set().union(*found))
            if not candidates:
                return ids
            narrowed = min(candidates, key=len)
            narrowed.intersection_update(pool_members)
            # Sorting a few candidates beats walking the pool; walking keeps order otherwise.
            if len(narrowed) * 8 < len(ids):
                return sorted(narrowed)
            return [oid for oid in ids if oid in narrowed]
