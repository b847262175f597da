"""Per-client rate limits at the edge: the admitted rate against the configured one, and
what a noisy neighbour costs a quiet client.

Run: .venv/bin/python bench/rate_limit_bench.py [--rate R] [--seconds S]

Starts the whole gateway (real Redis, adapter, core, Envoy with mTLS) with a limit of R
requests/s per client identity (burst R/10), then:
  1. baseline: client B alone at a low rate -> B's latency p50/p99;
  2. contention: client A offers 3R while B keeps its low rate -> A's admitted rate against
     R (target: within +-10%), A's 429s, B's 429s (target: none) and B's latency against
     the baseline of step 1 (target: no added latency, ratio ~1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from devstack.load import LoadResult, offer
from devstack.pki import IssuedCertificate, issue_client_certificate
from devstack.stack import LocalStack, StackConfig

PATH = "/o2ims-infrastructureInventory/v1/resourcePools"
QUIET_RATE = 5.0


def client_factory(stack: LocalStack, cert: IssuedCertificate) -> httpx.Client:
    return httpx.Client(
        base_url=stack.rest_url, verify=stack.client_tls(cert), timeout=10.0, trust_env=False
    )


def describe(name: str, result: LoadResult) -> str:
    return (
        f"{name}: offered {result.offered} in {result.elapsed_s:.2f} s, "
        f"statuses {dict(sorted(result.statuses.items()))}, "
        f"latency p50 {result.latency_ms(0.5):.2f} ms p99 {result.latency_ms(0.99):.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=50, help="the per-client limit R (req/s)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each phase")
    args = parser.parse_args()
    rate: int = args.rate
    with tempfile.TemporaryDirectory(prefix="netweave-rl-bench-") as tmp:
        state = Path(tmp)
        config = StackConfig.ephemeral(
            state, rate_limit_rps=rate, rate_limit_burst=max(1, rate // 10)
        )
        stack = LocalStack(config).start()
        try:
            a = issue_client_certificate(stack.pki.directory, "smo-noisy", state / "clients")
            b = issue_client_certificate(stack.pki.directory, "smo-quiet", state / "clients")
            baseline = offer(lambda: client_factory(stack, b), PATH, QUIET_RATE, args.seconds, 2)
            with ThreadPoolExecutor(2) as pool:
                noisy_future = pool.submit(
                    offer, lambda: client_factory(stack, a), PATH, 3 * rate, args.seconds
                )
                quiet_future = pool.submit(
                    offer, lambda: client_factory(stack, b), PATH, QUIET_RATE, args.seconds, 2
                )
                noisy, quiet = noisy_future.result(), quiet_future.result()
        finally:
            stack.stop()
    print(f"limit R = {rate} req/s per client (burst {max(1, rate // 10)})")
    print(describe("B alone (baseline)", baseline))
    print(describe("A at 3R", noisy))
    print(describe("B beside A", quiet))
    ratio = noisy.admitted_rate / rate
    print(f"A admitted {noisy.admitted_rate:.1f} req/s = {ratio:.3f} x R (target 0.9-1.1)")
    print(f"B 429s beside A: {quiet.statuses.get(429, 0)} (target 0)")
    p50 = quiet.latency_ms(0.5) / max(baseline.latency_ms(0.5), 1e-6)
    p99 = quiet.latency_ms(0.99) / max(baseline.latency_ms(0.99), 1e-6)
    print(f"B latency beside A / alone: p50 x{p50:.2f}, p99 x{p99:.2f} (target ~1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
