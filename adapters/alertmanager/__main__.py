"""python -m adapters.alertmanager: Prometheus Alertmanager's alerts as O2ims alarms.

One process, two listeners: the o2ims.adapter.v1 gRPC service the core watches (the firing
alerts as ActiveAlarm objects, and their AlarmDictionary), and the HTTP receiver
Alertmanager's `webhook_config` posts to (receiver.py). See alarms.py for how alerts become
alarms, mapping.py for the mapping file, docs/drafts/alertmanager.md for the setup.

Exit codes: 0 after SIGTERM/SIGINT; 2 when the configuration is unusable at start-up (no
token file, no state file setting, an unreadable state file, an invalid mapping file,
unusable TLS files); 1 when a port cannot be bound.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Final

from adapters.alertmanager.alarms import AlarmBook, StateFileError
from adapters.alertmanager.mapping import MappingConfig, load_mapping_file
from adapters.alertmanager.metrics import AlertmanagerMetrics
from adapters.alertmanager.receiver import (
    DEFAULT_MAX_BODY_BYTES,
    ReceiverConfigError,
    TlsFiles,
    WebhookReceiver,
    read_token,
    server_tls_context,
)
from adapters.mapping_files import MappingFileError
from adapters.publisher import (
    AdapterServicer,
    ObjectSetPublisher,
    create_adapter_server,
    serve_until_stopped,
)
from netweave import settings
from netweave.lifecycle import stop_requested
from netweave.logs import configure_logging

PROG: Final = "python -m adapters.alertmanager"
DEFAULT_ADAPTER_PORT: Final = 50081
DEFAULT_RECEIVER_PORT: Final = 50082
DEFAULT_EXPIRY_INTERVAL: Final = 1.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Serve Prometheus Alertmanager's alerts as O2ims alarms."
    )
    try:
        defaults = {
            "port": settings.ALERTMANAGER_ADAPTER_PORT.read(),
            "webhook_port": settings.ALERTMANAGER_PORT.read(),
            "webhook_host": settings.ALERTMANAGER_HOST.read(),
            "name": settings.ALERTMANAGER_ADAPTER_NAME.read(),
            "token_file": settings.ALERTMANAGER_TOKEN_FILE.read(),
            "state_file": settings.ALERTMANAGER_STATE_FILE.read(),
            "mapping": settings.ALERTMANAGER_MAPPING.read(),
            "tls_cert": settings.ALERTMANAGER_TLS_CERT.read(),
            "tls_key": settings.ALERTMANAGER_TLS_KEY.read(),
            "client_ca": settings.ALERTMANAGER_CLIENT_CA.read(),
        }
    except ValueError as exc:
        parser.error(str(exc))
    parser.set_defaults(**defaults)
    parser.add_argument("--host", default="127.0.0.1", help="gRPC address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        help="gRPC port, 0 for any "
        f"(default: $NETWEAVE_ALERTMANAGER_ADAPTER_PORT, else {DEFAULT_ADAPTER_PORT})",
    )
    parser.add_argument(
        "--webhook-host", help="receiver address (default: $NETWEAVE_ALERTMANAGER_HOST)"
    )
    parser.add_argument(
        "--webhook-port",
        type=int,
        help="receiver port, 0 for any "
        f"(default: $NETWEAVE_ALERTMANAGER_PORT, else {DEFAULT_RECEIVER_PORT})",
    )
    parser.add_argument(
        "--name",
        help="adapter name the core records (default: $NETWEAVE_ALERTMANAGER_ADAPTER_NAME)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="bearer token file, required (default: $NETWEAVE_ALERTMANAGER_TOKEN_FILE)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        help="where the active alerts are kept across restarts, required "
        "(default: $NETWEAVE_ALERTMANAGER_STATE_FILE)",
    )
    parser.add_argument(
        "--mapping", type=Path, help="mapping file (default: $NETWEAVE_ALERTMANAGER_MAPPING)"
    )
    parser.add_argument(
        "--tls-cert", type=Path, help="receiver certificate (default: $..._TLS_CERT)"
    )
    parser.add_argument("--tls-key", type=Path, help="receiver key (default: $..._TLS_KEY)")
    parser.add_argument(
        "--client-ca",
        type=Path,
        help="require client certificates from this CA (default: $..._CLIENT_CA)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest webhook body accepted (413 above)",
    )
    parser.add_argument(
        "--expiry-interval",
        type=float,
        default=DEFAULT_EXPIRY_INTERVAL,
        help="seconds between checks for alerts whose endsAt has passed",
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        default=0.0,
        help="withdraw an alert no webhook has carried for this many seconds (0: never); "
        "set it to a few times Alertmanager's repeat_interval",
    )
    return parser.parse_args(argv)


def _tls(args: argparse.Namespace) -> TlsFiles | None:
    if args.tls_cert is None and args.tls_key is None:
        if args.client_ca is not None:
            raise ReceiverConfigError("a client CA needs TLS: set the certificate and key too")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ReceiverConfigError("TLS needs both the certificate and the key")
    return TlsFiles(args.tls_cert, args.tls_key, args.client_ca)


def main(argv: Sequence[str] | None = None) -> int:
    stopping = stop_requested()  # before anything slow

    # Before the arguments: an argparse error is a JSON line too.
    log = configure_logging("adapter-alertmanager")
    args = parse_args(argv)
    try:
        token = read_token(args.token_file)
        tls_files = _tls(args)
        tls = server_tls_context(tls_files) if tls_files else None
        mapping = load_mapping_file(args.mapping) if args.mapping else MappingConfig()
        if args.state_file is None:
            raise ReceiverConfigError(
                "no state file (NETWEAVE_ALERTMANAGER_STATE_FILE, --state-file): without "
                "one a restart would clear every alarm still firing"
            )
    except MappingFileError as error:
        print(f"{PROG}: mapping file {error}", file=sys.stderr)
        return 2
    except ReceiverConfigError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2

    log = log.bind(adapter=args.name)
    metrics = AlertmanagerMetrics()
    publisher = ObjectSetPublisher()
    book = AlarmBook(
        args.name,
        mapping,
        publisher,
        args.state_file,
        metrics=metrics,
        logger=log,
        stale_after=timedelta(seconds=args.stale_after) if args.stale_after > 0 else None,
    )
    try:
        restored = book.restore()
    except StateFileError as error:
        print(f"{PROG}: state file {error}", file=sys.stderr)
        return 2
    receiver = WebhookReceiver(
        book,
        token,
        metrics=metrics,
        host=args.webhook_host,
        port=args.webhook_port,
        tls=tls,
        max_body_bytes=args.max_body_bytes,
        logger=log,
    )
    servicer = AdapterServicer(
        args.name, "alertmanager", f"Alertmanager webhooks ({args.state_file})", publisher
    )
    try:
        server, port = create_adapter_server(servicer, args.host, args.port)
    except OSError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    try:
        receiver.start()
    except OSError as error:
        server.stop(grace=None)
        print(
            f"{PROG}: cannot listen on {args.webhook_host}:{args.webhook_port}: {error}",
            file=sys.stderr,
        )
        return 1
    book.start(args.expiry_interval)
    log.info(
        "adapter_started",
        host=args.host,
        port=port,
        webhook_url=receiver.url,
        tls=tls is not None,
        client_certificates=tls_files is not None and tls_files.client_ca is not None,
        restored_alarms=restored,
        revision=publisher.revision,
    )

    def stop_source() -> None:
        receiver.stop()
        book.stop()

    serve_until_stopped(stopping, log, server, publisher, stop_source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
