"""The core's list path end to end: 100,000 resources in the real InventoryCache, served
by the real InventoryService over a real gRPC channel (query engine, index lookups, wire
building, selectors, protobuf serialization and the client's parsing all included).

Run: .venv/bin/python bench/core_list_bench.py [--resources N] [--repeat R]
         [--indexed-extensions extensions/rack,extensions/serial] [--message-lists]

All resources sit in ONE pool, the worst case for a pool-scoped list: an unindexed filter
must scan all N. Every figure is printed with its ratio to the baseline measured in the
same run (the first page of the unfiltered list), because the machine is shared and
noisy; "cpu ms" is this process's CPU time per call (server and client threads, from
time.process_time), which other processes' load does not inflate. "first ms" is the
first call, which also builds wire memos (cold before the full scan's case builds them
all, as after a start or a reload) and, for a filter on an extensions path no earlier case
used, searches the extensions bytes or scans (the path is indexed in the background on
its second use; the median is taken after that).
Target: a filtered page of 1,000
from 100,000 resources in under 50 ms. With --indexed-extensions the paths named are indexed
at load (NETWEAVE_INDEXED_EXTENSIONS), so a first use on them is indexed too.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
from o2ims.adapter.v1 import domain_pb2
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc

from adapters.contract import KINDS, object_key, serialize
from netweave import settings
from netweave.grpc_server import add_servicer, new_server
from server.cache import InventoryCache
from server.inventory import InventoryV1Servicer
from server.listing import Lister, ListingSettings
from server.query.filter import extensions_paths
from server.store import Snapshot

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_cpu import rss_mib

POOL = "9a6a0d5e-0000-4000-8000-000000000001"
WORDS = ["server", "rack", "edge", "regional", "gnss", "fec", "nic", "dimm", "cu", "du"]


def inventory(count: int, rng: random.Random) -> tuple[list[domain_pb2.InventoryObject], list[str]]:
    types = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(20)]
    objects = [
        domain_pb2.InventoryObject(o_cloud=domain_pb2.OCloud(o_cloud_id=str(uuid.uuid4()))),
        domain_pb2.InventoryObject(
            resource_pool=domain_pb2.ResourcePool(resource_pool_id=POOL, name="bench")
        ),
    ]
    for index in range(count):
        resource = domain_pb2.Resource(
            resource_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            resource_pool_id=POOL,
            resource_type_id=types[index % len(types)],
            name=f"host-{index:06d}",
            description=" ".join(rng.choices(WORDS, k=6))
            + (" needle" if index % 1000 == 0 else ""),
            global_asset_id=f"SN{index:08d}",
            tags=["bench"],
        )
        resource.extensions.update(
            {"cores": 32 + index % 64, "rack": f"R{index % 40}", "serial": f"S{index:07d}"}
        )
        for child in range(2):
            resource.elements.add(
                resource_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                resource_type_id=types[0],
                description=f"nic {child}",
                parent_id=resource.resource_id,
            )
        objects.append(domain_pb2.InventoryObject(resource=resource))
    return objects, types


def median_ms(
    call: Callable[[], int], repeat: int, settle: Callable[[], None]
) -> tuple[float, float, float, int]:
    """(first call ms, median ms, median CPU ms, items) of `call`, measured once the
    first two calls have warmed the memos and `settle` has waited for any index they
    started (a filter on extensions/... indexes the path on its second use)."""
    start = time.perf_counter()
    call()
    first = (time.perf_counter() - start) * 1000
    call()
    settle()
    times, cpu, size = [], [], 0
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        size = call()
        cpu.append((time.process_time() - start_cpu) * 1000)
        times.append((time.perf_counter() - start) * 1000)
    return first, statistics.median(times), statistics.median(cpu), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--indexed-extensions",
        default="",
        help="as NETWEAVE_INDEXED_EXTENSIONS: extensions paths indexed at load "
        "(e.g. extensions/rack,extensions/serial): their filters' first use is indexed too",
    )
    parser.add_argument(
        "--message-lists",
        action="store_true",
        help="answer lists with response messages the page's messages are copied into (as "
        "before server.listing.SerializedList), to compare",
    )
    args = parser.parse_args()
    declared = settings.INDEXED_EXTENSIONS.read_as(
        extensions_paths, {settings.INDEXED_EXTENSIONS.name: args.indexed_extensions}
    )

    rss_before = rss_mib()
    objects, types = inventory(args.resources, random.Random(7))
    stored: dict[str, dict[str, bytes]] = {kind: {} for kind in KINDS}
    for obj in objects:
        kind, object_id = object_key(obj)
        stored[kind][object_id] = serialize(obj)
    del objects
    cache = InventoryCache("https://bench", indexed_paths=declared)
    cache.load(Snapshot(version=1, last_event_id="1-0", objects=stored))
    del stored
    if declared:
        started = time.perf_counter()
        while not cache.json_indexes_idle():
            time.sleep(0.01)
        print(
            f"declared paths {', '.join('/'.join(path) for path in declared)}: indexed "
            f"{(time.perf_counter() - started) * 1000:.0f} ms after the load (in the background)"
        )

    server = new_server(4)
    # As the core answers lists (server/app.py), unless --message-lists.
    lister = Lister(
        ListingSettings(secret=b"bench", page_size=1000, serialized_lists=not args.message_lists)
    )
    add_servicer(
        v1_grpc.add_InventoryServiceServicer_to_server,
        InventoryV1Servicer(cache, "https://bench", lister),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 * 2**20)]
    )
    stub = v1_grpc.InventoryServiceStub(channel)

    def page(**query: object) -> int:
        request = v1.ListResourcesRequest(resource_pool_id=POOL, **query)  # type: ignore[arg-type]
        return len(stub.ListResources(request, timeout=30).resources)

    cases: list[tuple[str, Callable[[], int]]] = [
        ("baseline: first page, no filter", page),
        (
            "indexed eq resourceTypeId (1/20 match)",
            lambda: page(filter=[f"(eq,resourceTypeId,{types[3]})"]),
        ),
        ("indexed eq name (1 match)", lambda: page(filter=["(eq,name,host-050000)"])),
        # Before the full scan builds every wire memo: the first call finds them cold, as
        # the first filtered list after a start or a reload does.
        (
            "nested gt extensions/cores (1/64 match, cold memos)",
            lambda: page(filter=["(gt,extensions/cores,94)"]),
        ),
        (
            "unindexed cont description (~1/2 match)",
            lambda: page(filter=["(cont,description,rack)"]),
        ),
        (
            "unindexed cont description (1/1000 match, full scan)",
            lambda: page(filter=["(cont,description,needle)"]),
        ),
        (
            "nested eq extensions/rack (1/40 match)",
            lambda: page(filter=["(eq,extensions/rack,R7)"]),
        ),
        (
            "nested cont extensions/rack (1/40 match)",
            lambda: page(filter=["(cont,extensions/rack,R7)"]),
        ),
        (
            "nested eq extensions/serial (1 match, unique values)",
            lambda: page(filter=["(eq,extensions/serial,S0050000)"]),
        ),
        (
            "nested in extensions/serial (3 match, unique values)",
            lambda: page(filter=["(in,extensions/serial,S0000007,S0050000,S0099999)"]),
        ),
        (
            "nested cont extensions/serial (10 match, 100k distinct values)",
            lambda: page(filter=["(cont,extensions/serial,S005000)"]),
        ),
        (
            "nested lt extensions/serial (1/200 match, 100k distinct values)",
            lambda: page(filter=["(lt,extensions/serial,S0000500)"]),
        ),
        (
            "nested gte extensions/cores (1/2 match, scanned)",
            lambda: page(filter=["(gte,extensions/cores,64)"]),
        ),
        ("page with selector exclude_default", lambda: page(exclude_default=True)),
        ("page with selector fields=extensions", lambda: page(fields="extensions")),
    ]

    def settle() -> None:
        while not cache.json_indexes_idle():
            time.sleep(0.01)

    print(f"{args.resources} resources in one pool, page size 1000, median of {args.repeat}")
    baseline = None
    for label, call in cases:
        first, ms, cpu_ms, size = median_ms(call, args.repeat, settle)
        baseline = baseline or ms
        target = " (target < 50 ms)" if "nested" in label or "indexed" in label else ""
        print(
            f"  {label:<55} {ms:8.1f} ms  x{ms / baseline:5.2f}  cpu {cpu_ms:6.1f} ms  "
            f"first {first:7.1f} ms  items={size}{target}"
        )
    rss = rss_mib()
    indexed = ", ".join("/".join(path) for path in cache.json_indexed_paths())
    print(
        f"  RSS of the core holding the inventory: {rss:.0f} MiB (before: {rss_before:.0f} MiB; "
        f"indexed: {indexed})"
    )
    channel.close()
    server.stop(None)


if __name__ == "__main__":
    main()
