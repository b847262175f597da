"""python -m adapters.aws: serve an AWS account's regions as an O2ims adapter.

The gRPC port is served at once. Until every configured region has been read once,
GetAdapterInfo reports why (its problems: the core's /readyz shows them) and
ListObjects/WatchObjects are refused with UNAVAILABLE (ADAPTER_NOT_SYNCED). Then every
`--poll-interval` seconds each region is read again and only what changed is published; a
region that fails keeps its last snapshot, is reported, and is retried with backoff. See
adapter.py for the loop, poll.py for the calls, mapping.py and mapping_file.py for what is
published, docs/drafts/aws.md for the setup.

Credentials and endpoint come from boto3's standard chain (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL, an instance or IRSA role), optionally
through --role-arn (NETWEAVE_AWS_ROLE_ARN).

Exit codes: 0 after SIGTERM/SIGINT; 2 when the configuration is unusable at start-up (no
regions, an invalid mapping file, a bad setting); 1 when a port cannot be bound.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from adapters.aws.adapter import AwsAdapter
from adapters.aws.clients import (
    DEFAULT_MAX_ATTEMPTS,
    READ_TIMEOUT,
    CallCounter,
    account_of,
    new_session,
    region_clients,
)
from adapters.aws.mapping_file import MappingConfig, load_mapping_file
from adapters.aws.metrics import AwsMetrics
from adapters.mapping_files import MappingFileError
from adapters.ops import serve_ops
from adapters.publisher import (
    AdapterServicer,
    ObjectSetPublisher,
    create_adapter_server,
    serve_until_stopped,
)
from netweave import settings
from netweave.lifecycle import stop_requested
from netweave.logs import configure_logging

PROG: Final = "python -m adapters.aws"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Serve an AWS account's regions as O2ims inventory."
    )
    try:
        defaults = {
            "regions": ",".join(settings.AWS_REGIONS.read()),
            "port": settings.AWS_ADAPTER_PORT.read(),
            "name": settings.AWS_ADAPTER_NAME.read(),
            "poll_interval": settings.AWS_POLL_INTERVAL.read(),
            "mapping": settings.AWS_MAPPING.read(),
            "role_arn": settings.AWS_ROLE_ARN.read(),
            "metrics_port": settings.AWS_METRICS_PORT.read(),
        }
    except ValueError as exc:
        parser.error(str(exc))
    parser.set_defaults(**defaults)
    parser.add_argument(
        "--regions", help="regions to poll, comma-separated (default: $NETWEAVE_AWS_REGIONS)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, help="gRPC port, 0 for any (default: $NETWEAVE_AWS_ADAPTER_PORT)"
    )
    parser.add_argument("--name", help="adapter name (default: $NETWEAVE_AWS_ADAPTER_NAME)")
    parser.add_argument(
        "--poll-interval",
        type=float,
        help="seconds between polls (default: $NETWEAVE_AWS_POLL_INTERVAL)",
    )
    parser.add_argument(
        "--mapping", type=Path, help="mapping file (default: $NETWEAVE_AWS_MAPPING)"
    )
    parser.add_argument("--role-arn", help="role to assume (default: $NETWEAVE_AWS_ROLE_ARN)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="ops port (/metrics, /healthz, /readyz), 0: none "
        "(default: $NETWEAVE_AWS_METRICS_PORT)",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS,
        help="attempts per AWS call (botocore adaptive retry mode)",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=READ_TIMEOUT,
        help="seconds to wait for one AWS answer (a slow fake AWS may need more)",
    )
    parser.add_argument(
        "--no-eks", action="store_true", help="do not read EKS clusters (no eks permissions)"
    )
    return parser.parse_args(argv)


def _regions(text: str) -> list[str]:
    regions = [region.strip() for region in (text or "").split(",") if region.strip()]
    return list(dict.fromkeys(regions))


def main(argv: Sequence[str] | None = None) -> int:
    stopping = stop_requested()  # before anything slow

    # Before the arguments: an argparse error is a JSON line too.
    log = configure_logging("adapter-aws")
    args = parse_args(argv)
    regions = _regions(args.regions)
    if not regions:
        print(
            f"{PROG}: no regions to poll: set NETWEAVE_AWS_REGIONS (or --regions), "
            "e.g. eu-west-1,us-east-1",
            file=sys.stderr,
        )
        return 2
    if args.poll_interval is None or args.poll_interval <= 0:
        print(f"{PROG}: the poll interval must be a positive number of seconds", file=sys.stderr)
        return 2
    if args.max_attempts < 1:
        print(f"{PROG}: --max-attempts must be at least 1", file=sys.stderr)
        return 2
    try:
        mapping = load_mapping_file(args.mapping) if args.mapping else MappingConfig()
    except MappingFileError as error:
        print(f"{PROG}: mapping file {error}", file=sys.stderr)
        return 2

    log = log.bind(adapter=args.name)
    # botocore logs every endpoint and credential lookup at INFO, as plain text.
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        session = new_session(args.role_arn)
    except Exception as error:  # a profile that does not exist, a broken config file
        print(f"{PROG}: cannot set up AWS credentials: {error}", file=sys.stderr)
        return 2
    metrics = AwsMetrics()
    counter = CallCounter(on_duration=metrics.backend_latency.labels(args.name).observe)
    clients = [
        region_clients(session, region, counter, args.max_attempts, args.read_timeout)
        for region in regions
    ]
    publisher = ObjectSetPublisher()
    adapter = AwsAdapter(
        clients,
        lambda: account_of(session, regions[0], args.max_attempts, counter),
        mapping,
        publisher,
        args.name,
        poll_interval=args.poll_interval,
        metrics=metrics,
        counter=counter,
        eks=not args.no_eks,
        logger=log,
    )
    servicer = AdapterServicer(args.name, "aws", f"AWS regions {','.join(regions)}", publisher)
    try:
        server, port = create_adapter_server(servicer, args.host, args.port)
    except OSError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    # /metrics, and /healthz and /readyz (ready once the regions were read).
    if not serve_ops(PROG, args.host, args.metrics_port, publisher, metrics.registry):
        server.stop(grace=None)
        return 1
    adapter.start()
    log.info(
        "adapter_started",
        host=args.host,
        port=port,
        regions=regions,
        poll_interval=args.poll_interval,
        role_arn=args.role_arn or None,
    )
    serve_until_stopped(stopping, log, server, publisher, adapter.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
