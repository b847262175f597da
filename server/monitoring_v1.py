"""o2ims.monitoring.v1.MonitoringService: the Monitoring 1.x API (api_versions, alarms,
alarm subscriptions).

Alarm event records are read from Redis, where the alarm source (a later issue) writes them:
  alarm:<alarmEventRecordId>  hash  one alarm event record, one field per Monitoring 1.x
                                    attribute: resourceTypeID, resourceID, alarmDefinitionID,
                                    probableCauseID; alarmRaisedTime, alarmChangedTime,
                                    alarmClearedTime, alarmAcknowledgeTime (RFC 3339, absent
                                    or "" when unset); alarmAcknowledged ("true"/"false");
                                    perceivedSeverity (0-5); extensions (a JSON object)
  alarms                      set   the id of every alarm event record
Until an alarm source exists both are absent and the alarm list is empty.
"""

from __future__ import annotations

import json
from typing import Any, Final, cast

import grpc
import redis
import structlog
from google.protobuf import empty_pb2, json_format
from o2ims.monitoring.v1 import monitoring_pb2 as pb
from o2ims.monitoring.v1 import monitoring_pb2_grpc as pb_grpc

from server.errors import ApiError, InvalidArgument, NotFound, grpc_errors
from server.listing import Lister, select
from server.subscriptions import (
    ALARM_SUBSCRIPTIONS,
    Subscription,
    SubscriptionApi,
    SubscriptionDraft,
    SubscriptionResource,
    SubscriptionStore,
)
from server.subscriptions.api import redis_errors
from server.subscriptions.callbacks import CallbackPolicy
from server.subscriptions.rest import mark_created
from server.subscriptions.store import paging_key

API_NAME: Final = "o2ims-infrastructureMonitoring"
# Alarm query and subscriptions: Monitoring 1.0.0. Acknowledge/clear (PATCH) and the alarm
# service configuration, which make it 1.1.0, come with the alarms issue.
V1_VERSION: Final = "1.0.0"

ALARM_KEY_PREFIX: Final = "alarm:"
ALARMS_INDEX_KEY: Final = "alarms"
ALARM_STORE: Final = "alarm store"

ALARM_SUBSCRIPTION_RESOURCE: Final = SubscriptionResource(
    kind=ALARM_SUBSCRIPTIONS,
    object_type="AlarmSubscription",
    api_name=API_NAME,
    collection="alarmSubscriptions",
    majors=("v1",),
)

log = structlog.get_logger()


class UnreadableAlarm(ValueError):
    """A stored alarm record that does not parse as an AlarmEventRecord."""


class AlarmRecords:
    """Reads alarm event records; raises redis.RedisError when Redis is away."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def get(self, alarm_id: str) -> pb.AlarmEventRecord | None:
        stored = cast(dict[bytes, bytes], self._client.hgetall(ALARM_KEY_PREFIX + alarm_id))
        return _decode_alarm(alarm_id, stored) if stored else None

    def list(self) -> list[pb.AlarmEventRecord]:
        """Every readable record, oldest raised first; unreadable ones are logged and left
        out, so one bad record cannot hide every other alarm."""
        members = cast(set[bytes], self._client.smembers(ALARMS_INDEX_KEY))
        ids = sorted(member.decode() for member in members)
        pipe = self._client.pipeline(transaction=False)
        for alarm_id in ids:
            pipe.hgetall(ALARM_KEY_PREFIX + alarm_id)
        records: list[pb.AlarmEventRecord] = []
        for alarm_id, stored in zip(ids, pipe.execute(), strict=True):
            if not stored:
                continue
            try:
                records.append(_decode_alarm(alarm_id, stored))
            except UnreadableAlarm as error:
                log.error(
                    "alarm_record_unreadable", alarm_event_record_id=alarm_id, error=str(error)
                )
        return sorted(
            records,
            key=lambda r: (r.alarm_raised_time.ToNanoseconds(), r.alarm_event_record_id),
        )


def _decode_alarm(alarm_id: str, stored: dict[bytes, bytes]) -> pb.AlarmEventRecord:
    fields = {name.decode(): value.decode() for name, value in stored.items()}
    document: dict[str, Any] = {k: v for k, v in fields.items() if v != ""}
    document["alarmEventRecordId"] = alarm_id
    try:
        if "alarmAcknowledged" in document:
            document["alarmAcknowledged"] = {"true": True, "false": False}[
                document["alarmAcknowledged"]
            ]
        if "perceivedSeverity" in document:
            document["perceivedSeverity"] = int(document["perceivedSeverity"])
        if "extensions" in document:
            document["extensions"] = json.loads(document["extensions"])
        # Unknown fields are skipped: the writer may store attributes of a newer model.
        return json_format.ParseDict(document, pb.AlarmEventRecord(), ignore_unknown_fields=True)
    except (KeyError, ValueError, json_format.ParseError) as error:
        raise UnreadableAlarm(f"alarm:{alarm_id}: {error}") from error


def _wire(subscription: Subscription) -> pb.AlarmSubscriptionInfo:
    return pb.AlarmSubscriptionInfo(
        alarm_subscription_id=subscription.subscription_id,
        # Optional attributes: left out (not "") when the client gave none.
        consumer_subscription_id=subscription.consumer_subscription_id or None,
        filter=subscription.filter or None,
        callback=subscription.callback,
    )


# Monitoring 1.x spells these with "ID"; the 2.x spellings are accepted in filters too.
ALARM_FILTER_ALIASES: Final = {
    "resourceTypeId": "resourceTypeID",
    "resourceId": "resourceID",
    "alarmDefinitionId": "alarmDefinitionID",
    "probableCauseId": "probableCauseID",
    "alarmAcknowledgedTime": "alarmAcknowledgeTime",
}


class MonitoringV1Servicer(pb_grpc.MonitoringServiceServicer):
    def __init__(
        self,
        store: SubscriptionStore,
        alarms: AlarmRecords,
        service_uri: str,
        duplicate_status: int,
        lister: Lister,
        *,
        callback_policy: CallbackPolicy | None = None,
    ) -> None:
        self._lister = lister
        self._service_uri = service_uri.rstrip("/")
        self._alarms = alarms
        self._subscriptions = SubscriptionApi(
            store,
            ALARM_SUBSCRIPTION_RESOURCE,
            service_uri=service_uri,
            duplicate_status=duplicate_status,
            callback_policy=callback_policy,
        )

    def _version_info(self, uri_prefix: str) -> pb.ApiVersionInformation:
        return pb.ApiVersionInformation(
            uri_prefix=uri_prefix, api_versions=[pb.ApiVersion(version=V1_VERSION)]
        )

    @grpc_errors
    def GetAllApiVersions(
        self, request: pb.GetAllApiVersionsRequest, context: grpc.ServicerContext
    ) -> pb.ApiVersionInformation:
        return self._version_info(f"{self._service_uri}/{API_NAME}")

    @grpc_errors
    def GetApiVersions(
        self, request: pb.GetApiVersionsRequest, context: grpc.ServicerContext
    ) -> pb.ApiVersionInformation:
        return self._version_info(f"{self._service_uri}/{API_NAME}/v1")

    # --- alarms ------------------------------------------------------------------------

    @grpc_errors
    def ListAlarms(
        self, request: pb.ListAlarmsRequest, context: grpc.ServicerContext
    ) -> pb.ListAlarmsResponse:
        with redis_errors(ALARM_STORE):
            alarms = {a.alarm_event_record_id: a for a in self._alarms.list()}
        return self._lister.respond_in_memory(
            context,
            request,
            pb.ListAlarmsResponse,
            "alarms",
            scope=f"{API_NAME}/v1/alarms",
            objects=alarms,
            aliases=ALARM_FILTER_ALIASES,
        )

    @grpc_errors
    def GetAlarm(
        self, request: pb.GetAlarmRequest, context: grpc.ServicerContext
    ) -> pb.AlarmEventRecord:
        alarm_id = request.alarm_event_record_id
        if not alarm_id:
            raise InvalidArgument("INVALID_ALARM_REQUEST", [("alarmEventRecordId", "is required")])
        with redis_errors(ALARM_STORE):
            try:
                found = self._alarms.get(alarm_id)
            except UnreadableAlarm as error:
                log.error(
                    "alarm_record_unreadable", alarm_event_record_id=alarm_id, error=str(error)
                )
                raise ApiError(
                    "ALARM_RECORD_UNREADABLE",
                    f"alarm event record '{alarm_id}' is stored in an unreadable form",
                    {"alarmEventRecordId": alarm_id},
                ) from error
        if found is None:
            raise NotFound("AlarmEventRecord", "alarmEventRecordId", alarm_id, "ALARM_NOT_FOUND")
        return select(request, found)

    # --- alarm subscriptions -------------------------------------------------------------

    @grpc_errors
    def ListAlarmSubscriptions(
        self, request: pb.ListAlarmSubscriptionsRequest, context: grpc.ServicerContext
    ) -> pb.ListAlarmSubscriptionsResponse:
        # Pages are keyed by (creation time, id): oldest first, and stable for markers.
        subscriptions = {paging_key(s): _wire(s) for s in self._subscriptions.list()}
        return self._lister.respond_in_memory(
            context,
            request,
            pb.ListAlarmSubscriptionsResponse,
            "alarm_subscriptions",
            scope=f"{API_NAME}/v1/alarmSubscriptions",
            objects=subscriptions,
        )

    @grpc_errors
    def CreateAlarmSubscription(
        self, request: pb.CreateAlarmSubscriptionRequest, context: grpc.ServicerContext
    ) -> pb.AlarmSubscriptionInfo:
        wanted = request.alarm_subscription
        created, location = self._subscriptions.create(
            SubscriptionDraft(
                subscription_id=wanted.alarm_subscription_id,
                callback=wanted.callback,
                filter=wanted.filter,
                consumer_subscription_id=wanted.consumer_subscription_id,
            ),
            # Monitoring is served under v1 only; gRPC callers have no major to choose.
            "v1",
        )
        mark_created(context, location)
        return _wire(created)

    @grpc_errors
    def GetAlarmSubscription(
        self, request: pb.GetAlarmSubscriptionRequest, context: grpc.ServicerContext
    ) -> pb.AlarmSubscriptionInfo:
        return select(request, _wire(self._subscriptions.get(request.alarm_subscription_id)))

    @grpc_errors
    def DeleteAlarmSubscription(
        self, request: pb.DeleteAlarmSubscriptionRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self._subscriptions.delete(request.alarm_subscription_id)
        return empty_pb2.Empty()
