"""Logging setup: structlog, JSON by default, a console renderer for the lab.

Keys are stable so an operator can grep and a log pipeline can index them: ``event``
(dotted, module first: ``reconciler.announce``), ``service``, ``vip``, ``peer``,
``reason``, ``error``. Known secrets (BGP MD5 passwords) are scrubbed from every value
whatever code path logs them, as a last line of defence.

A burst of 10,000 Services logs ~16,000 lines, so the JSON pipeline is made of cheaper
equivalents of structlog's own processors (timestamp, exception, scrub and JSON, the
write), each giving the same text; tests/test_log.py checks them against structlog's.

Why ``cache_logger_on_first_use`` stays False: a reload calls ``configure`` again with a
new level and new passwords (``live.py``). A cached logger keeps the level and the
processors (with the old secrets) it was built with on first use, so after a reload it
would still log at the old level and leave a changed password unscrubbed; and tests
swap the processors with ``structlog.testing.capture_logs``, which cached loggers skip.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "<redacted>"


class SecretScrubber:
    """A structlog processor replacing every known secret inside any logged string."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v) for v in value)
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        return value

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not self.secrets:
            return event_dict
        return {k: self.scrub(v) for k, v in event_dict.items()}


def _fallback(value: Any) -> Any:
    """What ``structlog.processors.JSONRenderer`` writes for a value JSON has no type for."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


class ScrubbedJSON:
    """``SecretScrubber`` then ``JSONRenderer``, the same text at a fraction of the cost.

    The encoder is built once (``json.dumps`` with a ``default`` builds one per call),
    with ``json.dumps``'s own settings, so the text is byte for byte the same (ASCII,
    ``", "`` and ``": "``: documented greps such as ``'"event": "cluster..."'`` rely on
    it; orjson, faster still, writes neither). The scrub runs only when a secret is in
    the rendered line: JSON escapes character by character, so a string holding a
    secret renders holding the secret's escaped form. When that form is there (in a
    value, a key or a ``repr``) the line is rendered again from the scrubbed values,
    exactly as before; otherwise the scrub would have changed nothing.
    """

    def __init__(self, scrubber: SecretScrubber) -> None:
        self._scrubber = scrubber
        self._encode = json.JSONEncoder(default=_fallback).encode
        self._escaped = tuple(json.dumps(secret)[1:-1] for secret in scrubber.secrets)

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        line: str = self._encode(event_dict)
        for escaped in self._escaped:
            if escaped in line:
                return self._encode(self._scrubber(logger, method, event_dict))
        return line


class UtcTimestamp:
    """``TimeStamper(fmt="iso", utc=True)``'s text (``2026-12-02T14:20:00.123456Z``, no
    fraction at a whole second, as ``datetime.isoformat``) with the date and time of day
    formatted once per second, not per line. ``clock`` gives nanoseconds since the epoch.
    """

    def __init__(self, clock: Any = time.time_ns) -> None:
        self._clock = clock
        self._second: tuple[int, str] = (-1, "")  # replaced whole: threads read it whole

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        second, micros = divmod(self._clock() // 1000, 1_000_000)
        cached = self._second
        if cached[0] != second:
            t = time.gmtime(second)
            text = (
                f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
                f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            )
            cached = self._second = (second, text)
        event_dict["timestamp"] = f"{cached[1]}.{micros:06d}Z" if micros else cached[1] + "Z"
        return event_dict


def format_exc_info(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """``structlog.processors.format_exc_info``, not called for a line without
    ``exc_info`` (nearly all), which it would return unchanged."""
    if "exc_info" not in event_dict:
        return event_dict
    return structlog.processors.format_exc_info(logger, method, event_dict)


class LineWriter:
    """The logger the processors' line goes to: ``PrintLogger``'s output (the line, a
    newline, a flush, under a lock so threads never interleave), in one write where
    ``print`` makes two; one instance shared by every logger, where
    ``PrintLoggerFactory`` builds one per log call (the loggers are not cached)."""

    def __init__(self, file: TextIO) -> None:
        self._file = file
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            self._file.write(message + "\n")
            self._file.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def __call__(self, *args: Any) -> LineWriter:
        """As a ``logger_factory``: every logger writes through this one."""
        return self


def configure(fmt: str = "json", level: str = "info", secrets: Iterable[str] = ()) -> None:
    """Configure structlog, from the main thread: at startup, and again on a reload."""
    scrubber = SecretScrubber(secrets)
    rendering: list[Any] = (
        [scrubber, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
        if fmt == "console"
        else [ScrubbedJSON(scrubber)]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            UtcTimestamp(),
            format_exc_info,
            *rendering,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=LineWriter(sys.stderr),
        cache_logger_on_first_use=False,
    )
