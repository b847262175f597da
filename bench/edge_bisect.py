"""Where the edge's Envoy CPU per REST request goes: the edge's own rendered config run as
variants, each with exactly one component removed or simplified, side by side with the
unchanged edge and the floor REST (bench/envoy_floor.py), so the difference of each variant
from the edge is what that component costs.

  edge                   the edge's config unchanged (run as its own Envoy like the others)
  no-request-context     without the request context filter (netweave.request_context:
                         identity headers dropped, correlation id, route template, guard;
                         the correlation id and Retry-After on the way out)
  no-jwt                 without jwt_authn
  no-ratelimit           without local_ratelimit
  no-shaper              without the REST shaper (netweave.shaper, envoy/modules/shaper.c)
  no-file-logs           without the two file access loggers
  no-otel-log            without the OpenTelemetry access logger
  no-early-mutation      without the HCM's early header mutation
  two-routes             the route table cut to the gRPC route of GetResourcePool and a "/"
                         catch-all to the core carrying the pool route's metadata (what the
                         edge filters read): the cost of matching the edge's ~96 routes
  jwt-no-metadata        jwt_authn without payload_in_metadata (the verified claims as
                         dynamic metadata: the rate limiter's key, the edge audit record);
                         with --token
  jwt-no-payload-header  jwt_authn without forward_payload_header (the claims the core
                         reads); with --token
  oghttp2, nghttp2       the edge with Envoy's HTTP/2 codec set by its runtime flag
                         (envoy.reloadable_features.http2_use_oghttp2, both directions):
                         oghttp2 against nghttp2, Envoy 1.40's default
  access-log-all         the main access log recording every request, not the failures
                         only (NETWEAVE_ENVOY_ACCESS_LOG=all): a cost added, not removed
  all-removed            every removal above at once: what the listed components cost
                         together, and what of the gap to the floor is elsewhere
  floor                  the floor REST: the edge's TLS, the transcoder and the router

Every variant is its own Envoy started with the edge's own command line (its --concurrency,
log flags) but its own listener port, admin socket and audit log, no stats listener and a
dynamic base id; it is validated with `envoy --mode validate`, then must answer the REST read
of the first pool with 200 and the JSON the edge answers, or it is reported and not measured.
Measured as bench/stack_bench.py's saturated runs: h2load through a client TLS relay per
variant, rounds visiting every variant in turn, medians of Envoy's CPU per request (/proc).

Read the figures with care: on a small shared machine the stack is saturated as a whole, so
a variant that costs less runs faster, and every process (Envoy, the core) then spends less
per request (more work per wake-up): the single differences overstate each component and do
not add up to the edge's gap to the floor (all-removed shows the whole). Runs are bimodal
when a neighbour's load comes and goes (Envoy ~200 or ~280-300 us/req for the same config,
with the core's CPU per request moving with it): prefer --rounds 7 or more, and compare
within one run.

    .venv/bin/python -m bench.edge_bisect [--requests 4000] [--rounds 3]
        [--variants no-shaper,no-jwt] [--token] [--json results.json]

--token adds a bearer token of the stack's dev issuer to every request (the stack bench's
REST token path): what a verified token costs, in the jwt variants.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from devstack.processes import ManagedProcess, free_port
from devstack.stack import LocalStack, StackConfig
from rest_facade.envoy_process import LISTENER_NAME, EnvoyError
from rest_facade.envoy_routes import SHAPER_FILTER

# The bench/ scripts import their siblings as top-level modules (bench/ is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from envoy_floor import HCM, read_edge_config, start_floor, start_like_edge
from stack_bench import (
    GRPC_METHOD,
    REST_POOL,
    UNLIMITED_RPS,
    Saturation,
    Target,
    bench_policy,
    first_pool,
    progress,
    saturated,
    start_client_relay,
)
from stack_results import PathResult

EDGE = "edge"
FLOOR = "floor"
REQUEST_CONTEXT = "netweave.request_context"
JWT = "envoy.filters.http.jwt_authn"
RATE_LIMIT = "envoy.filters.http.local_ratelimit"
SHAPER = SHAPER_FILTER
FILE_LOGGER = "envoy.access_loggers.file"
OTEL_LOGGER = "envoy.access_loggers.open_telemetry"
# The gRPC route the transcoder's rewritten request matches (rest_facade/envoy_routes.py).
GRPC_ROUTE = f"grpc:{GRPC_METHOD}"

Change = Callable[[dict[str, Any], str], None]


@dataclass(frozen=True)
class Variant:
    """One edge config: `change` edits the edge listener's HTTP connection manager (its
    typed_config) in place, given the REST path measured; None: the edge unchanged."""

    name: str
    change: Change | None
    # Runtime flags set in the bootstrap's static layer (Envoy's reloadable features).
    runtime: tuple[tuple[str, bool], ...] = ()


def _remove(items: list[dict[str, Any]], name: str, what: str) -> None:
    """Remove every item named `name`; raise if there is none (the config moved on)."""
    kept = [item for item in items if item.get("name") != name]
    if len(kept) == len(items):
        raise KeyError(f"the edge's config has no {what} named {name!r}")
    items[:] = kept


def _http_filter(manager: dict[str, Any], name: str) -> dict[str, Any]:
    for item in manager["http_filters"]:
        if item.get("name") == name:
            found: dict[str, Any] = item
            return found
    raise KeyError(f"the edge's config has no HTTP filter named {name!r}")


def _virtual_host(manager: dict[str, Any]) -> dict[str, Any]:
    [host] = manager["route_config"]["virtual_hosts"]
    found: dict[str, Any] = host
    return found


def without_filter(name: str) -> Change:
    def change(manager: dict[str, Any], rest_path: str) -> None:
        _remove(manager["http_filters"], name, "HTTP filter")

    return change


def without_logger(name: str) -> Change:
    def change(manager: dict[str, Any], rest_path: str) -> None:
        _remove(manager["access_log"], name, "access logger")

    return change


def access_log_all(manager: dict[str, Any], rest_path: str) -> None:
    """The main access log without its filter: every request logged, as
    NETWEAVE_ENVOY_ACCESS_LOG=all renders it (the edge logs the failures only)."""
    main_log = manager["access_log"][0]
    if main_log.get("name") != FILE_LOGGER or not main_log.pop("filter", None):
        raise KeyError("the edge's first access logger is not the filtered file log")


def without_early_mutation(manager: dict[str, Any], rest_path: str) -> None:
    if not manager.pop("early_header_mutation_extensions", None):
        raise KeyError("the edge's HTTP connection manager has no early header mutation")


def two_routes(manager: dict[str, Any], rest_path: str) -> None:
    """The gRPC route of the read and a catch-all to the core with the metadata of the REST
    route the read matches (the edge filters read it before the transcoder rewrites the path
    to the gRPC method's, which then matches the gRPC route)."""
    host = _virtual_host(manager)
    routes: list[dict[str, Any]] = host["routes"]
    grpc_routes = [route for route in routes if route.get("name") == GRPC_ROUTE]
    rest_routes = [
        route
        for route in routes
        if "safe_regex" in route["match"]
        and re.fullmatch(route["match"]["safe_regex"]["regex"], rest_path)
    ]
    if not grpc_routes or not rest_routes:
        raise KeyError(f"the edge's routes have no {GRPC_ROUTE!r} or none matching {rest_path}")
    # The first match, as Envoy picks it.
    grpc_route, rest_route = grpc_routes[0], rest_routes[0]
    catch_all = {
        "name": rest_route["name"],
        "match": {"prefix": "/"},
        "route": copy.deepcopy(grpc_route["route"]),
        "metadata": copy.deepcopy(rest_route["metadata"]),
    }
    host["routes"] = [grpc_route, catch_all]


def without_jwt_option(option: str) -> Change:
    """jwt_authn's provider without `option` (measured with --token)."""

    def change(manager: dict[str, Any], rest_path: str) -> None:
        [provider] = _http_filter(manager, JWT)["typed_config"]["providers"].values()
        if option not in provider:
            raise KeyError(f"the jwt provider has no {option}")
        del provider[option]

    return change


# Each with one component removed or simplified (the edge itself first: the baseline).
ONE_AT_A_TIME = [
    Variant(EDGE, None),
    Variant("no-request-context", without_filter(REQUEST_CONTEXT)),
    Variant("no-jwt", without_filter(JWT)),
    Variant("no-ratelimit", without_filter(RATE_LIMIT)),
    Variant("no-shaper", without_filter(SHAPER)),
    Variant("no-file-logs", without_logger(FILE_LOGGER)),
    Variant("no-otel-log", without_logger(OTEL_LOGGER)),
    Variant("no-early-mutation", without_early_mutation),
    Variant("two-routes", two_routes),
]
# What a verified token costs past its cached signature (with --token): the claims as
# dynamic metadata (the rate limiter's key, the edge audit record) and as the core's header.
JWT_OPTIONS = [
    Variant("jwt-no-metadata", without_jwt_option("payload_in_metadata")),
    Variant("jwt-no-payload-header", without_jwt_option("forward_payload_header")),
]


def all_removed(manager: dict[str, Any], rest_path: str) -> None:
    """Every change above at once: what is left of the gap to the floor is in none of these
    components."""
    for variant in ONE_AT_A_TIME:
        if variant.change is not None:
            variant.change(manager, rest_path)


VARIANTS = [
    *ONE_AT_A_TIME,
    *JWT_OPTIONS,
    # Envoy's HTTP/2 codecs (both directions): oghttp2 against Envoy 1.40's default nghttp2.
    Variant("oghttp2", None, (("envoy.reloadable_features.http2_use_oghttp2", True),)),
    Variant("nghttp2", None, (("envoy.reloadable_features.http2_use_oghttp2", False),)),
    # The one variant that adds work: what logging every success would cost.
    Variant("access-log-all", access_log_all),
    Variant("all-removed", all_removed),
]


def variant_config(
    edge: dict[str, Any], variant: Variant, port: int, workdir: Path, rest_path: str
) -> dict[str, Any]:
    """The edge's bootstrap as a separate Envoy beside the edge: its HTTPS listener alone on
    `port`, its admin socket and audit log in `workdir`, then the variant's change."""
    config = copy.deepcopy(edge)
    config["admin"]["address"] = {"pipe": {"path": str(workdir / "admin.sock"), "mode": 0o600}}
    resources = config["static_resources"]
    [listener] = [item for item in resources["listeners"] if item["name"] == LISTENER_NAME]
    # The stats listener and its admin cluster are the edge's, on the edge's admin socket.
    resources["listeners"] = [listener]
    resources["clusters"] = [
        item for item in resources["clusters"] if item["name"] != "envoy_admin"
    ]
    listener["address"]["socket_address"]["port_value"] = port
    [chain] = listener["filter_chains"]
    [manager] = [item["typed_config"] for item in chain["filters"] if item["name"] == HCM]
    for logger in manager.get("access_log", []):
        path = logger["typed_config"].get("path", "")
        if logger["name"] == FILE_LOGGER and not path.startswith("/dev/"):
            logger["typed_config"]["path"] = str(workdir / Path(path).name)
    if variant.change is not None:
        variant.change(manager, rest_path)
    if variant.runtime:
        # Last: a later layer overrides an earlier one, so the variant's flags win over any
        # layer the edge's config has.
        layer = {"name": "variant", "static_layer": dict(variant.runtime)}
        config.setdefault("layered_runtime", {}).setdefault("layers", []).append(layer)
    return config


def start_variant(
    stack: LocalStack, edge: dict[str, Any], variant: Variant, workdir: Path, rest_path: str
) -> tuple[ManagedProcess, int]:
    """Render, validate and start a variant with the edge's own command line; its port."""
    assert stack.envoy is not None
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_path = workdir / "envoy.json"
    config_path.write_text(
        json.dumps(variant_config(edge, variant, port, workdir, rest_path), indent=1)
    )
    process = start_like_edge(
        stack.envoy.process, f"envoy-{variant.name}", config_path, workdir / "envoy.log", [port]
    )
    return process, port


def check_answer(
    stack: LocalStack, port: int, rest_path: str, expected: Any, headers: dict[str, str]
) -> int | str:
    """The length of the body the Envoy on `port` answers the REST read (with `headers`)
    with, if it is a 200 with `expected` as its JSON; else why not."""
    url = f"https://localhost:{port}"
    with httpx.Client(base_url=url, verify=stack.client_tls(), trust_env=False) as http:
        answer = http.get(rest_path, headers=headers)
    if answer.status_code != 200:
        return f"HTTP {answer.status_code}: {answer.text[:200]}"
    if answer.json() != expected:
        return f"other JSON: {answer.text[:200]}"
    return len(answer.content)


@dataclass
class Prepared:
    """The variants ready to measure, and those that could not be (name: why)."""

    targets: list[Target]
    skipped: dict[str, str]


def prepare(
    stack: LocalStack,
    state: Path,
    started: list[ManagedProcess],
    names: list[str],
    *,
    token: bool = False,
) -> Prepared:
    """Start every variant in `names` (and the floor), check its answer, and give each
    answering one a TLS relay of its own (a relay has one upstream). `token`: every
    request also carries a bearer token of the stack's dev issuer (REST token's path)."""
    assert stack.core is not None and stack.envoy is not None
    pool_id, _ = first_pool(stack)
    rest_path = REST_POOL.format(pool=pool_id)
    headers = {}
    if token:
        minted = stack.issuer.mint("netweave-dev-client", ["o2ims-admin"])
        headers["authorization"] = f"Bearer {minted}"
    with httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), trust_env=False) as http:
        expected = http.get(rest_path, headers=headers).raise_for_status().json()
    edge = read_edge_config(stack.envoy.config_path)
    envoys: dict[str, tuple[int, int]] = {}  # name: (port, pid)
    skipped: dict[str, str] = {}
    for variant in VARIANTS:
        if variant.name not in names:
            continue
        progress(f"starting {variant.name}")
        try:
            process, port = start_variant(stack, edge, variant, state / variant.name, rest_path)
        except (KeyError, ValueError, EnvoyError, RuntimeError) as error:
            skipped[variant.name] = f"not started: {error}"[:300]
            continue
        started.append(process)
        envoys[variant.name] = (port, process.pid)
    if FLOOR in names:
        floor = start_floor(stack.envoy.process, stack.envoy.config_path, state / FLOOR)
        started.append(floor.process)
        envoys[FLOOR] = (floor.rest_port, floor.process.pid)
    targets = []
    for name, (port, envoy_pid) in envoys.items():
        size = check_answer(stack, port, rest_path, expected, headers)
        if isinstance(size, str):
            skipped[name] = size
            continue
        relay, relay_port = start_client_relay(stack, state, started, port)
        targets.append(
            Target(
                name,
                f"http://127.0.0.1:{relay_port}{rest_path}",
                (
                    "accept: application/json",
                    f":authority: localhost:{port}",
                    *(f"{name}: {value}" for name, value in headers.items()),
                ),
                None,
                {"core": stack.core.pid, "envoy": envoy_pid},
                size,
                {"relay": relay.pid},
            )
        )
    return Prepared(targets, skipped)


def _us(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def table(results: list[PathResult], skipped: dict[str, str]) -> str:
    """Markdown: each variant's req/s and CPU per request, and its Envoy CPU against the
    unchanged edge's (what the component it leaves out costs) and the floor's."""
    by_name = {result.name: result for result in results}
    edge_us = by_name[EDGE].cpu_us("envoy") if EDGE in by_name else float("nan")
    floor_us = by_name[FLOOR].cpu_us("envoy") if FLOOR in by_name else float("nan")
    lines = [
        "| variant | req/s (median; runs) | Envoy us/req (runs) | Envoy us/req, lowest run "
        "| edge - variant us | variant - floor us | core us/req |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        envoy = result.cpu_us("envoy")
        rps_runs = ", ".join(f"{run.rps:,.0f}" for run in result.runs)
        envoy_runs = ", ".join(_us(run.cpu_us["envoy"]) for run in result.runs)
        # The lowest run: the one least slowed by a busy neighbour on a shared machine.
        lowest = min(run.cpu_us["envoy"] for run in result.runs)
        saved = "" if result.name == EDGE else _us(edge_us - envoy)
        lines.append(
            f"| {result.name} | {result.rps:,.0f} ({rps_runs}) | {_us(envoy)} ({envoy_runs}) "
            f"| {_us(lowest)} | {saved} | {_us(envoy - floor_us)} "
            f"| {_us(result.cpu_us('core'))} |"
        )
    for name, why in skipped.items():
        lines.append(f"| {name} | not measured: {why.replace('|', '/')} | | | | | |")
    return "\n".join(lines)


def parse_names(text: str) -> list[str]:
    known = [variant.name for variant in VARIANTS] + [FLOOR]
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variants {unknown}; known: {known}")
    return names


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default."""


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument("--requests", type=int, default=4000, help="h2load requests per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians reported)")
    parser.add_argument("--warmup-requests", type=int, default=500, help="per variant, first")
    parser.add_argument("--connections", type=int, default=4, help="h2load connections")
    parser.add_argument("--streams", type=int, default=4, help="h2load streams per connection")
    parser.add_argument(
        "--variants",
        type=parse_names,
        default=[variant.name for variant in VARIANTS] + [FLOOR],
        help="comma-separated subset (the edge is always measured, as the baseline)",
    )
    parser.add_argument(
        "--token",
        action="store_true",
        help="every request also carries a bearer token (the REST token path); the "
        "jwt-no-* variants need it",
    )
    parser.add_argument("--json", type=Path, help="also write every run to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    if shutil.which("h2load") is None:
        print("h2load not found: install nghttp2-client (make system-deps)", file=sys.stderr)
        return 2
    names = [EDGE, *(name for name in args.variants if name != EDGE)]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="netweave-edge-bisect-") as tmp:
        state = Path(tmp)
        config = StackConfig.ephemeral(
            state, auth_policy=bench_policy(state), rate_limit_rps=UNLIMITED_RPS, notifiers=0
        )
        stack = LocalStack(config)
        progress("starting the stack")
        stack.start()
        started: list[ManagedProcess] = []
        try:
            prepared = prepare(stack, state, started, names, token=args.token)
            shape = Saturation(
                args.requests, args.rounds, args.warmup_requests, args.connections, args.streams
            )
            results = saturated(prepared.targets, shape, progress)
        finally:
            for process in reversed(started):
                process.stop()
            stack.stop()
    print(
        f"\nREST GET of a pool with a client certificate{' and a bearer token' * args.token}; "
        f"h2load -n {shape.requests} "
        f"-c {shape.connections} -m {shape.streams}, {shape.runs} rounds, medians; "
        "CPU microseconds per request"
    )
    print(table(results, prepared.skipped))
    print(
        f"\nmachine: {os.cpu_count()} CPUs, load average (1 min) {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    if args.json:
        report = {
            "arguments": vars(args) | {"json": None},
            "results": [asdict(result) for result in results],
            "skipped": prepared.skipped,
        }
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
