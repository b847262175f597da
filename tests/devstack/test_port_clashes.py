"""`make run`'s ports come from settings: two listeners given the same port are refused
before anything starts, naming the setting to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.stack import LocalStack, StartRefused
from tests.devstack.conftest import make_run_config


def test_a_second_core_worker_on_the_telemetry_port_is_refused_by_name(tmp_path: Path) -> None:
    clash = make_run_config(
        tmp_path, NETWEAVE_CORE_PROCESSES="2", NETWEAVE_EDGE_TELEMETRY_PORT="50053"
    )
    with pytest.raises(StartRefused) as refused:
        LocalStack(clash).preflight()
    message = str(refused.value)
    assert "port 50053 is set for both" in message
    assert "NETWEAVE_EDGE_TELEMETRY_PORT" in message


def test_the_default_ports_leave_room_for_two_core_workers(tmp_path: Path) -> None:
    stack = LocalStack(make_run_config(tmp_path, NETWEAVE_CORE_PROCESSES="2"))
    ports = list(stack.bound_ports().values())
    assert len(ports) == len(set(ports)), stack.bound_ports()
