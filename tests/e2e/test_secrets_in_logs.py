"""No secret in any log: a run of valid, invalid and query-string tokens and of callbacks with
credentials, through the whole stack (Envoy, core, notifier delivering to a real receiver),
then a scan of every file the gateway wrote under its state directory.

Left out of the scan, by design: `pki/` (where the credentials live, 0600) and `redis/`
(the datastore must keep a callback's credentials to deliver to it; protect Redis).
"""

from __future__ import annotations

import http.server
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.processes import wait_until
from devstack.stack import LocalStack

from .conftest import start_stack

CLOUD = "/o2ims-infrastructureInventory/v1"
POOLS = f"{CLOUD}/resourcePools"
SUBSCRIPTIONS = f"{CLOUD}/subscriptions"
NOT_SCANNED = ("pki", "redis")


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        self.paths: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(handler) -> None:  # noqa: N805 - the receiver is `self`
                length = int(handler.headers.get("content-length") or 0)
                handler.rfile.read(length)
                self.paths.append(handler.path)
                handler.send_response(204)
                handler.end_headers()

            def log_message(handler, format: str, *args: object) -> None:  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def delivered_to(self) -> set[str]:
        """The callback paths that received at least one notification."""
        return {path.split("?")[0] for path in self.paths}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory)
    yield running
    running.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def secret(label: str) -> str:
    return f"{label}{secrets.token_hex(12)}"


def test_no_token_password_or_edge_credential_in_any_file(
    stack: LocalStack, receiver: Receiver
) -> None:
    leaks: list[str] = []
    with httpx.Client(
        base_url=stack.rest_url, verify=stack.client_tls(), timeout=10.0, trust_env=False
    ) as http:
        valid = stack.issuer.mint("smo-log", ["o2ims-admin"])
        leaks.append(valid.split(".")[2])  # the signature: no token is ever written
        assert http.get(POOLS, headers={"authorization": f"Bearer {valid}"}).status_code == 200
        expired = stack.issuer.mint("smo-log", ["o2ims-admin"], ttl_s=-600)
        leaks.append(expired.split(".")[2])
        garbage = f"eyJhbGciOiJSUzI1NiJ9.{secret('garbage')}.{secret('sig')}"
        leaks.append(garbage.split(".", 1)[1])
        for bad in (expired, garbage):
            response = http.get(POOLS, headers={"authorization": f"Bearer {bad}"})
            assert response.status_code == 401
        for name, value in (("access_token", valid), ("access_token", garbage)):
            response = http.get(POOLS, params={name: value})
            assert response.status_code == 400, response.text
        api_key = secret("apikey")
        leaks.append(api_key)
        assert http.get(POOLS, params={"api_key": api_key}).status_code == 400

        base = f"127.0.0.1:{receiver.port}"
        passwords = [secret("pw"), secret("pw"), secret("tok"), secret("qs")]
        leaks.extend(passwords)
        callbacks = [
            f"http://user:{passwords[0]}@{base}/a",
            f"http://:{passwords[1]}@{base}/b",
            f"http://{passwords[2]}@{base}/c",
            f"http://{base}/d?token={passwords[3]}",
        ]
        created = []
        for callback in callbacks:
            response = http.post(SUBSCRIPTIONS, json={"callback": callback})
            assert response.status_code == 201, response.text
            created.append(response.json()["subscriptionId"])

        # An inventory change, so the notifier delivers to (and logs about) every callback.
        inventory = stack.config.inventory
        original = inventory.read_text()
        inventory.write_text(original.replace("description:", "description: (log scan)", 1))
        try:
            wait_until(lambda: len(receiver.delivered_to()) >= 4, 30, "a delivery to each callback")
        finally:
            inventory.write_text(original)
        for subscription_id in created:
            assert http.delete(f"{SUBSCRIPTIONS}/{subscription_id}").status_code == 200

    leaks.append(_key_body(stack.internal_pki.edge.key))
    time.sleep(1.5)  # Envoy flushes its access logs every second
    found = _scan(stack.config.state_dir, leaks)
    assert found == [], found


def _key_body(path: Path) -> str:
    lines = path.read_text().strip().splitlines()
    return "".join(lines[1:-1])[:48]


def _scan(root: Path, needles: list[str]) -> list[str]:
    scanned = 0
    found: list[str] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.relative_to(root).parts[0] in NOT_SCANNED:
            continue
        data = path.read_bytes()
        scanned += 1
        found += [f"{path}: {needle[:12]}..." for needle in needles if needle.encode() in data]
    assert scanned >= 5, "the scan found almost nothing to scan"
    return found
