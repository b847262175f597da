"""The JSON on the wire (issue 12 §2), through the real processes: an optional attribute
without a value is left out, never "", and where the 1.x model requires the key it is null.
Every response also goes through the contract recorder (format uuid, minLength 1 on the
optional attributes), so an empty uuid anywhere fails the module."""

from __future__ import annotations

import copy
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from devstack.processes import wait_until

INVENTORY = "/o2ims-infrastructureInventory"


def write_atomically(path: Path, document: Any) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(document))
    os.replace(temporary, path)


def test_a_type_without_an_alarm_dictionary_is_null_in_v1_and_has_no_id_in_either_major(
    rest: httpx.Client, inventory_file: Path
) -> None:
    document = yaml.safe_load(inventory_file.read_text())
    with_dictionary = document["resourceTypes"][0]
    bare = copy.deepcopy(with_dictionary)
    bare.update(resourceTypeId=str(uuid.uuid4()), name=f"bare-{uuid.uuid4().hex[:6]}")
    bare.pop("alarmDictionaryId")
    document["resourceTypes"].append(bare)
    write_atomically(inventory_file, document)
    v1_path = f"{INVENTORY}/v1/resourceTypes/{bare['resourceTypeId']}"
    wait_until(lambda: rest.get(v1_path).status_code == 200, timeout=30, what="the new type")

    v1 = rest.get(v1_path).json()
    v2 = rest.get(f"{INVENTORY}/v2/resourceTypes/{bare['resourceTypeId']}").json()

    assert v1["alarmDictionary"] is None  # the 1.x model requires the key
    assert "alarmDictionaryId" not in v1
    assert "alarmDictionaryId" not in v2 and "alarmDictionary" not in v2
    # The same in lists, and beside types that do have a dictionary.
    listed = {t["resourceTypeId"]: t for t in rest.get(f"{INVENTORY}/v1/resourceTypes").json()}
    assert listed[bare["resourceTypeId"]]["alarmDictionary"] is None
    other = listed[with_dictionary["resourceTypeId"]]
    assert other["alarmDictionaryId"] == with_dictionary["alarmDictionaryId"]


def test_the_embedded_v1_dictionary_is_the_dictionary_resource(rest: httpx.Client) -> None:
    types = rest.get(f"{INVENTORY}/v1/resourceTypes").json()
    with_dictionary = next(t for t in types if t["alarmDictionary"] is not None)
    dictionary_path = (
        f"{INVENTORY}/v1/resourceTypes/{with_dictionary['resourceTypeId']}/alarmDictionary"
    )

    served = rest.get(dictionary_path).json()

    assert with_dictionary["alarmDictionary"] == served
    assert with_dictionary["alarmDictionaryId"] == served["alarmDictionaryId"]


def test_optional_attributes_are_left_out_not_empty(rest: httpx.Client) -> None:
    def empty_strings(value: Any, where: str = "") -> list[str]:
        if isinstance(value, dict):
            return [p for k, v in value.items() for p in empty_strings(v, f"{where}/{k}")]
        if isinstance(value, list):
            return [p for i, v in enumerate(value) for p in empty_strings(v, f"{where}/{i}")]
        return [where] if value == "" else []

    optional = {"alarmDictionaryId", "parentId", "address"}
    for path in (
        f"{INVENTORY}/v1/resourceTypes",
        f"{INVENTORY}/v2/resourceTypes",
        f"{INVENTORY}/v2/locations",
    ):
        found = empty_strings(rest.get(path).json())
        assert not [p for p in found if p.rsplit("/", 1)[-1] in optional], (path, found)
