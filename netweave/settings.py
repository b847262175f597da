"""Every environment variable netweave reads, defined once: name, type, default, meaning and
which processes read it (netweave/env.py Setting). The processes' config classes
(server/config.py GatewayConfig, server/notifier/config.py NotifierConfig, devstack/stack.py
StackConfig) are built from these definitions, and README's configuration table is generated
from them:

    python -m netweave.settings --markdown        print the table
    python -m netweave.settings --update-readme   rewrite it in README.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from netweave.env import (
    FILE_PATH,
    FLAG,
    HOST,
    HOST_PORT,
    HOST_PORT_LIST,
    INTEGER,
    NUMBER,
    PATH,
    TEXT,
    URL,
    Kind,
    Setting,
    choice,
)
from netweave.redis_url import checked_redis_url

REPO: Final = Path(__file__).resolve().parent.parent
README: Final = REPO / "README.md"

# Who reads a variable: the README's "read by" column, and each process's list below.
CORE: Final = "core"
NOTIFIER: Final = "notifier"
ADAPTER: Final = "adapter"
MAKE_RUN: Final = "make run"
# `python -m rest_facade.render`: the production Envoy configuration of one deployment.
ENVOY_RENDER: Final = "envoy render"
READERS: Final = (CORE, NOTIFIER, ADAPTER, MAKE_RUN, ENVOY_RENDER)

# Kept as text here and parsed by their readers (server.subscriptions, server.majors), which
# name the variable on a bad value (Setting.read_as).
ENDPOINT_LIST: Final[Kind[str]] = Kind("host:port list", TEXT.parse)
CIDR_LIST: Final[Kind[str]] = Kind("CIDR list", TEXT.parse)
MAJORS: Final[Kind[str]] = Kind("major list", TEXT.parse)
# redis://, rediss://, unix://, redis+sentinel://, rediss+sentinel:// (netweave/redis_url.py):
# checked at start, so a bad URL stops the process naming REDIS_URL.
REDIS_URL_KIND: Final[Kind[str]] = Kind("Redis URL", checked_redis_url)
FILTER_MODE: Final = choice("include", "exclude")
PATH_LIST: Final[Kind[tuple[str, ...]]] = Kind("path list", HOST_PORT_LIST.parse)
NAME_LIST: Final[Kind[tuple[str, ...]]] = Kind("name list", HOST_PORT_LIST.parse)


# --- listeners and addresses --------------------------------------------------------------

GRPC_HOST: Final = Setting(
    "NETWEAVE_GRPC_HOST",
    HOST,
    "127.0.0.1",
    (CORE,),
    "address of the internal gRPC listener (plaintext); must be loopback: its callers get "
    "the access policy's `direct_calls` roles",
)
GRPC_PORT: Final = Setting(
    "NETWEAVE_GRPC_PORT",
    INTEGER,
    50051,
    (CORE, MAKE_RUN),
    "port of the core's internal gRPC listener",
)
EDGE_LISTEN: Final = Setting(
    "NETWEAVE_EDGE_LISTEN",
    HOST_PORT,
    "",
    (CORE,),
    "the core's edge listener for Envoy, mutual TLS; set together with "
    "`NETWEAVE_EDGE_TLS_CERT`, `NETWEAVE_EDGE_TLS_KEY`, `NETWEAVE_EDGE_CLIENT_CA` and "
    "`NETWEAVE_EDGE_PEER_URI` (all or none) [`make run`: `127.0.0.1:$NETWEAVE_EDGE_PORT`]",
)
EDGE_TLS_CERT: Final = Setting(
    "NETWEAVE_EDGE_TLS_CERT", PATH, "", (CORE,), "the edge listener's certificate (PEM)"
)
EDGE_TLS_KEY: Final = Setting(
    "NETWEAVE_EDGE_TLS_KEY", PATH, "", (CORE,), "the edge listener's private key (PEM)"
)
EDGE_CLIENT_CA: Final = Setting(
    "NETWEAVE_EDGE_CLIENT_CA",
    PATH,
    "",
    (CORE,),
    "CA bundle (PEM) the edge's client certificate must chain to",
)


def _role_paths(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        role, sep, path = item.partition("=")
        if not sep or not role.strip() or not path.strip():
            raise ValueError(f"must be role=path pairs, comma-separated, got {item!r}")
        if not role.strip().replace("_", "").isalnum():
            raise ValueError(f"a role is letters, digits and _, got {role.strip()!r}")
        pairs.append((role.strip(), path.strip()))
    return tuple(pairs)


ROLE_PATHS: Final[Kind[tuple[tuple[str, str], ...]]] = Kind("role=path list", _role_paths)

WATCHED_CERTIFICATES: Final = Setting(
    "NETWEAVE_WATCHED_CERTIFICATES",
    ROLE_PATHS,
    (),
    (CORE,),
    "certificates the core does not use itself but whose expiry it reports in "
    "`o2ims_certificate_expiry_seconds{certificate=<role>}`: e.g. Envoy's server certificate, "
    "the CA bundle SMO client certificates chain to, Envoy's client certificate towards the "
    "core (`server=/tls/tls.crt,client_ca=/tls/ca.crt,edge_client=/edge/tls.crt`) "
    "[`make run`: those three]",
)

EDGE_PEER_URI: Final = Setting(
    "NETWEAVE_EDGE_PEER_URI",
    URL,
    "",
    (CORE,),
    "URI SAN the edge's client certificate must carry: the only caller whose forwarded "
    "identity is believed",
)
EDGE_SECRET: Final = Setting(
    "NETWEAVE_EDGE_SECRET",
    TEXT,
    "",
    (CORE,),
    "no longer read: the core refuses to start while it is set (the edge is identified by "
    "mutual TLS)",
)
EDGE_PORT: Final = Setting(
    "NETWEAVE_EDGE_PORT", INTEGER, 50052, (MAKE_RUN,), "port of the core's edge listener"
)
EDGE_TELEMETRY_LISTEN: Final = Setting(
    "NETWEAVE_EDGE_TELEMETRY_LISTEN",
    HOST_PORT,
    "",
    (CORE,),
    "where Envoy sends its REST access log records (OTLP, the edge listener's mutual TLS: "
    "needs it configured) for `o2ims_http_requests_total` and "
    "`o2ims_http_request_duration_seconds`; unset: no REST metrics "
    "[`make run`: `127.0.0.1:$NETWEAVE_EDGE_TELEMETRY_PORT`]",
)
EDGE_TELEMETRY_PORT: Final = Setting(
    "NETWEAVE_EDGE_TELEMETRY_PORT",
    INTEGER,
    50060,
    (MAKE_RUN,),
    "port of the core's edge telemetry listener (off 50053: with NETWEAVE_CORE_PROCESSES=2 "
    "that is the second worker's edge port)",
)
ENVOY_CONCURRENCY: Final = Setting(
    "NETWEAVE_ENVOY_CONCURRENCY",
    INTEGER,
    1,
    (MAKE_RUN,),
    "Envoy's worker threads (`--concurrency`, 1 to 64): the CPUs Envoy may use, not the "
    "machine's (docs/performance.md \"Envoy's worker threads\")",
)
ENVOY_STATS_PORT: Final = Setting(
    "NETWEAVE_ENVOY_STATS_PORT",
    INTEGER,
    9902,
    (MAKE_RUN,),
    "Envoy's plain-HTTP stats listener for Prometheus: GET `/stats/prometheus` and `/ready` "
    "only (the admin API itself stays on its Unix socket)",
)
OPS_HOST: Final = Setting(
    "NETWEAVE_OPS_HOST", HOST, "127.0.0.1", (CORE,), "address of `/healthz`, `/readyz`, `/metrics`"
)
OPS_PORT: Final = Setting(
    "NETWEAVE_OPS_PORT",
    INTEGER,
    8080,
    (CORE, MAKE_RUN),
    "port of the core's `/healthz`, `/readyz`, `/metrics`",
)
REST_PORT: Final = Setting(
    "NETWEAVE_REST_PORT", INTEGER, 8443, (MAKE_RUN,), "Envoy's HTTPS listener, REST and gRPC"
)
REDIS_URL: Final = Setting(
    "REDIS_URL",
    REDIS_URL_KIND,
    "redis://127.0.0.1:6379/0",
    (CORE, NOTIFIER),
    "the Redis to use: `redis://`, `rediss://` (TLS), `unix://`, or through Sentinel "
    "`redis+sentinel://[[user]:password@]host:port[,host:port...]/master_name[/db]` "
    "(`rediss+sentinel://`: TLS; see Redis high availability in docs/operations.md)",
)
REDIS_WAIT_REPLICAS: Final = Setting(
    "NETWEAVE_REDIS_WAIT_REPLICAS",
    INTEGER,
    0,
    (CORE,),
    "after a subscription create or delete and an alarm acknowledgement, wait (Redis `WAIT`) "
    "until this many replicas have the write; 0: do not wait. A write not confirmed in time "
    "still succeeds, logged (`redis_write_unreplicated`) and counted "
    "(`o2ims_redis_unreplicated_writes_total`)",
)
REDIS_WAIT_TIMEOUT_MS: Final = Setting(
    "NETWEAVE_REDIS_WAIT_TIMEOUT_MS",
    INTEGER,
    500,
    (CORE,),
    "how long such a write waits for its replicas, in milliseconds (1 to 1000)",
)
STACK_REDIS_URL: Final = Setting[str | None](
    "REDIS_URL",
    REDIS_URL_KIND,
    None,
    (MAKE_RUN,),
    "use this Redis instead of starting one",
    shown_default="none: start one on `NETWEAVE_REDIS_PORT`",
)
REDIS_PORT: Final = Setting(
    "NETWEAVE_REDIS_PORT", INTEGER, 6380, (MAKE_RUN,), "port of the Redis `make run` starts"
)
ADAPTERS: Final = Setting(
    "NETWEAVE_ADAPTERS",
    HOST_PORT_LIST,
    ("127.0.0.1:50061",),
    (CORE,),
    "comma-separated `host:port` of the adapters",
)
ADAPTER_PORT: Final = Setting(
    "NETWEAVE_ADAPTER_PORT", INTEGER, 50061, (ADAPTER, MAKE_RUN), "the static adapter's gRPC port"
)
ADAPTER_OPS_PORT: Final = Setting(
    "NETWEAVE_ADAPTER_OPS_PORT",
    INTEGER,
    8082,
    (MAKE_RUN,),
    "port of the static adapter's `/healthz`, `/readyz`, `/metrics` (its `--ops-port`); each "
    "Kubernetes adapter gets a free port of its own, shown in the banner",
)
STACK_KUBECONFIGS: Final = Setting[tuple[str, ...]](
    "NETWEAVE_KUBECONFIG",
    PATH_LIST,
    (),
    (MAKE_RUN,),
    "kubeconfig file(s), comma-separated: `make run` starts one Kubernetes adapter per file "
    "(its current context), or one per context named in `NETWEAVE_KUBE_CONTEXT`",
    shown_default="none: no Kubernetes adapter",
)
STACK_KUBE_CONTEXTS: Final = Setting[tuple[str, ...]](
    "NETWEAVE_KUBE_CONTEXT",
    NAME_LIST,
    (),
    (MAKE_RUN,),
    "kubeconfig context(s), comma-separated: one Kubernetes adapter (one cluster, one "
    "deployment manager) each",
    shown_default="none: each file's current context",
)
STACK_KUBE_ADAPTER_PORT: Final = Setting(
    "NETWEAVE_KUBE_ADAPTER_PORT",
    INTEGER,
    50071,
    (MAKE_RUN,),
    "gRPC port of the first Kubernetes adapter; the next ones count up from it",
)
INVENTORY: Final = Setting(
    "NETWEAVE_INVENTORY",
    FILE_PATH,
    REPO / "examples" / "ocloud.yaml",
    (ADAPTER, MAKE_RUN),
    "the static adapter's inventory file",
)
KUBECONFIG: Final = Setting[Path | None](
    "NETWEAVE_KUBECONFIG",
    FILE_PATH,
    None,
    (ADAPTER,),
    "the Kubernetes adapter's kubeconfig (read-only credential, never published)",
    shown_default="none: the pod's service account (in-cluster)",
)
KUBE_SERVICE_ACCOUNT_DIR: Final = Setting(
    "NETWEAVE_KUBE_SERVICE_ACCOUNT_DIR",
    FILE_PATH,
    Path("/var/run/secrets/kubernetes.io/serviceaccount"),
    (ADAPTER,),
    "in a pod without `NETWEAVE_KUBECONFIG`: where the service account's `token` and `ca.crt` "
    "are (re-read on every reconnect: projected tokens rotate)",
)
KUBERNETES_SERVICE_HOST: Final = Setting(
    "KUBERNETES_SERVICE_HOST",
    TEXT,
    "",
    (ADAPTER,),
    "in a pod: the API server's address (set by Kubernetes in every container)",
    shown_default="none: not in a pod",
)
KUBERNETES_SERVICE_PORT: Final = Setting(
    "KUBERNETES_SERVICE_PORT",
    TEXT,
    "",
    (ADAPTER,),
    "in a pod: the API server's port (set by Kubernetes in every container)",
    shown_default="none: not in a pod",
)
KUBE_CONTEXT: Final = Setting(
    "NETWEAVE_KUBE_CONTEXT",
    TEXT,
    "",
    (ADAPTER,),
    "the kubeconfig context the Kubernetes adapter uses",
    shown_default="the kubeconfig's current context",
)
KUBE_ADAPTER_PORT: Final = Setting(
    "NETWEAVE_KUBE_ADAPTER_PORT", INTEGER, 50071, (ADAPTER,), "the Kubernetes adapter's gRPC port"
)
KUBE_ADAPTER_NAME: Final = Setting(
    "NETWEAVE_KUBE_ADAPTER_NAME",
    TEXT,
    "",
    (ADAPTER,),
    "the Kubernetes adapter's name, the owner the core records for its objects",
    shown_default="`kubernetes-<context or cluster name>`",
)
KUBE_MAPPING: Final = Setting[Path | None](
    "NETWEAVE_KUBE_MAPPING",
    FILE_PATH,
    None,
    (ADAPTER,),
    "YAML file overriding how the Kubernetes adapter maps nodes to O2ims objects "
    "(adapters/kubernetes/mapping_file.py)",
    shown_default="none: the built-in mapping",
)
KUBE_ADMIN_KUBECONFIG: Final = Setting[Path | None](
    "NETWEAVE_KUBE_ADMIN_KUBECONFIG",
    FILE_PATH,
    None,
    (ADAPTER,),
    "kubeconfig whose user's client certificate and key the Kubernetes adapter publishes as "
    "the native_k8sapi profile's admin credentials",
    shown_default="none: no admin credentials published",
)
ALERTMANAGER_ADAPTER_PORT: Final = Setting(
    "NETWEAVE_ALERTMANAGER_ADAPTER_PORT",
    INTEGER,
    50081,
    (ADAPTER, MAKE_RUN),
    "the Alertmanager adapter's gRPC port",
)
ALERTMANAGER_PORT: Final = Setting(
    "NETWEAVE_ALERTMANAGER_PORT",
    INTEGER,
    50082,
    (ADAPTER, MAKE_RUN),
    "the Alertmanager adapter's webhook receiver (HTTP) port",
)
ALERTMANAGER_HOST: Final = Setting(
    "NETWEAVE_ALERTMANAGER_HOST",
    HOST,
    "127.0.0.1",
    (ADAPTER,),
    "the address the Alertmanager adapter's webhook receiver listens on",
)
ALERTMANAGER_ADAPTER_NAME: Final = Setting(
    "NETWEAVE_ALERTMANAGER_ADAPTER_NAME",
    TEXT,
    "alertmanager",
    (ADAPTER,),
    "the Alertmanager adapter's name, the owner the core records for its alarms (and the "
    "seed of its alarm ids)",
)
ALERTMANAGER_TOKEN_FILE: Final = Setting[Path | None](
    "NETWEAVE_ALERTMANAGER_TOKEN_FILE",
    FILE_PATH,
    None,
    (ADAPTER,),
    "file holding the bearer token Alertmanager must send (its `http_config.authorization."
    "credentials_file`); the receiver refuses to start without it",
    shown_default="none: required",
)
ALERTMANAGER_STATE_FILE: Final = Setting[Path | None](
    "NETWEAVE_ALERTMANAGER_STATE_FILE",
    FILE_PATH,
    None,
    (ADAPTER,),
    "where the Alertmanager adapter keeps its active alerts across restarts (written "
    "atomically); the adapter refuses to start without it",
    shown_default="none: required",
)
ALERTMANAGER_MAPPING: Final = Setting[Path | None](
    "NETWEAVE_ALERTMANAGER_MAPPING",
    FILE_PATH,
    None,
    (ADAPTER,),
    "YAML file overriding how the Alertmanager adapter maps alerts to alarms "
    "(examples/alertmanager-mapping.yaml)",
    shown_default="none: the built-in mapping",
)
ALERTMANAGER_TLS_CERT: Final = Setting[Path | None](
    "NETWEAVE_ALERTMANAGER_TLS_CERT",
    FILE_PATH,
    None,
    (ADAPTER,),
    "PEM certificate (chain) of the webhook receiver; with the key, it serves HTTPS",
    shown_default="none: plain HTTP",
)
ALERTMANAGER_TLS_KEY: Final = Setting[Path | None](
    "NETWEAVE_ALERTMANAGER_TLS_KEY",
    FILE_PATH,
    None,
    (ADAPTER,),
    "PEM private key of `NETWEAVE_ALERTMANAGER_TLS_CERT`",
    shown_default="none",
)
ALERTMANAGER_CLIENT_CA: Final = Setting[Path | None](
    "NETWEAVE_ALERTMANAGER_CLIENT_CA",
    FILE_PATH,
    None,
    (ADAPTER,),
    "PEM CA bundle: when set (with TLS), the webhook receiver requires client certificates "
    "it issued",
    shown_default="none: no client certificate asked",
)
STACK_ALERTMANAGER: Final = Setting(
    "NETWEAVE_ALERTMANAGER",
    FLAG,
    True,
    (MAKE_RUN,),
    "whether `make run` starts the Alertmanager adapter (webhook receiver) beside the static one",
)
AWS_REGIONS: Final = Setting[tuple[str, ...]](
    "NETWEAVE_AWS_REGIONS",
    NAME_LIST,
    (),
    (ADAPTER, MAKE_RUN),
    "AWS regions the AWS adapter polls, comma-separated (required by it); `make run` starts "
    "the AWS adapter when set. Credentials and endpoint: boto3's standard chain "
    "(`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, instance/IRSA role)",
    shown_default="none: no AWS adapter",
)
AWS_ADAPTER_PORT: Final = Setting(
    "NETWEAVE_AWS_ADAPTER_PORT",
    INTEGER,
    50091,
    (ADAPTER, MAKE_RUN),
    "the AWS adapter's gRPC port",
)
AWS_ADAPTER_NAME: Final = Setting(
    "NETWEAVE_AWS_ADAPTER_NAME",
    TEXT,
    "aws",
    (ADAPTER,),
    "the AWS adapter's name, the owner the core records for its objects",
)
AWS_POLL_INTERVAL: Final = Setting(
    "NETWEAVE_AWS_POLL_INTERVAL",
    NUMBER,
    30.0,
    (ADAPTER,),
    "seconds between the AWS adapter's polls of each region (a failing region backs off)",
)
AWS_MAPPING: Final = Setting[Path | None](
    "NETWEAVE_AWS_MAPPING",
    FILE_PATH,
    None,
    (ADAPTER,),
    "YAML file overriding how the AWS adapter maps regions, zones, instances and EKS "
    "clusters (examples/aws-mapping.yaml)",
    shown_default="none: the built-in mapping",
)
AWS_ROLE_ARN: Final = Setting(
    "NETWEAVE_AWS_ROLE_ARN",
    TEXT,
    "",
    (ADAPTER,),
    "IAM role the AWS adapter assumes (STS, refreshed) from the standard chain's "
    "credentials, e.g. to read another account",
    shown_default="none: the chain's own credentials",
)
STACK_AWS_MOTO: Final = Setting(
    "NETWEAVE_AWS_MOTO",
    FLAG,
    False,
    (MAKE_RUN,),
    "`make run` starts a local moto server (AWS's APIs, moto[server]) with a small demo "
    "account and points the AWS adapter at it (regions default to eu-west-1,us-east-1)",
)
AWS_METRICS_PORT: Final = Setting(
    "NETWEAVE_AWS_METRICS_PORT",
    INTEGER,
    0,
    (ADAPTER,),
    "port of the AWS adapter's Prometheus `/metrics` (on the adapter's host); 0: not served",
)
SERVICE_URI: Final = Setting(
    "NETWEAVE_SERVICE_URI",
    URL,
    "https://127.0.0.1:8443",
    (CORE, NOTIFIER),
    "externally reachable API root, reported as `serviceUri`",
)
STACK_SERVICE_URI: Final = Setting[str | None](
    "NETWEAVE_SERVICE_URI",
    URL,
    None,
    (MAKE_RUN,),
    "the `serviceUri` `make run` gives the core and the notifier",
    shown_default="`https://127.0.0.1:$NETWEAVE_REST_PORT`",
)

# --- the core -----------------------------------------------------------------------------

GRPC_WORKERS: Final = Setting("NETWEAVE_GRPC_WORKERS", INTEGER, 8, (CORE,), "gRPC handler threads")
CORE_PROCESSES: Final = Setting(
    "NETWEAVE_CORE_PROCESSES",
    INTEGER,
    1,
    (CORE, MAKE_RUN),
    "core worker processes (1 to 64); above 1, `python -m server` supervises that many, "
    "sharing the internal gRPC port, each on its own edge port (NETWEAVE_EDGE_LISTEN + i)",
)
CPU_AFFINITY: Final = choice("auto", "spread", "off")
CORE_CPU_AFFINITY: Final = Setting(
    "NETWEAVE_CORE_CPU_AFFINITY",
    CPU_AFFINITY,
    "auto",
    (CORE,),
    "where the core's processes run: `spread` keeps worker i on the i-th CPU the pod may use "
    "(one each, in turn when there are more workers than CPUs); `auto` does so when the pod "
    "may use exactly NETWEAVE_CORE_PROCESSES CPUs (CPUs of its own, e.g. the kubelet's static "
    "CPU manager); `off` leaves it to the kernel",
)


# Parsed by the core (server/query/filter.py extensions_paths: the filters' path syntax, with
# its escapes), which names the variable on a bad value (Setting.read_as).
EXTENSIONS_PATHS: Final[Kind[tuple[str, ...]]] = Kind("extensions path list", HOST_PORT_LIST.parse)
INDEXED_EXTENSIONS: Final = Setting(
    "NETWEAVE_INDEXED_EXTENSIONS",
    EXTENSIONS_PATHS,
    (),
    (CORE,),
    "resource extensions paths the core indexes at every load, comma-separated (e.g. "
    "`extensions/rack,extensions/site/rack`; at most 8): filters on them are answered from "
    "the index from their first use, where another path is indexed once filters have used "
    "it twice (eq, in, cont, gt, gte, lt and lte search all resources' extensions "
    "meanwhile; negations scan the pool)",
    shown_default="none",
)
EVENTS_MAX_LEN: Final = Setting(
    "NETWEAVE_EVENTS_MAX_LEN",
    INTEGER,
    100_000,
    (CORE,),
    "approximate length the change-event stream is trimmed to",
)
DUPLICATE_SUBSCRIPTION_STATUS: Final = Setting(
    "NETWEAVE_DUPLICATE_SUBSCRIPTION_STATUS",
    INTEGER,
    400,
    (CORE,),
    "HTTP status of a duplicate subscription, 400 (the conformance tests) or 409",
)
SERVED_MAJORS: Final = Setting(
    "NETWEAVE_SERVED_MAJORS",
    MAJORS,
    "v1,v2",
    (CORE,),
    "the Inventory API majors served; every path of another major is a 404",
)
PAGE_SIZE: Final = Setting(
    "NETWEAVE_PAGE_SIZE", INTEGER, 1000, (CORE,), "items per page of every list"
)
PAGE_MAX_BYTES: Final = Setting(
    "NETWEAVE_PAGE_MAX_BYTES",
    INTEGER,
    2 * 1024 * 1024,
    (CORE,),
    "serialized bytes per page of every list, at most",
)
PAGE_SECRET: Final = Setting(
    "NETWEAVE_PAGE_SECRET",
    TEXT,
    "",
    (CORE,),
    "key that signs page markers; unset: one is created once in Redis "
    "(`config:page_marker_secret`) and shared by every replica",
)
ALARM_PURGE_INTERVAL: Final = Setting(
    "NETWEAVE_ALARM_PURGE_INTERVAL",
    NUMBER,
    3600.0,
    (CORE,),
    "seconds between purges of cleared alarms older than the alarm service "
    "configuration's retentionPeriod (one replica purges per interval)",
)
ALARM_FLAP_WINDOW: Final = Setting(
    "NETWEAVE_ALARM_FLAP_WINDOW",
    NUMBER,
    300.0,
    (CORE,),
    "seconds after a source clears an alarm during which the same source alarm raised "
    "again re-raises the same alarm event record (a CHANGE) instead of a new one (0: never)",
)
SHUTDOWN_DRAIN_SECONDS: Final = Setting(
    "NETWEAVE_SHUTDOWN_DRAIN_SECONDS",
    NUMBER,
    15.0,
    (CORE,),
    "on SIGTERM, seconds the core keeps serving while it reports NOT_SERVING (grpc.health.v1) "
    "and `/readyz` 503 `draining`, so Envoy and Kubernetes stop sending to it first; must "
    "exceed Envoy's detection (health check interval x unhealthy threshold + timeout: "
    "5 s x 2 + 1 s); a second SIGTERM or a SIGINT cuts it short "
    '(docs/operations.md "Replicas and rolling upgrades")',
)
SHUTDOWN_GRACE_SECONDS: Final = Setting(
    "NETWEAVE_SHUTDOWN_GRACE_SECONDS",
    NUMBER,
    10.0,
    (CORE,),
    "after the drain, seconds the calls in flight get to finish before they are cancelled "
    "and the core exits; Kubernetes' terminationGracePeriodSeconds must exceed drain + grace",
)
AUTH_POLICY: Final = Setting(
    "NETWEAVE_AUTH_POLICY",
    PATH,
    "",
    (CORE,),
    "access policy file (YAML); unset: no access control, every caller is an admin "
    "(development only)",
)
STACK_AUTH_POLICY: Final = Setting[Path | None](
    "NETWEAVE_AUTH_POLICY",
    FILE_PATH,
    REPO / "examples" / "access-policy.yaml",
    (MAKE_RUN,),
    "the access policy `make run` gives the core",
)
AUDIT_LOG: Final = Setting(
    "NETWEAVE_AUDIT_LOG",
    PATH,
    "-",
    (CORE,),
    "audit records: a file path, `-` for standard output, or empty for none "
    "[`make run`: `.netweave/logs/audit.log`]",
    empty_is_value=True,
)

# --- callbacks (core: at creation; notifier: at delivery) ---------------------------------

CALLBACK_ALLOW_HTTP: Final = Setting(
    "NETWEAVE_CALLBACK_ALLOW_HTTP",
    FLAG,
    False,
    (CORE, NOTIFIER),
    "plain http callbacks allowed (see Subscriptions) [`make run`: 1]",
)
CALLBACK_ALLOW_PRIVATE: Final = Setting(
    "NETWEAVE_CALLBACK_ALLOW_PRIVATE",
    FLAG,
    False,
    (CORE, NOTIFIER),
    "callbacks to private addresses allowed (never loopback or link-local)",
)
CALLBACK_ALLOWED_CIDRS: Final = Setting(
    "NETWEAVE_CALLBACK_ALLOWED_CIDRS",
    CIDR_LIST,
    "",
    (CORE, NOTIFIER),
    "networks callbacks may reach whatever their category, comma-separated "
    "[`make run`: `127.0.0.0/8,::1/128`]",
)
CALLBACK_PROBE: Final = Setting(
    "NETWEAVE_CALLBACK_PROBE",
    FLAG,
    False,
    (CORE, NOTIFIER),
    "at creation, GET the callback and require a 2xx",
)
CALLBACK_PROBE_TIMEOUT_S: Final = Setting(
    "NETWEAVE_CALLBACK_PROBE_TIMEOUT_S",
    NUMBER,
    5.0,
    (CORE, NOTIFIER),
    "seconds the creation probe may take",
)
CALLBACK_DNS_TIMEOUT_S: Final = Setting(
    "NETWEAVE_CALLBACK_DNS_TIMEOUT_S",
    NUMBER,
    2.0,
    (CORE, NOTIFIER),
    "seconds a callback host's DNS answer may take (slower: does not resolve now)",
)
CALLBACK_CA_BUNDLE: Final = Setting(
    "NETWEAVE_CALLBACK_CA_BUNDLE",
    PATH,
    "",
    (CORE, NOTIFIER),
    "PEM file of the CAs https callbacks are verified against (replaces the system trust "
    "store); unset: the system trust store",
)
GATEWAY_ENDPOINTS: Final = Setting(
    "NETWEAVE_GATEWAY_ENDPOINTS",
    ENDPOINT_LIST,
    "",
    (CORE, NOTIFIER),
    "further `host:port` of the gateway's own listeners that callbacks may never reach "
    "(each process adds its own listeners and Redis) [`make run`: every port it opens]",
)

# --- the notifier -------------------------------------------------------------------------

NOTIFIER_OPS_HOST: Final = Setting(
    "NETWEAVE_NOTIFIER_OPS_HOST",
    HOST,
    "127.0.0.1",
    (NOTIFIER,),
    "address of the notifier's `/healthz`, `/readyz`, `/metrics`",
)
NOTIFIER_OPS_PORT: Final = Setting(
    "NETWEAVE_NOTIFIER_OPS_PORT",
    INTEGER,
    8081,
    (NOTIFIER, MAKE_RUN),
    "port of the notifier's `/healthz`, `/readyz`, `/metrics`",
)
WEBHOOK_SECRET: Final = Setting(
    "NETWEAVE_WEBHOOK_SECRET",
    TEXT,
    "",
    (NOTIFIER,),
    "required: the key notifications are signed with (Standard Webhooks; `whsec_` + base64, "
    "or used as given) [`make run`: `.netweave/webhook-secret`]",
)
NOTIFY_FILTER_MODE: Final = Setting(
    "NETWEAVE_NOTIFY_FILTER_MODE",
    FILTER_MODE,
    "include",
    (NOTIFIER,),
    "`include`: a notification is sent when the subscription's filter matches; `exclude`: "
    "the filter names events that need not be reported (the spec's literal reading)",
)
NOTIFY_RETRY_BASE_S: Final = Setting(
    "NETWEAVE_NOTIFY_RETRY_BASE_S",
    NUMBER,
    1.0,
    (NOTIFIER,),
    "first retry delay, seconds (doubling, full jitter)",
)
NOTIFY_RETRY_MAX_DELAY_S: Final = Setting(
    "NETWEAVE_NOTIFY_RETRY_MAX_DELAY_S", NUMBER, 3600.0, (NOTIFIER,), "longest retry delay, seconds"
)
NOTIFY_RETRY_DEADLINE_S: Final = Setting(
    "NETWEAVE_NOTIFY_RETRY_DEADLINE_S",
    NUMBER,
    86400.0,
    (NOTIFIER,),
    "seconds after its first failure a notification is dead-lettered",
)
NOTIFY_MAX_ATTEMPTS: Final = Setting(
    "NETWEAVE_NOTIFY_MAX_ATTEMPTS",
    INTEGER,
    0,
    (NOTIFIER,),
    "attempts after which a notification is dead-lettered; 0: no limit",
)
NOTIFY_TIMEOUT_S: Final = Setting(
    "NETWEAVE_NOTIFY_TIMEOUT_S",
    NUMBER,
    10.0,
    (NOTIFIER,),
    "connect and response timeout of one delivery, seconds",
)
NOTIFY_LEASE_MS: Final = Setting(
    "NETWEAVE_NOTIFY_LEASE_MS",
    INTEGER,
    5000,
    (NOTIFIER,),
    "ownership lease, ms: a stopped notifier's subscriptions move on after this",
)
NOTIFY_WORKERS: Final = Setting(
    "NETWEAVE_NOTIFY_WORKERS",
    INTEGER,
    32,
    (NOTIFIER,),
    "threads delivering notifications, whatever the number of subscriptions: how many "
    "slow subscribers are waited on at once before the others' deliveries wait",
)
NOTIFY_DEAD_LETTER_MAX_LEN: Final = Setting(
    "NETWEAVE_NOTIFY_DEAD_LETTER_MAX_LEN",
    INTEGER,
    100_000,
    (NOTIFIER,),
    "approximate length the dead-letter stream is trimmed to",
)
NOTIFY_TLS_CA: Final = Setting(
    "NETWEAVE_NOTIFY_TLS_CA",
    PATH,
    "",
    (NOTIFIER,),
    "CA bundle (PEM) deliveries are verified against; unset: the system's",
)
NOTIFY_TLS_CERT: Final = Setting(
    "NETWEAVE_NOTIFY_TLS_CERT",
    PATH,
    "",
    (NOTIFIER,),
    "client certificate (PEM) for mutual TLS to callbacks, with `NETWEAVE_NOTIFY_TLS_KEY`",
)
NOTIFY_TLS_KEY: Final = Setting(
    "NETWEAVE_NOTIFY_TLS_KEY", PATH, "", (NOTIFIER,), "the client certificate's private key"
)
NOTIFY_TLS_CHECK_S: Final = Setting(
    "NETWEAVE_NOTIFY_TLS_CHECK_S",
    NUMBER,
    5.0,
    (NOTIFIER,),
    "how often (seconds, at most) the notifier looks for a renewed client certificate "
    "(`NETWEAVE_NOTIFY_TLS_CERT`/`_KEY`) or CA bundle: new connections use it, without a restart",
)
NOTIFY_OAUTH_TOKEN_URL: Final = Setting(
    "NETWEAVE_NOTIFY_OAUTH_TOKEN_URL",
    URL,
    "",
    (NOTIFIER,),
    "OAuth2 token endpoint (client credentials) for deliveries; unset: no token",
)
NOTIFY_OAUTH_CLIENT_ID: Final = Setting(
    "NETWEAVE_NOTIFY_OAUTH_CLIENT_ID", TEXT, "", (NOTIFIER,), "OAuth2 client id"
)
NOTIFY_OAUTH_CLIENT_SECRET: Final = Setting(
    "NETWEAVE_NOTIFY_OAUTH_CLIENT_SECRET", TEXT, "", (NOTIFIER,), "OAuth2 client secret"
)
NOTIFY_OAUTH_SCOPE: Final = Setting(
    "NETWEAVE_NOTIFY_OAUTH_SCOPE", TEXT, "", (NOTIFIER,), "OAuth2 scope requested"
)
SMO_REGISTRATION_URL: Final = Setting(
    "NETWEAVE_SMO_REGISTRATION_URL",
    URL,
    "",
    (NOTIFIER, MAKE_RUN),
    "where to POST the O-Cloud Available notification on start-up; unset: no registration",
)

# --- the edge's switches (`make run`, and `python -m rest_facade.render` in production) -----

REQUIRE_CLIENT_CERT: Final = Setting(
    "NETWEAVE_REQUIRE_CLIENT_CERT",
    FLAG,
    True,
    (MAKE_RUN, ENVOY_RENDER),
    "Envoy demands a client certificate",
)
REQUIRE_TOKEN: Final = Setting(
    "NETWEAVE_REQUIRE_TOKEN",
    FLAG,
    False,
    (MAKE_RUN, ENVOY_RENDER),
    "Envoy demands a bearer token (a present token is always verified)",
)
STRICT_QUERY_PARAMETERS: Final = Setting(
    "NETWEAVE_STRICT_QUERY_PARAMETERS",
    FLAG,
    False,
    (MAKE_RUN, ENVOY_RENDER),
    "a query parameter the path does not know is a 400 (else it is dropped at the edge and "
    "counted in `o2ims_ignored_query_parameters_total`)",
)
RATE_LIMIT_RPS: Final = Setting(
    "NETWEAVE_RATE_LIMIT_RPS",
    INTEGER,
    100,
    (MAKE_RUN, ENVOY_RENDER),
    "requests per second per client at the edge",
)
RATE_LIMIT_BURST: Final = Setting(
    "NETWEAVE_RATE_LIMIT_BURST",
    INTEGER,
    0,
    (MAKE_RUN, ENVOY_RENDER),
    "requests a client may spend at once; 0: one second's worth",
)

# --- the edge, as `python -m rest_facade.render` configures it (production) ----------------
# Paths have no default: a deployment names its own, and the command fails naming the variable
# rather than render an edge without TLS.

ENVOY_LISTEN: Final = Setting(
    "NETWEAVE_ENVOY_LISTEN",
    HOST_PORT,
    "0.0.0.0:8443",
    (ENVOY_RENDER,),
    "Envoy's HTTPS listener (REST and gRPC), `host:port`",
)
ENVOY_CORE_ENDPOINTS: Final = Setting(
    "NETWEAVE_ENVOY_CORE_ENDPOINTS",
    HOST_PORT_LIST,
    ("127.0.0.1:50052",),
    (ENVOY_RENDER,),
    "the core edge listener(s) Envoy forwards to (mutual TLS), comma-separated `host:port`",
)
ENVOY_CORE_HEALTH_INTERVAL: Final = Setting(
    "NETWEAVE_ENVOY_CORE_HEALTH_INTERVAL",
    NUMBER,
    5.0,
    (ENVOY_RENDER,),
    "seconds between Envoy's gRPC health checks of each core; a draining core gets no new "
    "requests after 2 intervals + 1 s, which `NETWEAVE_SHUTDOWN_DRAIN_SECONDS` must exceed",
)
ENVOY_CORE_TELEMETRY_PORT: Final = Setting(
    "NETWEAVE_ENVOY_CORE_TELEMETRY_PORT",
    INTEGER,
    0,
    (ENVOY_RENDER,),
    "port of the core's edge telemetry listener (`NETWEAVE_EDGE_TELEMETRY_LISTEN`, on the core "
    "endpoints' host) Envoy sends its REST access log records to; 0: none sent",
)
ENVOY_STATS_LISTEN: Final = Setting(
    "NETWEAVE_ENVOY_STATS_LISTEN",
    HOST_PORT,
    "0.0.0.0:9902",
    (ENVOY_RENDER,),
    "Envoy's plain-HTTP stats listener for Prometheus and probes: GET `/stats/prometheus` and "
    "`/ready` only",
)
ENVOY_ADMIN_SOCKET: Final = Setting(
    "NETWEAVE_ENVOY_ADMIN_SOCKET",
    FILE_PATH,
    Path("/run/netweave/envoy-admin.sock"),
    (ENVOY_RENDER,),
    "Envoy's admin API, a Unix socket (never TCP)",
)
ENVOY_DESCRIPTOR: Final = Setting(
    "NETWEAVE_ENVOY_DESCRIPTOR",
    FILE_PATH,
    REPO / "gen" / "o2ims.pb",
    (ENVOY_RENDER,),
    "the descriptor set (`make gen`) Envoy transcodes REST with",
)
ENVOY_SERVER_CERT: Final = Setting(
    "NETWEAVE_ENVOY_SERVER_CERT",
    PATH,
    "",
    (ENVOY_RENDER,),
    "required: Envoy's server certificate (PEM) towards SMOs, in a directory of its own with "
    "its key (a Kubernetes TLS Secret mount: rotated without restart)",
    shown_default="none: required",
)
ENVOY_SERVER_KEY: Final = Setting(
    "NETWEAVE_ENVOY_SERVER_KEY",
    PATH,
    "",
    (ENVOY_RENDER,),
    "required: the server certificate's private key (PEM)",
    shown_default="none: required",
)
ENVOY_CLIENT_CA: Final = Setting(
    "NETWEAVE_ENVOY_CLIENT_CA",
    PATH,
    "",
    (ENVOY_RENDER,),
    "required: CA bundle (PEM) SMO client certificates must chain to",
    shown_default="none: required",
)
ENVOY_CLIENT_SAN_PREFIXES: Final = Setting[tuple[str, ...]](
    "NETWEAVE_ENVOY_CLIENT_SAN_PREFIXES",
    NAME_LIST,
    (),
    (ENVOY_RENDER,),
    "URI SAN prefixes a client certificate must match (one of), comma-separated",
    shown_default="none: any certificate the CA signed",
)
ENVOY_CORE_CERT: Final = Setting(
    "NETWEAVE_ENVOY_CORE_CERT",
    PATH,
    "",
    (ENVOY_RENDER,),
    "required: Envoy's client certificate (PEM) towards the core's edge listener; its URI SAN "
    "is the core's `NETWEAVE_EDGE_PEER_URI`",
    shown_default="none: required",
)
ENVOY_CORE_KEY: Final = Setting(
    "NETWEAVE_ENVOY_CORE_KEY",
    PATH,
    "",
    (ENVOY_RENDER,),
    "required: that client certificate's private key (PEM)",
    shown_default="none: required",
)
ENVOY_CORE_CA: Final = Setting(
    "NETWEAVE_ENVOY_CORE_CA",
    PATH,
    "",
    (ENVOY_RENDER,),
    "required: CA bundle (PEM) the core's edge certificate must chain to",
    shown_default="none: required",
)
ENVOY_CORE_URI: Final = Setting(
    "NETWEAVE_ENVOY_CORE_URI",
    URL,
    "spiffe://netweave.local/core",
    (ENVOY_RENDER,),
    "URI SAN the core's edge certificate must carry",
)
ENVOY_JWT_ISSUER: Final = Setting(
    "NETWEAVE_ENVOY_JWT_ISSUER",
    TEXT,
    "",
    (ENVOY_RENDER,),
    "bearer tokens: the `iss` they must carry; set together with "
    "`NETWEAVE_ENVOY_JWT_AUDIENCES` and one of `NETWEAVE_ENVOY_JWKS_PATH` or "
    "`NETWEAVE_ENVOY_JWKS_URI`",
    shown_default="none: no token checks",
)
ENVOY_JWT_AUDIENCES: Final = Setting[tuple[str, ...]](
    "NETWEAVE_ENVOY_JWT_AUDIENCES",
    NAME_LIST,
    (),
    (ENVOY_RENDER,),
    "bearer tokens: accepted `aud` values, comma-separated",
)
ENVOY_JWKS_PATH: Final = Setting(
    "NETWEAVE_ENVOY_JWKS_PATH",
    PATH,
    "",
    (ENVOY_RENDER,),
    "bearer tokens: a local JWKS file with the issuer's signing keys",
)
ENVOY_JWKS_URI: Final = Setting(
    "NETWEAVE_ENVOY_JWKS_URI",
    URL,
    "",
    (ENVOY_RENDER,),
    "bearer tokens: the issuer's JWKS URL (fetched and cached by Envoy)",
)
ENVOY_AUTH_POLICY: Final = Setting(
    "NETWEAVE_AUTH_POLICY",
    PATH,
    "",
    (ENVOY_RENDER,),
    "the core's access policy file: its `rate_limits` become per-client buckets at the edge",
    shown_default="none: `NETWEAVE_RATE_LIMIT_RPS` for every client",
)
# The values of rest_facade.envoy_config.EnvoyConfig.access_log_requests.
ACCESS_LOG_REQUESTS: Final = ("failures", "all")
ENVOY_ACCESS_LOG: Final = Setting(
    "NETWEAVE_ENVOY_ACCESS_LOG",
    choice(*ACCESS_LOG_REQUESTS),
    "failures",
    (ENVOY_RENDER, MAKE_RUN),
    "which requests Envoy's access log (stdout) records: `failures` (an HTTP status of 400 or "
    "more, a gRPC status other than OK, a response flag such as an upstream reset, or slower "
    "than NETWEAVE_ENVOY_ACCESS_LOG_SLOW_MS) or `all`; the core's audit log records every call "
    "that reaches it either way",
)
ENVOY_ACCESS_LOG_SLOW_MS: Final = Setting(
    "NETWEAVE_ENVOY_ACCESS_LOG_SLOW_MS",
    INTEGER,
    1000,
    (ENVOY_RENDER,),
    "with NETWEAVE_ENVOY_ACCESS_LOG=failures, a request that took at least this many "
    "milliseconds is logged whatever its status",
)
ENVOY_AUDIT_LOG: Final = Setting(
    "NETWEAVE_ENVOY_AUDIT_LOG",
    PATH,
    "/dev/stdout",
    (ENVOY_RENDER,),
    "where Envoy writes audit records of the calls it refuses itself (401, 429); empty: none",
    empty_is_value=True,
)

# --- every process ------------------------------------------------------------------------

LOG_LEVEL: Final = Setting(
    "NETWEAVE_LOG_LEVEL", TEXT, "INFO", (CORE, NOTIFIER, ADAPTER), "log level"
)

OTLP_ENDPOINT: Final = Setting(
    "NETWEAVE_OTLP_ENDPOINT",
    HOST_PORT,
    "",
    (CORE, NOTIFIER, MAKE_RUN, ENVOY_RENDER),
    "OpenTelemetry traces: `host:port` of an OTLP/gRPC collector (plaintext) the core, the "
    'notifier and Envoy send spans to (docs/operations.md "Tracing"); unset: no tracing',
)
TRACE_SAMPLE_RATIO: Final = Setting(
    "NETWEAVE_TRACE_SAMPLE_RATIO",
    NUMBER,
    1.0,
    (CORE, NOTIFIER, MAKE_RUN, ENVOY_RENDER),
    "share (0..1) of new traces recorded, decided where a trace begins (Envoy for REST "
    "calls); later spans follow the `traceparent`'s decision",
)

# Every definition above, in order: the README table's rows.
ALL_SETTINGS: Final[tuple[Setting[Any], ...]] = tuple(
    value for value in tuple(globals().values()) if isinstance(value, Setting)
)


def settings_of(reader: str) -> tuple[Setting[Any], ...]:
    """What one process reads."""
    return tuple(setting for setting in ALL_SETTINGS if reader in setting.readers)


CORE_SETTINGS: Final = settings_of(CORE)
NOTIFIER_SETTINGS: Final = settings_of(NOTIFIER)
ADAPTER_SETTINGS: Final = settings_of(ADAPTER)
MAKE_RUN_SETTINGS: Final = settings_of(MAKE_RUN)


def default_text(setting: Setting[Any]) -> str:
    """A default as README shows it."""
    if setting.shown_default:
        return setting.shown_default
    value: Any = setting.default
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        shown = "1" if value else "0"
    elif isinstance(value, float):
        shown = f"{value:g}"
    elif isinstance(value, tuple):
        shown = ",".join(value)
    elif isinstance(value, Path):
        shown = str(value.relative_to(REPO)) if value.is_relative_to(REPO) else str(value)
    else:
        shown = str(value)
    return f"`{shown}`"


def markdown_table(settings: Sequence[Setting[Any]] = ALL_SETTINGS) -> str:
    """README's configuration table."""
    lines = [
        "| variable | read by | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for setting in settings:
        cells = (
            f"`{setting.name}`",
            ", ".join(setting.readers),
            setting.kind.name,
            default_text(setting),
            setting.meaning,
        )
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def readme_table(readme: str) -> str:
    """The table of README's "## Configuration" section, as written."""
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))


def with_table(readme: str, table: str) -> str:
    """`readme` with its configuration table replaced by `table`."""
    old = readme_table(readme)
    head, rest = readme.split("\n## Configuration\n", 1)
    section, tail = rest.split("\n## ", 1)
    return f"{head}\n## Configuration\n{section.replace(old, table, 1)}\n## {tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netweave.settings", description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--markdown", action="store_true", help="print README's table")
    action.add_argument("--update-readme", action="store_true", help="rewrite README's table")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table())
    else:
        README.write_text(with_table(README.read_text(), markdown_table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
