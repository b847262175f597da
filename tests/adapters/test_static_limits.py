"""What the static adapter refuses to read or send: oversized, deeply nested or
alias-expanded files, files that are not regular, objects over the message limit, and
files caught half-written. Real files, a real publisher and a real gRPC adapter server."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import grpc
import pytest
from o2ims.adapter.v1 import adapter_pb2, adapter_pb2_grpc, domain_pb2

from adapters.publisher import (
    PROBLEMS_METADATA_KEY,
    AdapterServicer,
    ObjectSetPublisher,
    create_adapter_server,
    decode_problems,
)
from adapters.static.loader import InventoryFileError, load_inventory, parse_inventory
from adapters.static.server import StaticAdapter
from devstack.processes import wait_until

POOL_ID = "7d1d5a2a-5a47-4c8e-9f0b-8d5a3e3f1c11"
RESOURCE_ID = "f6a1b0c2-3d4e-4f50-8a6b-7c8d9e0f1a2b"


def with_o_cloud_extensions(inventory: Path, block: list[str]) -> tuple[str, int]:
    """The inventory's text with `block` (lines under the oCloud's `extensions:`, without
    indentation) added, and the 1-based line where the block starts."""
    lines = inventory.read_text().splitlines()
    at = lines.index("  extensions:", lines.index("oCloud:")) + 1
    lines[at:at] = [f"    {line}" for line in block]
    return "\n".join(lines) + "\n", at + 1


def alias_bomb(levels: int = 10, width: int = 9, words: int = 100) -> list[str]:
    """'Billion laughs': each level lists the previous one `width` times (about 31 KB)."""
    block = [f"lol0: &lol0 [{', '.join(['lol' * 100] * words)}]"]
    for level in range(1, levels):
        block.append(f"lol{level}: &lol{level} [{', '.join([f'*lol{level - 1}'] * width)}]")
    return block


def test_a_file_over_the_size_limit_is_refused_naming_the_limit(inventory_copy: Path) -> None:
    size = inventory_copy.stat().st_size
    with pytest.raises(InventoryFileError) as raised:
        load_inventory(inventory_copy, max_file_bytes=size - 1)
    assert str(raised.value) == (
        f"{inventory_copy}: the file is {size} bytes, over the limit of {size - 1} "
        "(--max-file-bytes)"
    )
    assert load_inventory(inventory_copy, max_file_bytes=size)


def test_nesting_deeper_than_the_limit_is_refused_at_its_line(inventory_copy: Path) -> None:
    block = [f"{'  ' * level}k{level}:" for level in range(500)]
    text, first = with_o_cloud_extensions(inventory_copy, block)
    inventory_copy.write_text(text)
    with pytest.raises(InventoryFileError) as raised:
        load_inventory(inventory_copy)
    # root, oCloud, extensions, then k0's mapping is level 4: k61's mapping is level 65.
    assert raised.value.line == first + 61
    assert str(raised.value).startswith(f"{inventory_copy}:{first + 61}: ")
    assert raised.value.problem == "nested deeper than 64 levels"


def test_deep_flow_nesting_is_refused_at_its_line_not_as_a_recursion_error(
    inventory_copy: Path,
) -> None:
    text, first = with_o_cloud_extensions(inventory_copy, ["deep: " + "[" * 100_000])
    inventory_copy.write_text(text)
    with pytest.raises(InventoryFileError) as raised:
        load_inventory(inventory_copy)
    assert str(raised.value) == f"{inventory_copy}:{first}: nested deeper than 64 levels"


def test_nesting_within_the_limit_is_read(inventory_copy: Path) -> None:
    # 30 levels: protobuf's own limit on a Struct's depth (100 messages) is next.
    block = [f"{'  ' * level}k{level}:" for level in range(30)]
    text, _ = with_o_cloud_extensions(inventory_copy, block)
    inventory_copy.write_text(text)
    [o_cloud] = [obj for obj in load_inventory(inventory_copy) if obj.HasField("o_cloud")]
    assert "k0" in o_cloud.o_cloud.extensions


def test_an_alias_bomb_is_refused_at_its_line_in_well_under_a_second(
    inventory_copy: Path,
) -> None:
    bomb = alias_bomb()
    text, first = with_o_cloud_extensions(inventory_copy, bomb)
    assert 30_000 < len("\n".join(bomb)) < 32_000
    inventory_copy.write_text(text)
    started = time.monotonic()
    with pytest.raises(InventoryFileError) as raised:
        load_inventory(inventory_copy)
    assert time.monotonic() - started < 1.0
    match = re.fullmatch(
        rf"{re.escape(str(inventory_copy))}:(\d+): aliases expand the document by more than "
        r"100000 nodes \(at alias \*lol\d\); write the data out or share less of it",
        str(raised.value),
    )
    assert match is not None, str(raised.value)
    assert first < int(match.group(1)) < first + len(bomb)


def test_a_modest_use_of_aliases_is_read(inventory_copy: Path) -> None:
    text, _ = with_o_cloud_extensions(inventory_copy, alias_bomb(levels=3, words=2))
    inventory_copy.write_text(text)
    [o_cloud] = [obj for obj in load_inventory(inventory_copy) if obj.HasField("o_cloud")]
    assert len(o_cloud.o_cloud.extensions.fields["lol2"].list_value.values) == 9


def test_an_alias_to_itself_is_refused_at_its_line(inventory_copy: Path) -> None:
    text, first = with_o_cloud_extensions(inventory_copy, ["loop: &loop [1, *loop]"])
    inventory_copy.write_text(text)
    with pytest.raises(InventoryFileError) as raised:
        load_inventory(inventory_copy)
    assert str(raised.value) == f"{inventory_copy}:{first}: alias *loop refers to itself"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "inventory.yaml"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_inventory(fifo)
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():  # unblock it before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("load_inventory blocked on a FIFO")
    [error] = outcome
    assert isinstance(error, InventoryFileError)
    assert str(error) == f"{fifo}: a FIFO: the inventory must be a regular file"


def test_a_device_is_refused() -> None:
    with pytest.raises(InventoryFileError) as raised:
        load_inventory("/dev/zero")
    assert (
        str(raised.value) == "/dev/zero: not a regular file: the inventory must be a regular file"
    )


def _pool(description: str = "") -> domain_pb2.InventoryObject:
    return domain_pb2.InventoryObject(
        resource_pool=domain_pb2.ResourcePool(resource_pool_id=POOL_ID, description=description)
    )


def _resource(description: str) -> domain_pb2.InventoryObject:
    return domain_pb2.InventoryObject(
        resource=domain_pb2.Resource(
            resource_id=RESOURCE_ID, resource_pool_id=POOL_ID, description=description
        )
    )


def test_an_object_over_the_size_limit_is_refused_by_kind_and_id_and_the_rest_applied() -> None:
    publisher = ObjectSetPublisher(max_object_bytes=1000)
    publisher.replace([_pool("first"), _resource("small")])
    events = publisher.replace([_pool("second"), _resource("x" * 2000)])

    assert [(event.type, event.object.WhichOneof("kind")) for event in events] == [
        (adapter_pb2.EVENT_TYPE_MODIFIED, "resource_pool")
    ]
    [refused] = publisher.refused
    assert (refused.kind, refused.object_id, refused.held_previous) == (
        "resource",
        RESOURCE_ID,
        True,
    )
    assert publisher.problems == [
        f"resource '{RESOURCE_ID}' is {_resource('x' * 2000).ByteSize()} bytes serialized, "
        "over the 1000-byte limit of one object; its last published state is still served"
    ]
    _, objects = publisher.snapshot()
    assert [obj.resource.description for obj in objects if obj.HasField("resource")] == ["small"]

    events = publisher.replace([_pool("second"), _resource("fixed")])
    assert [event.object.resource.description for event in events] == ["fixed"]
    assert publisher.problems == []


def test_a_new_object_over_the_limit_is_not_published_at_all() -> None:
    publisher = ObjectSetPublisher(max_object_bytes=1000)
    events = publisher.replace([_pool(), _resource("x" * 2000)])
    assert [event.object.WhichOneof("kind") for event in events] == ["resource_pool"]
    assert publisher.problems[0].endswith(
        "over the 1000-byte limit of one object; it is not served"
    )


def test_get_adapter_info_carries_the_problems_in_its_trailer() -> None:
    publisher = ObjectSetPublisher(max_object_bytes=1000)
    publisher.replace([_pool(), _resource("x" * 2000)])
    publisher.set_source_problem("inventory.yaml:3: broken (serving the last good inventory)")
    server, port = create_adapter_server(AdapterServicer("static", "static", "x", publisher))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = adapter_pb2_grpc.AdapterServiceStub(channel)
            _, call = stub.GetAdapterInfo.with_call(adapter_pb2.GetAdapterInfoRequest(), timeout=5)
            trailer = dict(call.trailing_metadata() or ())
            assert decode_problems(trailer[PROBLEMS_METADATA_KEY]) == publisher.problems
            publisher.set_source_problem("")
            publisher.replace([_pool()])
            _, call = stub.GetAdapterInfo.with_call(adapter_pb2.GetAdapterInfoRequest(), timeout=5)
            assert PROBLEMS_METADATA_KEY not in dict(call.trailing_metadata() or ())
    finally:
        server.stop(grace=None)


def _watch(publisher: ObjectSetPublisher) -> list[adapter_pb2.WatchObjectsResponse]:
    """Every event published from now on, collected by a background reader."""
    subscription = publisher.subscribe(send_initial=False)
    received: list[adapter_pb2.WatchObjectsResponse] = []
    threading.Thread(target=lambda: received.extend(subscription), daemon=True).start()
    return received


def test_a_file_written_in_two_halves_is_applied_whole_once_it_settles(
    inventory_copy: Path,
) -> None:
    publisher = ObjectSetPublisher()
    adapter = StaticAdapter(inventory_copy, publisher, poll_interval=0.05, settle_interval=0.5)
    original = inventory_copy.read_text()
    time.sleep(0.5)  # the copy is fresh: let it settle before the first load
    adapter.load()
    received = _watch(publisher)
    edited = original.replace("row D rack 7", "row D rack 8")
    assert edited != original
    split = edited.index("\n  - resourceId:", len(edited) // 2) + 1
    half = parse_inventory(edited[:split].encode(), "first half")
    assert 0 < len(half) < len(load_inventory(inventory_copy))
    adapter.start()
    try:
        with inventory_copy.open("w") as file:
            file.write(edited[:split])
            file.flush()
            # The first half alone is a valid, smaller inventory: served, it would delete.
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                assert publisher.revision == "1"
                time.sleep(0.02)
            file.write(edited[split:])
        wait_until(lambda: publisher.revision == "2", timeout=5, what="the whole edit applied")
        time.sleep(0.3)
    finally:
        adapter.stop()
    assert [event.type for event in received] == [
        adapter_pb2.EVENT_TYPE_MODIFIED,
        adapter_pb2.EVENT_TYPE_COMMIT,
    ]
    assert received[0].object.resource.description.endswith("row D rack 8")


def test_a_file_replaced_by_rename_is_applied_without_the_settle_wait(
    inventory_copy: Path,
) -> None:
    publisher = ObjectSetPublisher()
    adapter = StaticAdapter(inventory_copy, publisher, settle_interval=0.5)
    time.sleep(0.5)
    adapter.load()
    adapter._settle_interval = 60.0  # an in-place edit would now wait a minute
    temporary = inventory_copy.with_name("inventory.tmp")
    temporary.write_text(inventory_copy.read_text().replace("row D rack 7", "row D rack 9"))
    os.replace(temporary, inventory_copy)
    adapter.check_for_changes()
    assert publisher.revision == "2"


def test_an_unreadable_file_is_a_problem_until_it_is_back(inventory_copy: Path) -> None:
    publisher = ObjectSetPublisher()
    adapter = StaticAdapter(inventory_copy, publisher, settle_interval=0.0)
    adapter.load()
    text = inventory_copy.read_text()
    inventory_copy.unlink()
    os.mkfifo(inventory_copy)
    adapter.check_for_changes()
    assert publisher.problems == [
        f"{inventory_copy}: a FIFO: the inventory must be a regular file "
        "(serving the last good inventory)"
    ]
    assert publisher.revision == "1"
    inventory_copy.unlink()
    inventory_copy.write_text(text)
    adapter.check_for_changes()
    assert publisher.problems == []
    assert publisher.revision == "1"
