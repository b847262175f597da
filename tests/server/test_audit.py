"""The audit trail is written off the calls' threads (server/auth/audit.py) and loses no
record: not under load, not when its stream stalls and the queue fills, not when the core
stops on SIGTERM with calls in flight."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from o2ims.subscriptions.v1 import subscriptions_pb2 as sub
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as sub_grpc

from devstack.processes import wait_until
from netweave.headers import CORRELATION_ID_HEADER, REQUEST_ID_HEADER
from server.auth.audit import AuditLog, Deferred
from tests.core_process import CoreProcess, json_lines


def test_every_record_of_many_threads_is_written_once_in_each_threads_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    threads, per_thread = 8, 2_000

    def call(thread: int) -> None:
        for number in range(per_thread):
            audit.write({"request_id": f"{thread}-{number}", "thread": thread, "n": number})

    workers = [threading.Thread(target=call, args=(thread,)) for thread in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    audit.close()

    records = json_lines(path)
    assert len(records) == threads * per_thread
    assert len({record["request_id"] for record in records}) == threads * per_thread
    for thread in range(threads):
        numbers = [record["n"] for record in records if record["thread"] == thread]
        assert numbers == list(range(per_thread))
    first = records[0]
    assert (first["audit"], first["source"]) == ("o2ims", "core")
    assert list(first)[:3] == ["ts", "audit", "source"]
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2026-01-01T00:00:00.000Z")


def test_records_reach_the_stream_soon_after_their_call(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    try:
        audit.write({"request_id": "soon"})
        wait_until(lambda: "soon" in path.read_text(), 2, "the record on disk")
    finally:
        audit.close()


class StallingStream(io.StringIO):
    """A stream that takes nothing until `release` is set (a hung disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait()
        return super().write(text)


def test_a_full_queue_makes_callers_wait_and_loses_nothing(tmp_path: Path) -> None:
    audit = AuditLog(str(tmp_path / "unused.jsonl"), queue_limit=50)
    stream = StallingStream()
    audit._stream = stream
    written = threading.Event()

    def call() -> None:
        for number in range(500):
            audit.write({"n": number})
        written.set()

    caller = threading.Thread(target=call)
    caller.start()
    # The stream takes nothing: the caller fills the queue and waits for room.
    assert not written.wait(0.5)
    stream.release.set()
    assert written.wait(10)
    caller.join()
    audit.close()
    numbers = [json.loads(line)["n"] for line in stream.getvalue().splitlines()]
    assert numbers == list(range(500))


def test_a_record_after_close_is_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    audit.write({"n": 1})
    audit.close()
    audit.write({"n": 2})
    assert [record["n"] for record in json_lines(path)] == [1, 2]


class _Members(Deferred):
    __slots__ = ("text",)

    def __init__(self, text: str | None) -> None:
        self.text = text

    def members(self) -> str:
        if self.text is None:
            raise KeyError("gone")
        return self.text


def test_deferred_records_are_encoded_by_the_writer_and_a_broken_one_loses_no_other(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    audit.write(_Members('"n":1'))
    audit.write(_Members(None))
    audit.write(_Members('"n":3,"note":"\\u00e9"'))
    audit.write({"n": 4})
    audit.close()
    records = json_lines(path)
    assert [record.get("n") for record in records] == [1, None, 3, 4]
    assert records[1]["record"] == "[unrecordable: KeyError]"
    assert records[2]["note"] == "\u00e9"
    assert all(list(record)[:3] == ["ts", "audit", "source"] for record in records)


def test_sigterm_under_load_writes_the_record_of_every_call_served(core: CoreProcess) -> None:
    assert core.channel is not None
    stub = sub_grpc.SubscriptionServiceStub(core.channel)
    request = sub.ListSubscriptionsRequest(api_version="v1")
    served: list[str] = []  # request ids of the calls the core's access control handled
    stop = threading.Event()
    wait_until(lambda: _served_by_core(stub, request, str(uuid.uuid4())) is not None, 20, "serving")

    def load() -> None:
        while not stop.is_set():
            request_id = uuid.uuid4().hex
            outcome = _served_by_core(stub, request, request_id)
            if outcome is None:
                return  # the core is going away
            if outcome:
                served.append(request_id)

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(served) >= 300, 30, "calls served")
    core.signal(signal.SIGTERM)
    assert core.process is not None
    core.process.wait(20)
    stop.set()
    for thread in threads:
        thread.join(10)

    audited = {record["request_id"] for record in core.audit()}
    missing = [request_id for request_id in served if request_id not in audited]
    assert len(served) >= 300
    assert not missing, f"{len(missing)} of {len(served)} served calls have no audit record"
    assert len(core.audit()) == len(audited)  # and none twice


def _served_by_core(stub: Any, request: Any, request_id: str) -> bool | None:
    """True when the core handled the call (its trailing metadata carries the correlation
    id, which only the access control sets), False when not, None when it refused to
    connect."""
    try:
        _, call = stub.ListSubscriptions.with_call(
            request, metadata=((REQUEST_ID_HEADER, request_id),), timeout=5
        )
        trailing = call.trailing_metadata()
    except grpc.RpcError as error:
        if error.code() is grpc.StatusCode.UNAVAILABLE and not error.trailing_metadata():
            time.sleep(0.01)
            return None
        trailing = error.trailing_metadata()
    return any(key == CORRELATION_ID_HEADER for key, _ in trailing or ())
