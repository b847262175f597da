"""`make run`'s ports come from settings: two listeners given the same port are refused
before anything starts, naming the setting to change."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from devstack.stack import LocalStack, StackConfig, StartRefused


def config(tmp_path: Path, **environ: str) -> StackConfig:
    inventory = tmp_path / "ocloud.yaml"
    inventory.write_text("{}\n")
    base = StackConfig.from_env({"NETWEAVE_INVENTORY": str(inventory), **environ})
    # Its own state directory: no running stack of this checkout is looked at.
    return replace(base, state_dir=tmp_path / "state")


def test_a_second_core_worker_on_the_telemetry_port_is_refused_by_name(tmp_path: Path) -> None:
    clash = config(tmp_path, NETWEAVE_CORE_PROCESSES="2", NETWEAVE_EDGE_TELEMETRY_PORT="50053")
    with pytest.raises(StartRefused) as refused:
        LocalStack(clash).preflight()
    message = str(refused.value)
    assert "port 50053 is set for both" in message
    assert "NETWEAVE_EDGE_TELEMETRY_PORT" in message


def test_the_default_ports_leave_room_for_two_core_workers(tmp_path: Path) -> None:
    stack = LocalStack(config(tmp_path, NETWEAVE_CORE_PROCESSES="2"))
    ports = list(stack.bound_ports().values())
    assert len(ports) == len(set(ports)), stack.bound_ports()
