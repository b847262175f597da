"""`python -m adapters.static` as a real process, spoken to over a real gRPC channel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from o2ims.adapter.v1 import adapter_pb2, adapter_pb2_grpc, domain_pb2

from adapters.contract import KINDS, ObjectKey, object_key, serialize
from adapters.static.loader import load_inventory
from devstack.processes import ManagedProcess, free_port, metric_sum, wait_until

ADDED = adapter_pb2.EVENT_TYPE_ADDED
MODIFIED = adapter_pb2.EVENT_TYPE_MODIFIED
DELETED = adapter_pb2.EVENT_TYPE_DELETED
SYNCED = adapter_pb2.EVENT_TYPE_SYNCED
COMMIT = adapter_pb2.EVENT_TYPE_COMMIT
UNKNOWN_POOL = "99999999-0000-4000-8000-000000000009"


@dataclass
class RunningAdapter:
    process: ManagedProcess
    port: int
    inventory: Path
    stub: adapter_pb2_grpc.AdapterServiceStub
    ops_port: int = 0

    def log_records(self, event: str) -> list[dict[str, Any]]:
        return [record for record in _records(self.process.log_path) if record["event"] == event]

    def list_objects(self) -> dict[ObjectKey, bytes]:
        """The served objects by key; asserts they come in kind, then id, order."""
        response = self.stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=5)
        keys = [object_key(obj) for obj in response.objects]
        assert keys == sorted(keys, key=lambda key: (KINDS.index(key[0]), key[1]))
        return by_key(response.objects)

    def watch_until_synced(self, timeout: float) -> tuple[Any, int]:
        """Open a watch with replay; returns the call (past SYNCED) and the replay size."""
        call = self.stub.WatchObjects(
            adapter_pb2.WatchObjectsRequest(send_initial_objects=True), timeout=timeout
        )
        for replayed, event in enumerate(call):
            if event.type == SYNCED:
                return call, replayed
            assert event.type == ADDED
        raise AssertionError("the watch ended before SYNCED")


def by_key(objects: Iterable[domain_pb2.InventoryObject]) -> dict[ObjectKey, bytes]:
    return {object_key(obj): serialize(obj) for obj in objects}


def _records(log_path: Path) -> list[dict[str, Any]]:
    records = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


@pytest.fixture
def adapter(inventory_copy: Path, tmp_path: Path, repo_root: Path) -> Iterator[RunningAdapter]:
    port, ops_port = free_port(), free_port()
    process = ManagedProcess(
        "adapter-static",
        [
            *(sys.executable, "-m", "adapters.static"),
            *("--inventory", str(inventory_copy), "--host", "127.0.0.1", "--port", str(port)),
            *("--ops-port", str(ops_port)),
        ],
        tmp_path / "adapter.log",
        cwd=repo_root,
    ).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        running = RunningAdapter(
            process, port, inventory_copy, adapter_pb2_grpc.AdapterServiceStub(channel), ops_port
        )

        def started() -> bool:
            process.require_alive()
            return bool(running.log_records("adapter_started"))

        wait_until(started, timeout=20, what="adapter_started in the adapter log")
        process.require_alive()
        assert running.log_records("adapter_started")[0]["port"] == port
        yield running
    finally:
        channel.close()
        process.stop()


def write_atomically(path: Path, text: str) -> None:
    """Save the way most editors do: a temporary file renamed over the original."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_in_place(path: Path, text: str) -> None:
    with path.open("w") as file:
        file.write(text)


def test_list_objects_serves_every_object_of_the_file(adapter: RunningAdapter) -> None:
    assert adapter.list_objects() == by_key(load_inventory(adapter.inventory))
    info = adapter.stub.GetAdapterInfo(adapter_pb2.GetAdapterInfoRequest(), timeout=5)
    assert (info.name, info.backend, info.source) == (
        "static",
        "static",
        str(adapter.inventory.resolve()),
    )


def test_edits_arrive_as_modified_added_and_deleted_within_a_second(
    adapter: RunningAdapter,
) -> None:
    document = yaml.safe_load(adapter.inventory.read_text())
    resources = document["resources"]
    modified_id = resources[0]["resourceId"]
    resources[0]["description"] = "Dell PowerEdge XR11 vDU host, moved to rack A2 U11"
    deleted_id = resources.pop()["resourceId"]
    added_id = str(uuid.uuid4())
    resources.append({**resources[1], "resourceId": added_id, "name": "ber-fe01-du99"})
    resources[-1].pop("elements", None)  # its elements' ids belong to resources[1]

    call, replayed = adapter.watch_until_synced(timeout=10)
    assert replayed == len(load_inventory(adapter.inventory))
    started = time.monotonic()
    write_atomically(adapter.inventory, yaml.safe_dump(document, sort_keys=False))
    events = [next(call), next(call), next(call)]
    elapsed = time.monotonic() - started
    commit = next(call)  # the one edit is one change set
    call.cancel()

    assert elapsed < 1.0
    changes = {(event.type, object_key(event.object)[1]) for event in events}
    assert changes == {(MODIFIED, modified_id), (ADDED, added_id), (DELETED, deleted_id)}
    assert events[-1].type == DELETED  # removals come after additions
    modified = next(event for event in events if event.type == MODIFIED)
    assert modified.object.resource.description.endswith("moved to rack A2 U11")
    assert len({event.revision for event in events}) == 1
    assert (commit.type, commit.revision) == (COMMIT, events[0].revision)
    assert adapter.list_objects() == by_key(load_inventory(adapter.inventory))
    applied = adapter.log_records("inventory_applied")
    assert [(r["added"], r["modified"], r["deleted"]) for r in applied] == [(1, 1, 1)]


def test_a_broken_edit_is_logged_and_the_last_good_inventory_stays(
    adapter: RunningAdapter,
) -> None:
    good_text = adapter.inventory.read_text()
    good_objects = adapter.list_objects()
    lines = good_text.splitlines(keepends=True)
    broken_index = max(i for i, line in enumerate(lines) if line.startswith("    resourcePoolId:"))
    lines[broken_index] = f"    resourcePoolId: {UNKNOWN_POOL}\n"

    call, _ = adapter.watch_until_synced(timeout=2.0)
    write_in_place(adapter.inventory, "".join(lines))
    wait_until(
        lambda: bool(adapter.log_records("inventory_rejected")), 3, "inventory_rejected logged"
    )
    # The watch's deadline runs out with no event: nothing of the bad edit was served.
    with pytest.raises(grpc.RpcError) as raised:
        next(call)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert adapter.list_objects() == good_objects
    rejected = adapter.log_records("inventory_rejected")
    assert len(rejected) == 1  # once per bad edit, not once per poll
    assert rejected[0]["file"] == str(adapter.inventory)
    assert rejected[0]["line"] == broken_index + 1
    assert f"names unknown resourcePoolId '{UNKNOWN_POOL}'" in rejected[0]["problem"]
    assert rejected[0]["level"] == "error"

    fixed = good_text.replace("row D rack 7", "row D rack 7 (relabelled)")
    assert fixed != good_text
    call, _ = adapter.watch_until_synced(timeout=5)
    write_atomically(adapter.inventory, fixed)
    event = next(call)
    call.cancel()
    assert event.type == MODIFIED
    assert event.object.resource.description.endswith("(relabelled)")


def test_the_ops_endpoint_is_ready_degraded_by_a_refused_edit_and_has_metrics(
    adapter: RunningAdapter,
) -> None:
    ops = f"http://127.0.0.1:{adapter.ops_port}"
    ready = httpx.get(f"{ops}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok"
    text = httpx.get(f"{ops}/metrics", timeout=5).text
    assert metric_sum(text, "o2ims_ready") == 1
    assert metric_sum(text, "o2ims_build_info") == 1
    assert metric_sum(text, "process_resident_memory_bytes") > 0

    write_in_place(adapter.inventory, adapter.inventory.read_text() + "\nresourcePools: [\n")

    def degraded() -> bool:
        body = httpx.get(f"{ops}/readyz", timeout=5).json()
        return bool(body["status"] == "degraded")

    wait_until(degraded, 5, "/readyz degraded by the refused edit")
    body = httpx.get(f"{ops}/readyz", timeout=5)
    assert body.status_code == 200  # still serving the last good inventory
    assert "serving the last good inventory" in body.json()["checks"]["backend"]["reason"]


def test_invalid_inventory_at_start_up_exits_2_naming_the_line(
    inventory_copy: Path, repo_root: Path
) -> None:
    lines = inventory_copy.read_text().splitlines(keepends=True)
    bad_index = next(i for i, line in enumerate(lines) if "resourceKind: PHYSICAL" in line)
    lines[bad_index] = lines[bad_index].replace("PHYSICAL", "SOLID")
    inventory_copy.write_text("".join(lines))

    result = subprocess.run(
        [sys.executable, "-m", "adapters.static", "--port", str(free_port())],
        cwd=repo_root,
        env={**os.environ, "NETWEAVE_INVENTORY": str(inventory_copy)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"{inventory_copy}:{bad_index + 1}: resource type '" in result.stderr
    assert "resourceKind 'SOLID' is not one of PHYSICAL, LOGICAL, UNDEFINED" in result.stderr


def test_sigterm_stops_promptly_with_exit_0_even_with_a_watch_open(
    adapter: RunningAdapter,
) -> None:
    call, _ = adapter.watch_until_synced(timeout=10)
    started = time.monotonic()
    adapter.process.signal(signal.SIGTERM)
    assert adapter.process.proc is not None
    exit_code = adapter.process.proc.wait(timeout=10)
    elapsed = time.monotonic() - started

    assert exit_code == 0, adapter.process.log_tail()
    # Open watches are ended at once rather than waited on for the shutdown grace.
    assert elapsed < 1.5
    with pytest.raises(grpc.RpcError) as raised:
        next(call)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert adapter.log_records("adapter_stopped")
