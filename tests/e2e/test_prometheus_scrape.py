"""A real Prometheus scrapes every process of a running stack (issue 16's acceptance): the
core, the notifier, Envoy's stats listener and the adapters that export metrics, with the alert
rules loaded. Traffic goes through Envoy (lists and gets, 401, 403, 404, 429, a 500 from a
corrupted subscription record, a handshake without a client certificate, a subscription made and
deleted, inventory edits delivered to a real receiver, one subscriber that answers 410 so a dead
letter exists), in two rounds a few scrapes apart so rates see increases; then every
metric the operations guide names is read back through Prometheus's HTTP API, and every query
of the Grafana dashboard must return data."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import ssl
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis
import yaml
from cryptography import x509
from o2ims.subscriptions.v1 import subscriptions_pb2 as subs
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as subs_grpc

from devstack.moto_server import DEMO_REGIONS
from devstack.pki import issue_client_certificate
from devstack.processes import free_port, wait_until
from devstack.prometheus import PrometheusServer, stack_scrape_jobs
from devstack.stack import EXAMPLE_INVENTORY, LocalStack, StackConfig
from netweave.headers import EDGE_MARKER_HEADER
from netweave.version import commit, version
from server.notifier.metrics import OUTCOMES
from server.subscriptions.store import INVENTORY_SUBSCRIPTIONS
from tests.monitoring.contract import ALERT_RULES
from tests.monitoring.test_dashboard import concrete, queries
from tests.notifier.receiver import Answer, Received, Receiver

pytestmark = pytest.mark.e2e

INVENTORY = "/o2ims-infrastructureInventory/v1"
POOLS = f"{INVENTORY}/resourcePools"
POOL = f"{POOLS}/{{resourcePoolId}}"
SUBSCRIPTIONS = f"{INVENTORY}/subscriptions"
SUBSCRIPTION = f"{SUBSCRIPTIONS}/{{subscriptionId}}"
ALARMS = "/o2ims-infrastructureMonitoring/v1/alarms"
ALARM = f"{ALARMS}/{{alarmEventRecordId}}"
UNMATCHED = "unmatched"

NETWEAVE_JOBS = (
    "netweave-gateway",
    "netweave-notifier",
    "netweave-adapter-static",
    "netweave-adapter-alertmanager",
    "netweave-adapter-aws",
)
ENVOY_JOB = "netweave-envoy"
# Far below the admin's rate (500/s, the access policy): a burst of BURST calls from one
# client of no listed role is mostly refused, cheaply.
RATE_LIMIT_RPS = 5
BURST = 20
# What o2ims_http_request_duration_seconds's buckets are (docs/operations.md, Metrics).
DURATION_BUCKETS = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
# What the core watches (NETWEAVE_WATCHED_CERTIFICATES) and holds itself (its edge listener).
CERTIFICATE_ROLES = {"server", "client_ca", "edge_client", "edge_server", "edge_client_ca"}
# A value's way into Prometheus: Envoy's access-log batch (1 s), Envoy's stats flush (5 s),
# a scrape (1 s); on a loaded machine, more.
SETTLE_S = 20.0


@dataclass
class Traffic:
    """What the test did through Envoy: (method, route template, status) of each call."""

    responses: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    handshake_failures: int = 0
    forged_internal_calls: int = 0

    def count(self, status: int, route: str | None = None) -> int:
        return sum(
            n
            for (_, called, code), n in self.responses.items()
            if code == status and route in (None, called)
        )


@dataclass
class Observed:
    stack: LocalStack
    prometheus: PrometheusServer
    receiver: Receiver
    traffic: Traffic


def answer(request: Received) -> Answer:
    """The receiver: `/gone` subscribers' notifications are refused for good (dead letters)."""
    return Answer(status=410 if request.path.startswith("/gone") else 204)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    with contextlib.ExitStack() as cleanup:
        receiver = Receiver()
        receiver.answer = answer
        receiver.start()
        cleanup.callback(receiver.stop)
        config = StackConfig.ephemeral(
            tmp_path_factory.mktemp("stack"),
            rate_limit_rps=RATE_LIMIT_RPS,
            alertmanager=True,
            aws_regions=DEMO_REGIONS,
            aws_moto=True,
            aws_adapter_args=("--metrics-port", str(free_port()), "--poll-interval", "2"),
        )
        stack = LocalStack(config)
        # Started first: its first scrapes come a few seconds after its start (target
        # discovery), while the stack starts. The ports are chosen (LocalStack resolved them).
        prometheus = PrometheusServer(
            tmp_path_factory.mktemp("prometheus"), stack_scrape_jobs(stack), [ALERT_RULES]
        ).start()
        cleanup.callback(prometheus.stop)
        stack.start()
        cleanup.callback(stack.stop)
        wait_for(prometheus, "up", lambda s: len(s) == len(prometheus.jobs), "every target")
        traffic = Traffic()
        with Driver(stack, receiver, traffic, tmp_path_factory.mktemp("clients")) as driver:
            driver.round(1)
            # Every series the first round made is scraped once before the second round
            # moves it: rates see an increase, not only a first sample.
            settled(prometheus, receiver, traffic)
            driver.round(2)
            settled(prometheus, receiver, traffic)
        yield Observed(stack, prometheus, receiver, traffic)


class Driver:
    """Calls through Envoy as three clients: the dev client (admin), a reader (no right to
    subscribe) and a client of the default rate; records every response in `traffic`."""

    def __init__(self, stack: LocalStack, receiver: Receiver, traffic: Traffic, tmp: Path):
        self.stack = stack
        self.receiver = receiver
        self.traffic = traffic
        self.admin = self._client(stack.client_tls())
        self.reader = self._client(
            stack.client_tls(issue_client_certificate(stack.pki.directory, "reader-obs", tmp))
        )
        self.flooder = self._client(
            stack.client_tls(issue_client_certificate(stack.pki.directory, "flood-obs", tmp))
        )

    def _client(self, context: ssl.SSLContext) -> httpx.Client:
        return httpx.Client(base_url=self.stack.rest_url, verify=context, timeout=10)

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *_: object) -> None:
        for client in (self.admin, self.reader, self.flooder):
            client.close()

    def call(
        self, client: httpx.Client, method: str, path: str, route: str, **kwargs: Any
    ) -> httpx.Response:
        response = client.request(method, path, **kwargs)
        self.traffic.responses[(method, route, response.status_code)] += 1
        return response

    def round(self, number: int) -> None:
        admin = self.admin
        pools = self.call(admin, "GET", POOLS, POOLS)
        assert pools.status_code == 200, pools.text
        pool_id = pools.json()[0]["resourcePoolId"]
        assert self.call(admin, "GET", f"{POOLS}/{pool_id}", POOL).status_code == 200
        unknown = f"{POOLS}/00000000-0000-4000-8000-000000000000"
        assert self.call(admin, "GET", unknown, POOL).status_code == 404
        nowhere = f"{INVENTORY}/noSuchCollection"
        assert self.call(admin, "GET", nowhere, UNMATCHED).status_code == 404
        bad_token = {"authorization": "Bearer not-a-token"}
        assert self.call(admin, "GET", POOLS, POOLS, headers=bad_token).status_code == 401
        alarms = self.call(admin, "GET", ALARMS, ALARMS)
        assert alarms.status_code == 200 and alarms.json(), alarms.text
        alarm_id = alarms.json()[0]["alarmEventRecordId"]
        assert self.call(admin, "GET", f"{ALARMS}/{alarm_id}", ALARM).status_code == 200
        assert self.call(admin, "GET", SUBSCRIPTIONS, SUBSCRIPTIONS).status_code == 200
        refused = {"callback": f"{self.receiver.url}/denied"}
        denied = self.call(self.reader, "POST", SUBSCRIPTIONS, SUBSCRIPTIONS, json=refused)
        assert denied.status_code == 403, denied.text
        made = self.subscribe(f"/temporary/{number}")
        deleted = self.call(admin, "DELETE", f"{SUBSCRIPTIONS}/{made}", SUBSCRIPTION)
        assert deleted.status_code == 200, deleted.text
        if number == 1:  # kept: one subscriber that takes, one that refuses for good
            self.subscribe("/ok")
            self.subscribe("/gone")
        self.broken_subscription_record()
        self.handshake_without_certificate()
        self.forged_identity_on_the_internal_listener()
        self.flood()
        description = self.edit_inventory(number)
        wait_until(
            lambda: any(description in r.body.decode() for r in self.receiver.delivered_to("/ok")),
            SETTLE_S,
            f"the notification of edit {number}",
        )

    def subscribe(self, path: str) -> str:
        body = {"callback": f"{self.receiver.url}{path}"}
        made = self.call(self.admin, "POST", SUBSCRIPTIONS, SUBSCRIPTIONS, json=body)
        assert made.status_code == 201, made.text
        return str(made.json()["subscriptionId"])

    def broken_subscription_record(self) -> None:
        """A subscription record of the wrong type in Redis (a corrupted store): reading it
        is a WRONGTYPE error reply, the core answers 500 (SUBSCRIPTION_STORE_FAILED). The one
        5xx a healthy stack can be made to give without an outage; outside the subscription
        index, so nothing else reads it."""
        subscription_id = str(uuid.uuid4())
        with redis.Redis.from_url(self.stack.redis_url) as client:
            client.set(INVENTORY_SUBSCRIPTIONS.key(subscription_id), "not a hash")
        path = f"{SUBSCRIPTIONS}/{subscription_id}"
        assert self.call(self.admin, "GET", path, SUBSCRIPTION).status_code == 500

    def handshake_without_certificate(self) -> None:
        """The stack requires a client certificate: Envoy refuses the handshake."""
        context = ssl.create_default_context(cafile=str(self.stack.pki.ca_cert))
        with (
            httpx.Client(base_url=self.stack.rest_url, verify=context, timeout=10) as client,
            pytest.raises(httpx.TransportError),
        ):
            client.get(POOLS)
        self.traffic.handshake_failures += 1

    def forged_identity_on_the_internal_listener(self) -> None:
        """An identity header on the core's internal gRPC listener: an authentication
        failure counted by the core (o2ims_auth_total{result="failure"})."""
        request = subs.ListSubscriptionsRequest(api_version="v1")
        with (
            grpc.insecure_channel(self.stack.grpc_address) as channel,
            pytest.raises(grpc.RpcError) as raised,
        ):
            subs_grpc.SubscriptionServiceStub(channel).ListSubscriptions(
                request, metadata=[(EDGE_MARKER_HEADER, "1")], timeout=5
            )
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        self.traffic.forged_internal_calls += 1

    def flood(self) -> None:
        statuses = [
            self.call(self.flooder, "GET", INVENTORY, INVENTORY).status_code for _ in range(BURST)
        ]
        assert 429 in statuses and 200 in statuses, statuses

    def edit_inventory(self, number: int) -> str:
        """A pool's description changed, the file replaced atomically (applied at once);
        the new description."""
        path = self.stack.config.inventory
        document = yaml.safe_load(path.read_text())
        description = f"observed by Prometheus, round {number}"
        document["resourcePools"][0]["description"] = description
        temporary = path.with_suffix(".edit")
        temporary.write_text(yaml.safe_dump(document, sort_keys=False))
        os.replace(temporary, path)
        return description


def settled(prometheus: PrometheusServer, receiver: Receiver, traffic: Traffic) -> None:
    """Wait until Prometheus holds all the traffic so far did: every error response in the
    core's counters (from Envoy's access-log batches) and in Envoy's own, every delivery and
    dead letter in the notifier's (its counters and the gauges it reads from Redis)."""
    errors: dict[str, float] = {}
    classes = {"4": 0.0, "5": 0.0}
    for (_, _, status), count in traffic.responses.items():
        if status >= 400:
            errors[str(status)] = errors.get(str(status), 0.0) + count
            classes[str(status // 100)] += count
    wait_for(
        prometheus,
        'sum by (code) (o2ims_http_requests_total{code!~"[123].."})',
        lambda s: by(s, "code") == errors,
        "the error responses in the core's counters",
    )
    wait_for(
        prometheus,
        "sum by (envoy_response_code_class) (envoy_http_downstream_rq_xx"
        '{envoy_http_conn_manager_prefix="o2ims",envoy_response_code_class=~"4|5"})',
        lambda s: by(s, "envoy_response_code_class") == classes,
        "the error responses in Envoy's counters",
    )
    # At least what the receiver got so far: the AWS adapter's first objects may still be
    # arriving (every subscriber is notified of them).
    delivered, refused = len(receiver.delivered), gone(receiver)
    wait_for(
        prometheus,
        "sum by (outcome) (o2ims_webhook_delivery_total)",
        lambda s: (
            by(s, "outcome").get("delivered", 0) >= delivered
            and by(s, "outcome").get("dead_lettered", 0) >= refused
        ),
        "the deliveries and dead letters in the notifier's counters",
    )
    wait_for(
        prometheus,
        "sum(o2ims_webhook_delivery_latency_seconds_count)"
        ' - sum(o2ims_webhook_delivery_total{outcome="delivered"})',
        lambda s: bool(s) and value(s) == 0,
        "a latency observed per delivery",
    )
    wait_for(
        prometheus,
        "max(o2ims_webhook_dead_letters)",
        lambda s: value(s) >= refused,
        "the dead-letter stream's length",
    )


def gone(receiver: Receiver) -> int:
    """The notifications the receiver refused for good (410): each one a dead letter."""
    return len([request for request in receiver.requests if request.path == "/gone"])


# --- reading Prometheus --------------------------------------------------------------


Samples = list[dict[str, Any]]


def value(samples: Samples) -> float:
    """The sum of the samples' values (0 for none)."""
    return sum(float(sample["value"][1]) for sample in samples)


def by(samples: Samples, label: str) -> dict[str, float]:
    return {sample["metric"].get(label, ""): float(sample["value"][1]) for sample in samples}


def wait_for(
    prometheus: PrometheusServer, expr: str, good: Callable[[Samples], bool], what: str
) -> Samples:
    """The result of `expr` once `good` holds for it; fails naming the last result. A query
    Prometheus refuses fails at once (PrometheusError), not after the wait."""
    last = [prometheus.query(expr)]
    if good(last[0]):
        return last[0]

    def check() -> bool:
        last[0] = prometheus.query(expr)
        return good(last[0])

    try:
        wait_until(check, SETTLE_S, what, interval=0.25)
    except TimeoutError:
        pytest.fail(f"{what}: {expr} -> {last[0]}")
    return last[0]


def has_number(samples: Samples) -> bool:
    return any(not math.isnan(float(sample["value"][1])) for sample in samples)


# --- the tests -----------------------------------------------------------------------


def test_every_process_is_a_target_that_is_up(observed: Observed) -> None:
    prometheus = observed.prometheus
    assert {job.name for job in prometheus.jobs} == {*NETWEAVE_JOBS, ENVOY_JOB}
    targets = prometheus.targets()
    assert {t["labels"]["job"]: t["health"] for t in targets} == dict.fromkeys(
        {*NETWEAVE_JOBS, ENVOY_JOB}, "up"
    ), [(t["labels"]["job"], t["lastError"]) for t in targets]
    assert by(prometheus.query("up"), "job") == dict.fromkeys({*NETWEAVE_JOBS, ENVOY_JOB}, 1.0)


def test_alert_rules_load_and_every_group_evaluates_without_error(observed: Observed) -> None:
    prometheus = observed.prometheus
    expected = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    loaded: list[list[dict[str, Any]]] = [[]]

    def evaluated() -> bool:
        loaded[0] = prometheus.rule_groups()
        return all(g["lastEvaluation"] > "2000" for g in loaded[0])  # RFC 3339; zero: never

    wait_until(evaluated, SETTLE_S, "every rule group evaluated once", interval=0.25)
    groups = loaded[0]
    assert {g["name"]: len(g["rules"]) for g in groups} == {
        g["name"]: len(g["rules"]) for g in expected
    }
    errors = [
        (group["name"], rule["name"], rule["health"], rule.get("lastError"))
        for group in groups
        for rule in group["rules"]
        if rule["health"] != "ok" or rule.get("lastError")
    ]
    assert errors == []
    # The recording rules record: each has a sample that is a number after the traffic.
    recorded = [r["name"] for g in groups for r in g["rules"] if r["type"] == "recording"]
    assert recorded
    for name in recorded:
        wait_for(prometheus, name, has_number, f"recorded series {name}")


# The alerts this stack and its traffic make active, and why. Pinned exactly: an alert that
# starts firing, or stops, on this traffic is a change to look at.
EXPECTED_ALERTS = {
    # The test made dead letters (the /gone subscriber).
    ("NetweaveDeadLettersAppearing", ""): "firing",
    # A local stack runs one core (production: at least two) and a Redis without replicas.
    ("NetweaveGatewayReplicasLow", ""): "pending",
    ("NetweaveRedisReplicaDown", ""): "pending",
}


def test_the_alerts_the_traffic_makes_active(observed: Observed) -> None:
    active: list[dict[tuple[str, str], str]] = [{}]

    def as_expected() -> bool:
        alerts = observed.prometheus.api("alerts")["alerts"]
        active[0] = {
            (alert["labels"]["alertname"], alert["labels"].get("api", "")): alert["state"]
            for alert in alerts
        }
        return active[0] == EXPECTED_ALERTS

    with contextlib.suppress(TimeoutError):
        wait_until(as_expected, SETTLE_S, "the expected alerts", interval=0.25)
    assert active[0] == EXPECTED_ALERTS


def test_rest_requests_are_counted_per_template_and_status(observed: Observed) -> None:
    prometheus, traffic = observed.prometheus, observed.traffic
    expected = {
        (method, route, str(code)): count
        for (method, route, code), count in traffic.responses.items()
    }
    assert {("GET", UNMATCHED, "404"), ("GET", POOLS, "401"), ("GET", INVENTORY, "429")} <= set(
        expected
    )
    counted = {
        (s["metric"]["method"], s["metric"]["route"], s["metric"]["code"]): float(s["value"][1])
        for s in prometheus.query("sum by (method, route, code) (o2ims_http_requests_total)")
    }
    for key, count in expected.items():
        _, route, code = key
        if code.startswith("2") and route in (POOLS, INVENTORY):
            # The stack's own readiness calls come through Envoy as the dev client too.
            assert counted.get(key, 0) >= count, key
        else:
            assert counted.get(key, 0) == count, key
    # The raw paths never became labels: every route is a template or `unmatched`.
    routes = {route for _, route, _ in counted}
    assert UNMATCHED in routes
    assert not [r for r in routes if r != UNMATCHED and not r.startswith("/o2ims-")], routes
    assert not [r for r in routes if "noSuchCollection" in r or "00000000" in r], routes
    # Requests made, by status, as the dashboard reads them.
    codes = by(prometheus.query("sum by (code) (o2ims_http_requests_total)"), "code")
    assert {"200", "401", "403", "404", "429", "500"} <= set(codes), codes


def test_request_duration_histogram_has_the_documented_buckets(observed: Observed) -> None:
    prometheus = observed.prometheus
    buckets = prometheus.query(
        f'sum by (le) (o2ims_http_request_duration_seconds_bucket{{route="{POOLS}"}})'
    )
    bounds = {sample["metric"]["le"] for sample in buckets}
    assert "+Inf" in bounds
    assert {float(le) for le in bounds - {"+Inf"}} == DURATION_BUCKETS
    # Cumulative, and +Inf counts every request of the route.
    counts = {float(sample["metric"]["le"]): float(sample["value"][1]) for sample in buckets}
    ordered = [counts[le] for le in sorted(counts)]
    assert ordered == sorted(ordered) and ordered[-1] > 0
    requests = value(
        prometheus.query(f'sum(o2ims_http_requests_total{{method="GET",route="{POOLS}"}})')
    )
    assert counts[math.inf] == requests


@pytest.mark.parametrize("job", ["netweave-gateway", "netweave-notifier"])
def test_redis_commands_are_counted_by_the_core_and_the_notifier(
    observed: Observed, job: str
) -> None:
    commands = by(
        observed.prometheus.query(
            f'sum by (command) (o2ims_redis_commands_total{{job="{job}",outcome="ok"}})'
        ),
        "command",
    )
    assert commands and all(count > 0 for count in commands.values()), commands
    assert all(command == command.lower() for command in commands), commands
    # The notifier reads its queues with XREADGROUP; the core answers subscription reads.
    assert ("xreadgroup" if job == "netweave-notifier" else "smembers") in commands, commands


def test_a_redis_error_reply_is_counted_as_an_error(observed: Observed) -> None:
    """Each read of the corrupted subscription record was one HGETALL answered WRONGTYPE."""
    errors = observed.prometheus.query(
        'o2ims_redis_commands_total{job="netweave-gateway",command="hgetall",outcome="error"}'
    )
    assert value(errors) == observed.traffic.count(500) > 0


def test_authentication_and_authorization_outcomes(observed: Observed) -> None:
    prometheus, traffic = observed.prometheus, observed.traffic
    auth = {
        (s["metric"]["result"], s["metric"]["via"]): float(s["value"][1])
        for s in prometheus.query('sum by (result, via) (o2ims_auth_total{job="netweave-gateway"})')
    }
    assert auth[("success", "certificate")] > 0, auth
    assert auth[("failure", "none")] == traffic.forged_internal_calls, auth
    authz = {
        (s["metric"]["result"], s["metric"]["role"]): float(s["value"][1])
        for s in prometheus.query(
            'sum by (result, role) (o2ims_authz_total{job="netweave-gateway"})'
        )
    }
    assert authz[("allowed", "o2ims-admin")] > 0, authz
    assert authz[("denied", "o2ims-reader")] == traffic.count(403), authz


def test_cache_reads_hit_for_the_inventory_and_miss_for_subscriptions(observed: Observed) -> None:
    reads = {
        (s["metric"]["api"], s["metric"]["result"]): float(s["value"][1])
        for s in observed.prometheus.query("sum by (api, result) (o2ims_cache_reads_total)")
    }
    assert reads[("inventory", "hit")] >= observed.traffic.count(200, POOLS), reads
    assert reads[("alarms", "hit")] >= observed.traffic.count(200, ALARMS), reads
    # A read by id, and every subscription read, is a hit when the view holds the answer
    # and a miss when Redis had to (server/metrics.py cache_read): counted either way.
    alarm_reads = reads[("alarms", "hit")] + reads[("alarms", "miss")]
    listed_and_read = observed.traffic.count(200, ALARMS) + observed.traffic.count(200, ALARM)
    assert alarm_reads >= listed_and_read, reads
    subscription_reads = reads[("subscriptions", "hit")] + reads[("subscriptions", "miss")]
    assert subscription_reads >= observed.traffic.count(200, SUBSCRIPTIONS), reads


def test_notifications_delivered_dead_lettered_and_the_backlogs(observed: Observed) -> None:
    prometheus, receiver = observed.prometheus, observed.receiver
    delivered, refused = len(receiver.delivered), gone(receiver)
    assert delivered >= 2 and refused >= 2  # the two edits, at least
    counted = wait_for(
        prometheus,
        "sum by (outcome) (o2ims_webhook_delivery_total)",
        lambda s: (
            by(s, "outcome").get("delivered", 0) >= delivered
            and by(s, "outcome").get("dead_lettered", 0) >= refused
        ),
        "the receiver's deliveries and refusals counted",
    )
    outcomes = by(counted, "outcome")
    assert set(outcomes) == {*OUTCOMES}, outcomes
    # Every delivery counted reached the receiver; every dead letter is a 410 it answered.
    assert outcomes["delivered"] <= len(receiver.delivered), outcomes
    assert outcomes["dead_lettered"] <= gone(receiver), outcomes
    assert outcomes["retried"] == 0, outcomes
    wait_for(
        prometheus,
        "sum(o2ims_webhook_delivery_latency_seconds_count)"
        ' - sum(o2ims_webhook_delivery_total{outcome="delivered"})',
        lambda s: bool(s) and value(s) == 0,
        "a latency observed per delivery",
    )
    dead_letters = value(prometheus.query("max(o2ims_webhook_dead_letters)"))
    assert refused <= dead_letters <= gone(receiver)
    # Nothing left behind once the traffic settled: no queued notification, no unread event.
    wait_for(prometheus, "o2ims_webhook_queue_depth", lambda s: bool(s) and value(s) == 0, "queue")
    lag = wait_for(
        prometheus,
        "o2ims_notifier_matcher_lag",
        lambda s: by(s, "feed") == {"inventory": 0.0, "alarms": 0.0},
        "the matcher caught up with both feeds",
    )
    assert lag
    # The kept subscribers: /ok is healthy, /gone dead-lettering.
    health = by(prometheus.query("o2ims_subscriptions"), "health")
    assert health == {"ok": 1.0, "retrying": 0.0, "dead_lettering": 1.0}, health


def test_adapters_are_connected_and_in_sync(observed: Observed) -> None:
    prometheus = observed.prometheus
    connected = by(prometheus.query("o2ims_adapter_connected"), "adapter")
    assert connected == {"static": 1.0, "alertmanager": 1.0, "aws": 1.0}, connected
    lag = by(prometheus.query("o2ims_adapter_sync_lag_seconds"), "adapter")
    assert set(lag) == set(connected)
    # A few seconds at most while connected (a probe every 2 s; the AWS poll every 2 s).
    assert all(0 <= seconds < 10 for seconds in lag.values()), lag


def test_alarms_by_severity_are_those_the_inventory_declares(observed: Observed) -> None:
    declared = Counter(
        alarm["perceivedSeverity"]
        for alarm in yaml.safe_load(EXAMPLE_INVENTORY.read_text())["alarms"]
    )
    active = by(
        observed.prometheus.query('sum by (severity) (o2ims_alarms{state="active"})'), "severity"
    )
    assert active == {severity: float(n) for severity, n in declared.items()}


def test_certificate_expiry_of_every_certificate_the_core_holds(observed: Observed) -> None:
    stack = observed.stack
    files = {
        "server": stack.pki.server_cert,
        "client_ca": stack.pki.ca_cert,
        "edge_client": stack.internal_pki.edge.cert,
        "edge_server": stack.internal_pki.core.cert,
        "edge_client_ca": stack.internal_pki.ca_cert,
    }
    assert set(files) == CERTIFICATE_ROLES
    expiry = by(
        observed.prometheus.query('o2ims_certificate_expiry_seconds{job="netweave-gateway"}'),
        "certificate",
    )
    assert set(expiry) == CERTIFICATE_ROLES
    now = dt.datetime.now(dt.UTC)
    for role, path in files.items():
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
        lifetime = (
            certificate.not_valid_after_utc - certificate.not_valid_before_utc
        ).total_seconds()
        left = (certificate.not_valid_after_utc - now).total_seconds()
        assert 0 < expiry[role] <= lifetime, role
        # Read at scrape time: at most the few seconds since the last scrape apart.
        assert abs(expiry[role] - left) < 60, (role, expiry[role], left)


def test_build_info_and_process_metrics_on_every_netweave_process(observed: Observed) -> None:
    prometheus = observed.prometheus
    builds = prometheus.query("o2ims_build_info")
    assert {s["metric"]["job"] for s in builds} == set(NETWEAVE_JOBS)
    for sample in builds:
        assert sample["metric"]["version"] == version(), sample
        assert sample["metric"]["commit"] == commit(), sample
        assert float(sample["value"][1]) == 1
    cpu = by(prometheus.query("process_cpu_seconds_total"), "job")
    assert set(cpu) >= set(NETWEAVE_JOBS)
    assert all(cpu[job] > 0 for job in NETWEAVE_JOBS), cpu


def test_envoy_statistics(observed: Observed) -> None:
    prometheus, traffic = observed.prometheus, observed.traffic
    assert value(prometheus.query(f'envoy_server_live{{job="{ENVOY_JOB}"}}')) == 1
    classes = by(
        prometheus.query(
            "sum by (envoy_response_code_class) "
            '(envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="o2ims"})'
        ),
        "envoy_response_code_class",
    )
    assert classes["2"] >= traffic.count(200) + traffic.count(201) + traffic.count(204), classes
    assert classes["4"] == sum(
        n for (_, _, code), n in traffic.responses.items() if 400 <= code < 500
    ), classes
    assert classes["5"] == traffic.count(500), classes
    limited = value(prometheus.query("sum(envoy_http_local_rate_limit_rate_limited)"))
    assert limited == traffic.count(429)
    no_cert = value(prometheus.query("sum(envoy_listener_ssl_fail_verify_no_cert)"))
    assert no_cert >= traffic.handshake_failures


# Each distinct query once (two panels may share one), with the title of its first panel.
DASHBOARD_QUERIES: dict[str, str] = {}
for _title, _expr in queries():
    DASHBOARD_QUERIES.setdefault(_expr, _title)


@pytest.mark.parametrize(
    "expr",
    DASHBOARD_QUERIES,
    ids=[f"{index}-{title}" for index, title in enumerate(DASHBOARD_QUERIES.values())],
)
def test_dashboard_query_returns_data(observed: Observed, expr: str) -> None:
    wait_for(observed.prometheus, concrete(expr), has_number, "dashboard data")
