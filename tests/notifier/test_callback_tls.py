"""NETWEAVE_CALLBACK_CA_BUNDLE: the CAs callbacks are verified against, at creation (the
probe) and at delivery. A real HTTPS receiver with a certificate from a test CA (not in
the system trust store), real Redis, the notifier in-process and the subscription
servicer on a real gRPC server. A certificate that fails verification is named as such:
in the 400 detail, in the dead letter, in the log, and counted as `tls_error`."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from devstack.pki import DevPki, ensure_dev_pki
from devstack.processes import wait_until
from server.config import GatewayConfig
from server.notifier import keys
from server.notifier.config import NotifierConfig
from server.notifier.http import callback_ca_bundle
from server.store import InventoryStore
from server.subscriptions.callbacks import CallbackPolicy, parse_cidrs
from tests.notifier.conftest import SECRET, make_config, pool, running, subscribe
from tests.notifier.receiver import Receiver
from tests.notifier.test_callback_policy import create, refusal, subscriptions

UNTRUSTED = "TLS certificate verification failed: unable to get local issuer certificate"


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return ensure_dev_pki(tmp_path / "pki")


@pytest.fixture
def https_receiver(pki: DevPki) -> Iterator[Receiver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    started = Receiver(tls=context).start()
    yield started
    started.stop()


def loopback(ca_bundle: str = "", probe: bool = False) -> CallbackPolicy:
    """https only, to the loopback receivers of the tests."""
    return CallbackPolicy(
        allowed_networks=parse_cidrs("127.0.0.0/8"), probe=probe, ca_bundle=ca_bundle
    )


def test_with_the_ca_bundle_configured_delivery_succeeds(
    redis_url: str, store: InventoryStore, pki: DevPki, https_receiver: Receiver
) -> None:
    assert https_receiver.url.startswith("https://")
    subscribe(redis_url, https_receiver.url + "/hook")
    config = make_config(redis_url, callback_policy=loopback(str(pki.ca_cert)))
    with running(config) as notifier:
        store.apply("static", [pool()])
        (delivered,) = https_receiver.wait_for("/hook", 1)
        assert delivered.json()["notificationEventType"] == 0
        assert notifier.metrics.deliveries.labels("tls_error")._value.get() == 0


def test_without_the_bundle_delivery_is_dead_lettered_as_a_certificate_failure(
    redis_url: str, store: InventoryStore, raw: redis.Redis, https_receiver: Receiver
) -> None:
    subscribe(redis_url, https_receiver.url + "/hook")
    with capture_logs() as logged, running(make_config(redis_url, callback_policy=loopback())) as n:
        store.apply("static", [pool()])
        wait_until(lambda: raw.xlen(keys.DEAD_LETTERS_KEY) == 1, 15, "the dead letter")
        time.sleep(0.3)  # a retry would happen meanwhile
        deliveries = n.metrics.deliveries
        assert deliveries.labels("tls_error")._value.get() == 1
        assert deliveries.labels("retried")._value.get() == 0
        assert deliveries.labels("dead_lettered")._value.get() == 0
    assert https_receiver.requests == []
    letters: Any = raw.xrange(keys.DEAD_LETTERS_KEY)
    ((_id, letter),) = letters
    assert letter["reason"].startswith(f"{UNTRUSTED} (trusted: the system trust store;")
    assert letter["attempts"] == "1"
    (record,) = [r for r in logged if r["event"] == "delivery_dead_lettered"]
    assert record["outcome"] == "tls_error" and record["reason"] == letter["reason"]


def test_the_probe_at_creation_names_the_certificate_failure(
    redis_url: str, tmp_path: Path, pki: DevPki, https_receiver: Receiver
) -> None:
    url = https_receiver.url + "/hook"
    with subscriptions(redis_url, loopback(probe=True)) as stub:
        detail = refusal(stub, url)
    assert detail.startswith(f"callback: {UNTRUSTED} (trusted: the system trust store;")
    assert "did not answer" not in detail

    other_ca = ensure_dev_pki(tmp_path / "other").ca_cert
    with subscriptions(redis_url, loopback(str(other_ca), probe=True)) as stub:
        assert f"(trusted: the CA bundle {other_ca};" in refusal(stub, url)

    with subscriptions(redis_url, loopback(str(pki.ca_cert), probe=True)) as stub:
        assert create(stub, url)
    assert [r.method for r in https_receiver.requests] == ["GET"]


def test_one_setting_for_the_core_and_the_notifier(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: DevPki
) -> None:
    monkeypatch.setenv("NETWEAVE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("NETWEAVE_CALLBACK_CA_BUNDLE", str(pki.ca_cert))
    assert GatewayConfig.from_env().callback_policy.ca_bundle == str(pki.ca_cert)
    assert NotifierConfig.from_env().callback_policy.ca_bundle == str(pki.ca_cert)

    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    for wrong in (str(tmp_path / "missing.pem"), str(not_pem)):
        monkeypatch.setenv("NETWEAVE_CALLBACK_CA_BUNDLE", wrong)
        with pytest.raises(ValueError, match="NETWEAVE_CALLBACK_CA_BUNDLE: cannot load"):
            CallbackPolicy.from_env()
    monkeypatch.delenv("NETWEAVE_CALLBACK_CA_BUNDLE")
    assert CallbackPolicy.from_env().ca_bundle == ""


def test_the_notifiers_older_setting_still_names_the_bundle_but_never_a_second_one(
    redis_url: str, tmp_path: Path, pki: DevPki
) -> None:
    older = make_config(redis_url, callback_policy=loopback(), tls_ca=str(pki.ca_cert))
    assert callback_ca_bundle(older) == str(pki.ca_cert)
    same = replace(older, callback_policy=loopback(str(pki.ca_cert)))
    assert callback_ca_bundle(same) == str(pki.ca_cert)
    other_ca = str(ensure_dev_pki(tmp_path / "other").ca_cert)
    with pytest.raises(ValueError, match="name different CA bundles"):
        callback_ca_bundle(replace(older, callback_policy=loopback(other_ca)))
