"""One poll of one region: every read, through paginators, into RegionFacts.

Per region and poll: describe_availability_zones (1 call, Local Zones included),
describe_instances (one call per 1,000 instances; terminated ones filtered out by AWS),
describe_instance_types only for types never seen before (100 per call: a type's facts
never change, so they are kept for the adapter's life), and for EKS list_clusters plus per
cluster describe_cluster, list_nodegroups and describe_nodegroup per node group.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from adapters.aws.clients import RegionClients
from adapters.aws.mapping import RegionFacts

INSTANCE_PAGE_SIZE: Final = 1000
TYPES_PER_CALL: Final = 100
LIVE_STATES: Final = ("pending", "running", "shutting-down", "stopping", "stopped")


class InstanceTypeCache:
    """describe_instance_types results, shared by every region (thread-safe). A type AWS
    says does not exist is remembered as unknown ({}) rather than asked again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, Mapping[str, Any]] = {}

    def lookup(self, ec2: Any, names: Iterable[str]) -> dict[str, Mapping[str, Any]]:
        wanted = sorted(set(names))
        with self._lock:
            missing = [name for name in wanted if name not in self._known]
        for start in range(0, len(missing), TYPES_PER_CALL):
            batch = missing[start : start + TYPES_PER_CALL]
            found = _describe_types(ec2, batch)
            with self._lock:
                for name in batch:
                    self._known[name] = found.get(name, {})
        with self._lock:
            return {name: self._known[name] for name in wanted}


def _describe_types(ec2: Any, names: list[str]) -> dict[str, Mapping[str, Any]]:
    try:
        return {
            str(item["InstanceType"]): item
            for page in ec2.get_paginator("describe_instance_types").paginate(InstanceTypes=names)
            for item in page["InstanceTypes"]
        }
    except ClientError as error:
        # One unknown name fails the whole call: ask for each alone, keeping what exists.
        if error.response.get("Error", {}).get("Code") != "InvalidInstanceType":
            raise
        if len(names) == 1:
            return {}
        found: dict[str, Mapping[str, Any]] = {}
        for name in names:
            found.update(_describe_types(ec2, [name]))
        return found


def fetch_region(
    clients: RegionClients, account: str, types: InstanceTypeCache, *, eks: bool = True
) -> RegionFacts:
    """Everything one region holds that the mapping needs; any API error propagates (the
    region's poll failed)."""
    ec2 = clients.ec2
    zones = ec2.describe_availability_zones(AllAvailabilityZones=True)["AvailabilityZones"]
    instances = [
        instance
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": list(LIVE_STATES)}],
            PaginationConfig={"PageSize": INSTANCE_PAGE_SIZE},
        )
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
    ]
    type_infos = types.lookup(ec2, (str(item.get("InstanceType", "")) for item in instances))
    clusters: list[tuple[Mapping[str, Any], list[Mapping[str, Any]]]] = []
    if eks:
        client = clients.eks
        names = [
            name
            for page in client.get_paginator("list_clusters").paginate()
            for name in page["clusters"]
        ]
        for name in sorted(names):
            cluster = client.describe_cluster(name=name)["cluster"]
            groups = [
                client.describe_nodegroup(clusterName=name, nodegroupName=group)["nodegroup"]
                for page in client.get_paginator("list_nodegroups").paginate(clusterName=name)
                for group in page["nodegroups"]
            ]
            clusters.append((cluster, groups))
    return RegionFacts(
        account=account,
        region=clients.region,
        zones=zones,
        instances=instances,
        instance_types=type_infos,
        clusters=clusters,
    )
