"""netweave/tracing.py on its own: off costs nothing (the SDK is not even imported), the
settings are checked, and only a well-formed W3C traceparent is ever followed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from netweave import tracing
from netweave.tracing import TracingConfig


def test_off_by_default_imports_no_sdk_and_makes_no_spans() -> None:
    # A fresh interpreter: the core's and the notifier's modules loaded, tracing off. (The
    # SDK's metrics modules are another matter: redis-py imports them when installed.)
    script = (
        "import sys\n"
        "import server.app, server.notifier.app\n"
        "from netweave import tracing\n"
        "from server.config import GatewayConfig\n"
        "assert not tracing.configure('core', GatewayConfig().tracing)\n"
        "with tracing.span('x', kind='SERVER', parent='00-' + '1' * 32 + '-' + '2' * 16 + '-01')"
        " as span:\n"
        "    assert span is None and tracing.traceparent() == ''\n"
        "ours = ('opentelemetry.sdk.trace', 'opentelemetry.exporter')\n"
        "print(sorted(m for m in sys.modules if m.startswith(ours)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_span_continues_a_well_formed_traceparent_only() -> None:
    parent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    # A port nothing listens on: spans are batched, and dropped on shutdown without delay.
    assert tracing.configure("test", TracingConfig("127.0.0.1:9", 1.0))
    try:
        with tracing.span("child", parent=parent):
            current = tracing.traceparent()
        assert current.startswith("00-" + "a" * 32 + "-")
        assert current.split("-")[2] != "b" * 16
        for forged in (
            "00-" + "0" * 32 + "-" + "b" * 16 + "-01",  # all-zero trace id
            "01-" + "a" * 32 + "-" + "b" * 16 + "-01",  # unknown version
            parent + "\r\nx-evil: 1",
            parent.upper(),
        ):
            with tracing.span("root", parent=forged):
                assert not tracing.traceparent().startswith("00-" + "a" * 32)
                assert tracing.well_formed(tracing.traceparent())
    finally:
        tracing.shutdown()
    assert not tracing.enabled() and tracing.traceparent() == ""


@pytest.mark.parametrize(
    "endpoint", ["http://collector:4317", "collector", ":4317", "collector:70000", "::1:4317"]
)
def test_an_endpoint_that_is_not_host_port_is_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="NETWEAVE_OTLP_ENDPOINT"):
        TracingConfig(endpoint)


def test_the_settings_reach_the_core_and_the_notifier() -> None:
    from server.config import GatewayConfig
    from server.notifier.config import NotifierConfig

    environ = {
        "NETWEAVE_OTLP_ENDPOINT": "[::1]:4317",
        "NETWEAVE_TRACE_SAMPLE_RATIO": "0.5",
        "NETWEAVE_WEBHOOK_SECRET": "s3cret",
    }
    core = GatewayConfig.from_env(environ)
    notifier = NotifierConfig.from_env(environ)
    assert core.tracing == notifier.tracing == TracingConfig("[::1]:4317", 0.5)
    # Callbacks never reach the collector.
    assert ("::1", 4317) in core.callback_policy.gateway_endpoints
    assert ("::1", 4317) in notifier.callback_policy.gateway_endpoints
    with pytest.raises(ValueError, match="between 0 and 1"):
        GatewayConfig.from_env({"NETWEAVE_TRACE_SAMPLE_RATIO": "2"})
