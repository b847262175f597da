"""python -m adapters.static: serve an inventory file as an O2ims adapter.

Exit codes: 0 after SIGTERM/SIGINT, 2 when the inventory is invalid at start-up,
1 when the port cannot be bound.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from adapters.ops import serve_ops
from adapters.publisher import (
    DEFAULT_MAX_OBJECT_BYTES,
    AdapterServicer,
    ObjectSetPublisher,
    create_adapter_server,
    serve_until_stopped,
)
from adapters.static.loader import DEFAULT_MAX_FILE_BYTES, InventoryFileError
from adapters.static.marked_yaml import DEFAULT_MAX_ALIAS_NODES, DEFAULT_MAX_DEPTH, YamlLimits
from adapters.static.server import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_SETTLE_INTERVAL,
    FileLimits,
    StaticAdapter,
)
from netweave import settings
from netweave.lifecycle import stop_requested
from netweave.logs import configure_logging

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORT = 50061


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.static", description="Serve an O-Cloud inventory YAML file."
    )
    try:
        default_inventory, default_port = settings.INVENTORY.read(), settings.ADAPTER_PORT.read()
    except ValueError as exc:
        parser.error(str(exc))
    parser.add_argument(
        "--inventory",
        type=Path,
        default=default_inventory,
        help="inventory file (default: $NETWEAVE_INVENTORY, else examples/ocloud.yaml)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        default=default_port,
        help=f"port to listen on, 0 for any (default: $NETWEAVE_ADAPTER_PORT, else {DEFAULT_PORT})",
    )
    parser.add_argument("--name", default="static", help="adapter name the core records")
    parser.add_argument(
        "--ops-port",
        type=int,
        default=0,
        help="port of the adapter's /healthz, /readyz and /metrics on --host; 0: none",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL,
        help="seconds between checks of the inventory file",
    )
    parser.add_argument(
        "--settle-interval",
        type=float,
        default=DEFAULT_SETTLE_INTERVAL,
        help="seconds a file edited in place must stay unchanged before it is read "
        "(a file replaced by rename is read at once)",
    )
    parser.add_argument(
        "--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES, help="largest file read"
    )
    parser.add_argument(
        "--max-depth", type=int, default=DEFAULT_MAX_DEPTH, help="deepest YAML nesting accepted"
    )
    parser.add_argument(
        "--max-alias-nodes",
        type=int,
        default=DEFAULT_MAX_ALIAS_NODES,
        help="nodes YAML aliases may add (or as many as the file holds, if more)",
    )
    parser.add_argument(
        "--max-object-bytes",
        type=int,
        default=DEFAULT_MAX_OBJECT_BYTES,
        help="largest serialized object served; larger ones are refused by name",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    stopping = stop_requested()  # before anything slow

    # Before the arguments: an argparse error is a JSON line too.
    log = configure_logging("adapter-static")
    args = parse_args(argv)
    log = log.bind(adapter=args.name)
    publisher = ObjectSetPublisher(max_object_bytes=args.max_object_bytes)
    limits = FileLimits(args.max_file_bytes, YamlLimits(args.max_depth, args.max_alias_nodes))
    adapter = StaticAdapter(
        args.inventory,
        publisher,
        log,
        args.poll_interval,
        settle_interval=args.settle_interval,
        limits=limits,
    )
    try:
        objects = adapter.load()
    except InventoryFileError as error:
        print(error, file=sys.stderr)
        return 2

    servicer = AdapterServicer(args.name, "static", str(args.inventory.resolve()), publisher)
    try:
        server, port = create_adapter_server(servicer, args.host, args.port)
    except OSError as error:
        print(f"adapters.static: {error}", file=sys.stderr)
        return 1
    # Ready once the file was read; degraded while an edit is refused (the last good
    # inventory is served).
    if not serve_ops("adapters.static", args.host, args.ops_port, publisher, CollectorRegistry()):
        server.stop(grace=None)
        return 1
    adapter.start()
    log.info(
        "adapter_started",
        host=args.host,
        port=port,
        ops_port=args.ops_port or None,
        inventory=str(args.inventory),
        objects=len(objects),
        revision=publisher.revision,
    )

    serve_until_stopped(stopping, log, server, publisher, adapter.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
