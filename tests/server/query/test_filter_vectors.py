"""The SOL013 filter: the spec's parser vectors, the conformance requests, every error
class with its location, and the §4.1 semantics on real wire messages."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor
from o2ims.inventory.v1 import inventory_pb2 as inv
from o2ims.inventory.v2 import inventory_pb2 as inv2
from o2ims.monitoring.v1 import monitoring_pb2 as mon
from o2ims.subscriptions.v1 import subscriptions_pb2 as subs

from server.query import QueryError, combine, index_key, parse_filter

RESOURCE = inv.ResourceInfo.DESCRIPTOR
ALARM = mon.AlarmEventRecord.DESCRIPTOR
POOL_ID = "0b4a1f3e-5c2d-4e6f-8a9b-0c1d2e3f4a5b"
RESOURCE_ID = "9f8e7d6c-5b4a-4321-8fed-cba987654321"


def matches(text: str, message: Any, aliases: dict[str, str] | None = None) -> bool:
    return parse_filter(text).bind(message.DESCRIPTOR, aliases).matches(message)


def error_of(text: str, descriptor: Descriptor = RESOURCE) -> QueryError:
    with pytest.raises(QueryError) as caught:
        parse_filter(text).bind(descriptor)
    return caught.value


def resource(**fields: Any) -> inv.ResourceInfo:
    extensions = fields.pop("extensions", None)
    info = inv.ResourceInfo(
        resource_id=fields.pop("resource_id", RESOURCE_ID),
        resource_pool_id=fields.pop("resource_pool_id", POOL_ID),
        **fields,
    )
    if extensions is not None:
        info.extensions.update(extensions)
    return info


# --- §10 parser vectors ----------------------------------------------------------------

VECTORS = [
    ("(eq,myattr,myvalue)", "eq", ("myattr",), ("myvalue",)),
    ("(cont,myattr,myvalue)", "cont", ("myattr",), ("myvalue",)),
    ("(eq,myattr,'my value')", "eq", ("myattr",), ("my value",)),
    ("(eq,myattr,'my ) value')", "eq", ("myattr",), ("my ) value",)),
    ("(eq,myattr,'my , value')", "eq", ("myattr",), ("my , value",)),
    ("(eq,myattr,'my''value')", "eq", ("myattr",), ("my'value",)),
    ("(eq,myattr,my,value)", "eq", ("myattr",), ("my", "value")),
    ("(eq,myattr,)", "eq", ("myattr",), ("",)),
    ("(eq,myattr, )", "eq", ("myattr",), (" ",)),
    ("(eq,myattr/yourattr,yourvalue)", "eq", ("myattr", "yourattr"), ("yourvalue",)),
    ("(eq,my~0attr,v)", "eq", ("my~attr",), ("v",)),
    ("(eq,my~1attr,v)", "eq", ("my/attr",), ("v",)),
    ("(eq,my~battr,v)", "eq", ("my@attr",), ("v",)),
]


@pytest.mark.parametrize(("text", "op", "path", "values"), VECTORS)
def test_spec_vector_parses_as_listed(
    text: str, op: str, path: tuple[str, ...], values: tuple[str, ...]
) -> None:
    (term,) = parse_filter(text).terms
    assert (term.op, term.path, term.values) == (op, path, values)
    assert parse_filter(str(parse_filter(text))) == parse_filter(text)


def test_semicolon_separates_two_terms() -> None:
    terms = parse_filter("(eq,a,x);(eq,b,y)").terms
    assert [(t.op, t.path, t.values) for t in terms] == [
        ("eq", ("a",), ("x",)),
        ("eq", ("b",), ("y",)),
    ]


def test_blank_filter_has_no_terms_and_matches_everything() -> None:
    for text in ("", "   "):
        assert not parse_filter(text)
        assert parse_filter(text).bind(RESOURCE).matches(resource())


def test_two_values_for_eq_parse_and_binding_rejects_them() -> None:
    assert parse_filter("(eq,name,my,value)").terms[0].values == ("my", "value")
    assert "eq takes exactly 1 value, got 2" in str(error_of("(eq,name,my,value)"))


# --- CONF 7.3.5 example requests -------------------------------------------------------


def resource_type(name: str, description: str) -> inv.ResourceTypeInfo:
    return inv.ResourceTypeInfo(resource_type_id=RESOURCE_ID, name=name, description=description)


def test_conformance_eq_and_neq_on_resource_id() -> None:
    one, other = resource(), resource(resource_id=POOL_ID)
    assert matches(f"(eq,resourceId,{RESOURCE_ID})", one)
    assert not matches(f"(eq,resourceId,{RESOURCE_ID})", other)
    assert not matches(f"(neq,resourceId,{RESOURCE_ID})", one)
    assert matches(f"(neq,resourceId,{RESOURCE_ID})", other)


def test_conformance_cont_and_ncont_on_description() -> None:
    nic = resource_type("pserver_if", "Ethernet interface")
    mem = resource_type("pserver_mem", "DIMM")
    assert matches("(cont,description,Ethernet)", nic)
    assert not matches("(cont,description,Ethernet)", mem)
    assert matches("(ncont,description,Ethernet)", mem)
    assert not matches("(ncont,description,Ethernet)", nic)


def test_conformance_in_and_nin_on_name() -> None:
    names = "pserver,pserver_if,pserver_mem"
    assert matches(f"(in,name,{names})", resource_type("pserver_mem", ""))
    assert not matches(f"(in,name,{names})", resource_type("switch", ""))
    assert matches(f"(nin,name,{names})", resource_type("switch", ""))
    assert not matches(f"(nin,name,{names})", resource_type("pserver", ""))


def test_conformance_combination_requires_every_term() -> None:
    nic = resource_type("pserver_if", "Ethernet interface")
    assert matches("(in,name,pserver,pserver_if);(cont,description,Ethernet)", nic)
    assert not matches("(in,name,pserver,pserver_if);(cont,description,DIMM)", nic)


# --- error classes, each pointing at the problem -------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("invalid-syntax", "filter: term 1 at position 1: expected '(' to start a term"),
        ("(eq,name,x", "filter: term 1 at position 11: missing ')'"),
        ("(eq,name", "filter: term 1 at position 9: unexpected end of filter"),
        (
            "(eq,name,foo);(eqq,a,b)",
            "filter: term 2 at position 16: unknown operator 'eqq' (expected one of eq, neq,",
        ),
        ("(,name,x)", "filter: term 1 at position 2: missing operator"),
        ("(eq,name,x)(eq,name,y)", "term 1 at position 12: expected ';' between terms"),
        ("(eq,name,x);", "term 2 at position 13: expected '(' to start a term, found end"),
        ("(eq,name,'x)", "term 1 at position 10: unterminated quoted value"),
        ("(eq,name,'x'y)", "term 1 at position 13: expected ',' or ')' after a quoted value"),
        ("(eq,name)", "term 1 at position 9: expected ',' after the attribute path"),
        ("(eq,,x)", "term 1 at position 5: missing attribute path"),
        ("(eq,a//b,x)", "term 1 at position 7: empty segment"),
        ("(eq,my~2attr,x)", "term 1 at position 7: invalid escape '~2'"),
        ("(eq,@key,x)", "term 1 at position 5: invalid character '@'"),
    ],
)
def test_syntax_errors_name_term_and_position(text: str, expected: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_filter(text)
    assert expected in str(caught.value)
    assert caught.value.parameter == "filter"


@pytest.mark.parametrize("op", ["eq", "neq", "gt", "lt", "gte", "lte"])
def test_single_value_operators_reject_two_values(op: str) -> None:
    text = f"(eq,name,x);({op},name,a,b)"
    error = error_of(text)
    position = text.index(",b)") + 2  # 1-based: the surplus value
    assert str(error) == f"filter: term 2 at position {position}: {op} takes exactly 1 value, got 2"
    assert error.term_index == 2


@pytest.mark.parametrize("op", ["cont", "ncont", "in", "nin"])
def test_multi_value_operators_take_several_values(op: str) -> None:
    parse_filter(f"({op},name,a,b,c)").bind(RESOURCE)


@pytest.mark.parametrize(
    "descriptor",
    [
        inv.ResourceTypeInfo.DESCRIPTOR,
        inv.ResourcePoolInfo.DESCRIPTOR,
        inv.ResourceInfo.DESCRIPTOR,
        inv.DeploymentManagerInfo.DESCRIPTOR,
        inv.OCloudInfo.DESCRIPTOR,
        inv2.LocationInfo.DESCRIPTOR,
        inv2.OCloudSiteInfo.DESCRIPTOR,
        subs.InventorySubscriptionInfo.DESCRIPTOR,
        mon.AlarmEventRecord.DESCRIPTOR,
        mon.AlarmSubscriptionInfo.DESCRIPTOR,
    ],
)
def test_unknown_attribute_is_rejected_on_every_list_type(descriptor: Descriptor) -> None:
    error = error_of("(eq,WrongAttrName,anyvalue)", descriptor)
    assert str(error) == "filter: term 1 at position 5: unknown attribute 'WrongAttrName'"


def test_unknown_attribute_suggests_the_public_name_only() -> None:
    error = error_of("(eq,resourcePoolID,x)")
    assert "unknown attribute 'resourcePoolID' (did you mean 'resourcePoolId'?)" in str(error)
    # Proto field names are not attribute names, and are never suggested.
    assert "resource_pool_id" in str(error_of("(eq,resource_pool_id,x)"))
    assert "did you mean 'resource_pool_id'" not in str(error_of("(eq,resource_pool_idd,x)"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(eq,extensions,x)", "attribute 'extensions' is an object"),
        ("(eq,name/first,x)", "attribute 'name' is a string, it has no attribute 'first'"),
        ("(eq,elements/nope,x)", "unknown attribute 'nope' in 'elements'"),
        ("(gt,tags,x);(eq,elements,x)", "term 2 at position 17: attribute 'elements' is an obj"),
    ],
)
def test_paths_that_do_not_name_a_comparable_attribute(text: str, expected: str) -> None:
    assert expected in str(error_of(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "(eq,alarmAcknowledged,maybe)",
            "term 1 at position 23: type mismatch: 'maybe' is not true or false",
        ),
        ("(eq,perceivedSeverity,high)", "position 23: type mismatch: 'high' is not an integer"),
        ("(in,perceivedSeverity,1,1.5)", "position 25: type mismatch: '1.5' is not an integer"),
        ("(gt,alarmRaisedTime,yesterday)", "'yesterday' is not an RFC 3339 timestamp"),
        (f"(eq,perceivedSeverity,{'9' * 5000})", "is not an integer"),
        ("(cont,perceivedSeverity,1)", "cont and ncont need a string attribute"),
        ("(gt,alarmAcknowledged,false)", "gt does not apply to 'alarmAcknowledged'"),
    ],
)
def test_values_that_do_not_fit_the_attribute_type(text: str, expected: str) -> None:
    assert expected in str(error_of(text, ALARM))


def test_enum_values_are_checked_by_name() -> None:
    error = error_of("(eq,resourceKind,HYBRID)", inv.ResourceTypeInfo.DESCRIPTOR)
    assert "'HYBRID' is not one of UNDEFINED, PHYSICAL, LOGICAL" in str(error)


def test_error_maps_to_one_field_violation() -> None:
    error = error_of("(eq,WrongAttrName,anyvalue)")
    assert error.violation() == (
        "filter",
        "term 1 at position 5: unknown attribute 'WrongAttrName'",
    )
    assert error.reason == "INVALID_QUERY_PARAMETER"


def test_error_in_a_second_filter_parameter_says_so() -> None:
    with pytest.raises(QueryError, match=r"unknown operator 'bad' .*\(in filter parameter 2\)"):
        parse_filter("(bad,name,x)", occurrence=2)
    with pytest.raises(QueryError, match=r"unknown attribute 'nope' \(in filter parameter 2\)"):
        combine([parse_filter("(eq,name,x)"), parse_filter("(eq,nope,x)", occurrence=2)]).bind(
            RESOURCE
        )


def test_long_input_is_not_echoed_in_full() -> None:
    error = error_of(f"(eq,{'x' * 5000},v)")
    assert len(str(error)) < 200


# --- Q1: every operator on strings -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(eq,name,node-b)", True),
        ("(neq,name,node-b)", False),
        ("(gt,name,node-a)", True),
        ("(gte,name,node-b)", True),
        ("(lt,name,node-b)", False),
        ("(lte,name,node-b)", True),
        ("(cont,name,de-)", True),
        ("(ncont,name,de-)", False),
        ("(in,name,node-a,node-b)", True),
        ("(nin,name,node-a,node-b)", False),
        ("(eq,name,NODE-B)", False),  # only UUIDs compare case-insensitively
        ("(cont,name,x,-b)", True),  # cont ORs its values
        ("(ncont,name,x,y)", True),  # ncont: none of them
    ],
)
def test_operators_on_a_string_attribute(text: str, expected: bool) -> None:
    assert matches(text, resource(name="node-b")) is expected


def test_strings_order_lexicographically_and_integers_numerically() -> None:
    assert matches("(gt,name,10)", resource(name="9"))
    assert not matches("(gt,perceivedSeverity,10)", mon.AlarmEventRecord(perceived_severity=9))
    assert matches("(lt,perceivedSeverity,10)", mon.AlarmEventRecord(perceived_severity=9))


# --- Q2: coercion and UUIDs -------------------------------------------------------------


def test_boolean_and_integer_values_are_coerced() -> None:
    alarm = mon.AlarmEventRecord(alarm_acknowledged=False, perceived_severity=1)
    assert matches("(eq,alarmAcknowledged,false)", alarm)
    assert not matches("(eq,alarmAcknowledged,true)", alarm)
    assert matches("(eq,perceivedSeverity,1)", alarm)
    assert matches("(eq,perceivedSeverity,+01)", alarm)
    assert matches("(in,perceivedSeverity,0,1)", alarm)
    assert matches("(neq,perceivedSeverity,2)", alarm)


def test_uuids_compare_case_insensitively() -> None:
    info = resource(resource_pool_id=POOL_ID.upper())
    assert matches(f"(eq,resourcePoolId,{POOL_ID})", info)
    assert matches(f"(eq,resourcePoolId,{POOL_ID.upper()})", resource())
    assert not matches(f"(neq,resourcePoolId,{POOL_ID})", info)
    assert matches(f"(in,resourcePoolId,x,{POOL_ID})", info)
    assert not matches(f"(nin,resourcePoolId,x,{POOL_ID})", info)
    # A value that is not UUID-shaped keeps its case.
    assert not matches(f"(eq,resourcePoolId,{POOL_ID}x)", resource(resource_pool_id=POOL_ID + "X"))


def test_alarm_attributes_accept_both_casings_through_aliases() -> None:
    alarm = mon.AlarmEventRecord(resource_type_id=RESOURCE_ID, alarm_acknowledged=False)
    aliases = {"resourceTypeId": "resourceTypeID"}
    text = f"(eq,resourceTypeId,{RESOURCE_ID});(eq,alarmAcknowledged,false)"
    assert matches(text, alarm, aliases)
    assert matches(f"(eq,resourceTypeID,{RESOURCE_ID})", alarm, aliases)
    bound = parse_filter(text).bind(ALARM, aliases)
    assert str(bound) == f"(eq,resourceTypeID,{RESOURCE_ID});(eq,alarmAcknowledged,false)"
    assert "unknown attribute 'resourceTypeId'" in str(error_of(text, ALARM))


def test_enums_compare_by_value_name() -> None:
    physical = inv.ResourceTypeInfo(resource_kind=inv.ResourceKind.PHYSICAL)
    assert matches("(eq,resourceKind,PHYSICAL)", physical)
    assert matches("(in,resourceKind,LOGICAL,PHYSICAL)", physical)
    assert matches("(neq,resourceKind,UNDEFINED)", physical)
    assert matches("(cont,resourceKind,PHYS)", physical)
    assert matches("(gt,resourceKind,LOGICAL)", physical)  # "PHYSICAL" > "LOGICAL"


def test_timestamps_compare_in_time_order() -> None:
    alarm = mon.AlarmEventRecord()
    alarm.alarm_raised_time.FromJsonString("2024-05-01T10:00:00.5Z")
    assert matches("(gt,alarmRaisedTime,2024-05-01T10:00:00Z)", alarm)
    assert matches("(eq,alarmRaisedTime,2024-05-01T12:00:00.500+02:00)", alarm)
    assert not matches("(lt,alarmClearedTime,2999-01-01T00:00:00Z)", alarm)  # unset: missing


# --- Q3: AND ----------------------------------------------------------------------------


def test_repeated_filter_parameters_and_together() -> None:
    info = resource(name="a", description="first")
    both = combine([parse_filter("(eq,name,a)"), parse_filter("(cont,description,ir)")])
    assert both.bind(RESOURCE).matches(info)
    other = combine([parse_filter("(eq,name,a)"), parse_filter("(cont,description,zz)")])
    assert not other.bind(RESOURCE).matches(info)


# --- Q4: quoting ------------------------------------------------------------------------


def test_quoted_values_hold_spaces_quotes_commas_and_parentheses() -> None:
    assert matches("(eq,name,'my cluster')", resource(name="my cluster"))
    assert matches("(eq,name,'O''Brien')", resource(name="O'Brien"))
    assert matches("(in,name,'a,b','c)d')", resource(name="c)d"))
    assert matches("(eq,name,my cluster)", resource(name="my cluster"))  # unquoted spaces kept
    assert matches("(eq,name, )", resource(name=" "))
    assert matches("(eq,name,)", resource(name=""))


# --- Q5: nested attributes and escapes ----------------------------------------------------


def test_nested_extension_attributes() -> None:
    info = resource(extensions={"country": "ES", "site": {"rack": "R1", "unit": 12}})
    assert matches("(eq,extensions/country,ES)", info)
    assert matches("(eq,extensions/site/rack,R1)", info)
    assert matches("(gt,extensions/site/unit,9)", info)  # JSON number: numeric order
    assert matches("(eq,extensions/site/unit,12.0)", info)
    assert not matches("(eq,extensions/site,R1)", info)  # an object equals no scalar
    assert matches("(neq,extensions/site/rack,R2)", info)


def test_escaped_extension_keys() -> None:
    info = resource(extensions={"a/b": "slash", "x~y": "tilde", "@type": "at"})
    assert matches("(eq,extensions/a~1b,slash)", info)
    assert matches("(eq,extensions/x~0y,tilde)", info)
    assert matches("(eq,extensions/~btype,at)", info)


def test_extension_values_compare_by_their_json_type() -> None:
    info = resource(extensions={"ok": True, "n": 3, "s": "3", "none": None, "list": [1, "x"]})
    assert matches("(eq,extensions/ok,true)", info)
    assert not matches("(eq,extensions/ok,1)", info)
    assert matches("(eq,extensions/n,3)", info)
    assert matches("(eq,extensions/s,3)", info)
    assert not matches("(eq,extensions/n, 3)", info)  # values are verbatim: " 3" is no number
    assert not matches("(cont,extensions/n,3)", info)  # cont needs a string
    assert matches("(eq,extensions/list,x)", info)
    assert matches("(eq,extensions/list,1)", info)
    assert not matches("(eq,extensions/none,null)", info)  # JSON null is missing
    assert matches("(neq,extensions/none,x)", info)


# --- missing attributes and arrays ---------------------------------------------------------


def test_missing_attributes_fail_eq_and_pass_neq() -> None:
    bare = resource()
    for text in ("(eq,extensions/x,v)", "(eq,parentId,)", "(gt,parentId,a)", "(cont,parentId,)"):
        assert not matches(text, bare), text
    for text in (
        "(neq,extensions/x,v)",
        "(neq,parentId,)",
        "(ncont,parentId,a)",
        "(nin,parentId,a)",
    ):
        assert matches(text, bare), text


def test_empty_strings_are_values_unless_the_field_tracks_presence() -> None:
    assert matches("(eq,description,)", resource())  # proto3 scalar: "" is its value
    assert matches("(eq,parentId,)", resource(parent_id=""))  # optional, set to ""


def test_array_attributes_match_when_any_element_does() -> None:
    info = resource(tags=["edge", "gpu"], elements=[resource(name="nic0"), resource(name="nic1")])
    assert matches("(eq,tags,gpu)", info)
    assert not matches("(neq,tags,gpu)", info)  # neq: no element equals
    assert matches("(neq,tags,cpu)", info)
    assert matches("(eq,elements/name,nic1)", info)
    assert matches("(cont,elements/name,c0)", info)
    assert not matches("(eq,groups,x)", info)  # empty array: nothing matches
    assert matches("(nin,groups,x)", info)


def test_evaluation_never_changes_the_message() -> None:
    info = resource(extensions={"a": 1})
    before = info.SerializeToString()
    matches("(eq,extensions/zz/yy,1);(eq,parentId,x);(eq,elements/name,x)", info)
    assert info.SerializeToString() == before
    assert not info.HasField("parent_id")


# --- equality candidates for indexes ----------------------------------------------------


def test_equality_candidates_come_from_eq_and_in_terms() -> None:
    bound = parse_filter(
        f"(in,resourcePoolId,{POOL_ID.upper()},other);(eq,resourcePoolId,other);(eq,name,x)"
    ).bind(RESOURCE)
    assert bound.equality_candidates("resourcePoolId") == {"other"}
    assert bound.equality_candidates("name") == {"x"}
    assert bound.equality_candidates("resourceTypeId") is None
    uuid_only = parse_filter(f"(eq,resourcePoolId,{POOL_ID.upper()})").bind(RESOURCE)
    assert uuid_only.equality_candidates("resourcePoolId") == {POOL_ID}


def test_negated_substring_and_free_form_terms_never_restrict() -> None:
    text = "(neq,name,a);(cont,name,b);(nin,name,c);(eq,extensions/k,d)"
    bound = parse_filter(text).bind(RESOURCE)
    assert bound.equality_candidates("name") is None
    assert bound.equality_candidates("extensions/k") is None


def test_typed_candidates_use_the_index_key_of_the_attribute_value() -> None:
    alarm = mon.AlarmEventRecord(perceived_severity=2, alarm_acknowledged=True)
    bound = parse_filter("(in,perceivedSeverity,+2,3);(eq,alarmAcknowledged,true)").bind(ALARM)
    severities = bound.equality_candidates("perceivedSeverity")
    assert severities == {index_key(alarm.perceived_severity), "3"}
    assert bound.equality_candidates("alarmAcknowledged") == {index_key(alarm.alarm_acknowledged)}


def test_an_index_lookup_finds_what_a_scan_finds() -> None:
    pools = [POOL_ID, POOL_ID.replace("0b", "1c"), "not-a-uuid"]
    items = [resource(resource_id=f"r{n}", resource_pool_id=pools[n % 3]) for n in range(30)]
    index: dict[str, list[inv.ResourceInfo]] = {}
    for item in items:
        index.setdefault(index_key(item.resource_pool_id), []).append(item)
    for text in (f"(eq,resourcePoolId,{POOL_ID.upper()})", "(in,resourcePoolId,not-a-uuid,x)"):
        bound = parse_filter(text).bind(RESOURCE)
        keys = bound.equality_candidates("resourcePoolId") or set()
        via_index = [i for key in keys for i in index.get(key, [])]
        assert sorted(i.resource_id for i in via_index) == sorted(
            i.resource_id for i in items if bound.matches(i)
        )
