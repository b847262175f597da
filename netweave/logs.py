"""Structured JSON logging for every netweave process: one JSON object per line on standard
error, whoever writes the line.

Every object has `ts` (UTC, ISO 8601), `level`, `component` (core, notifier,
adapter-static, ...), `version` (netweave/version.py) and `event`, then `correlation_id`
while a request or a notification is being handled (netweave/correlation.py binds it), then
the event's own fields. What else reaches standard error becomes the same kind of object:
- records of the standard library's `logging` (grpc, urllib3, kubernetes, botocore, ...),
  with `logger`; Python warnings through it (logging.captureWarnings);
- uncaught exceptions, in the main thread (sys.excepthook), in any other thread
  (threading.excepthook) and in finalizers (sys.unraisablehook): `exception` holds the
  traceback;
- text printed to sys.stderr (an argparse error, a start-up message): one object per line,
  level "error", the text as `event`.
- what C code writes straight to file descriptor 2 (grpc's core logs there, at ERROR and
  above by default, GRPC_VERBOSITY): fd 2 is a pipe read by a thread of the process, which
  turns each line into an object (`logger` "grpc-core" and the C `source` for grpc's own
  lines). Python's lines do not take that detour: they go to the original stderr directly.
  A process killed hard loses what the thread had not read yet, so fatal errors
  (faulthandler, enabled here) are written to the original stderr as they are.

The level is set at start (the `level` argument, else NETWEAVE_LOG_LEVEL, else INFO) and
changes at run time, without a restart: SIGUSR1 makes the process one step more verbose
(ERROR -> WARNING -> INFO -> DEBUG), SIGUSR2 one step less, and each change is logged
(`log_level_changed`, written at any level). structlog's filtering loggers fix their level
when configured (and `cache_logger_on_first_use` keeps them), so the loggers made here
compare each call with one process-wide threshold instead: one attribute read per call.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import io
import logging
import os
import queue
import re
import signal
import sys
import threading
import types
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from netweave import correlation, settings
from netweave.version import version

# Steps of SIGUSR1 (towards DEBUG) and SIGUSR2 (towards ERROR).
LEVEL_STEPS: Final = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
# The signal -> the direction it moves the level in LEVEL_STEPS.
LEVEL_SIGNALS: Final = {signal.SIGUSR1: -1, signal.SIGUSR2: +1}
# First in every object, in this order; the event's own fields follow.
_LEADING: Final = ("ts", "level", "component", "version", "event", "correlation_id")


class _Threshold:
    """The process's level (a plain attribute, read on every log call) and what
    configure_logging set up once per process."""

    level = logging.INFO
    component = ""
    captured: TextIO | None = None  # the original stderr, once fd 2 is captured
    stepper: threading.Thread | None = None  # applies the level signals


_threshold = _Threshold()


def current_level() -> int:
    return _threshold.level


def set_level(level: int | str) -> int:
    """Make `level` (a number or a name) the process's level, for structlog and the
    standard library alike; returns the previous one."""
    number = level if isinstance(level, int) else logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    previous = _threshold.level
    _threshold.level = number
    logging.getLogger().setLevel(number)
    return previous


class LeveledLogger(structlog.BoundLoggerBase):
    """structlog's bound logger, filtering on the process-wide level at each call."""

    def _at(self, level: int, name: str, event: str | None, args: Any, kw: Any) -> Any:
        if level < _threshold.level:
            return None
        if args:
            event = (event or "") % args
        return self._proxy_to_logger(name, event, **kw)

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        return self._at(logging.DEBUG, "debug", event, args, kw)

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        return self._at(logging.INFO, "info", event, args, kw)

    def warning(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        return self._at(logging.WARNING, "warning", event, args, kw)

    warn = warning

    def error(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        return self._at(logging.ERROR, "error", event, args, kw)

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._at(logging.ERROR, "error", event, args, kw)

    def critical(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        return self._at(logging.CRITICAL, "critical", event, args, kw)

    fatal = critical

    def log(self, level: int, event: str | None = None, *args: Any, **kw: Any) -> Any:
        name = logging.getLevelName(level).lower()
        return self._at(level, name if name in _METHODS else "info", event, args, kw)

    msg = info

    def is_enabled_for(self, level: int) -> bool:
        return level >= _threshold.level


_METHODS: Final = frozenset({"debug", "info", "warning", "error", "critical"})


def _identify(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    event.setdefault("component", _threshold.component)
    # `version` is the build's on every line; a field of the event by that name is kept
    # under another name rather than hiding it.
    if "version" in event and event["version"] != version():
        event["event_version"] = event.pop("version")
    event["version"] = version()
    current = correlation.current()
    if current:
        event.setdefault(correlation.LOG_FIELD, current)
    return event


def _leading_fields_first(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    # structlog's internal keys of a foreign (standard library) record are dropped here.
    ordered = {key: event.pop(key) for key in _LEADING if key in event}
    for key in ("_record", "_from_structlog"):
        event.pop(key, None)
    ordered.update(event)
    return ordered


def _add_logger_name(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    record = event.get("_record")
    if record is not None:
        event["logger"] = record.name
    return event


# Shared by structlog's own lines and the standard library's records.
_COMMON: Final[list[Any]] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    _identify,
]
_RENDER: Final[list[Any]] = [
    structlog.processors.format_exc_info,
    _leading_fields_first,
    structlog.processors.JSONRenderer(default=str),
]


def configure_logging(component: str, level: str | None = None) -> structlog.stdlib.BoundLogger:
    """Send every log line of this process to stderr as one JSON object (module docstring),
    tagged with `component`; returns a logger for the caller. Call it first thing in a
    process's main thread (the level signals can only be installed there); calling it again
    re-configures (the component and level), never wraps anything twice."""
    stream = _capture_descriptor_2(_original_stderr())
    _threshold.component = component
    level_name = (level or settings.LOG_LEVEL.read()).upper()
    structlog.configure(
        processors=[*_COMMON, *_RENDER],
        wrapper_class=LeveledLogger,
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_COMMON, _add_logger_name],
            processors=_RENDER,
        )
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    set_level(level_name)
    logging.captureWarnings(True)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread
    sys.unraisablehook = _unraisable
    if not isinstance(sys.stderr, _StderrLines):
        sys.stderr = _StderrLines(stream)
    _install_level_signals()
    logger: structlog.stdlib.BoundLogger = structlog.get_logger()
    return logger


# --- uncaught exceptions ---------------------------------------------------------------


def _uncaught(
    kind: type[BaseException], value: BaseException, trace: types.TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, trace)
        return
    structlog.get_logger().critical("uncaught_exception", exc_info=(kind, value, trace))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # what threading's own hook does too
    structlog.get_logger().critical(
        "uncaught_exception_in_thread",
        thread=args.thread.name if args.thread is not None else None,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )


def _unraisable(unraisable: Any) -> None:
    structlog.get_logger().error(
        "unraisable_exception",
        message=unraisable.err_msg or "Exception ignored in",
        object=repr(unraisable.object),
        exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback),
    )


# --- text printed to sys.stderr ---------------------------------------------------------


class _StderrLines(io.TextIOBase):
    """sys.stderr: every line written to it leaves as a JSON object (level "error": text
    that bypasses the logger is a start-up failure or a library's complaint)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.original = stream
        self._pending = ""
        self._lock = threading.Lock()
        atexit.register(self._flush_pending)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            if "\n" not in self._pending:
                return len(text)
            *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def _emit(self, line: str) -> None:
        if line.strip():
            _write("error", line.rstrip(), stream="stderr")

    def _flush_pending(self) -> None:
        with self._lock:
            line, self._pending = self._pending, ""
        self._emit(line)

    def flush(self) -> None:
        self.original.flush()

    def fileno(self) -> int:
        return self.original.fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.original.encoding


def log_stream() -> TextIO:
    """Where this process's log lines go (the original stderr once fd 2 is captured): what
    a child process that writes its own JSON lines inherits as its stderr, so its lines
    are not wrapped again as foreign output of this one."""
    return _threshold.captured or _original_stderr()


def _original_stderr() -> TextIO:
    current = sys.stderr
    return current.original if isinstance(current, _StderrLines) else current


# --- what C code writes to file descriptor 2 ---------------------------------------------

# grpc's core (absl): "E1203 21:09:50.974818   18390 add_port.cc:83] Failed to add port ..."
_GRPC_CORE_LINE: Final = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]\s]+)\] ?(.*)$")
_GRPC_LEVELS: Final = {"I": "info", "W": "warning", "E": "error", "F": "critical"}


def _capture_descriptor_2(stream: TextIO) -> TextIO:
    """Make fd 2 a pipe whose lines become JSON objects (module docstring); returns the
    stream Python's own lines are written to (the original stderr). Once per process."""
    if _threshold.captured is not None:
        return _threshold.captured
    try:
        stream.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError):
        return stream  # no usable fd 2: nothing to capture
    os.dup2(write_end, 2)
    os.close(write_end)
    captured = _threshold.captured = os.fdopen(
        original, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
    )
    faulthandler.enable(file=captured)
    reader = threading.Thread(
        target=_relay_descriptor_2, args=(read_end,), name="stderr-fd", daemon=True
    )
    reader.start()

    def drain() -> None:
        # Put the original back on fd 2: the pipe's last writer closes, the reader reads to
        # its end and stops.
        with contextlib.suppress(OSError):
            os.dup2(original, 2)
        reader.join(1.0)

    atexit.register(drain)
    return captured


def _relay_descriptor_2(read_end: int) -> None:
    with os.fdopen(read_end, "rb") as pipe:
        for raw in pipe:
            line = raw.decode("utf-8", "backslashreplace").rstrip()
            if not line:
                continue
            core = _GRPC_CORE_LINE.match(line)
            if core is not None:
                level, source, message = core.groups()
                _write(_GRPC_LEVELS[level], message, logger="grpc-core", source=source)
            else:
                _write("error", line, stream="fd2")


# --- the level at run time ----------------------------------------------------------------

# Signal handlers only queue the step (SimpleQueue.put is safe in a signal handler); a
# thread applies it and logs, so a handler never waits on a lock the interrupted code holds.
_steps: queue.SimpleQueue[int] = queue.SimpleQueue()


def step_level(direction: int) -> int:
    """Move the level one step in LEVEL_STEPS (-1 more verbose, +1 less); returns it."""
    current = _threshold.level
    index = min(range(len(LEVEL_STEPS)), key=lambda i: abs(LEVEL_STEPS[i] - current))
    index = max(0, min(len(LEVEL_STEPS) - 1, index + direction))
    previous = set_level(LEVEL_STEPS[index])
    # Written whatever the new level is: the operator wants to see that the signal worked.
    _write(
        "warning",
        "log_level_changed",
        level_from=logging.getLevelName(previous).lower(),
        level_to=logging.getLevelName(LEVEL_STEPS[index]).lower(),
    )
    return LEVEL_STEPS[index]


def _install_level_signals() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if _threshold.stepper is None:
        _threshold.stepper = threading.Thread(target=_apply_steps, name="log-level", daemon=True)
        _threshold.stepper.start()
    for signum, direction in LEVEL_SIGNALS.items():
        signal.signal(signum, _queue_step(direction))


def _queue_step(direction: int) -> Any:
    def handler(_signum: int, _frame: object) -> None:
        _steps.put(direction)

    return handler


def _apply_steps() -> None:
    while True:
        step_level(_steps.get())


def _write(level_name: str, event: str, **fields: Any) -> None:
    """One line at `level_name`, whatever the process's level."""
    logger: Any = structlog.get_logger()
    logger._proxy_to_logger(level_name, event, **fields)
