"""The figures of bench/stack_bench.py: one saturated run, a path's runs, one open-loop rate,
and the tables and summary lines they are printed as (Markdown, pasted into
docs/performance.md as they are)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

NOOP = "no-op"
CORE_DIRECT = "core direct"
# A second, minimal Envoy (bench/envoy_floor.py): what Envoy's components cost here, against
# which the edge's path of the same kind is measured.
FLOOR_GRPC = "floor gRPC"
FLOOR_REST = "floor REST"
FLOORS = {FLOOR_GRPC: "Envoy gRPC", FLOOR_REST: "REST cert"}


@dataclass
class Run:
    """One h2load run of one path."""

    requests: int
    elapsed_s: float
    rps: float
    succeeded: int
    data_bytes: int
    mean_latency_ms: float
    # CPU microseconds per request, by process role (h2load included).
    cpu_us: dict[str, float]
    # Of which in the kernel (system time), and the threads' voluntary context switches
    # per request (blocking on the GIL, a lock, a queue, the network), by server role: a
    # thread wake-up costs both (issue 18: the gRPC server's thread hand-offs).
    system_us: dict[str, float] = field(default_factory=dict)
    switches: dict[str, float] = field(default_factory=dict)


@dataclass
class PathResult:
    """Every saturated run of one path; its figures are the medians."""

    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(run.rps for run in self.runs)

    def cpu_us(self, role: str) -> float:
        values = [run.cpu_us[role] for run in self.runs if role in run.cpu_us]
        return statistics.median(values) if values else float("nan")

    def system_us(self, role: str) -> float:
        values = [run.system_us[role] for run in self.runs if role in run.system_us]
        return statistics.median(values) if values else float("nan")

    def switches(self, role: str) -> float:
        values = [run.switches[role] for run in self.runs if role in run.switches]
        return statistics.median(values) if values else float("nan")

    @property
    def roles(self) -> list[str]:
        return list(self.runs[0].cpu_us) if self.runs else []


@dataclass
class RateResult:
    """One open-loop rate's measured period."""

    rate: float
    achieved_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    failed: int
    # Requests that waited for a free HTTP/2 stream (the edge allows 100 at once).
    queued: int
    send_lag_p99_ms: float
    # CPU microseconds per request and CPU share (% of one core) during the measured period.
    cpu_us: dict[str, float]
    cpu_percent: dict[str, float]


def _us(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"  # nan: not on this path


def saturated_table(results: list[PathResult]) -> str:
    by_name = {result.name: result for result in results}
    noop, direct = by_name[NOOP].rps, by_name[CORE_DIRECT].rps
    lines = [
        "| path | req/s (median; runs) | vs no-op | vs core direct | core us/req | Envoy us/req "
        "| no-op us/req | gateway us/req | relay us/req | h2load us/req |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        runs = ", ".join(f"{run.rps:,.0f}" for run in result.runs)
        core, envoy, noop_cpu = (
            result.cpu_us("core"),
            result.cpu_us("envoy"),
            result.cpu_us("no-op"),
        )
        gateway = sum(v for v in (core, envoy, noop_cpu) if not math.isnan(v))
        vs_direct = "" if result.name in (NOOP, CORE_DIRECT) else f"{result.rps / direct:.2f}x"
        lines.append(
            f"| {result.name} | {result.rps:,.0f} ({runs}) | {result.rps / noop:.2f}x "
            f"| {vs_direct} "
            f"| {_us(core)} | {_us(envoy)} | {_us(noop_cpu)} | {_us(gateway)} "
            f"| {_us(result.cpu_us('relay'))} | {_us(result.cpu_us('h2load'))} |"
        )
    return "\n".join(lines)


def open_loop_table(results: list[RateResult]) -> str:
    lines = [
        "| offered req/s | answered req/s | p50 ms | p90 ms | p99 ms | max ms | failed "
        "| waited for a stream | core us/req | Envoy us/req | generator us/req "
        "| generator lag p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.rate:,.0f} | {r.achieved_rps:,.0f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} "
            f"| {r.p99_ms:.2f} | {r.max_ms:.2f} | {r.failed} | {r.queued} "
            f"| {_us(r.cpu_us['core'])} | {_us(r.cpu_us['envoy'])} "
            f"| {_us(r.cpu_us['generator'])} | {r.send_lag_p99_ms:.2f} |"
        )
    return "\n".join(lines)


def headline(results: list[PathResult]) -> list[str]:
    """The ratios the performance issue's targets are stated in (targets of issue 18 in
    brackets)."""
    by_name = {result.name: result for result in results}
    noop, direct = by_name[NOOP], by_name[CORE_DIRECT]
    lines = [
        f"core direct {direct.rps / noop.rps:.2f}x no-op [>= 0.80x]; CPU per request "
        f"{_cpu_split(direct, 'core')} against the no-op's {_cpu_split(noop, 'no-op')}"
    ]
    for name in ("Envoy gRPC", "REST cert", "REST token"):
        result = by_name[name]
        target = " [>= 0.90x; Envoy <= 150 us]" if name.startswith("REST") else ""
        lines.append(
            f"{name} {result.rps / direct.rps:.2f}x core direct "
            f"({result.rps / noop.rps:.2f}x no-op), Envoy {_us(result.cpu_us('envoy'))} us/req"
            + target
        )
    for floor_name, edge_name in FLOORS.items():
        if floor_name in by_name:
            floor, edge = by_name[floor_name], by_name[edge_name]
            floor_us, edge_us = floor.cpu_us("envoy"), edge.cpu_us("envoy")
            lines.append(
                f"{floor_name}: Envoy {_us(floor_us)} us/req, {floor.rps / direct.rps:.2f}x "
                f"core direct (the edge's {edge_name} {_us(edge_us)} us/req: "
                f"{edge_us / floor_us:.1f}x the floor)"
            )
    return lines


def round_ratios(results: list[PathResult]) -> list[float]:
    """The core direct's req/s over the no-op's, round by round: each round runs the no-op
    and then the core, so a pair shares the machine's state of the moment, and the spread
    of the pairs says how far the median ratio can be trusted."""
    by_name = {result.name: result for result in results}
    noop, direct = by_name[NOOP], by_name[CORE_DIRECT]
    return [core.rps / base.rps for base, core in zip(noop.runs, direct.runs, strict=True)]


def pinned_headline(results: list[PathResult], server_cpu: int, load_cpu: int) -> str:
    """The core direct against the no-op with each server on one CPU and h2load on another
    (the house method: ../shared/PERF-NOTES.md): the ratio of the medians, then each
    round's."""
    by_name = {result.name: result for result in results}
    noop, direct = by_name[NOOP], by_name[CORE_DIRECT]
    rounds = ", ".join(f"{ratio:.2f}" for ratio in round_ratios(results))
    return (
        f"pinned (server on CPU {server_cpu}, h2load on CPU {load_cpu}): core direct "
        f"{direct.rps / noop.rps:.2f}x no-op [>= 0.80x] (rounds: {rounds}); CPU per request "
        f"{_cpu_split(direct, 'core')} against the no-op's {_cpu_split(noop, 'no-op')}"
    )


def _cpu_split(result: PathResult, role: str) -> str:
    """`role`'s CPU per request, its system share and its threads' voluntary context
    switches per request (wake-ups: what a thread hand-off costs shows in both)."""
    return (
        f"{_us(result.cpu_us(role))} us (system {_us(result.system_us(role))} us, "
        f"{result.switches(role):.1f} context switches)"
    )


def open_loop_headline(
    results: list[RateResult], floor: list[RateResult] | None = None
) -> list[str]:
    """p50/p99 and failures per rate (targets: p50 <= 1 ms and p99 <= 5 ms at 500 req/s,
    no failures at 1,000 req/s), with the floor's p50/p99 at the same rate when measured."""
    floor_at = {r.rate: r for r in floor or []}
    lines = []
    for r in results:
        line = (
            f"open loop {r.rate:,.0f} req/s: p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, "
            f"{r.failed} failed"
        )
        if (low := floor_at.get(r.rate)) is not None:
            line += f" (the floor: p50 {low.p50_ms:.2f} ms, p99 {low.p99_ms:.2f} ms)"
        lines.append(line)
    return lines
