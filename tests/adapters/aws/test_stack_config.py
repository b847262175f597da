"""How `make run` (devstack) takes the AWS adapter in: only when regions are given (or the
moto demo asked for), its port, its address among the core's adapters, its banner line."""

from __future__ import annotations

from pathlib import Path

from devstack.__main__ import _banner
from devstack.moto_server import DEMO_REGIONS
from devstack.stack import LocalStack, StackConfig


def test_from_env_runs_the_adapter_when_regions_are_set() -> None:
    config = StackConfig.from_env(
        {"NETWEAVE_AWS_REGIONS": "eu-west-1,us-east-1", "NETWEAVE_AWS_ADAPTER_PORT": "50099"}
    )
    assert config.aws_regions == ("eu-west-1", "us-east-1")
    assert config.aws_adapter_port == 50099
    assert not config.aws_moto
    assert StackConfig.from_env({}).aws_regions == ()


def test_the_moto_demo_defaults_its_regions() -> None:
    config = StackConfig.from_env({"NETWEAVE_AWS_MOTO": "1"})
    assert config.aws_moto
    assert config.aws_regions == DEMO_REGIONS


def test_ephemeral_stacks_leave_it_off_unless_asked(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "aws").mkdir()
    plain = LocalStack(StackConfig.ephemeral(tmp_path / "plain"))
    assert plain.config.aws_regions == ()
    assert "aws_adapter_port" not in plain.bound_ports()
    assert len(plain.adapter_addresses) == 1
    assert "AWS adapter" not in _banner(plain)

    asked = LocalStack(StackConfig.ephemeral(tmp_path / "aws", aws_regions=("eu-west-1",)))
    port = asked.config.aws_adapter_port
    assert port and asked.bound_ports()["aws_adapter_port"] == port
    assert asked.adapter_addresses[-1] == f"127.0.0.1:{port}"
    assert f"AWS adapter          127.0.0.1:{port}  regions eu-west-1" in _banner(asked)
