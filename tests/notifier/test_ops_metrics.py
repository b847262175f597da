"""The notifier's operator view: health bodies, matcher lag (rising while no matcher runs,
falling once it does), subscriptions by delivery health and the webhook client
certificate's expiry, read through its ops endpoint."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import httpx
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from devstack.pki import ensure_dev_pki
from devstack.processes import wait_until
from server.notifier.metrics import matcher_lag
from server.store import InventoryStore
from tests.notifier.conftest import make_config, pool, resource, running, subscribe

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def lag(port: int, feed: str = "inventory") -> float:
    return scrape(port).get(("o2ims_notifier_matcher_lag", (("feed", feed),)), -1.0)


def test_matcher_lag_rises_while_no_matcher_runs_and_falls_when_it_does(
    redis_url: str, store: InventoryStore
) -> None:
    config = make_config(redis_url)
    with running(config) as notifier:
        store.apply("static", [pool()])
        wait_until(lambda: lag(notifier.ops.port) == 0, 10, "the first event matched")
    # No matcher now: what is appended waits in inventory:events.
    store.apply("static", [resource(f"r-{n}") for n in range(3)])
    assert matcher_lag(store.client)["inventory"] == 3
    with running(config) as notifier:
        # Readiness and metrics say the same while (or after) it catches up.
        wait_until(lambda: lag(notifier.ops.port) == 0, 15, "the backlog matched")
        events = httpx.get(f"http://127.0.0.1:{notifier.ops.port}/readyz").json()["checks"]
        assert events["events"]["matcher_lag"] == {"inventory": 0, "alarms": 0}
    assert matcher_lag(store.client)["inventory"] == 0


def test_health_bodies_subscriptions_and_certificates(redis_url: str, tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path / "pki")
    subscribe(redis_url, "http://127.0.0.1:9/callback")
    config = replace(
        make_config(redis_url), tls_cert=str(pki.client_cert), tls_key=str(pki.client_key)
    )
    with running(config) as notifier:
        ops = f"http://127.0.0.1:{notifier.ops.port}"
        health = httpx.get(f"{ops}/healthz").json()
        ready = httpx.get(f"{ops}/readyz").json()
        for body in (health, ready):
            assert body["status"] == "ok", body
            assert {"timestamp", "version", "commit", "uptime", "checks"} <= set(body)
        assert {"redis", "matcher", "deliveries"} <= set(ready["checks"])
        metrics = scrape(notifier.ops.port)
        now = time.time()
    assert metrics[("o2ims_ready", ())] == 1.0
    health_counts = {
        labels[0][1]: value
        for (name, labels), value in metrics.items()
        if name == "o2ims_subscriptions"
    }
    assert set(health_counts) == {"ok", "retrying", "dead_lettering"}
    assert sum(health_counts.values()) == 1
    not_after = x509.load_pem_x509_certificate(pki.client_cert.read_bytes()).not_valid_after_utc
    seconds = metrics[("o2ims_certificate_expiry_seconds", (("certificate", "webhook_client"),))]
    assert abs(seconds - (not_after.timestamp() - now)) < 5


def test_queue_depth_counts_every_queue_and_its_deepest(
    redis_url: str, store: InventoryStore
) -> None:
    """Two subscribers that never answer: their notifications wait in their queues."""
    with running(make_config(redis_url)) as notifier:
        subscribe(redis_url, "http://127.0.0.1:9/first")
        store.apply("static", [pool(), resource("r-1")])

        def depth(name: str) -> float:
            return scrape(notifier.ops.port).get((name, ()), -1.0)

        wait_until(lambda: depth("o2ims_webhook_queue_depth") == 2, 15, "the first queue")
        subscribe(redis_url, "http://127.0.0.1:9/second")
        wait_until(lambda: lag(notifier.ops.port) == 0, 10, "the matcher current")
        store.apply("static", [pool(), resource("r-1"), resource("r-2")])
        wait_until(lambda: depth("o2ims_webhook_queue_depth") == 4, 15, "both queues")
        assert depth("o2ims_webhook_queue_depth_max") == 3
