"""SOL013 attribute selectors over wire messages: which attributes each selector
combination keeps, and which inputs are rejected."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from o2ims.inventory.v1 import inventory_pb2 as inv
from o2ims.inventory.v2 import inventory_pb2 as inv2
from o2ims.monitoring.v1 import monitoring_pb2 as mon

from server.query import QueryError, SelectorSchema, parse_selection

RESOURCE_TYPE = inv.ResourceTypeInfo.DESCRIPTOR


def resource_type() -> inv.ResourceTypeInfo:
    info = inv.ResourceTypeInfo(
        resource_type_id="rt-1", name="pserver", vendor="acme", alarm_dictionary_id="ad-1"
    )
    info.extensions.update({"tier": "gold"})
    # 1.x embeds the dictionary as a Value (so that "none" can print as null).
    info.alarm_dictionary.struct_value.update({"managementInterfaceId": ["O2IMS"]})
    return info


def rendered(
    all_fields: bool | str | None = None,
    fields: str | None = None,
    exclude_fields: str | None = None,
    exclude_default: bool | str | None = None,
    message: Any = None,
) -> set[str]:
    """The JSON keys the transcoder would print for the selected message."""
    message = resource_type() if message is None else message
    selection = parse_selection(
        all_fields, fields, exclude_fields, exclude_default, message.DESCRIPTOR
    )
    printed = json_format.MessageToDict(
        selection.apply(message), always_print_fields_with_no_presence=True
    )
    return set(printed)


FULL = {
    "resourceTypeId",
    "name",
    "description",
    "vendor",
    "model",
    "version",
    "resourceKind",
    "resourceClass",
    "alarmDictionaryId",
    "alarmDictionary",
    "extensions",
}
DEFAULT = FULL - {"alarmDictionary", "extensions"}


@pytest.mark.parametrize(
    ("descriptor", "complex_attributes"),
    [
        (inv.ResourceTypeInfo.DESCRIPTOR, {"alarmDictionary", "extensions"}),
        (inv.ResourceInfo.DESCRIPTOR, {"elements", "extensions"}),
        (inv.DeploymentManagerInfo.DESCRIPTOR, {"capabilities", "capacity", "extensions"}),
        (inv2.LocationInfo.DESCRIPTOR, {"coordinate", "civicAddress", "extensions"}),
        # Timestamps print as JSON strings: scalars, not complex.
        (mon.AlarmEventRecord.DESCRIPTOR, {"extensions"}),
    ],
)
def test_complex_attributes_are_computed_from_the_descriptor(
    descriptor: Descriptor, complex_attributes: set[str]
) -> None:
    schema = SelectorSchema.of(descriptor)
    assert schema.complex == complex_attributes
    assert not schema.complex & schema.mandatory


def test_no_selector_returns_the_full_representation_unchanged() -> None:
    info = resource_type()
    selection = parse_selection(None, None, None, None, RESOURCE_TYPE)
    assert selection.apply(info) is info
    assert rendered() == FULL


@pytest.mark.parametrize("value", ["", "true", "TRUE", True])
def test_all_fields_even_without_a_value_returns_everything(value: bool | str) -> None:
    assert rendered(all_fields=value) == FULL


def test_all_fields_takes_precedence_over_every_other_selector() -> None:
    assert rendered(all_fields="", fields="name", exclude_fields="extensions") == FULL
    assert rendered(all_fields="", exclude_default="true") == FULL


def test_all_fields_false_is_no_selector() -> None:
    assert rendered(all_fields="false", exclude_default="") == DEFAULT


def test_exclude_default_returns_the_default_representation() -> None:
    info = resource_type()
    selection = parse_selection(None, None, None, "true", RESOURCE_TYPE)
    selected = selection.apply(info)
    assert selected is not info
    assert not selected.HasField("extensions") and not selected.HasField("alarm_dictionary")
    assert info.HasField("extensions")  # the cached original is untouched
    assert rendered(exclude_default="") == DEFAULT


def test_fields_adds_complex_attributes_to_the_default_representation() -> None:
    assert rendered(fields="extensions") == DEFAULT | {"extensions"}
    assert rendered(fields="alarmDictionary/managementInterfaceId") == DEFAULT | {"alarmDictionary"}
    assert rendered(fields="extensions/any/key/below,name") == DEFAULT | {"extensions"}


def test_fields_naming_only_mandatory_attributes_keeps_them_all() -> None:
    assert rendered(fields="name") == DEFAULT
    assert rendered(fields="name,description") == DEFAULT


def test_exclude_fields_removes_from_the_full_representation() -> None:
    # CONF 7.3.5: exclude_fields=extensions keeps the alarmDictionary object.
    assert rendered(exclude_fields="extensions") == FULL - {"extensions"}


def test_exclude_wins_over_fields() -> None:
    assert rendered(fields="extensions", exclude_fields="extensions") == DEFAULT


def test_nested_exclusions_are_validated_but_remove_nothing() -> None:
    assert rendered(exclude_fields="alarmDictionary/vendor") == FULL


def test_mandatory_attributes_are_never_removed() -> None:
    assert rendered(exclude_fields="name,resourceTypeId") == FULL


def test_caller_declared_mandatory_and_complex_attributes() -> None:
    resource = inv.ResourceInfo(resource_id="r", elements=[inv.ResourceInfo(resource_id="e")])
    resource.extensions.update({"a": 1})
    keep_elements = SelectorSchema.of(inv.ResourceInfo.DESCRIPTOR, mandatory=["elements"])
    selected = parse_selection(None, None, None, "", keep_elements).apply(resource)
    assert len(selected.elements) == 1 and not selected.HasField("extensions")
    only_extensions = SelectorSchema.of(inv.ResourceInfo.DESCRIPTOR, complex=["extensions"])
    selected = parse_selection(None, None, "elements", None, only_extensions).apply(resource)
    assert len(selected.elements) == 1  # not complex for this caller, so mandatory


def test_schema_overrides_must_name_real_attributes() -> None:
    with pytest.raises(ValueError, match="no attributes"):
        SelectorSchema.of(RESOURCE_TYPE, mandatory=["nope"])


def test_nothing_to_remove_returns_the_same_object() -> None:
    bare = inv.ResourceTypeInfo(resource_type_id="rt-2")
    assert parse_selection(None, None, None, "", RESOURCE_TYPE).apply(bare) is bare


@pytest.mark.parametrize(
    ("fields", "exclude_fields", "expected"),
    [
        # CONF 7.3.7: the first attribute is literally "(xId".
        ("(xId,WrongAttrName)", None, "fields: at position 1: unknown attribute '(xId'"),
        ("name,WrongAttrName", None, "fields: at position 6: unknown attribute 'WrongAttrName'"),
        (None, "WrongAttrName", "exclude_fields: at position 1: unknown attribute"),
        ("name/first", None, "attribute 'name' is a string, it has no attribute 'first'"),
        ("name,,vendor", None, "fields: at position 6: empty attribute name"),
        ("resource_type_id", None, "unknown attribute 'resource_type_id'"),
    ],
)
def test_unknown_selector_attributes_are_rejected(
    fields: str | None, exclude_fields: str | None, expected: str
) -> None:
    with pytest.raises(QueryError) as caught:
        parse_selection(None, fields, exclude_fields, None, RESOURCE_TYPE)
    assert expected in str(caught.value)


def test_paths_below_the_embedded_alarm_dictionary_are_free_form() -> None:
    # The 1.x alarmDictionary is a Value (object or null): like extensions, the attributes
    # below it are known per object, not per type, so any nested path is accepted.
    assert rendered(fields="alarmDictionary/nope") == DEFAULT | {"alarmDictionary"}


def test_unknown_attributes_are_rejected_even_under_all_fields() -> None:
    with pytest.raises(QueryError, match=r"unknown attribute '\(xId'"):
        parse_selection("", "(xId,WrongAttrName)", None, None, RESOURCE_TYPE)


@pytest.mark.parametrize("parameter", ["all_fields", "exclude_default"])
def test_flags_take_no_value_or_true_or_false(parameter: str) -> None:
    flags: dict[str, Any] = {"all_fields": None, "exclude_default": None, parameter: "maybe"}
    with pytest.raises(QueryError) as caught:
        parse_selection(flags["all_fields"], None, None, flags["exclude_default"], RESOURCE_TYPE)
    assert caught.value.violation() == (parameter, "must be empty, true or false, got 'maybe'")


def test_spaces_around_listed_attributes_are_ignored() -> None:
    assert rendered(fields=" extensions , name") == DEFAULT | {"extensions"}


def test_aliases_name_attributes_in_selectors_too() -> None:
    selection = parse_selection(
        None, None, "ext", None, RESOURCE_TYPE, aliases={"ext": "extensions"}
    )
    assert selection.removed == {"extensions"}


def test_equal_selections_have_equal_canonical_text() -> None:
    one = parse_selection(None, "extensions", None, None, RESOURCE_TYPE)
    two = parse_selection(None, None, "alarmDictionary", None, RESOURCE_TYPE)
    assert one == two and one.canonical == two.canonical == "alarmDictionary"
