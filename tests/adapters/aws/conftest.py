"""Fixtures of the AWS adapter tests: a real moto server process (devstack/moto_server.py),
an account seeded through boto3 itself, a region-aware proxy in front of it (proxy.py),
the adapter as a real process and a real gRPC watch of it."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import grpc
import pytest
from o2ims.adapter.v1 import adapter_pb2, adapter_pb2_grpc, domain_pb2

from adapters.contract import ObjectKey, object_key
from devstack.moto_server import MotoServer
from devstack.processes import ManagedProcess, free_port, port_open, wait_until
from tests.adapters.aws.proxy import RegionProxy

REPO = Path(__file__).resolve().parents[3]
REGIONS = ("eu-west-1", "us-east-1")
ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture
def moto(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """An empty moto account, and this process's boto3 pointed at it."""
    moto_server.reset()
    for key, value in moto_server.environment().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_server


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[RegionProxy]:
    running = RegionProxy(moto.port).start()
    yield running
    running.stop()


def ec2(region: str) -> Any:
    return boto3.client("ec2", region_name=region)


# One of moto's built-in images (Ubuntu), present in every region and after a reset.
LINUX_IMAGE = "ami-1e749f67"


def launch(
    region: str,
    instance_type: str,
    zone: str,
    *,
    count: int = 1,
    name: str = "",
    tags: dict[str, str] | None = None,
) -> list[str]:
    """Launch `count` instances through boto3; their ids."""
    all_tags = {**({"Name": name} if name else {}), **(tags or {})}
    kwargs: dict[str, Any] = {
        "ImageId": LINUX_IMAGE,
        "MinCount": count,
        "MaxCount": count,
        "InstanceType": instance_type,
        "Placement": {"AvailabilityZone": zone},
    }
    if all_tags:
        kwargs["TagSpecifications"] = [
            {
                "ResourceType": "instance",
                "Tags": [{"Key": key, "Value": value} for key, value in all_tags.items()],
            }
        ]
    return [item["InstanceId"] for item in ec2(region).run_instances(**kwargs)["Instances"]]


def create_eks(region: str, name: str, groups: Sequence[tuple[str, str, int]] = ()) -> None:
    """An EKS cluster with node groups (name, instance type, desired size)."""
    eks = boto3.client("eks", region_name=region)
    eks.create_cluster(
        name=name,
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks",
        resourcesVpcConfig={"subnetIds": []},
        version="1.29",
    )
    for group, instance_type, desired in groups:
        eks.create_nodegroup(
            clusterName=name,
            nodegroupName=group,
            subnets=["subnet-1"],
            nodeRole=f"arn:aws:iam::{ACCOUNT}:role/node",
            instanceTypes=[instance_type],
            scalingConfig={"minSize": 1, "maxSize": desired * 2, "desiredSize": desired},
        )


@dataclass
class Seeded:
    """What seed_account() made: instance ids by name."""

    instances: dict[str, str] = field(default_factory=dict)


def seed_account() -> Seeded:
    """Two regions, a GPU type among four types, tags, and an EKS cluster."""
    seeded = Seeded()
    for name, region, instance_type, zone in (
        ("web-1", "eu-west-1", "m5.large", "eu-west-1a"),
        ("web-2", "eu-west-1", "m5.large", "eu-west-1b"),
        ("gpu-1", "eu-west-1", "g5.xlarge", "eu-west-1a"),
        ("db-1", "us-east-1", "c5.xlarge", "us-east-1a"),
        ("infer-1", "us-east-1", "inf1.xlarge", "us-east-1b"),
    ):
        (seeded.instances[name],) = launch(
            region, instance_type, zone, name=name, tags={"team": "ran"}
        )
    create_eks("eu-west-1", "ran-core", [("workers", "m5.large", 3)])
    return seeded


# --- the adapter as a process --------------------------------------------------------------


class AdapterProcess:
    """`python -m adapters.aws` on a free port, its boto3 pointed at `endpoint`."""

    def __init__(
        self,
        workdir: Path,
        endpoint: str,
        *extra: str,
        regions: Sequence[str] = REGIONS,
        poll_interval: float = 0.5,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.endpoint = endpoint
        self.regions = regions
        self.poll_interval = poll_interval
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.extra = extra
        self.env = env or {}
        self.process: ManagedProcess | None = None

    def start(self) -> AdapterProcess:
        env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": self.regions[0] if self.regions else "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "NETWEAVE_AWS_REGIONS": ",".join(self.regions),
            "NETWEAVE_AWS_POLL_INTERVAL": str(self.poll_interval),
            **self.env,
        }
        self.process = ManagedProcess(
            "adapter-aws",
            [
                sys.executable,
                "-m",
                "adapters.aws",
                "--port",
                str(self.grpc_port),
                "--metrics-port",
                str(self.metrics_port),
                "--max-attempts",
                "3",
                *self.extra,
            ],
            self.workdir / "adapter.log",
            env=env,
            cwd=REPO,
        ).start()
        process = self.process
        wait_until(
            lambda: port_open(self.grpc_port),
            30,
            "the AWS adapter",
            require=process.require_alive,
        )
        return self

    def info(self) -> tuple[adapter_pb2.GetAdapterInfoResponse, list[str]]:
        """GetAdapterInfo and the problems it reports."""
        from adapters.publisher import PROBLEMS_METADATA_KEY, decode_problems

        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = adapter_pb2_grpc.AdapterServiceStub(channel)
            response, call = stub.GetAdapterInfo.with_call(
                adapter_pb2.GetAdapterInfoRequest(), timeout=5
            )
            problems: list[str] = []
            for key, value in call.trailing_metadata() or ():
                if key == PROBLEMS_METADATA_KEY:
                    problems = decode_problems(value)
            return response, problems

    def metrics(self) -> str:
        import urllib.request

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(reply.read().decode())

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log(self) -> str:
        return (self.workdir / "adapter.log").read_text(errors="replace")


class Watch:
    """A real gRPC WatchObjects stream, followed on a thread into the current set."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = adapter_pb2_grpc.AdapterServiceStub(self.channel)
        self.objects: dict[ObjectKey, domain_pb2.InventoryObject] = {}
        self.events: list[adapter_pb2.WatchObjectsResponse] = []
        self.synced = threading.Event()
        self.error: grpc.RpcError | None = None
        self._lock = threading.Lock()
        self._stream = self.stub.WatchObjects(
            adapter_pb2.WatchObjectsRequest(send_initial_objects=True)
        )
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for event in self._stream:
                with self._lock:
                    if event.type == adapter_pb2.EVENT_TYPE_SYNCED:
                        self.synced.set()
                        continue
                    if event.type == adapter_pb2.EVENT_TYPE_COMMIT:
                        continue
                    if self.synced.is_set():
                        self.events.append(event)
                    if event.type == adapter_pb2.EVENT_TYPE_DELETED:
                        self.objects.pop(object_key(event.object), None)
                    else:
                        self.objects[object_key(event.object)] = event.object
        except grpc.RpcError as error:
            self.error = error

    def of_kind(self, kind: str) -> dict[str, Any]:
        with self._lock:
            return {
                key[1]: getattr(obj, kind) for key, obj in self.objects.items() if key[0] == kind
            }

    def resources_by_instance(self) -> dict[str, domain_pb2.Resource]:
        return {
            resource.extensions["instanceId"]: resource
            for resource in self.of_kind("resource").values()
        }

    def live_events(self, kind: str | None = None) -> list[tuple[int, str]]:
        """The (type, id) of the events after SYNCED, of `kind` when given."""
        with self._lock:
            return [
                (event.type, object_key(event.object)[1])
                for event in self.events
                if kind is None or event.object.WhichOneof("kind") == kind
            ]

    def clear_events(self) -> None:
        with self._lock:
            self.events.clear()

    def close(self) -> None:
        self._stream.cancel()
        self.channel.close()
        self._thread.join(timeout=5)


def synced_watch(port: int, timeout: float = 30.0) -> Watch:
    """A watch opened once the adapter serves one (it refuses watches until its first
    complete poll), with its initial replay received."""
    found: list[Watch] = []

    def opened() -> bool:
        watch = Watch(port)
        if watch.synced.wait(2):
            found.append(watch)
            return True
        watch.close()
        return False

    wait_until(opened, timeout, "a synced watch of the AWS adapter", interval=0.2)
    return found[0]
