"""NETWEAVE_ENVOY_CONCURRENCY: Envoy's worker threads under `make run` (one by default: the
stack shares the machine's CPUs), refused out of range before anything starts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from devstack.stack import StackConfig


def config(tmp_path: Path, **environ: str) -> StackConfig:
    inventory = tmp_path / "ocloud.yaml"
    inventory.write_text("{}\n")
    base = StackConfig.from_env({"NETWEAVE_INVENTORY": str(inventory), **environ})
    return replace(base, state_dir=tmp_path / "state")


def test_one_envoy_worker_unless_set(tmp_path: Path) -> None:
    assert config(tmp_path).resolved().envoy_concurrency == 1
    assert config(tmp_path, NETWEAVE_ENVOY_CONCURRENCY="3").resolved().envoy_concurrency == 3


@pytest.mark.parametrize("value", ["0", "65", "-1"])
def test_a_worker_count_out_of_range_is_refused_by_name(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match="NETWEAVE_ENVOY_CONCURRENCY must be 1 to 64"):
        config(tmp_path, NETWEAVE_ENVOY_CONCURRENCY=value).resolved()


def test_a_worker_count_that_is_not_a_number_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NETWEAVE_ENVOY_CONCURRENCY"):
        config(tmp_path, NETWEAVE_ENVOY_CONCURRENCY="two")
