"""Nothing in the static inventory file can wedge the gateway (issue 12 §3), through the
real processes: an object too large to send and a YAML alias bomb are refused by name
while the rest of the inventory stays current and /readyz says why; a file caught
half-written produces no notification."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devstack.processes import wait_until
from devstack.stack import LocalStack
from tests.notifier.receiver import Receiver

V1 = "/o2ims-infrastructureInventory/v1"


@pytest.fixture(scope="module")
def rest(stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), timeout=10) as client:
        yield client


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def readiness(stack: LocalStack) -> dict[str, Any]:
    status, body = stack.readiness()
    assert status == 200, body  # degraded, never unready: the last good objects are served
    return body


def pool_description(rest: httpx.Client, pool_id: str) -> str:
    return str(rest.get(f"{V1}/resourcePools/{pool_id}").json().get("description", ""))


@pytest.fixture
def settled(stack: LocalStack, rest: httpx.Client, inventory_file: Path) -> Path:
    """The inventory file once what it says is served (a previous test's restore applied)."""
    document = yaml.safe_load(inventory_file.read_text())
    pool = document["resourcePools"][0]
    wait_until(
        lambda: pool_description(rest, pool["resourcePoolId"]) == pool.get("description", ""),
        timeout=30,
        what="the inventory file served",
    )
    wait_until(lambda: readiness(stack)["status"] == "ok", timeout=15, what="/readyz ok")
    return inventory_file


def test_an_object_too_large_to_send_is_refused_by_name_and_the_rest_stays_current(
    stack: LocalStack, rest: httpx.Client, settled: Path
) -> None:
    document = yaml.safe_load(settled.read_text())
    pool_id = document["resourcePools"][0]["resourcePoolId"]
    big = document["resources"][0]
    big_path = f"{V1}/resourcePools/{big['resourcePoolId']}/resources/{big['resourceId']}"
    served_before = rest.get(big_path).json()["description"]
    run = uuid.uuid4().hex[:8]
    big["description"] = "x" * (5 * 1024 * 1024)
    document["resourcePools"][0]["description"] = f"edited {run}"

    write_atomically(settled, yaml.safe_dump(document, sort_keys=False))
    wait_until(
        lambda: pool_description(rest, pool_id) == f"edited {run}",
        timeout=30,
        what="the edit of another object served",
    )
    wait_until(lambda: "reasons" in readiness(stack), timeout=15, what="/readyz saying why")
    body = readiness(stack)
    assert body["status"] == "degraded"
    [reason] = body["reasons"]
    assert re.fullmatch(
        rf"adapter static: resource '{big['resourceId']}' is \d+ bytes serialized, over the "
        r"\d+-byte limit of one object; its last published state is still served",
        reason,
    ), reason
    assert rest.get(big_path).json()["description"] == served_before

    # Later edits still arrive: the stream is not wedged.
    document["resourcePools"][0]["description"] = f"edited again {run}"
    write_atomically(settled, yaml.safe_dump(document, sort_keys=False))
    wait_until(
        lambda: pool_description(rest, pool_id) == f"edited again {run}",
        timeout=30,
        what="a later edit served",
    )


def test_an_alias_bomb_is_refused_at_its_line_and_readyz_says_why(
    stack: LocalStack, rest: httpx.Client, settled: Path
) -> None:
    document = yaml.safe_load(settled.read_text())
    pool_id = document["resourcePools"][0]["resourcePoolId"]
    before = pool_description(rest, pool_id)
    run = uuid.uuid4().hex[:8]
    document["resourcePools"][0]["description"] = f"bombed {run}"
    document["oCloud"]["extensions"] = {"bomb": "PLACEHOLDER"}
    text = yaml.safe_dump(document, sort_keys=False)
    bomb = ["lol0: &lol0 [" + ", ".join(["lol" * 100] * 100) + "]"]
    bomb += [f"lol{n}: &lol{n} [{', '.join([f'*lol{n - 1}'] * 9)}]" for n in range(1, 10)]
    assert 30_000 < len("\n".join(bomb)) < 32_000
    lines = text.splitlines()
    at = lines.index("    bomb: PLACEHOLDER")
    lines[at : at + 1] = [f"    {line}" for line in bomb]

    write_atomically(settled, "\n".join(lines) + "\n")
    wait_until(lambda: "reasons" in readiness(stack), timeout=15, what="/readyz saying why")
    [reason] = readiness(stack)["reasons"]
    match = re.fullmatch(
        rf"adapter static: {re.escape(str(settled))}:(\d+): aliases expand the document "
        r"by more than \d+ nodes \(at alias \*lol\d\); write the data out or share less of it "
        r"\(serving the last good inventory\)",
        reason,
    )
    assert match is not None, reason
    assert at < int(match.group(1)) <= at + len(bomb)
    # Nothing of the refused file is applied, not even its harmless edit.
    assert pool_description(rest, pool_id) == before

    document["oCloud"].pop("extensions")
    write_atomically(settled, yaml.safe_dump(document, sort_keys=False))
    wait_until(
        lambda: pool_description(rest, pool_id) == f"bombed {run}",
        timeout=30,
        what="the fixed file served",
    )
    wait_until(lambda: readiness(stack)["status"] == "ok", timeout=15, what="/readyz ready again")


def test_a_file_written_in_two_halves_notifies_only_the_real_change(
    stack: LocalStack, rest: httpx.Client, settled: Path, receiver: Receiver
) -> None:
    path = f"/{uuid.uuid4().hex[:8]}/halves"
    created = rest.post(f"{V1}/subscriptions", json={"callback": receiver.url + path})
    assert created.status_code == 201, created.text
    try:
        original = settled.read_text()
        edited = original.replace("row D rack 7", "row D rack 8")
        assert edited != original
        split = edited.index("\n  - resourceId:", len(edited) // 2) + 1
        with settled.open("w") as file:
            file.write(edited[:split])
            file.flush()
            time.sleep(0.6)
            file.write(edited[split:])
        [notification] = receiver.wait_for(path, 1, timeout=20)
        time.sleep(2.0)  # anything the half had caused would have arrived by now
        got = [request.json() for request in receiver.delivered_to(path)]
        assert [n["notificationEventType"] for n in got] == [1], got
        assert notification.json()["postObjectState"]["description"].endswith("row D rack 8")
    finally:
        rest.delete(f"{V1}/subscriptions/{created.json()['subscriptionId']}")
