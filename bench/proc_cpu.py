"""CPU time, context switches and RSS of processes, from /proc (Linux): the one reader the
benchmarks share, so every bench counts a process's CPU the same way (utime + stime of all
its threads, the clock tick's resolution: 10 ms at 100 Hz, so measure runs of seconds).

    from proc_cpu import cpu_seconds, Usage
    before = Usage.of(pid)
    ...
    spent = Usage.of(pid) - before     # .cpu_s, .user_s, .system_s, .voluntary_switches
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from devstack.processes import stat_fields, thread_statuses

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` (all its threads) has used so far."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def own_cpu_seconds() -> float:
    """CPU time of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    """CPU time of this process's reaped children (h2load runs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def thread_count(pid: int) -> int:
    """How many threads process `pid` runs now."""
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size of `pid` ("self": this process), MiB; NaN if /proc does not say."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True)
class Usage:
    """A process's CPU split into user and system time, and its threads' context switches
    (voluntary: a thread blocked, on a lock, the GIL, a queue or I/O; involuntary: it was
    preempted). The difference of two is what happened between them. Threads that ended
    in between take their switches with them: measure processes whose threads live on."""

    user_s: float = 0.0
    system_s: float = 0.0
    voluntary_switches: int = 0
    involuntary_switches: int = 0

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.system_s

    @classmethod
    def of(cls, pid: int) -> Usage:
        fields = stat_fields(pid)
        voluntary = involuntary = 0
        for status in thread_statuses(pid):
            for line in status.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
        return cls(
            int(fields[11]) / _TICKS_PER_SECOND,
            int(fields[12]) / _TICKS_PER_SECOND,
            voluntary,
            involuntary,
        )

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.user_s - other.user_s,
            self.system_s - other.system_s,
            self.voluntary_switches - other.voluntary_switches,
            self.involuntary_switches - other.involuntary_switches,
        )
