"""A real moto server child process (`moto_server` from moto[server]): AWS's APIs on a local
port, for `make run` demos, the AWS adapter's tests and its bench. boto3 reaches it through
`AWS_ENDPOINT_URL` (see `environment()`); it keeps its state in memory, so a restart is an
empty account."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from typing import Any, Final

from devstack.processes import ManagedProcess, ServerProcess, free_port

# moto accepts any credentials; these make boto3's chain stop at the environment.
DUMMY_ACCESS_KEY_ID: Final = "testing"
DUMMY_SECRET_ACCESS_KEY: Final = "testing"


def moto_server_binary() -> str:
    """The `moto_server` console script of this interpreter's environment."""
    return str(Path(sys.executable).parent / "moto_server")


class MotoServer(ServerProcess):
    """moto_server on 127.0.0.1:`port` (0: a free one), its output in `log_path`."""

    def __init__(self, log_path: Path, port: int = 0) -> None:
        super().__init__()
        self.log_path = log_path
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self, region: str = "us-east-1") -> dict[str, str]:
        """What a boto3 process needs in its environment to talk to this server only."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": region,
            # Never read the developer's own ~/.aws files.
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }

    def start(self, timeout: float = 30.0) -> MotoServer:
        process = ManagedProcess(
            "moto",
            [moto_server_binary(), "-H", "127.0.0.1", "-p", str(self.port)],
            self.log_path,
        )
        self._launch(process, self._answers, timeout, f"moto_server on port {self.port}")
        return self

    def _answers(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1) as response:
            return bool(response.status == 200)

    def reset(self) -> None:
        """Forget every resource (moto's reset API): an empty account again."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


# The `make run` demo account (NETWEAVE_AWS_MOTO): name, region, zone, instance type.
DEMO_REGIONS: Final = ("eu-west-1", "us-east-1")
DEMO_INSTANCES: Final = (
    ("cu-1", "eu-west-1", "eu-west-1a", "m5.large"),
    ("cu-2", "eu-west-1", "eu-west-1b", "m5.large"),
    ("du-gpu-1", "eu-west-1", "eu-west-1a", "g5.xlarge"),
    ("upf-1", "us-east-1", "us-east-1a", "c5.xlarge"),
    ("ric-1", "us-east-1", "us-east-1b", "inf1.xlarge"),
)
DEMO_IMAGE: Final = "ami-1e749f67"  # one of moto's built-in images (Ubuntu)


def seed_demo(server: MotoServer) -> None:
    """A small account to look at: five instances (a GPU and an Inferentia type among them)
    in two regions, and an EKS cluster with a node group."""
    import boto3  # type: ignore[import-untyped]  # only the AWS demo needs it

    env = server.environment()

    def client(service: str, region: str) -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=server.url,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    for name, region, zone, instance_type in DEMO_INSTANCES:
        client("ec2", region).run_instances(
            ImageId=DEMO_IMAGE,
            MinCount=1,
            MaxCount=1,
            InstanceType=instance_type,
            Placement={"AvailabilityZone": zone},
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}
            ],
        )
    eks = client("eks", DEMO_REGIONS[0])
    eks.create_cluster(
        name="ran-core",
        roleArn="arn:aws:iam::123456789012:role/eks",
        resourcesVpcConfig={"subnetIds": []},
        version="1.29",
    )
    eks.create_nodegroup(
        clusterName="ran-core",
        nodegroupName="workers",
        subnets=["subnet-1"],
        nodeRole="arn:aws:iam::123456789012:role/node",
        instanceTypes=["m5.large"],
        scalingConfig={"minSize": 1, "maxSize": 4, "desiredSize": 2},
    )
