"""CloudWatch metric alarms and EC2 status-check impairments as O2ims alarms.

`fetch_region_alarms` is the only I/O: it reads what one region has in alarm (the poller calls
it per region and lets a botocore error fail that region). Everything else is pure and
deterministic: the same RegionAlarmState always maps to the same bytes, because the publisher
diffs bytes and a re-poll of an unchanged account must change nothing. That is why nothing that
moves between polls (StateReasonData's query dates, the evaluation state) is mapped.

Published level-triggered: an alarm in state ALARM (or a status check reported impaired) is one
ActiveAlarm per instance it names; when it goes back to OK (or the check passes) it is no
longer fetched, its ActiveAlarm is withdrawn, and the core clears it.

Ids (ids.object_id, UUIDv5): a CloudWatch alarm on an instance is its alarm ARN and the
instance id (an alarm on two instances is two O2ims alarms); a status check is the region, the
instance id and the check; a definition is the adapter name and the alarm name (CloudWatch) or
the check (EC2), under different kinds so that no alarm name can collide with a check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

from o2ims.adapter.v1 import domain_pb2

from adapters.aws.ids import object_id

DICTIONARY_VERSION: Final = "1.0"  # change with any fixed text below, and alarm_last_change
DICTIONARY_SCHEMA_VERSION: Final = "1.0"
ENTITY_TYPE: Final = "aws-ec2-instance"
VENDOR: Final = "Amazon Web Services"
MANAGEMENT_INTERFACES: Final = ("O2IMS",)
PK_NOTIFICATION_FIELDS: Final = ("alarmDefinitionID", "resourceID")
INSTANCE_DIMENSION: Final = "InstanceId"
IMPAIRED: Final = "impaired"
# describe_instance_status pages: the API's maximum (impaired instances are few anyway).
STATUS_PAGE_SIZE: Final = 1000

Severity: TypeAlias = domain_pb2.AlarmSeverity.ValueType
# CloudWatch alarms carry no severity: an alarm in ALARM is MAJOR unless configured otherwise.
DEFAULT_SEVERITY: Final[Severity] = domain_pb2.ALARM_SEVERITY_MAJOR


@dataclass(frozen=True)
class StatusCheck:
    """One of the two EC2 status checks, as an alarm of its own."""

    key: str  # the describe_instance_status field: InstanceStatus or SystemStatus
    kind: str  # "instance" or "system": the check's part of an alarm's identity
    filter_name: str  # the describe_instance_status filter on its status
    name: str
    default_severity: Severity
    description: str
    repair: str


STATUS_CHECKS: Final[tuple[StatusCheck, ...]] = (
    StatusCheck(
        key="InstanceStatus",
        kind="instance",
        filter_name="instance-status.status",
        name="EC2InstanceStatusCheckImpaired",
        default_severity=domain_pb2.ALARM_SEVERITY_MAJOR,
        description="The EC2 instance status check fails: the instance's own software or "
        "configuration does not answer the hypervisor's reachability probe (a failed boot, a "
        "kernel panic, exhausted memory, a full or corrupted file system, a wrong network "
        "configuration). The host under it is healthy.",
        repair="Read the instance's system log and screenshot (aws ec2 get-console-output, "
        "get-console-screenshot) to find the cause: a failed boot, a kernel panic, memory "
        "exhaustion, a full disk or a broken network configuration. Reboot the instance; if it "
        "stays impaired, fix the operating system (for example by attaching its root volume to "
        "a rescue instance) or replace the instance from its image.",
    ),
    StatusCheck(
        key="SystemStatus",
        kind="system",
        filter_name="system-status.status",
        name="EC2SystemStatusCheckImpaired",
        # The host under the instance is failing (power, network, hardware): the instance is
        # likely unreachable and will not recover by anything done inside it.
        default_severity=domain_pb2.ALARM_SEVERITY_CRITICAL,
        description="The EC2 system status check fails: AWS reports a problem with the host "
        "the instance runs on (loss of network connectivity, loss of system power, a software "
        "or hardware problem on the physical host). The instance is likely unreachable.",
        repair="Check the AWS Health Dashboard and the instance's scheduled events. For an "
        "EBS-backed instance, stop and then start it (not reboot): it moves to a healthy host "
        "(instance store data is lost, and the public IPv4 address changes unless it is an "
        "Elastic IP). For an instance-store-backed instance, launch a replacement from its "
        "image. To automate this, add a CloudWatch alarm with the EC2 recover action on "
        "StatusCheckFailed_System, or let the Auto Scaling group replace the instance.",
    ),
)
# The keys a severity override may use for the status checks.
STATUS_CHECK_NAMES: Final = tuple(check.name for check in STATUS_CHECKS)


@dataclass(frozen=True)
class RegionAlarmState:
    """What one region's poll found, raw enough to map later (see `json_safe`): the metric
    alarms in ALARM that name an instance, sorted by ARN, and the describe_instance_status
    entries with an impaired check, sorted by instance id; and the name and description of
    every metric alarm that names an instance, whatever its state, so that its definition
    stays in the dictionary while the alarm flips between OK and ALARM."""

    metric_alarms: tuple[dict[str, Any], ...]
    impaired: tuple[dict[str, Any], ...]
    defined: tuple[tuple[str, str], ...] = ()


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a Z (microseconds only when there are any)."""
    if value.tzinfo is None:  # botocore's timestamps are aware; a naive one means UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"


def json_safe(value: Any) -> Any:
    """`value` (a boto3 response, or part of one) with its datetimes as RFC 3339 strings and
    its tuples as lists, so that it survives json.dumps and a round trip unchanged."""
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def _time_text(value: Any) -> str:
    """A timestamp of the state (a datetime, or already a string) as RFC 3339; "" if none."""
    if isinstance(value, datetime):
        return format_time(value)
    return value if isinstance(value, str) else ""


def _instance_ids(alarm: Mapping[str, Any]) -> list[str]:
    """The instances an alarm names: its InstanceId dimensions, or those of the metrics of a
    metric-math alarm. Sorted, without repeats."""
    dimension_lists = [alarm.get("Dimensions") or []]
    for query in alarm.get("Metrics") or []:
        metric = (query.get("MetricStat") or {}).get("Metric") or {}
        dimension_lists.append(metric.get("Dimensions") or [])
    return sorted(
        {
            str(dimension["Value"])
            for dimensions in dimension_lists
            for dimension in dimensions
            if dimension.get("Name") == INSTANCE_DIMENSION and dimension.get("Value")
        }
    )


def _is_impaired(status: Mapping[str, Any]) -> bool:
    return any((status.get(check.key) or {}).get("Status") == IMPAIRED for check in STATUS_CHECKS)


def fetch_region_alarms(cloudwatch: Any, ec2: Any) -> RegionAlarmState:
    """The metric alarms in ALARM that name an instance and the instances with an impaired
    status check, of the region of these clients (JSON-safe already). Botocore errors
    propagate: the poller counts them as the region's failure.

    Impaired entries are asked for per check with the API's filter (instance-status.status,
    system-status.status: EC2 ANDs filters of different names, so one call per check), which
    keeps a healthy region at two calls of empty pages however many instances run. The
    filter is checked again here because moto ignores it and returns every running instance.
    Only running instances have status checks, so IncludeAllInstances stays False."""
    metric_alarms: list[dict[str, Any]] = []
    defined: dict[str, str] = {}
    # Every state: the alarms in OK define the dictionary too (one paginated call either way).
    pages = cloudwatch.get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm"])
    for page in pages:
        for alarm in page.get("MetricAlarms", []):
            if not _instance_ids(alarm) or not alarm.get("AlarmName"):
                continue
            defined[str(alarm["AlarmName"])] = _description(alarm)
            if alarm.get("StateValue") == "ALARM":
                metric_alarms.append(json_safe(alarm))
    impaired: dict[str, dict[str, Any]] = {}  # by instance id: one with both checks is one
    for check in STATUS_CHECKS:
        pages = ec2.get_paginator("describe_instance_status").paginate(
            IncludeAllInstances=False,
            Filters=[{"Name": check.filter_name, "Values": [IMPAIRED]}],
            PaginationConfig={"PageSize": STATUS_PAGE_SIZE},
        )
        for page in pages:
            for status in page.get("InstanceStatuses", []):
                if _is_impaired(status) and status.get("InstanceId"):
                    impaired[str(status["InstanceId"])] = json_safe(status)
    return RegionAlarmState(
        metric_alarms=tuple(sorted(metric_alarms, key=lambda a: str(a.get("AlarmArn", "")))),
        impaired=tuple(impaired[instance_id] for instance_id in sorted(impaired)),
        defined=tuple(sorted(defined.items())),
    )


def dictionary_id(adapter_name: str) -> str:
    return object_id("alarm-dictionary", adapter_name)


def cloudwatch_definition_id(adapter_name: str, alarm_name: str) -> str:
    return object_id("cloudwatch-alarm-definition", adapter_name, alarm_name)


def status_check_definition_id(adapter_name: str, check: StatusCheck) -> str:
    return object_id("status-check-definition", adapter_name, check.kind)


def alarm_names(state: RegionAlarmState) -> set[str]:
    """The names of the CloudWatch alarms that name an instance, in any state."""
    return {name for name, _ in state.defined} | {
        str(alarm["AlarmName"]) for alarm in state.metric_alarms if alarm.get("AlarmName")
    }


def alarm_descriptions(state: RegionAlarmState) -> dict[str, str]:
    """Name -> description of each CloudWatch alarm that names an instance (for
    `alarm_dictionary`): the alarm's own AlarmDescription, else a text naming its metric."""
    descriptions = {str(alarm["AlarmName"]): _description(alarm) for alarm in state.metric_alarms}
    descriptions.update(state.defined)
    return descriptions


def _description(alarm: Mapping[str, Any]) -> str:
    name = str(alarm.get("AlarmName", ""))
    own = str(alarm.get("AlarmDescription") or "").strip()
    metric = "/".join(part for part in (alarm.get("Namespace"), alarm.get("MetricName")) if part)
    return own or (
        f"The CloudWatch alarm {name} on the metric {metric} of an EC2 instance is in state ALARM."
        if metric
        else f"The CloudWatch alarm {name} on an EC2 instance is in state ALARM."
    )


def _definition(
    definition_id: str, name: str, description: str, repair: str
) -> domain_pb2.AlarmDefinition:
    return domain_pb2.AlarmDefinition(
        alarm_definition_id=definition_id,
        alarm_name=name,
        alarm_last_change=DICTIONARY_VERSION,
        alarm_change_type=domain_pb2.ALARM_CHANGE_TYPE_ADDED,
        alarm_description=description,
        proposed_repair_actions=repair,
        # CloudWatch and EC2 set the state back themselves: the alarm clears when they do.
        clearing_type=domain_pb2.CLEARING_TYPE_AUTOMATIC,
        management_interface_id=MANAGEMENT_INTERFACES,
        pk_notification_field=PK_NOTIFICATION_FIELDS,
    )


def alarm_dictionary(
    adapter_name: str,
    alarm_names: Iterable[str],
    descriptions: Mapping[str, str] | None = None,
) -> domain_pb2.AlarmDictionary:
    """The dictionary of an EC2 instance's alarms: one definition per CloudWatch alarm name
    (sorted) and the two status checks. `descriptions` (name -> text, e.g.
    `alarm_descriptions`) gives a definition its description."""
    descriptions = descriptions or {}
    dictionary = domain_pb2.AlarmDictionary(
        alarm_dictionary_id=dictionary_id(adapter_name),
        alarm_dictionary_version=DICTIONARY_VERSION,
        alarm_dictionary_schema_version=DICTIONARY_SCHEMA_VERSION,
        entity_type=ENTITY_TYPE,
        vendor=VENDOR,
        management_interface_id=MANAGEMENT_INTERFACES,
        pk_notification_field=PK_NOTIFICATION_FIELDS,
    )
    for name in sorted(set(alarm_names)):
        definition = _definition(
            cloudwatch_definition_id(adapter_name, name),
            name,
            descriptions.get(name)
            or f"The CloudWatch alarm {name} on a metric of an EC2 instance is in state ALARM.",
            "Read the alarm's state reason and the metric's recent datapoints in CloudWatch "
            f"(aws cloudwatch describe-alarms --alarm-names {name!r}), then act on the instance "
            "as the alarm's runbook says; the alarm clears when the metric is back within its "
            "threshold.",
        )
        definition.alarm_additional_fields.update({"source": "cloudwatch", "alarmName": name})
        dictionary.alarm_definition.append(definition)
    for check in STATUS_CHECKS:
        definition = _definition(
            status_check_definition_id(adapter_name, check),
            check.name,
            check.description,
            check.repair,
        )
        definition.alarm_additional_fields.update(
            {"source": "ec2-status-check", "statusCheck": check.key}
        )
        dictionary.alarm_definition.append(definition)
    return dictionary


def _cloudwatch_alarms(
    adapter_name: str,
    region: str,
    alarm: Mapping[str, Any],
    resource_of: Callable[[str], tuple[str, str] | None],
    severities: Mapping[str, Severity],
) -> list[domain_pb2.ActiveAlarm]:
    name = str(alarm.get("AlarmName", ""))
    arn = str(alarm.get("AlarmArn", ""))
    # StateTransitionedTimestamp moves only when StateValue does; StateUpdatedTimestamp also
    # moves when the evaluation state does (older responses have only the latter).
    raised = _time_text(alarm.get("StateTransitionedTimestamp")) or _time_text(
        alarm.get("StateUpdatedTimestamp")
    )
    alarms: list[domain_pb2.ActiveAlarm] = []
    for instance_id in _instance_ids(alarm):
        resource = resource_of(instance_id)
        if resource is None:
            continue
        active = domain_pb2.ActiveAlarm(
            alarm_id=object_id("cloudwatch-alarm", arn, instance_id),
            resource_id=resource[0],
            resource_type_id=resource[1],
            alarm_definition_id=cloudwatch_definition_id(adapter_name, name),
            perceived_severity=severities.get(name, DEFAULT_SEVERITY),
            raised_time=raised,
        )
        active.probable_cause_id = active.alarm_definition_id
        extensions: dict[str, Any] = {
            "source": "cloudwatch",
            "alarmName": name,
            "alarmArn": arn,
            "region": region,
            "instanceId": instance_id,
            "stateReason": str(alarm.get("StateReason", "")),
            "comparisonOperator": str(alarm.get("ComparisonOperator", "")),
        }
        for key, field in (
            ("metricName", "MetricName"),
            ("namespace", "Namespace"),
            ("statistic", "Statistic"),
            ("extendedStatistic", "ExtendedStatistic"),
        ):
            if alarm.get(field):
                extensions[key] = str(alarm[field])
        for key, field in (
            ("threshold", "Threshold"),
            ("period", "Period"),
            ("evaluationPeriods", "EvaluationPeriods"),
        ):
            if isinstance(alarm.get(field), int | float):
                extensions[key] = float(alarm[field])
        active.extensions.update(extensions)
        alarms.append(active)
    return alarms


def _status_check_alarms(
    adapter_name: str,
    region: str,
    status: Mapping[str, Any],
    resource_of: Callable[[str], tuple[str, str] | None],
    severities: Mapping[str, Severity],
) -> list[domain_pb2.ActiveAlarm]:
    instance_id = str(status.get("InstanceId", ""))
    resource = resource_of(instance_id) if instance_id else None
    if resource is None:
        return []
    alarms: list[domain_pb2.ActiveAlarm] = []
    for check in STATUS_CHECKS:
        summary = status.get(check.key) or {}
        if summary.get("Status") != IMPAIRED:
            continue
        details = [
            {
                "name": str(detail.get("Name", "")),
                "status": str(detail.get("Status", "")),
                "impairedSince": _time_text(detail.get("ImpairedSince")),
            }
            for detail in summary.get("Details") or []
        ]
        details.sort(key=lambda d: (d["name"], d["status"], d["impairedSince"]))
        since = sorted(d["impairedSince"] for d in details if d["impairedSince"])
        active = domain_pb2.ActiveAlarm(
            alarm_id=object_id("ec2-status-check", region, instance_id, check.kind),
            resource_id=resource[0],
            resource_type_id=resource[1],
            alarm_definition_id=status_check_definition_id(adapter_name, check),
            perceived_severity=severities.get(check.name, check.default_severity),
            # All ImpairedSince values are RFC 3339 UTC with a Z: the string order is the
            # time order, and the earliest is when the check started failing.
            raised_time=since[0] if since else "",
        )
        active.probable_cause_id = active.alarm_definition_id
        events = [
            {
                "code": str(event.get("Code", "")),
                "description": str(event.get("Description", "")),
                "notBefore": _time_text(event.get("NotBefore")),
                "notAfter": _time_text(event.get("NotAfter")),
            }
            for event in status.get("Events") or []
        ]
        events.sort(key=lambda e: (e["notBefore"], e["code"], e["description"]))
        active.extensions.update(
            {
                "source": "ec2-status-check",
                "alarmName": check.name,
                "statusCheck": check.key,
                "status": IMPAIRED,
                "region": region,
                "instanceId": instance_id,
                "availabilityZone": str(status.get("AvailabilityZone", "")),
                "failingChecks": [d for d in details if d["status"] != "passed"],
                "scheduledEvents": events,
            }
        )
        alarms.append(active)
    return alarms


def active_alarms(
    adapter_name: str,
    region: str,
    state: RegionAlarmState,
    resource_of: Callable[[str], tuple[str, str] | None],
    severities: Mapping[str, Severity] | None = None,
) -> list[domain_pb2.ActiveAlarm]:
    """The alarms active in one region: one per (CloudWatch alarm in ALARM, instance it
    names) and one per impaired status check of an instance, sorted by alarm id.

    `resource_of(instance_id)` gives the instance's (resource id, resource type id), or None
    for an instance not in the inventory: its alarms are skipped. `severities` overrides the
    perceived severity by alarm name (a CloudWatch alarm's name, or a status check's
    definition name in STATUS_CHECKS)."""
    severities = severities or {}
    alarms: list[domain_pb2.ActiveAlarm] = []
    for alarm in state.metric_alarms:
        alarms.extend(_cloudwatch_alarms(adapter_name, region, alarm, resource_of, severities))
    for status in state.impaired:
        alarms.extend(_status_check_alarms(adapter_name, region, status, resource_of, severities))
    alarms.sort(key=lambda active: active.alarm_id)
    return alarms
