"""NETWEAVE_ENVOY_CONCURRENCY: Envoy's worker threads under `make run` (one by default: the
stack shares the machine's CPUs), refused out of range before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.devstack.conftest import make_run_config


def test_one_envoy_worker_unless_set(tmp_path: Path) -> None:
    assert make_run_config(tmp_path).resolved().envoy_concurrency == 1
    assert (
        make_run_config(tmp_path, NETWEAVE_ENVOY_CONCURRENCY="3").resolved().envoy_concurrency == 3
    )


@pytest.mark.parametrize("value", ["0", "65", "-1"])
def test_a_worker_count_out_of_range_is_refused_by_name(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match="NETWEAVE_ENVOY_CONCURRENCY must be 1 to 64"):
        make_run_config(tmp_path, NETWEAVE_ENVOY_CONCURRENCY=value).resolved()


def test_a_worker_count_that_is_not_a_number_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NETWEAVE_ENVOY_CONCURRENCY"):
        make_run_config(tmp_path, NETWEAVE_ENVOY_CONCURRENCY="two")
