"""o2ims.monitoring.v1.MonitoringService: the Monitoring 1.x API (api_versions, alarms,
acknowledge and clear, the alarm service configuration, alarm subscriptions).

Alarm state lives in Redis; server/alarms/store.py owns its keys (and documents them). Until
an alarm source writes records the alarm list is empty.

PatchAlarm rules (O2ims checklist M2, M3), checked in this order:
  * the modification is exactly one of `alarmAcknowledged: true` (acknowledge) or
    `perceivedSeverity: 5` (clear): else INVALID_ARGUMENT (REST 400)
  * an unknown alarm: NOT_FOUND (404)
  * `if-match` metadata (REST If-Match) that does not match the record's ETag:
    FAILED_PRECONDITION, reason ETAG_MISMATCH (412); `*` matches any existing record
  * re-acknowledging: FAILED_PRECONDITION, ALARM_ALREADY_ACKNOWLEDGED (409); clearing a
    cleared alarm: ALARM_ALREADY_CLEARED (409)
  * a manual clear is allowed only when the alarm's definition (found by alarmDefinitionID
    in the inventory's alarm dictionaries) says clearingType MANUAL. AUTOMATIC, an
    unspecified clearing type or a definition the gateway does not know:
    FAILED_PRECONDITION, ALARM_NOT_MANUALLY_CLEARABLE (409). The safe side: an alarm
    cleared by hand while its cause persists would hide a failure, and its source would
    re-raise it as a new event anyway.
The REST edge (envoy/modules/shaper.c) maps these FAILED_PRECONDITION reasons to 409/412.
The response is the modification; the record's new ETag is the `etag` response metadata
(REST ETag header), as on GetAlarm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import grpc
import structlog
from google.protobuf import empty_pb2, json_format, struct_pb2
from o2ims.adapter.v1 import domain_pb2
from o2ims.monitoring.v1 import monitoring_pb2 as pb
from o2ims.monitoring.v1 import monitoring_pb2_grpc as pb_grpc

from server.alarms.store import (
    ALARM_FILTER_ALIASES,
    CLEARED_SEVERITY,
    AlarmServiceConfig,
    AlarmStore,
    Event,
    Outcome,
    Result,
    UnreadableAlarm,
)
from server.alarms.view import AlarmView
from server.errors import (
    ApiError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    grpc_errors,
)
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
# Alarm query and subscriptions are Monitoring 1.0.0; acknowledge/clear (PATCH) and the
# alarm service configuration make it 1.1.0.
V1_VERSION: Final = "1.1.0"

ALARM_STORE: Final = "alarm store"
# gRPC metadata of the ETag (response) and the condition (request); the transcoder maps
# them to and from the HTTP headers of the same names.
ETAG_METADATA: Final = "etag"
IF_MATCH_METADATA: Final = "if-match"
# Defining retention in days; a whole number of days, at least one.
MIN_RETENTION_DAYS: Final = 1

ALARM_SUBSCRIPTION_RESOURCE: Final = SubscriptionResource(
    kind=ALARM_SUBSCRIPTIONS,
    object_type="AlarmSubscription",
    api_name=API_NAME,
    collection="alarmSubscriptions",
    majors=("v1",),
)

# alarmDefinitionID -> the definition's clearing type (domain ClearingType), None if the
# inventory has no such definition.
ClearingTypeLookup = Callable[[str], "int | None"]

log = structlog.get_logger()


def _no_definitions(definition_id: str) -> int | None:
    return None


def _wire(subscription: Subscription) -> pb.AlarmSubscriptionInfo:
    return pb.AlarmSubscriptionInfo(
        alarm_subscription_id=subscription.subscription_id,
        # Optional attributes: left out (not "") when the client gave none.
        consumer_subscription_id=subscription.consumer_subscription_id or None,
        filter=subscription.filter or None,
        callback=subscription.callback,
    )


class MonitoringV1Servicer(pb_grpc.MonitoringServiceServicer):
    def __init__(
        self,
        store: SubscriptionStore,
        alarms: AlarmStore,
        service_uri: str,
        duplicate_status: int,
        lister: Lister,
        *,
        view: AlarmView,
        callback_policy: CallbackPolicy | None = None,
        clearing_type: ClearingTypeLookup = _no_definitions,
        on_event: Callable[[Event], None] = lambda event: None,
    ) -> None:
        self._lister = lister
        self._view = view
        self._on_event = on_event
        self._clearing_type = clearing_type
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
        if not self._view.loaded:
            raise Unavailable(
                "ALARMS_NOT_LOADED", "the alarm event records are not loaded yet; retry"
            )
        return self._lister.respond(
            context,
            request,
            pb.ListAlarmsResponse,
            "alarms",
            scope=f"{API_NAME}/v1/alarms",
            ids=self._view.ids(),
            fetch=self._view.fetch,
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
                found = self._alarms.get_with_etag(alarm_id)
            except UnreadableAlarm as error:
                raise _unreadable(alarm_id, error) from error
        if found is None:
            raise _not_found(alarm_id)
        record, etag = found
        selected = select(request, record)
        context.send_initial_metadata(((ETAG_METADATA, etag),))
        return selected

    @grpc_errors
    def PatchAlarm(
        self, request: pb.PatchAlarmRequest, context: grpc.ServicerContext
    ) -> pb.AlarmEventRecordModifications:
        alarm_id = request.alarm_event_record_id
        modification = request.alarm_event_record_modifications
        _check_modification(alarm_id, modification)
        if_match = _metadata(context, IF_MATCH_METADATA)
        with redis_errors(ALARM_STORE):
            if modification.HasField("alarm_acknowledged"):
                result = self._alarms.acknowledge(alarm_id, if_match)
            else:
                result = self._clear(alarm_id, if_match)
        if result.outcome is not Outcome.OK:
            raise _refusal(alarm_id, result)
        event = Event.ACKNOWLEDGE if modification.HasField("alarm_acknowledged") else Event.CLEAR
        self._on_event(event)
        log.info("alarm_patched", alarm_id=alarm_id, change=event.value)
        context.send_initial_metadata(((ETAG_METADATA, result.etag),))
        return modification

    def _clear(self, alarm_id: str, if_match: str | None) -> Result:
        # The definition is looked up before the atomic clear, which re-checks that the
        # record still has it; a source that changed it in between gets us to look again.
        for _ in range(3):
            try:
                record = self._alarms.get(alarm_id)
            except UnreadableAlarm as error:
                raise _unreadable(alarm_id, error) from error
            if record is None:
                return Result(Outcome.NOT_FOUND)
            definition_id = record.alarm_definition_id
            manual = self._clearing_type(definition_id) == domain_pb2.CLEARING_TYPE_MANUAL
            result = self._alarms.clear(
                alarm_id, if_match, definition_id=definition_id, manual=manual
            )
            if result.outcome is Outcome.NOT_CLEARABLE:
                raise FailedPrecondition(
                    "ALARM_NOT_MANUALLY_CLEARABLE",
                    f"alarm event record '{alarm_id}' cannot be cleared manually: its alarm "
                    f"definition '{definition_id}' does not have clearingType MANUAL",
                    {"alarmEventRecordId": alarm_id, "alarmDefinitionID": definition_id},
                )
            if result.outcome is not Outcome.DEFINITION_CHANGED:
                return result
        raise FailedPrecondition(
            "ALARM_CHANGING",
            f"alarm event record '{alarm_id}' keeps changing its definition; retry",
            {"alarmEventRecordId": alarm_id},
        )

    # --- alarm service configuration ----------------------------------------------------

    @grpc_errors
    def GetAlarmServiceConfiguration(
        self, request: pb.GetAlarmServiceConfigurationRequest, context: grpc.ServicerContext
    ) -> pb.AlarmServiceConfiguration:
        with redis_errors(ALARM_STORE):
            return _config_wire(self._alarms.config())

    @grpc_errors
    def UpdateAlarmServiceConfiguration(
        self, request: pb.UpdateAlarmServiceConfigurationRequest, context: grpc.ServicerContext
    ) -> pb.AlarmServiceConfiguration:
        wanted = request.alarm_service_configuration
        _check_retention(wanted.retention_period, required=True)
        config = AlarmServiceConfig(
            wanted.retention_period, json_format.MessageToDict(wanted.extensions)
        )
        with redis_errors(ALARM_STORE):
            return _config_wire(self._alarms.put_config(config))

    @grpc_errors
    def PatchAlarmServiceConfiguration(
        self, request: pb.PatchAlarmServiceConfigurationRequest, context: grpc.ServicerContext
    ) -> pb.AlarmServiceConfiguration:
        patch = request.alarm_service_configuration_patch
        retention = patch.retention_period if patch.HasField("retention_period") else None
        if retention is not None:
            _check_retention(retention, required=False)
        extensions = _struct_with_nulls(patch.extensions) if patch.HasField("extensions") else {}
        with redis_errors(ALARM_STORE):
            return _config_wire(self._alarms.patch_config(retention, extensions))

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


# --- helpers ---------------------------------------------------------------------------------


def _not_found(alarm_id: str) -> NotFound:
    return NotFound("AlarmEventRecord", "alarmEventRecordId", alarm_id, "ALARM_NOT_FOUND")


def _unreadable(alarm_id: str, error: UnreadableAlarm) -> ApiError:
    log.error("alarm_record_unreadable", alarm_event_record_id=alarm_id, error=str(error))
    return ApiError(
        "ALARM_RECORD_UNREADABLE",
        f"alarm event record '{alarm_id}' is stored in an unreadable form",
        {"alarmEventRecordId": alarm_id},
    )


def _metadata(context: grpc.ServicerContext, key: str) -> str | None:
    values = [item.value for item in context.invocation_metadata() or () if item.key == key]
    # Several If-Match headers are one list (RFC 9110 5.3).
    return ", ".join(str(value) for value in values) if values else None


def _check_modification(alarm_id: str, modification: pb.AlarmEventRecordModifications) -> None:
    violations: list[tuple[str, str]] = []
    if not alarm_id:
        violations.append(("alarmEventRecordId", "is required"))
    acknowledging = modification.HasField("alarm_acknowledged")
    clearing = modification.HasField("perceived_severity")
    if acknowledging and clearing:
        violations.append(
            ("alarmAcknowledged", "give either alarmAcknowledged or perceivedSeverity, not both")
        )
    elif not acknowledging and not clearing:
        violations.append(
            (
                "alarmAcknowledged",
                "give alarmAcknowledged: true (acknowledge) or perceivedSeverity: 5 (clear)",
            )
        )
    if acknowledging and not modification.alarm_acknowledged:
        violations.append(("alarmAcknowledged", "only true is allowed (an acknowledgement)"))
    if clearing and modification.perceived_severity != CLEARED_SEVERITY:
        violations.append(
            ("perceivedSeverity", f"only {CLEARED_SEVERITY} (CLEARED) is allowed (a clear)")
        )
    if violations:
        raise InvalidArgument("INVALID_ALARM_MODIFICATION", violations)


def _refusal(alarm_id: str, result: Result) -> ApiError:
    about = {"alarmEventRecordId": alarm_id}
    if result.outcome is Outcome.NOT_FOUND:
        return _not_found(alarm_id)
    if result.outcome is Outcome.ETAG_MISMATCH:
        return FailedPrecondition(
            "ETAG_MISMATCH",
            f"alarm event record '{alarm_id}' has changed: its ETag is now {result.etag}; "
            "read it again",
            {**about, "etag": result.etag},
        )
    if result.outcome is Outcome.ALREADY_ACKNOWLEDGED:
        return FailedPrecondition(
            "ALARM_ALREADY_ACKNOWLEDGED",
            f"alarm event record '{alarm_id}' is already acknowledged",
            about,
        )
    if result.outcome is Outcome.ALREADY_CLEARED:
        return FailedPrecondition(
            "ALARM_ALREADY_CLEARED", f"alarm event record '{alarm_id}' is already cleared", about
        )
    return ApiError("ALARM_UPDATE_FAILED", f"alarm event record '{alarm_id}': {result.outcome}")


def _check_retention(days: int, *, required: bool) -> None:
    if days < MIN_RETENTION_DAYS:
        problem = "is required" if required and days == 0 else "is not a number of days"
        raise InvalidArgument(
            "INVALID_ALARM_SERVICE_CONFIGURATION",
            [("retentionPeriod", f"{problem}: a whole number of days >= {MIN_RETENTION_DAYS}")],
        )


def _struct_with_nulls(extensions: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a dict, nulls kept as None (RFC 7396: delete that key)."""
    return {
        key: None if value.WhichOneof("kind") == "null_value" else json_format.MessageToDict(value)
        for key, value in extensions.fields.items()
    }


def _config_wire(config: AlarmServiceConfig) -> pb.AlarmServiceConfiguration:
    wire = pb.AlarmServiceConfiguration(retention_period=config.retention_period)
    wire.extensions.update(config.extensions)
    return wire
