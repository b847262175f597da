"""Alarms raised, changed and cleared by editing the inventory file, as a watcher of the
static adapter's real gRPC WatchObjects stream sees them; invalid edits keep the last
good alarms and say why."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from google.protobuf import json_format
from o2ims.adapter.v1 import adapter_pb2, adapter_pb2_grpc, domain_pb2
from structlog.testing import CapturingLogger

from adapters.contract import object_key
from adapters.publisher import (
    PROBLEMS_METADATA_KEY,
    AdapterServicer,
    ObjectSetPublisher,
    create_adapter_server,
    decode_problems,
)
from adapters.static.server import StaticAdapter
from devstack.processes import wait_until

ADDED = adapter_pb2.EVENT_TYPE_ADDED
MODIFIED = adapter_pb2.EVENT_TYPE_MODIFIED
DELETED = adapter_pb2.EVENT_TYPE_DELETED
COMMIT = adapter_pb2.EVENT_TYPE_COMMIT
SYNCED = adapter_pb2.EVENT_TYPE_SYNCED

# In examples/ocloud.yaml: ber-fe01-du02, a pserver, and its dictionary's Fan failure.
SERVER = "3e0ed6ab-8fba-4c3e-82a1-54f034d7c71e"
FAN_FAILURE = "e80babbf-72de-4650-a4b5-c7874b0a841a"
ALARM = "7a1e0000-0000-4000-8000-000000000001"
UNKNOWN = "99999999-0000-4000-8000-000000000009"
# The example's own alarms.
PSU_ALARM = "5c4072be-6338-478e-b520-7c3334d1ebba"
FAN_ALARM = "b5b4e25b-ef94-494b-b1b9-b973062ff117"


def fan_alarm(severity: str, resource_id: str = SERVER, extensions: str = "{fan: Fan2}") -> str:
    return (
        f"  - alarmId: {ALARM}\n"
        f"    resourceId: {resource_id}\n"
        f"    alarmDefinitionId: {FAN_FAILURE}\n"
        f"    perceivedSeverity: {severity}\n"
        f"    extensions: {extensions}\n"
    )


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@dataclass
class Watched:
    """A static adapter behind a real gRPC server, and one watch on it from the start."""

    inventory: Path
    stub: adapter_pb2_grpc.AdapterServiceStub
    events: list[adapter_pb2.WatchObjectsResponse]
    log: CapturingLogger

    def changes(self) -> list[tuple[int, str, str]]:
        """(event type, kind, id) of every change since SYNCED; COMMIT as (COMMIT, "", "")."""
        after_sync = self.events[[e.type for e in self.events].index(SYNCED) + 1 :]
        return [
            (e.type, *object_key(e.object)) if e.type != COMMIT else (COMMIT, "", "")
            for e in after_sync
        ]

    def wait_for_changes(self, count: int, what: str) -> None:
        wait_until(lambda: len(self.changes()) >= count, timeout=5, what=what)

    def applied(self) -> list[dict[str, Any]]:
        return [c.kwargs for c in self.log.calls if c.kwargs.get("event") == "inventory_applied"]

    def problems(self) -> list[str]:
        _, call = self.stub.GetAdapterInfo.with_call(adapter_pb2.GetAdapterInfoRequest(), timeout=5)
        trailer = dict(call.trailing_metadata() or ())
        encoded = trailer.get(PROBLEMS_METADATA_KEY)
        return decode_problems(encoded) if encoded is not None else []

    def alarms(self) -> dict[str, domain_pb2.ActiveAlarm]:
        response = self.stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=5)
        return {obj.alarm.alarm_id: obj.alarm for obj in response.objects if obj.HasField("alarm")}


@pytest.fixture
def watched(inventory_copy: Path) -> Iterator[Watched]:
    publisher = ObjectSetPublisher()
    log = CapturingLogger()
    adapter = StaticAdapter(
        inventory_copy,
        publisher,
        structlog.wrap_logger(log, processors=[]),
        poll_interval=0.05,
        settle_interval=0.0,
    )
    adapter.load()
    servicer = AdapterServicer("static", "static", str(inventory_copy), publisher)
    server, port = create_adapter_server(servicer)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = adapter_pb2_grpc.AdapterServiceStub(channel)
    call = stub.WatchObjects(adapter_pb2.WatchObjectsRequest(send_initial_objects=True))
    events: list[adapter_pb2.WatchObjectsResponse] = []

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled at teardown
            events.extend(call)

    reader = threading.Thread(target=read, name="watch-reader", daemon=True)
    reader.start()
    adapter.start()
    try:
        wait_until(lambda: SYNCED in [e.type for e in events], timeout=5, what="SYNCED")
        yield Watched(inventory_copy, stub, events, log)
    finally:
        adapter.stop()
        call.cancel()
        channel.close()
        server.stop(grace=None)
        reader.join(timeout=5)


def test_the_watch_replays_the_examples_alarms_with_the_inventory(watched: Watched) -> None:
    replayed = watched.events[: [e.type for e in watched.events].index(SYNCED)]
    alarms = [e.object.alarm for e in replayed if e.object.HasField("alarm")]
    assert {alarm.alarm_id for alarm in alarms} == {PSU_ALARM, FAN_ALARM}
    # Alarms come after the resources they are about.
    kinds = [e.object.WhichOneof("kind") for e in replayed]
    assert kinds.index("alarm") > max(i for i, kind in enumerate(kinds) if kind == "resource")


def test_adding_editing_and_removing_an_entry_raises_changes_and_clears_the_alarm(
    watched: Watched,
) -> None:
    example = watched.inventory.read_text()
    key = ("alarm", ALARM)

    write_atomically(watched.inventory, example + fan_alarm("MINOR"))
    watched.wait_for_changes(2, "the alarm raised")
    assert watched.changes() == [(ADDED, *key), (COMMIT, "", "")]
    raised = watched.events[-2].object.alarm
    assert raised.perceived_severity == domain_pb2.ALARM_SEVERITY_MINOR
    assert raised.resource_type_id == "5c459001-2644-4721-9365-a280dfca5954"  # pserver
    assert raised.probable_cause_id == FAN_FAILURE

    changed = example + fan_alarm("0", extensions="{fan: Fan2, rpm: 0}")
    write_atomically(watched.inventory, changed)
    watched.wait_for_changes(4, "the alarm changed")
    assert watched.changes()[2:] == [(MODIFIED, *key), (COMMIT, "", "")]
    modified = watched.events[-2].object.alarm
    assert modified.perceived_severity == domain_pb2.ALARM_SEVERITY_CRITICAL
    assert json_format.MessageToDict(modified.extensions) == {"fan": "Fan2", "rpm": 0}

    # The same alarms written differently change nothing.
    applied = len(watched.applied())
    respelled = changed.replace("perceivedSeverity: 0", "perceivedSeverity: CRITICAL")
    write_atomically(watched.inventory, respelled + "# nothing new\n")
    wait_until(lambda: len(watched.applied()) > applied, timeout=5, what="the re-read")
    last = watched.applied()[-1]
    assert (last["added"], last["modified"], last["deleted"]) == (0, 0, 0)
    assert len(watched.changes()) == 4

    write_atomically(watched.inventory, example)
    watched.wait_for_changes(6, "the alarm cleared")
    assert watched.changes()[4:] == [(DELETED, *key), (COMMIT, "", "")]
    assert set(watched.alarms()) == {PSU_ALARM, FAN_ALARM}


def test_an_invalid_edit_keeps_the_last_good_alarms_and_names_the_line(
    watched: Watched,
) -> None:
    example = watched.inventory.read_text()
    write_atomically(watched.inventory, example + fan_alarm("MAJOR"))
    watched.wait_for_changes(2, "the alarm raised")
    good = watched.alarms()
    assert set(good) == {PSU_ALARM, FAN_ALARM, ALARM}

    # Every alarm gone but one entry, which names a resource the file does not have:
    # served, this edit would clear three alarms.
    without_alarms = example[: example.index("\nalarms:\n") + 1]
    broken = without_alarms + "alarms:\n" + fan_alarm("MAJOR", resource_id=UNKNOWN)
    write_atomically(watched.inventory, broken)
    line = broken.splitlines().index(f"    resourceId: {UNKNOWN}") + 1
    expected = (
        f"{watched.inventory}:{line}: alarm '{ALARM}' names unknown resourceId '{UNKNOWN}' "
        "(serving the last good inventory)"
    )
    wait_until(lambda: watched.problems() == [expected], timeout=5, what="the problem reported")
    assert watched.alarms() == good

    # A bad severity is refused the same way.
    bad_severity = example + fan_alarm("SEVERE")
    write_atomically(watched.inventory, bad_severity)
    line = bad_severity.splitlines().index("    perceivedSeverity: SEVERE") + 1
    wait_until(
        lambda: any(
            f"{watched.inventory}:{line}: alarm '{ALARM}': perceivedSeverity 'SEVERE'" in problem
            for problem in watched.problems()
        ),
        timeout=5,
        what="the bad severity reported",
    )
    assert watched.alarms() == good
    assert watched.changes() == [(ADDED, "alarm", ALARM), (COMMIT, "", "")]

    # Fixed, the edit applies and the problem is gone.
    write_atomically(watched.inventory, without_alarms)
    watched.wait_for_changes(6, "the alarms cleared")
    assert sorted(watched.changes()[2:5]) == sorted(
        [(DELETED, "alarm", alarm_id) for alarm_id in (PSU_ALARM, FAN_ALARM, ALARM)]
    )
    assert watched.changes()[5] == (COMMIT, "", "")
    assert watched.problems() == []
    assert watched.alarms() == {}
