"""python -m devstack.receiver prints one complete line per notification, even when many
arrive at once."""

from __future__ import annotations

import http.client
import json
import re
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devstack.processes import ManagedProcess, free_port, wait_until
from devstack.stack import REPO

LINE = re.compile(r"^POST /notify/(\d+) \(no secret to check with\) (\{.*\})$")
SENDERS = 16
PER_SENDER = 25


def post(port: int, sender: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for index in range(PER_SENDER):
            number = sender * PER_SENDER + index
            # Large enough that one line takes several writes if it is not written whole.
            body = json.dumps({"notificationId": number, "padding": "x" * 20_000})
            connection.request("POST", f"/notify/{number}", body=body)
            response = connection.getresponse()
            response.read()
            assert response.status == 204
    finally:
        connection.close()


def test_concurrent_notifications_each_print_one_complete_line(tmp_path: Path) -> None:
    port = free_port()
    receiver = ManagedProcess(
        "receiver",
        [
            sys.executable,
            "-m",
            "devstack.receiver",
            "--port",
            str(port),
            "--secret-file",
            str(tmp_path / "no-secret"),
        ],
        tmp_path / "receiver.log",
        cwd=REPO,
    ).start()
    try:
        wait_until(
            lambda: "listening on" in receiver.log_tail(),
            20,
            "the receiver",
            require=receiver.require_alive,
        )
        with ThreadPoolExecutor(SENDERS) as pool:
            list(pool.map(lambda sender: post(port, sender), range(SENDERS)))
    finally:
        receiver.signal(signal.SIGINT)
        receiver.stop()

    lines = receiver.log_path.read_text().splitlines()
    assert lines[0].startswith("listening on")
    seen = []
    for line in lines[1:]:
        match = LINE.match(line)
        assert match, f"not one whole notification line: {line[:120]!r}..."
        assert json.loads(match[2])["notificationId"] == int(match[1])
        seen.append(int(match[1]))
    assert sorted(seen) == list(range(SENDERS * PER_SENDER))
