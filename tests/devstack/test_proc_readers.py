"""devstack/processes.py's readers of /proc and its one wait, against real processes and
threads: what tests and benchmarks use to tell a process has ended, to read its threads and to
wait for a condition (and get what satisfied it)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from devstack.processes import (
    process_ended,
    stat_fields,
    thread_statuses,
    wait_until,
)


def test_wait_until_returns_what_satisfied_it_and_counts_an_error_as_not_yet() -> None:
    answers = iter([ValueError("not ready"), [], None, ["record"]])

    def check() -> list[str] | None:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until(check, 5, "the record", interval=0) == ["record"]
    ready = [True]
    assert wait_until(lambda: ready[0], 5, "a bool check") is True


def test_wait_until_names_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="waiting for the never"):
        wait_until(lambda: [], 0.1, "the never")


def test_a_process_has_ended_once_it_is_a_zombie_and_once_it_is_reaped() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        assert not process_ended(child.pid)
        assert stat_fields(child.pid)[0] in {"S", "R"}
        assert child.stdin is not None
        child.stdin.close()
        # Exited, not reaped yet: a zombie.
        wait_until(lambda: stat_fields(child.pid)[0] == "Z", 10, "the child a zombie")
        assert process_ended(child.pid)
    finally:
        child.wait(10)
    assert process_ended(child.pid)  # reaped: no /proc entry at all
    with pytest.raises(OSError):
        stat_fields(child.pid)


def test_thread_statuses_reads_each_thread_and_skips_one_that_ended() -> None:
    release = threading.Event()
    threads = [threading.Thread(target=release.wait, name=f"reader-{n}") for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        statuses = list(thread_statuses(os.getpid()))
        # "Pid:" in a thread's status is its thread id.
        tids = {
            int(line.split()[1])
            for status in statuses
            for line in status.splitlines()
            if line.startswith("Pid:")
        }
        assert len(statuses) == len(tids)  # one status per thread, native ones included
        assert {thread.native_id for thread in threads} <= tids
        # A thread that ends while the statuses are read is skipped, not an error.
        walk = thread_statuses(os.getpid())
        first = next(walk)
        release.set()
        for thread in threads:
            thread.join(5)
        rest = list(walk)
        assert first.startswith("Name:")
        assert 1 + len(rest) < len(statuses)
    finally:
        release.set()
        for thread in threads:
            thread.join(5)
