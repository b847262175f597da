"""`python -m adapters.alertmanager` as a real process: what a real gRPC watcher of the
adapter sees, restarts, and the start-up refusals (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from o2ims.adapter.v1 import adapter_pb2

from adapters.alertmanager.alarms import alarm_id, dictionary_id
from adapters.alertmanager.payload import label_fingerprint
from devstack.processes import wait_until
from tests.adapters.alertmanager.conftest import (
    REPO,
    AdapterProcess,
    Watch,
    alert,
    notification,
    post,
)

LABELS = {"alertname": "NodeDown", "instance": "node-1:9100", "severity": "critical"}
ALARM_ID = alarm_id("alertmanager", label_fingerprint(LABELS))


def test_the_watch_stream_shows_the_dictionary_then_raises_and_clears_alarms(
    adapter_process: AdapterProcess,
) -> None:
    watch = Watch(adapter_process.grpc_port)
    try:
        assert watch.synced.wait(10)
        (dictionary,) = watch.dictionaries()
        assert dictionary.alarm_dictionary_id == dictionary_id("alertmanager")
        assert watch.alarms() == {}

        assert post(adapter_process.url, notification(alert()), adapter_process.token).status == 200
        wait_until(lambda: ALARM_ID in watch.alarms(), 10, "the alarm on the watch")
        wait_until(
            lambda: (
                [d.alarm_name for d in watch.dictionaries()[0].alarm_definition] == ["NodeDown"]
            ),
            10,
            "the definition on the watch",
        )
        assert watch.alarms()[ALARM_ID].resource_name == "node-1"

        # The resend: no event at all.
        post(adapter_process.url, notification(alert()), adapter_process.token)
        resolved = notification(alert(status="resolved", ends_at="2026-12-03T11:00:00Z"))
        post(adapter_process.url, resolved, adapter_process.token)
        wait_until(lambda: ALARM_ID not in watch.alarms(), 10, "the alarm cleared")
        assert watch.alarm_events() == [
            adapter_pb2.EVENT_TYPE_ADDED,
            adapter_pb2.EVENT_TYPE_DELETED,
        ]
    finally:
        watch.close()


def test_a_restarted_adapter_serves_the_alarms_still_firing(tmp_path: Path) -> None:
    adapter = AdapterProcess(tmp_path).start()
    try:
        post(adapter.url, notification(alert()), adapter.token)
        adapter.stop()
        adapter.start()
        watch = Watch(adapter.grpc_port)
        try:
            assert watch.synced.wait(10)
            assert ALARM_ID in watch.alarms()  # in the initial replay: never withdrawn
            post(adapter.url, notification(alert()), adapter.token)
            assert watch.alarm_events() == [adapter_pb2.EVENT_TYPE_ADDED]
        finally:
            watch.close()
    finally:
        adapter.stop()


def test_the_token_never_reaches_the_log(adapter_process: AdapterProcess) -> None:
    post(adapter_process.url, notification(alert()), adapter_process.token)
    post(adapter_process.url, notification(alert()), adapter_process.token + "x")
    post(adapter_process.url, b"{", adapter_process.token)
    wait_until(lambda: "malformed" in adapter_process.log(), 10, "the log lines")
    assert adapter_process.token not in adapter_process.log()


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "adapters.alertmanager",
            "--port",
            "0",
            "--webhook-port",
            "0",
            *args,
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("NETWEAVE_")},
    )


def test_it_refuses_to_start_without_a_token_or_a_state_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    no_token = _run(tmp_path, "--state-file", str(tmp_path / "s.json"))
    assert no_token.returncode == 2
    assert "does not run unauthenticated" in no_token.stderr
    no_state = _run(tmp_path, "--token-file", str(token))
    assert no_state.returncode == 2
    assert "no state file" in no_state.stderr


def test_an_unknown_mapping_key_is_refused_naming_its_path(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("alarms:\n  NodeDown:\n    clearing: MANUAL\n")
    result = _run(
        tmp_path,
        "--token-file",
        str(token),
        "--state-file",
        str(tmp_path / "s.json"),
        "--mapping",
        str(mapping),
    )
    assert result.returncode == 2
    assert f"{mapping}: alarms.NodeDown.clearing: unknown key" in result.stderr


def test_a_corrupt_state_file_is_refused_not_forgotten(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    state = tmp_path / "s.json"
    state.write_text("{half")
    result = _run(tmp_path, "--token-file", str(token), "--state-file", str(state))
    assert result.returncode == 2
    assert "move it away" in result.stderr
    assert state.read_text() == "{half"
