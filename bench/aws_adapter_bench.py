"""The AWS adapter at scale: 10,000 EC2 instances in a real moto server, the adapter as a
real process (python -m adapters.aws) polling it.

Run: .venv/bin/python bench/aws_adapter_bench.py [--instances 10000] [--polls 5]

Prints, with a baseline measured in the same run (the machine is shared and noisy):
- a full poll's wall time (the adapter's netweave_aws_poll_duration_seconds, both regions'
  polls run in parallel) and API calls per poll (its botocore 'before-call' count), first
  poll and steady polls, against the bare describe_instances pages of the same instances
  fetched by boto3 in this process (time, calls, CPU);
- the adapter's CPU per steady poll (from /proc, utime + stime) against the baseline's CPU;
- the adapter's RSS after the polls.
moto answers every call from one Python process: most of a poll's wall time is moto's, so
the CPU figures are the ones that speak for the adapter.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import boto3  # type: ignore[import-untyped]  # noqa: E402
from botocore.config import Config  # type: ignore[import-untyped]  # noqa: E402
from proc_cpu import cpu_seconds, rss_mib  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from devstack.moto_server import MotoServer  # noqa: E402
from devstack.processes import ManagedProcess, free_port, port_open, wait_until  # noqa: E402
from devstack.processes import metric_sum as metric  # noqa: E402

REGIONS = ("eu-west-1", "us-east-1")
TYPES = ("m5.large", "c5.xlarge", "t3.micro", "g5.xlarge", "g4dn.xlarge", "r5.large")
IMAGE = "ami-1e749f67"  # one of moto's built-in images (Ubuntu)
BATCH = 500


def client(moto: MotoServer, region: str) -> Any:
    """An EC2 client of moto (explicit endpoint and fake credentials: this process's own
    environment stays as it is)."""
    env = moto.environment()
    return boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=moto.url,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        # moto answers a 1,000-instance page slowly on a loaded machine: never time out.
        config=Config(read_timeout=600, retries={"max_attempts": 1}),
    )


def seed(moto: MotoServer, count: int) -> float:
    """`count` instances over both regions, three zones each, six types; seconds taken."""
    started = time.monotonic()
    launched = 0
    batch_index = 0
    while launched < count:
        region = REGIONS[batch_index % len(REGIONS)]
        zone = f"{region}{'abc'[(batch_index // 2) % 3]}"
        size = min(BATCH, count - launched)
        client(moto, region).run_instances(
            ImageId=IMAGE,
            MinCount=size,
            MaxCount=size,
            InstanceType=TYPES[batch_index % len(TYPES)],
            Placement={"AvailabilityZone": zone},
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [
                        {"Key": "Name", "Value": f"bench-{batch_index}"},
                        {"Key": "team", "Value": "ran"},
                    ],
                }
            ],
        )
        launched += size
        batch_index += 1
    return time.monotonic() - started


def baseline(moto: MotoServer) -> tuple[float, int, float, int]:
    """The raw describe_instances pages of every region: wall seconds, calls, this
    process's CPU seconds, instances seen."""
    calls = 0
    instances = 0
    wall, cpu = time.monotonic(), time.process_time()
    for region in REGIONS:
        for page in (
            client(moto, region)
            .get_paginator("describe_instances")
            .paginate(PaginationConfig={"PageSize": 1000})
        ):
            calls += 1
            instances += sum(len(r["Instances"]) for r in page["Reservations"])
    return time.monotonic() - wall, calls, time.process_time() - cpu, instances


def _samples(text: str, name: str) -> list[Any]:
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def metric_max(text: str, name: str) -> float:
    return max((sample.value for sample in _samples(text, name)), default=0.0)


def calls_by_operation(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for sample in _samples(text, "netweave_aws_api_calls_total"):
        key = f"{sample.labels['service']}.{sample.labels['operation']}"
        found[key] = found.get(key, 0.0) + sample.value
    return found


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def row(measure: str, value: float, baseline_value: float | None = None, note: str = "") -> None:
    shown = f"{baseline_value:>14.3f}" if baseline_value is not None else " " * 14
    ratio = f"{value / baseline_value:>8.1f}x" if baseline_value else " " * 9
    print(f"{measure:<46}{value:>14.3f}{shown}{ratio}   {note}".rstrip(), flush=True)


def report(args: argparse.Namespace, r: dict[str, float], per_operation: dict[str, float]) -> None:
    print(
        f"\n{args.instances} instances, {len(REGIONS)} regions, {int(r['objects'])} objects "
        f"published; baseline: the raw describe_instances pages ({r['base_calls']:.0f} calls)\n"
    )
    print(f"{'measure':<46}{'value':>14}{'baseline':>14}{'ratio':>9}")
    row("first poll: wall s (start to published)", r["first_wall"], r["base_wall"])
    row("first poll: slowest region's poll s", r["first_seconds"], r["base_wall"])
    row("first poll: API calls", r["first_calls"], r["base_calls"], "incl. sts, instance types")
    row("first poll: adapter CPU s (incl. start-up)", r["first_cpu"], r["base_cpu"])
    row("steady poll: wall s per poll (interval incl.)", r["steady_wall"], r["base_wall"])
    row("steady poll: slowest region's poll s (last)", r["steady_seconds"], r["base_wall"])
    row("steady poll: API calls per poll", r["steady_calls"], r["base_calls"])
    row("steady poll: adapter CPU s per poll", r["steady_cpu"], r["base_cpu"])
    row("steady poll: moto CPU s per poll", r["moto_cpu"], None, "the fake AWS's own cost")
    row("adapter RSS MiB", r["rss"])
    row("failed region polls", r["failures"])
    print("\nsteady API calls per poll, by operation (both regions; the alarm module's too):")
    for name, count in per_operation.items():
        print(f"  {name:<44}{count:>8.1f}")


def run(args: argparse.Namespace, workdir: Path) -> None:
    moto = MotoServer(workdir / "moto.log").start()
    adapter: ManagedProcess | None = None
    try:
        print(f"seeding {args.instances} instances in moto ...", flush=True)
        seconds = seed(moto, args.instances)
        print(f"  seeded in {seconds:.1f} s ({args.instances / seconds:.0f} instances/s)")
        base_wall, base_calls, base_cpu, seen = baseline(moto)
        print(f"  baseline: {base_calls} describe_instances pages in {base_wall:.1f} s", flush=True)
        assert seen == args.instances, seen
        port, metrics_port = free_port(), free_port()
        adapter = ManagedProcess(
            "adapter-aws",
            [
                sys.executable,
                "-m",
                "adapters.aws",
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
                "--regions",
                ",".join(REGIONS),
                "--poll-interval",
                str(args.interval),
                # moto filters 10,000 instances per page in one Python process: far slower
                # than AWS's answer, which the default 30 s is sized for.
                "--read-timeout",
                "900",
            ],
            workdir / "adapter.log",
            env={**moto.environment(), "NETWEAVE_LOG_LEVEL": "WARNING"},
            cwd=REPO,
        ).start()
        process = adapter
        wait_until(
            lambda: port_open(metrics_port), 30, "the adapter", require=process.require_alive
        )
        moto_pid = moto.process.pid if moto.process else 0

        def polls() -> float:
            return metric(metrics_text(metrics_port), "netweave_aws_polls_total", outcome="success")

        started = time.monotonic()
        wait_until(lambda: polls() >= len(REGIONS), 600, "the first poll", interval=0.2)
        first_wall = time.monotonic() - started
        text = metrics_text(metrics_port)
        first_calls = metric(text, "netweave_aws_api_calls_total")
        first_cpu = cpu_seconds(adapter.pid)
        first_seconds = metric_max(text, "netweave_aws_poll_duration_seconds")

        done = polls()
        cpu_before, moto_before = cpu_seconds(adapter.pid), cpu_seconds(moto_pid)
        calls_before = calls_by_operation(metrics_text(metrics_port))
        wall_before = time.monotonic()
        target = done + args.polls * len(REGIONS)
        wait_until(lambda: polls() >= target, 1200, f"{args.polls} steady polls", interval=0.2)
        steady_wall = (time.monotonic() - wall_before) / args.polls
        text = metrics_text(metrics_port)
        calls_after = calls_by_operation(text)
        per_operation = {
            name: (count - calls_before.get(name, 0.0)) / args.polls
            for name, count in sorted(calls_after.items())
        }
        steady_calls = sum(per_operation.values())
        steady_cpu = (cpu_seconds(adapter.pid) - cpu_before) / args.polls
        moto_cpu = (cpu_seconds(moto_pid) - moto_before) / args.polls
        steady_seconds = metric_max(text, "netweave_aws_poll_duration_seconds")
        rss = rss_mib(adapter.pid)
        failures = metric(text, "netweave_aws_polls_total", outcome="failure")
        # Read after the steady polls: the first poll's count is set just after its
        # polls_total, which the wait above watches.
        objects = metric(text, "netweave_aws_published_objects")

        report(
            args,
            {
                "base_wall": base_wall,
                "base_calls": base_calls,
                "base_cpu": base_cpu,
                "objects": objects,
                "first_wall": first_wall,
                "first_seconds": first_seconds,
                "first_calls": first_calls,
                "first_cpu": first_cpu,
                "steady_wall": steady_wall,
                "steady_seconds": steady_seconds,
                "steady_calls": steady_calls,
                "steady_cpu": steady_cpu,
                "moto_cpu": moto_cpu,
                "rss": rss,
                "failures": failures,
            },
            per_operation,
        )
    finally:
        if adapter is not None:
            adapter.stop()
        moto.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--polls", type=int, default=5, help="steady polls measured")
    parser.add_argument("--interval", type=float, default=1.0, help="the adapter's poll interval")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aws-bench-") as workdir:
        run(args, Path(workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
