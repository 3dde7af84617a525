"""``ops.log``: the lines are what structlog's own processors write, secrets scrubbed.

The pipeline replaces structlog's timestamper, JSON renderer and logger with cheaper
equivalents and scrubs only lines that hold a secret; what must not change is the text
an operator and a log pipeline see. So each case is logged through the daemon's
``configure`` and through the chain it replaced (structlog's ``TimeStamper``,
``SecretScrubber`` on every line, ``JSONRenderer``, ``PrintLoggerFactory``), and the
lines are compared, the timestamps apart (checked on their own, below).
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from kvip_bgp.ops import log as logsetup

SECRETS = ("S3cret-pw", 'pa"ss\\wörd')
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")


class Secretive:
    """A value JSON has no type for; its ``repr`` holds a secret (left as it is)."""

    def __repr__(self) -> str:
        return "Secretive(S3cret-pw)"

    def __str__(self) -> str:
        return "JSONRenderer writes the repr, not this"


class Structlogged:
    def __structlog__(self) -> Any:
        return {"shown": "as __structlog__ says, S3cret-pw"}


SECRETIVE, STRUCTLOGGED = Secretive(), Structlogged()  # one address for both runs


def _fail() -> None:
    raise ValueError("boom with S3cret-pw")


def _exception(log: Any) -> None:
    try:
        _fail()
    except ValueError:
        log.exception("kube.write_failed", key="k")


CASES: dict[str, Callable[[Any], None]] = {
    "plain": lambda log: log.info("reconciler.bound", vip="198.51.100.7"),
    "types": lambda log: log.info("x.types", n=3, f=0.5, none=None, yes=True, big=2**70),
    "unicode": lambda log: log.info("x.unicode", detail="Zürich ✓ \U0001f600", tab="a\tb"),
    "nested": lambda log: log.info(
        "cluster.service_announced", service="default/web", vip=["198.51.100.7"], source="x"
    ),
    "secret in a value": lambda log: log.info("x.peer", error="auth S3cret-pw refused"),
    "secret nested": lambda log: log.info(
        "x.nested", peers=[{"password": "S3cret-pw"}, ("S3cret-pw", 1)]
    ),
    "escaped secret": lambda log: log.warning("x.escaped", error='said pa"ss\\wörd!'),
    "secret as a key": lambda log: log.info("x.key", **{"S3cret-pw": "value"}),
    "secret in a repr": lambda log: log.info("x.repr", value=SECRETIVE),
    "__structlog__": lambda log: log.info("x.structlog", value=STRUCTLOGGED),
    "exception": _exception,
    "filtered": lambda log: log.debug("x.debug", vip="198.51.100.7"),
    "warning": lambda log: log.warning("x.warning", reason="S3cret-pw"),
}


def _reference(fmt: str, level: str) -> None:
    """The chain ``configure`` replaced, from structlog's own parts."""
    scrubber = logsetup.SecretScrubber(SECRETS)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrubber,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


@pytest.fixture(autouse=True)
def _defaults() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def _lines(capsys: pytest.CaptureFixture[str], case: Callable[[Any], None]) -> list[str]:
    case(structlog.get_logger("kvip_bgp.test"))
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("name", list(CASES))
def test_a_line_is_what_structlogs_own_processors_write(
    capsys: pytest.CaptureFixture[str], name: str, fmt: str
) -> None:
    _reference(fmt, "info")
    expected = _lines(capsys, CASES[name])
    logsetup.configure(fmt, "info", secrets=SECRETS)
    got = _lines(capsys, CASES[name])
    assert [STAMP.sub("<t>", line) for line in got] == [STAMP.sub("<t>", line) for line in expected]
    assert (got == []) is (name == "filtered")
    for line in got:
        # Not strings when scrubbed, as before: a key, a repr, what __structlog__ gives.
        assert "S3cret-pw" not in line or name in (
            "secret as a key",
            "secret in a repr",
            "__structlog__",
        )
        assert "wörd" not in line and "w\\u00f6rd" not in line
    if fmt == "json" and got:
        stamp = json.loads(got[0])["timestamp"]
        assert STAMP.fullmatch(stamp), stamp


def test_a_line_without_secrets_configured_is_structlogs_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    expected = _lines(capsys, CASES["secret in a value"])
    logsetup.configure("json", "info")
    got = _lines(capsys, CASES["secret in a value"])
    assert [STAMP.sub("<t>", line) for line in got] == [STAMP.sub("<t>", line) for line in expected]


def _iso(ns: int) -> str:
    """What ``TimeStamper(fmt="iso", utc=True)`` writes for that instant."""
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    moment = epoch + datetime.timedelta(microseconds=ns // 1000)
    return moment.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    "ns",
    [
        0,
        1_764_684_000_000_000_000,  # a whole second: no fraction, as isoformat
        1_764_684_000_000_001_000,
        1_764_684_000_000_000_999,  # below a microsecond: cut, not rounded
        1_764_684_000_999_999_999,
        1_709_164_799_123_456_000,  # 2024-02-28T23:59:59, then the leap day
        1_709_164_800_000_001_000,
        1_767_225_599_500_000_000,  # the last second of 2025, then the first of 2026
        1_767_225_600_000_000_000,
    ],
)
def test_the_timestamp_is_timestampers_text(ns: int) -> None:
    stamp = logsetup.UtcTimestamp(clock=lambda: ns)
    assert stamp(None, "info", {})["timestamp"] == _iso(ns)


def test_the_timestamp_follows_the_clock_across_seconds() -> None:
    """The date and time of day are kept per second: another second formats them again."""
    t0 = 1_764_684_000_250_000_000
    instants = [t0, t0 + 10**9, t0 + 2 * 10**9 - 250_000_000, t0 + 86_400 * 10**9, t0]
    clock = iter(instants)
    stamp = logsetup.UtcTimestamp(clock=lambda: next(clock))
    assert [stamp(None, "info", {})["timestamp"] for _ in instants] == list(map(_iso, instants))


def test_the_timestamp_is_now() -> None:
    stamped = logsetup.UtcTimestamp()(None, "info", {})["timestamp"]
    moment = datetime.datetime.fromisoformat(stamped.replace("Z", "+00:00"))
    assert abs(moment - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(seconds=5)


def test_a_reload_reaches_loggers_already_used(capsys: pytest.CaptureFixture[str]) -> None:
    """A reload configures again: a module's logger used before it takes the new level
    and scrubs the new password (why the loggers are not cached on first use)."""
    log = structlog.get_logger("kvip_bgp.test")
    logsetup.configure("json", "info", secrets=["old-pw"])
    log.info("before", detail="old-pw new-pw")
    logsetup.configure("json", "warning", secrets=["new-pw"])
    log.info("hidden")
    log.warning("after", detail="old-pw new-pw")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["event"], e["detail"]) for e in lines] == [
        ("before", "<redacted> new-pw"),
        ("after", "old-pw <redacted>"),
    ]
