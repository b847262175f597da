"""The AWS adapter at work: poll every region, map, publish the whole set.

AWS has no watch, so each poll reads every region again (poll.py), maps it (mapping.py)
and hands the publisher the whole desired set; the publisher diffs it against what it
holds and emits only real changes, so an unchanged account costs API calls and no events.

A region whose poll fails keeps its last snapshot (its objects stay published), is named
in the publisher's problems (GetAdapterInfo, so the core's /readyz shows it) and in
netweave_aws_region_up, and is retried with backoff (netweave/backoff.py) instead of at
every interval; the other regions go on. Until every region has been read once, nothing
is published and the adapter refuses watches (ADAPTER_NOT_SYNCED): half an account would
make the core delete what it holds of the other half.

Alarms (adapters/aws/alarms.py): each region's poll also reads its CloudWatch alarms and
EC2 status checks (a failure there fails the region), and every publish adds one
AlarmDictionary over all regions' instance alarms and every region's ActiveAlarms (see
_alarm_objects and _poll_region).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import structlog
from o2ims.adapter.v1 import adapter_pb2, domain_pb2

from adapters.aws import alarms as aws_alarms
from adapters.aws.clients import CallCounter, RegionClients
from adapters.aws.mapping import region_objects
from adapters.aws.mapping_file import MappingConfig
from adapters.aws.metrics import AwsMetrics
from adapters.aws.poll import InstanceTypeCache, fetch_region
from adapters.contract import ObjectKey, object_key
from adapters.publisher import ObjectSetPublisher
from netweave.backoff import Backoff

# A failing region is retried no later than this (and never sooner than the interval).
MAX_RETRY_SECONDS: Final = 300.0


@dataclass
class RegionSnapshot:
    """What the last successful poll of a region produced."""

    objects: list[domain_pb2.InventoryObject]
    # CloudWatch alarm name -> description, of the alarms that name an instance.
    alarm_descriptions: dict[str, str] = field(default_factory=dict)
    alarms: list[domain_pb2.ActiveAlarm] = field(default_factory=list)
    polled_at: float = 0.0  # Unix time


@dataclass
class _RegionState:
    backoff: Backoff
    snapshot: RegionSnapshot | None = None
    failure: str = ""
    next_attempt: float = 0.0  # monotonic
    # The poll of this region under way (a failing region's retry may outlast a poll).
    attempt: Future[tuple[RegionSnapshot, float]] | None = None


class AwsAdapter:
    """Publishes the regions of one AWS account through `publisher`."""

    def __init__(
        self,
        clients: Sequence[RegionClients],
        account: Callable[[], str],
        mapping: MappingConfig,
        publisher: ObjectSetPublisher,
        adapter_name: str,
        *,
        poll_interval: float,
        metrics: AwsMetrics | None = None,
        counter: CallCounter | None = None,
        eks: bool = True,
        logger: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self._clients = {item.region: item for item in clients}
        self._account_of = account
        self._account = ""
        self._mapping = mapping
        self._publisher = publisher
        self._name = adapter_name
        self._interval = poll_interval
        self._metrics = metrics or AwsMetrics()
        self._eks = eks
        self._log: structlog.stdlib.BoundLogger = logger or structlog.get_logger()
        self._types = InstanceTypeCache()
        maximum = max(poll_interval, min(MAX_RETRY_SECONDS, 16 * poll_interval))
        self._regions = {
            region: _RegionState(Backoff(initial=poll_interval, maximum=maximum))
            for region in self._clients
        }
        self._account_backoff = Backoff(initial=min(poll_interval, 1.0), maximum=maximum)
        self._account_problem = ""
        self._pool = ThreadPoolExecutor(max_workers=min(8, len(self._clients)) or 1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._synced = threading.Event()
        if counter is not None:
            counter.on_call = self._count_call
            counter.on_request = self._count_request

    @property
    def synced(self) -> threading.Event:
        """Set once every region has been read and the set published."""
        return self._synced

    def _count_call(self, region: str, service: str, operation: str) -> None:
        self._metrics.api_calls.labels(region, service, operation).inc()

    def _count_request(self, region: str, service: str) -> None:
        self._metrics.http_requests.labels(region, service).inc()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="aws-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=READ_JOIN_SECONDS)
            self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll_once(wait_for_failing=False)
            except Exception:  # a bug in one poll must not end the adapter
                self._log.exception("aws_poll_failed")
            wake = started + self._interval
            # Healthy regions are polled every interval whatever the others do; only when
            # every region is failing does the loop sleep until the first retry is due.
            if all(state.failure for state in self._regions.values()):
                wake = max(wake, min(state.next_attempt for state in self._regions.values()))
            self._stop.wait(max(0.0, wake - time.monotonic()))

    # --- one poll ------------------------------------------------------------------------

    def poll_once(self, *, wait_for_failing: bool = True) -> list[adapter_pb2.WatchObjectsResponse]:
        """Poll every region that is due, then publish; returns the events published.

        With `wait_for_failing` False (the poll loop), the retry of a region that is failing
        does not hold up the publish of the others' changes: its result is taken by the first
        poll that finds it done."""
        if not self._account and not self._identify():
            return []
        now = time.monotonic()
        for region, state in self._regions.items():
            if state.attempt is None and (not state.failure or state.next_attempt <= now):
                state.attempt = self._pool.submit(self._poll_region, region)
        for region, state in self._regions.items():
            attempt = state.attempt
            if attempt is None or (state.failure and not wait_for_failing and not attempt.done()):
                continue
            state.attempt = None
            try:
                snapshot, seconds = attempt.result()
            except Exception as error:
                self._failed(region, state, error)
                continue
            if state.failure:
                self._log.info("aws_region_recovered", region=region)
            state.snapshot, state.failure = snapshot, ""
            state.backoff.reset()
            self._metrics.polls.labels(region, "success").inc()
            self._metrics.region_up.labels(region).set(1)
            self._metrics.poll_seconds.labels(region).set(seconds)
            self._metrics.last_success.labels(region).set(snapshot.polled_at)
        self._report_problems()
        if any(state.snapshot is None for state in self._regions.values()):
            return []  # not one complete picture yet: publish nothing
        return self._publish()

    def _identify(self) -> bool:
        try:
            self._account = self._account_of()
        except Exception as error:
            self._account_problem = f"cannot identify the AWS account (sts): {_describe(error)}"
            self._publisher.set_source_problem(self._account_problem)
            self._log.warning("aws_account_unknown", error=_describe(error))
            self._stop.wait(self._account_backoff.next_delay())
            return False
        self._account_problem = ""
        self._log.info("aws_account", account=self._account)
        return True

    def _poll_region(self, region: str) -> tuple[RegionSnapshot, float]:
        started = time.monotonic()
        clients = self._clients[region]
        facts = fetch_region(clients, self._account, self._types, eks=self._eks)
        mapped = region_objects(facts, self._mapping, aws_alarms.dictionary_id(self._name))
        snapshot = RegionSnapshot(mapped.objects, polled_at=time.time())
        # A failure reading the alarms fails the region like any other call.
        state = aws_alarms.fetch_region_alarms(clients.cloudwatch, clients.ec2)
        snapshot.alarm_descriptions = aws_alarms.alarm_descriptions(state)
        snapshot.alarms = aws_alarms.active_alarms(self._name, region, state, mapped.resources.get)
        return snapshot, time.monotonic() - started

    def _failed(self, region: str, state: _RegionState, error: Exception) -> None:
        delay = max(self._interval, state.backoff.next_delay())
        state.next_attempt = time.monotonic() + delay
        state.failure = _describe(error)
        self._metrics.polls.labels(region, "failure").inc()
        self._metrics.region_up.labels(region).set(0)
        self._log.warning(
            "aws_region_poll_failed", region=region, error=state.failure, retry_in=round(delay, 1)
        )

    def _report_problems(self) -> None:
        problems = []
        for region, state in sorted(self._regions.items()):
            if not state.failure:
                continue
            if state.snapshot is None:
                problems.append(f"region {region} not read yet: {state.failure}")
            else:
                when = datetime.fromtimestamp(state.snapshot.polled_at, UTC).isoformat(
                    timespec="seconds"
                )
                problems.append(
                    f"region {region} unreachable, serving its snapshot of {when}: {state.failure}"
                )
        self._publisher.set_source_problem("; ".join(problems))

    def _publish(self) -> list[adapter_pb2.WatchObjectsResponse]:
        objects: dict[ObjectKey, domain_pb2.InventoryObject] = {}
        for _, state in sorted(self._regions.items()):
            assert state.snapshot is not None
            for obj in state.snapshot.objects:
                # Instance and element types are per account: the same in every region.
                objects.setdefault(object_key(obj), obj)
        for obj in self._alarm_objects():
            objects.setdefault(object_key(obj), obj)
        events = self._publisher.replace(objects.values())
        self._metrics.published_objects.set(len(objects))
        for refused in self._publisher.refused:
            self._log.error("object_refused", kind=refused.kind, id=refused.object_id)
        if not self._synced.is_set():
            self._synced.set()
            self._log.info(
                "inventory_synced", objects=len(objects), revision=self._publisher.revision
            )
        if events:
            counts = Counter(event.type for event in events)
            self._log.info(
                "inventory_changed",
                added=counts[adapter_pb2.EVENT_TYPE_ADDED],
                modified=counts[adapter_pb2.EVENT_TYPE_MODIFIED],
                deleted=counts[adapter_pb2.EVENT_TYPE_DELETED],
                revision=events[0].revision,
            )
        return events

    def _alarm_objects(self) -> list[domain_pb2.InventoryObject]:
        """The alarm seam's publish side: one dictionary over every region's alarm names,
        and every region's active alarms."""
        descriptions: dict[str, str] = {}
        active: list[domain_pb2.ActiveAlarm] = []
        for _, state in sorted(self._regions.items()):
            assert state.snapshot is not None
            descriptions.update(state.snapshot.alarm_descriptions)
            active.extend(state.snapshot.alarms)
        dictionary = aws_alarms.alarm_dictionary(
            self._name, sorted(descriptions), dict(sorted(descriptions.items()))
        )
        return [domain_pb2.InventoryObject(alarm_dictionary=dictionary)] + [
            domain_pb2.InventoryObject(alarm=alarm) for alarm in active
        ]


READ_JOIN_SECONDS: Final = 5.0


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]
