"""Outbound authentication of notifications: a client certificate for subscribers that
demand mTLS, and OAuth2 client-credentials bearer tokens (fetched once, cached, renewed
after a 401). A real HTTPS receiver that requires client certificates, a real token
endpoint, the notifier in-process."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devstack.pki import DevPki, ensure_dev_pki
from devstack.processes import wait_until
from server.notifier.config import OAuthClient
from server.store import InventoryStore
from tests.notifier.conftest import make_config, pool, resource, running, subscribe


@dataclass
class Seen:
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    # The token the receiver accepts; the token endpoint hands out tok-1, tok-2, ...
    accepted: str = "tok-1"
    lock: threading.Lock = field(default_factory=threading.Lock)


def serve(server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return ensure_dev_pki(tmp_path / "pki")


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def token_endpoint(seen: Seen) -> Iterator[str]:
    class Token(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = urllib.parse.parse_qs(
                self.rfile.read(int(self.headers["content-length"])).decode()
            )
            basic = base64.b64decode(self.headers["authorization"].split()[1]).decode()
            with seen.lock:
                seen.token_requests.append({"form": form, "basic": basic})
                number = len(seen.token_requests)
            body = json.dumps({"access_token": f"tok-{number}", "expires_in": 3600}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = serve(ThreadingHTTPServer(("127.0.0.1", 0), Token))
    yield f"http://127.0.0.1:{server.server_port}/oauth/token"
    server.shutdown()


@pytest.fixture
def mtls_receiver(pki: DevPki, seen: Seen) -> Iterator[str]:
    class Hook(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            peer = self.connection.getpeercert()
            authorization = self.headers.get("authorization", "")
            with seen.lock:
                seen.posts.append(
                    {"peer": peer, "authorization": authorization, "body": json.loads(body)}
                )
                ok = authorization == f"Bearer {seen.accepted}"
            self.send_response(204 if ok else 401)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    serve(server)
    yield f"https://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def test_client_certificate_and_cached_bearer_token_renewed_after_401(
    *,
    redis_url: str,
    store: InventoryStore,
    pki: DevPki,
    seen: Seen,
    token_endpoint: str,
    mtls_receiver: str,
) -> None:
    subscribe(redis_url, mtls_receiver)
    config = make_config(
        redis_url,
        tls_ca=str(pki.ca_cert),
        tls_cert=str(pki.client_cert),
        tls_key=str(pki.client_key),
        oauth=OAuthClient(
            token_url=token_endpoint, client_id="netweave", client_secret="s3cret", scope="o2ims"
        ),
    )
    with running(config):
        store.apply("static", [pool(), resource("r-1"), resource("r-2")])
        wait_until(lambda: len(seen.posts) >= 3, 15, "three deliveries")
        # One token for all of them: cached, not fetched per notification.
        assert len(seen.token_requests) == 1
        request = seen.token_requests[0]
        assert request["basic"] == "netweave:s3cret"
        assert request["form"] == {"grant_type": ["client_credentials"], "scope": ["o2ims"]}
        subject = dict(item[0] for item in seen.posts[0]["peer"]["subject"])
        assert subject["commonName"] == "netweave-dev-client"
        assert all(post["authorization"] == "Bearer tok-1" for post in seen.posts)

        # The subscriber rotates: tok-1 is refused now. The notifier fetches a new token
        # and the refused notification is delivered with it, not lost.
        with seen.lock:
            seen.accepted = "tok-2"
        store.apply("static", [resource("r-3")])
        wait_until(
            lambda: any(
                p["authorization"] == "Bearer tok-2"
                and p["body"]["postObjectState"].get("resourceId") == "r-3"
                for p in seen.posts
            ),
            15,
            "the notification to be delivered with a renewed token",
        )
        assert len(seen.token_requests) == 2


def test_without_a_client_certificate_the_subscriber_refuses_the_handshake(
    redis_url: str, store: InventoryStore, pki: DevPki, seen: Seen, mtls_receiver: str
) -> None:
    subscribe(redis_url, mtls_receiver)
    with running(make_config(redis_url, tls_ca=str(pki.ca_cert))) as notifier:
        store.apply("static", [pool()])
        wait_until(
            lambda: (
                (
                    notifier.metrics.registry.get_sample_value(
                        "o2ims_webhook_delivery_total", {"outcome": "retried"}
                    )
                    or 0
                )
                >= 1
            ),
            15,
            "a retried delivery (the handshake failed)",
        )
    assert seen.posts == []
