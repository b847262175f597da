"""python -m adapters.kubernetes: serve one Kubernetes cluster's nodes as an O2ims adapter.

The gRPC port is served at once, whether or not the cluster answers. Until the first node
list succeeds, GetAdapterInfo reports why (its problems: the core's /readyz shows them) and
ListObjects/WatchObjects are refused with UNAVAILABLE (ADAPTER_NOT_SYNCED) rather than
answered with an empty set, which would make the core delete what it still holds from this
adapter; the first list is then published as one change set. While the API server is
away, or refuses the adapter's credentials, the adapter keeps serving its last inventory
and reports the problem, retrying (with backoff; every `--auth-retry-interval`
seconds for a rejected credential, re-reading the kubeconfig). See reflector.py for the
watch, mapping.py, alarms.py and mapping_file.py for what is published.

Exit codes: 0 after SIGTERM/SIGINT; 2 when the configuration is unusable at start-up (no
kubeconfig and not in a pod, a kubeconfig or context that does not load, an invalid
mapping file, admin credentials that cannot be published); 1 when the port cannot be bound.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry

from adapters.kubernetes.adapter import DEFAULT_BATCH_WINDOW, KubernetesAdapter
from adapters.kubernetes.cluster import KubeConfigError, KubeTarget, admin_credentials, connect
from adapters.kubernetes.mapping_file import MappingConfig, load_mapping_file
from adapters.kubernetes.reflector import (
    DEFAULT_AUTH_RETRY_INTERVAL,
    DEFAULT_PAGE_SIZE,
    DEFAULT_WATCH_TIMEOUT,
)
from adapters.mapping_files import MappingFileError
from adapters.ops import serve_ops
from adapters.publisher import (
    DEFAULT_MAX_OBJECT_BYTES,
    AdapterServicer,
    ObjectSetPublisher,
    create_adapter_server,
    serve_until_stopped,
)
from netweave import settings
from netweave.lifecycle import stop_requested
from netweave.logs import configure_logging
from netweave.metrics import backend_request_histogram

DEFAULT_PORT: Final = 50071
PROG: Final = "python -m adapters.kubernetes"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Serve one Kubernetes cluster's nodes as O2ims inventory."
    )
    try:
        kubeconfig = settings.KUBECONFIG.read()
        context = settings.KUBE_CONTEXT.read()
        port = settings.KUBE_ADAPTER_PORT.read()
        name = settings.KUBE_ADAPTER_NAME.read()
        mapping = settings.KUBE_MAPPING.read()
        admin = settings.KUBE_ADMIN_KUBECONFIG.read()
        in_pod = (
            settings.KUBE_SERVICE_ACCOUNT_DIR.read(),
            settings.KUBERNETES_SERVICE_HOST.read(),
            settings.KUBERNETES_SERVICE_PORT.read(),
        )
    except ValueError as exc:
        parser.error(str(exc))
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=kubeconfig,
        help="kubeconfig (default: $NETWEAVE_KUBECONFIG, else the pod's service account)",
    )
    parser.add_argument(
        "--context", default=context, help="kubeconfig context (default: $NETWEAVE_KUBE_CONTEXT)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        default=port,
        help=f"port, 0 for any (default: $NETWEAVE_KUBE_ADAPTER_PORT, else {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--name",
        default=name,
        help="adapter name the core records (default: $NETWEAVE_KUBE_ADAPTER_NAME, else "
        "kubernetes-<context or cluster name>)",
    )
    parser.add_argument(
        "--mapping",
        type=Path,
        default=mapping,
        help="mapping file (default: $NETWEAVE_KUBE_MAPPING)",
    )
    parser.add_argument(
        "--admin-kubeconfig",
        type=Path,
        default=admin,
        help="kubeconfig whose client certificate and key are published as the profile's "
        "admin credentials (default: $NETWEAVE_KUBE_ADMIN_KUBECONFIG, else none)",
    )
    parser.add_argument(
        "--ops-port",
        type=int,
        default=0,
        help="port of the adapter's /healthz, /readyz and /metrics on --host; 0: none",
    )
    parser.add_argument(
        "--page-size", type=int, default=DEFAULT_PAGE_SIZE, help="nodes per list page"
    )
    parser.add_argument(
        "--watch-timeout",
        type=float,
        default=DEFAULT_WATCH_TIMEOUT[0],
        help="shortest server-side watch timeout, seconds (each watch draws up to twice it)",
    )
    parser.add_argument(
        "--auth-retry-interval",
        type=float,
        default=DEFAULT_AUTH_RETRY_INTERVAL,
        help="seconds between retries while the credentials are rejected",
    )
    parser.add_argument(
        "--batch-window",
        type=float,
        default=DEFAULT_BATCH_WINDOW,
        help="seconds of events gathered into one change set",
    )
    parser.add_argument(
        "--max-object-bytes",
        type=int,
        default=DEFAULT_MAX_OBJECT_BYTES,
        help="largest serialized object served; larger ones are refused by name",
    )
    args = parser.parse_args(argv)
    args.service_account_dir, args.service_host, args.service_port = in_pod
    return args


def main(argv: Sequence[str] | None = None) -> int:
    stopping = stop_requested()  # before anything slow

    # Before the arguments: an argparse error is a JSON line too.
    log = configure_logging("adapter-kubernetes")
    args = parse_args(argv)
    target = KubeTarget(
        args.kubeconfig,
        args.context,
        service_account_dir=args.service_account_dir,
        service_host=args.service_host,
        service_port=args.service_port,
    )
    try:
        mapping = load_mapping_file(args.mapping) if args.mapping else MappingConfig()
        first = connect(target)  # checks the configuration; contacts nobody
        admin = admin_credentials(args.admin_kubeconfig) if args.admin_kubeconfig else None
    except MappingFileError as error:
        print(f"{PROG}: mapping file {error}", file=sys.stderr)
        return 2
    except KubeConfigError as error:
        hint = (
            " (set NETWEAVE_KUBECONFIG or --kubeconfig, or run in a pod)"
            if args.kubeconfig is None
            else ""
        )
        print(f"{PROG}: {error}{hint}", file=sys.stderr)
        return 2
    first.api.close()
    name = args.name or f"kubernetes-{first.context or first.cluster_name}"
    log = log.bind(adapter=name)
    # urllib3 logs each of its quick reconnect attempts in plain text; the reflector
    # reports what matters (the API unreachable, since when) once, in the JSON log.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    publisher = ObjectSetPublisher(max_object_bytes=args.max_object_bytes)
    registry = CollectorRegistry()
    backend = backend_request_histogram(registry).labels(name)
    adapter = KubernetesAdapter(
        lambda: connect(target),
        mapping,
        publisher,
        name,
        admin=admin,
        logger=log,
        batch_window=args.batch_window,
        reflector_options={
            "page_size": args.page_size,
            "watch_timeout": (args.watch_timeout, 2 * args.watch_timeout),
            "auth_retry_interval": args.auth_retry_interval,
            "on_request_duration": backend.observe,
        },
    )
    source = f"{first.api_url} (context {first.context})" if first.context else first.api_url
    servicer = AdapterServicer(name, "kubernetes", source, publisher)
    try:
        server, port = create_adapter_server(servicer, args.host, args.port)
    except OSError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    # Ready once the nodes were listed; degraded while the API server is away or refuses
    # the credential (the last inventory is served).
    if not serve_ops(PROG, args.host, args.ops_port, publisher, registry):
        server.stop(grace=None)
        return 1
    publisher.set_source_problem(f"listing the nodes of {first.api_url} for the first time")
    adapter.start()
    log.info(
        "adapter_started",
        host=args.host,
        port=port,
        ops_port=args.ops_port or None,
        cluster=source,
    )

    serve_until_stopped(stopping, log, server, publisher, adapter.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
