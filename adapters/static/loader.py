"""Read an O-Cloud inventory YAML file into domain objects, refusing anything that
would put an inconsistent inventory in front of the SMO.

Every refusal names the file, the line and the problem, so the person who edited the
file can fix it without reading this code.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any, Final

from o2ims.adapter.v1 import domain_pb2

from adapters.contract import ID_FIELDS, KINDS
from adapters.static.fields import fill_message
from adapters.static.marked_yaml import (
    LineProblem,
    MarkedDict,
    MarkedList,
    YamlLimits,
    parse_marked_yaml,
)

# Parsing YAML in pure Python runs at about 1 MB/s: 16 MiB is a minute-long worst case
# that still holds tens of thousands of objects.
DEFAULT_MAX_FILE_BYTES: Final = 16 * 1024 * 1024

# Top-level YAML key -> InventoryObject kind, in the order the file is read.
SECTIONS: Final[dict[str, str]] = {
    "oCloud": "o_cloud",
    "locations": "location",
    "sites": "site",
    "alarmDictionaries": "alarm_dictionary",
    "resourceTypes": "resource_type",
    "resourcePools": "resource_pool",
    "resources": "resource",
    "deploymentManagers": "deployment_manager",
    # Not inventory: the alarms active now, each about a resource of this file.
    "alarms": "alarm",
}

_LABELS: Final[dict[str, str]] = {
    "o_cloud": "oCloud",
    "location": "location",
    "site": "site",
    "alarm_dictionary": "alarm dictionary",
    "resource_type": "resource type",
    "resource_pool": "resource pool",
    "resource": "resource",
    "deployment_manager": "deployment manager",
    "alarm": "alarm",
}

# (field, kind it points at, required) for the references between objects.
_REFERENCES: Final[dict[str, tuple[tuple[str, str, bool], ...]]] = {
    "site": (("globalLocationId", "location", True),),
    "resource_type": (("alarmDictionaryId", "alarm_dictionary", False),),
    "resource_pool": (("oCloudSiteId", "site", True),),
    "resource": (
        ("resourcePoolId", "resource_pool", True),
        ("resourceTypeId", "resource_type", True),
    ),
    # Nested elements take their pool from the parent.
    "element": (("resourceTypeId", "resource_type", True),),
    "alarm": (("resourceId", "resource", True),),
}


class InventoryFileError(Exception):
    """An inventory file that cannot be served; str() is `path:line: problem`."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


def load_inventory(
    path: str | os.PathLike[str],
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    limits: YamlLimits | None = None,
) -> list[domain_pb2.InventoryObject]:
    """Every object the file describes, parents before children (contract.KINDS order)."""
    try:
        _, data = read_inventory_file(path, max_file_bytes)
    except OSError as error:
        raise InventoryFileError(path, None, f"cannot read: {error.strerror}") from error
    return parse_inventory(data, path, limits)


def check_inventory_stat(
    path: str | os.PathLike[str], status: os.stat_result, max_file_bytes: int
) -> None:
    """Refuse what must not be read: anything but a regular file (a FIFO would block
    the reader, a device would never end) and files over `max_file_bytes`."""
    if not stat.S_ISREG(status.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(status.st_mode) else "not a regular file"
        raise InventoryFileError(path, None, f"{kind}: the inventory must be a regular file")
    if status.st_size > max_file_bytes:
        raise InventoryFileError(
            path,
            None,
            f"the file is {status.st_size} bytes, over the limit of {max_file_bytes} "
            "(--max-file-bytes)",
        )


def read_inventory_file(
    path: str | os.PathLike[str], max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> tuple[os.stat_result, bytes]:
    """The file's stat (taken on the open file) and its bytes, after check_inventory_stat;
    never reads more than `max_file_bytes` + 1, whatever the file grows to meanwhile."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer before fstat can refuse it.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(file.fileno())
        check_inventory_stat(path, status, max_file_bytes)
        data = file.read(max_file_bytes + 1)
    if len(data) > max_file_bytes:
        raise InventoryFileError(path, None, f"the file grew past {max_file_bytes} bytes")
    return status, data


def parse_inventory(
    data: bytes, path: str | os.PathLike[str], limits: YamlLimits | None = None
) -> list[domain_pb2.InventoryObject]:
    """Like load_inventory, for bytes already read (`path` is only used in errors)."""
    try:
        return _InventoryReader().read(parse_marked_yaml(data, limits))
    except LineProblem as problem:
        raise InventoryFileError(path, problem.line, problem.problem) from problem


@dataclass(frozen=True)
class _Reference:
    line: int
    value: str
    target_kind: str
    problem: str


def _id_json_name(kind: str) -> str:
    message_type = domain_pb2.InventoryObject.DESCRIPTOR.fields_by_name[kind].message_type
    assert message_type is not None
    return str(message_type.fields_by_name[ID_FIELDS[kind]].json_name)


class _InventoryReader:
    def __init__(self) -> None:
        # kind -> id -> line of its definition; resources and their nested elements
        # share one id space because both become O2ims resources.
        self._defined: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
        self._objects: dict[str, list[domain_pb2.InventoryObject]] = {kind: [] for kind in KINDS}
        # Checked once everything is read, so the file may list objects in any order.
        self._references: list[_Reference] = []
        # For the alarms, checked against their resource's alarm dictionary at the end:
        # resource (or element) id -> its resource type id, dictionary id -> definition ids.
        self._resource_types: dict[str, str] = {}
        self._definitions: dict[str, set[str]] = {}
        self._alarms: list[tuple[MarkedDict, str, domain_pb2.ActiveAlarm]] = []

    def read(self, document: Any) -> list[domain_pb2.InventoryObject]:
        if document is None:
            raise LineProblem(1, "the file is empty; expected a mapping with an oCloud")
        if not isinstance(document, MarkedDict):
            line = document.line if isinstance(document, MarkedList) else 1
            raise LineProblem(line, "the top level must be a mapping with an oCloud")
        for key in document:
            if key not in SECTIONS:
                raise LineProblem(
                    document.line_of(key),
                    f"unknown top-level key '{key}' (allowed: {', '.join(SECTIONS)})",
                )
        self._read_o_cloud(document)
        for section, kind in SECTIONS.items():
            if kind == "o_cloud":
                continue
            for index, item in self._section_items(document, section):
                self._read_item(kind, item, self._describe(kind, item, f"{section}[{index}]"))
        self._check_references()
        self._check_alarm_definitions()
        return [obj for kind in KINDS for obj in self._objects[kind]]

    def _read_o_cloud(self, document: MarkedDict) -> None:
        o_cloud = document.get("oCloud")
        if o_cloud is None:
            line = document.line_of("oCloud") if "oCloud" in document else 1
            raise LineProblem(line, "missing oCloud: exactly one oCloud mapping is required")
        if not isinstance(o_cloud, MarkedDict):
            raise LineProblem(document.line_of("oCloud"), "oCloud must be one mapping (not a list)")
        message = self._new_object("o_cloud", o_cloud, "oCloud")
        self._require(o_cloud, "globalCloudId", message.global_cloud_id, "oCloud")

    @staticmethod
    def _section_items(document: MarkedDict, section: str) -> list[tuple[int, MarkedDict]]:
        items = document.get(section)
        if items is None:
            return []
        if not isinstance(items, MarkedList):
            raise LineProblem(document.line_of(section), f"'{section}' must be a list")
        for index, item in enumerate(items):
            if not isinstance(item, MarkedDict):
                raise LineProblem(
                    items.line_of(index), f"each entry of '{section}' must be a mapping"
                )
        return list(enumerate(items))

    @staticmethod
    def _describe(kind: str, item: MarkedDict, fallback: str) -> str:
        object_id = item.get(_id_json_name(kind))
        if isinstance(object_id, str) and object_id:
            return f"{_LABELS[kind]} '{object_id}'"
        return f"{_LABELS[kind]} {fallback}"

    def _read_item(self, kind: str, item: MarkedDict, what: str) -> None:
        match kind:
            case "location":
                self._read_location(item, what)
            case "alarm_dictionary":
                self._read_alarm_dictionary(item, what)
            case "resource":
                self._read_top_level_resource(item, what)
            case "deployment_manager":
                self._read_deployment_manager(item, what)
            case "alarm":
                self._read_alarm(item, what)
            case _:
                self._new_object(kind, item, what)

    def _new_object(
        self, kind: str, item: MarkedDict, what: str, skip: tuple[str, ...] = ()
    ) -> Any:
        """Fill, id-check and register one object; returns its (kind) message."""
        obj = domain_pb2.InventoryObject()
        message = getattr(obj, kind)
        message.SetInParent()
        fill_message(item, message, what, skip)
        self._register(kind, item, what, getattr(message, ID_FIELDS[kind]))
        self._note_references(kind, item, what)
        self._objects[kind].append(obj)
        return message

    def _register(self, kind: str, item: MarkedDict, what: str, object_id: str) -> None:
        id_name = _id_json_name(kind)
        self._require(item, id_name, object_id, what)
        line = item.line_of(id_name)
        first = self._defined[kind].get(object_id)
        if first is not None:
            raise LineProblem(
                line, f"duplicate {id_name} '{object_id}' (first defined at line {first})"
            )
        self._defined[kind][object_id] = line

    @staticmethod
    def _require(item: MarkedDict, key: str, value: str, what: str) -> None:
        if not value:
            raise LineProblem(item.line_of(key), f"{what}: missing {key}")

    def _note_references(self, kind: str, item: MarkedDict, what: str) -> None:
        for field, target_kind, required in _REFERENCES.get(kind, ()):
            value = item.get(field)
            if not value:
                if required:
                    self._require(item, field, "", what)
                continue
            problem = f"{what} names unknown {field} '{value}'"
            self._references.append(
                _Reference(item.line_of(field), str(value), target_kind, problem)
            )

    def _check_references(self) -> None:
        # By line, so the error is the first one a reader of the file meets.
        for reference in sorted(self._references, key=lambda ref: ref.line):
            if reference.value not in self._defined[reference.target_kind]:
                raise LineProblem(reference.line, reference.problem)

    def _read_location(self, item: MarkedDict, what: str) -> None:
        location: domain_pb2.Location = self._new_object("location", item, what)
        if not (location.HasField("coordinate") or location.civic_address or location.address):
            raise LineProblem(
                item.line, f"{what}: needs at least one of coordinate, civicAddress or address"
            )
        if location.HasField("coordinate"):
            coordinate = item["coordinate"]
            for axis, limit in (("longitude", 180.0), ("latitude", 90.0)):
                if axis not in coordinate:
                    raise LineProblem(coordinate.line, f"{what}: coordinate needs a {axis}")
                if abs(getattr(location.coordinate, axis)) > limit:
                    raise LineProblem(
                        coordinate.line_of(axis),
                        f"{what}: {axis} must be between -{limit:g} and {limit:g}",
                    )

    def _read_alarm_dictionary(self, item: MarkedDict, what: str) -> None:
        dictionary: domain_pb2.AlarmDictionary = self._new_object("alarm_dictionary", item, what)
        definitions = item.get("alarmDefinition") or MarkedList()
        seen: dict[str, int] = {}
        for index, definition in enumerate(definitions):
            line = definitions.line_of(index)
            definition_id = definition.get("alarmDefinitionId")
            if not definition_id:
                raise LineProblem(
                    line, f"{what}: alarmDefinition[{index}]: missing alarmDefinitionId"
                )
            id_line = definition.line_of("alarmDefinitionId")
            if definition_id in seen:
                raise LineProblem(
                    id_line,
                    f"{what}: duplicate alarmDefinitionId '{definition_id}' "
                    f"(first defined at line {seen[definition_id]})",
                )
            seen[definition_id] = id_line
        self._definitions[dictionary.alarm_dictionary_id] = set(seen)

    def _read_top_level_resource(self, item: MarkedDict, what: str) -> None:
        if "parentId" in item:
            raise LineProblem(
                item.line_of("parentId"),
                f"{what}: a top-level resource has no parentId; "
                "nest child resources under their parent's elements instead",
            )
        resource: domain_pb2.Resource = self._new_object("resource", item, what, ("elements",))
        self._resource_types[resource.resource_id] = resource.resource_type_id
        self._read_elements(item, resource)

    def _read_elements(self, item: MarkedDict, parent: domain_pb2.Resource) -> None:
        elements = item.get("elements")
        if elements is None:
            return
        parent_what = f"resource '{parent.resource_id}'"
        if not isinstance(elements, MarkedList):
            raise LineProblem(item.line_of("elements"), f"{parent_what}: 'elements' must be a list")
        for index, element in enumerate(elements):
            if not isinstance(element, MarkedDict):
                raise LineProblem(
                    elements.line_of(index), f"{parent_what}: each element must be a mapping"
                )
            what = self._describe("resource", element, f"{parent_what} elements[{index}]")
            for implied in ("parentId", "resourcePoolId"):
                if implied in element:
                    raise LineProblem(
                        element.line_of(implied),
                        f"{what}: {implied} is implied by nesting under {parent_what}; remove it",
                    )
            child = parent.elements.add()
            fill_message(element, child, what, ("elements",))
            child.parent_id = parent.resource_id
            child.resource_pool_id = parent.resource_pool_id
            self._register("resource", element, what, child.resource_id)
            self._resource_types[child.resource_id] = child.resource_type_id
            self._note_references("element", element, what)
            self._read_elements(element, child)

    def _read_deployment_manager(self, item: MarkedDict, what: str) -> None:
        manager: domain_pb2.DeploymentManager = self._new_object("deployment_manager", item, what)
        for index, location_id in enumerate(manager.supported_locations):
            problem = f"{what} names unknown globalLocationId '{location_id}' in supportedLocations"
            line = item["supportedLocations"].line_of(index)
            self._references.append(_Reference(line, location_id, "location", problem))

    def _read_alarm(self, item: MarkedDict, what: str) -> None:
        if "resourceTypeId" in item:
            raise LineProblem(
                item.line_of("resourceTypeId"),
                f"{what}: resourceTypeId is implied by the resource's type; remove it",
            )
        if "resourceName" in item:
            raise LineProblem(
                item.line_of("resourceName"), f"{what}: name the resource by its resourceId"
            )
        if item.get("perceivedSeverity") in ("CLEARED", 5):
            raise LineProblem(
                item.line_of("perceivedSeverity"),
                f"{what}: an active alarm cannot be CLEARED; remove its entry to clear it",
            )
        alarm: domain_pb2.ActiveAlarm = self._new_object("alarm", item, what)
        self._require(item, "alarmDefinitionId", alarm.alarm_definition_id, what)
        if alarm.perceived_severity == domain_pb2.ALARM_SEVERITY_UNSPECIFIED:
            self._require(item, "perceivedSeverity", "", what)
        if not alarm.probable_cause_id:
            alarm.probable_cause_id = alarm.alarm_definition_id
        self._alarms.append((item, what, alarm))

    def _check_alarm_definitions(self) -> None:
        """Each alarm's definition is in its resource's alarm dictionary, and one condition
        (definition) is active at most once per resource. Runs after _check_references,
        so every resource, type and dictionary named exists."""
        types = {
            obj.resource_type.resource_type_id: obj.resource_type
            for obj in self._objects["resource_type"]
        }
        active: dict[tuple[str, str], int] = {}
        for item, what, alarm in self._alarms:
            alarm.resource_type_id = self._resource_types[alarm.resource_id]
            resource_type = types[alarm.resource_type_id]
            dictionary_id = resource_type.alarm_dictionary_id
            line = item.line_of("alarmDefinitionId")
            if alarm.alarm_definition_id not in self._definitions.get(dictionary_id, set()):
                of_type = (
                    f"resource '{alarm.resource_id}' is of resource type "
                    f"'{resource_type.name}' ({resource_type.resource_type_id})"
                )
                raise LineProblem(
                    line,
                    f"{what}: alarmDefinitionId '{alarm.alarm_definition_id}' is not in "
                    + (
                        f"alarm dictionary '{dictionary_id}': {of_type}"
                        if dictionary_id
                        else f"any alarm dictionary: {of_type}, which has none"
                    ),
                )
            key = (alarm.resource_id, alarm.alarm_definition_id)
            if key in active:
                raise LineProblem(
                    line,
                    f"{what}: alarmDefinitionId '{alarm.alarm_definition_id}' is already "
                    f"active on resource '{alarm.resource_id}' (alarm at line {active[key]})",
                )
            active[key] = item.line
