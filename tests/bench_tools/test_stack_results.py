"""The pinned comparison's figures (bench/stack_results.py): the ratio of the medians and each
round's own ratio, the no-op and the core of the same round paired."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The bench/ scripts import their siblings as top-level modules (bench/ is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from stack_results import CORE_DIRECT, NOOP, PathResult, Run, pinned_headline, round_ratios


def _run(rps: float, cpu_us: float, role: str) -> Run:
    return Run(
        requests=5000,
        elapsed_s=5000 / rps,
        rps=rps,
        succeeded=5000,
        data_bytes=0,
        mean_latency_ms=1.0,
        cpu_us={role: cpu_us},
        system_us={role: cpu_us / 3},
        switches={role: 4.0},
    )


def _results(noop: list[float], core: list[float]) -> list[PathResult]:
    return [
        PathResult(NOOP, [_run(rps, 1e6 / rps, "no-op") for rps in noop]),
        PathResult(CORE_DIRECT, [_run(rps, 1e6 / rps, "core") for rps in core]),
    ]


def test_each_round_pairs_the_no_op_and_the_core_of_that_round() -> None:
    # A machine that slows down round by round: each pair shares its round's speed.
    results = _results(noop=[10_000, 8_000, 5_000], core=[8_000, 6_800, 4_000])
    assert round_ratios(results) == pytest.approx([0.80, 0.85, 0.80])


def test_the_headline_gives_the_ratio_of_the_medians_and_every_round() -> None:
    results = _results(noop=[10_000, 8_000, 5_000], core=[8_000, 6_800, 4_000])
    line = pinned_headline(results, 0, 1)
    # Medians 8,000 and 6,800.
    assert "core direct 0.85x no-op [>= 0.80x] (rounds: 0.80, 0.85, 0.80)" in line
    assert "against the no-op's 125 us" in line


def test_rounds_must_pair_up() -> None:
    with pytest.raises(ValueError):
        round_ratios(_results(noop=[10_000, 9_000], core=[8_000]))
