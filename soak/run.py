"""Soak run: churn for a long time and watch the daemon's (and ExaBGP's) resources.

    make soak DURATION=30m        # or: python soak/run.py --duration 1800

Builds the namespace lab (prefix ``kvs-`` by default), seeds Services/EndpointSlices,
starts kvip-bgp, then changes objects continuously while sampling, every few seconds,
the RSS, thread count and open file descriptors of kvip-bgp and of ExaBGP. At the end it
checks that FRR equals the churn's oracle, and prints first/last/max of every figure and
the growth between the first and the last quarter of the run (a leak shows as steady
growth, not as the warm-up jump). Exit 1 if the daemon died, did not converge, or logged
a traceback. Not part of CI: it needs root and takes as long as you ask.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvip_bgp.testing.procfs import ProcessSample, exabgp_pid, process_sample
from kvip_bgp.testing.scenario import Churn, Scenario


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h30m`` -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 300, 5m, 1h30m)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def summarise(name: str, samples: list[tuple[float, ProcessSample]]) -> list[str]:
    if not samples:
        return [f"{name}: no samples"]
    quarter = max(1, len(samples) // 4)
    lines = [f"{name} ({len(samples)} samples):"]
    for field, unit in (("rss_kib", "KiB"), ("threads", ""), ("fds", "")):
        values = [getattr(s, field) for _, s in samples]
        early = statistics.mean(values[:quarter])
        late = statistics.mean(values[-quarter:])
        growth = late - early
        pct = 100.0 * growth / early if early else 0.0
        lines.append(
            f"  {field:8} first {values[0]}{unit} last {values[-1]}{unit} max {max(values)}{unit}"
            f"  first-quarter mean {early:.0f} -> last-quarter mean {late:.0f}"
            f"  growth {growth:+.0f}{unit} ({pct:+.1f}%)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=parse_duration, default=parse_duration("30m"))
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--rate", type=float, default=50.0, help="object changes per second")
    parser.add_argument("--services", type=int, default=150)
    parser.add_argument("--nodes", type=int, default=80)
    parser.add_argument("--prefix", default="kvs-", help="namespace prefix of the lab")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("soak needs root (network namespaces)", file=sys.stderr)
        return 1

    with Scenario(prefix=args.prefix) as scenario:
        churn = Churn(scenario.api, services=args.services, nodes=args.nodes)
        churn.seed_objects()
        daemon = scenario.start_daemon()
        scenario.wait_routes(churn.matches, "initial convergence", timeout=90)
        print(
            f"soak: converged on {len(churn.expected())} routes; churning for "
            f"{args.duration:.0f}s at {args.rate}/s",
            flush=True,
        )
        churn.start(rate=args.rate)
        daemon_samples: list[tuple[float, ProcessSample]] = []
        exabgp_samples: list[tuple[float, ProcessSample]] = []
        exabgp_pids: set[int] = set()
        started = time.monotonic()
        next_report = started + 60
        while (now := time.monotonic()) - started < args.duration:
            scenario.assert_daemon_alive()
            if (sample := process_sample(daemon.pid)) is not None:
                daemon_samples.append((now - started, sample))
            pid = exabgp_pid(daemon.pid)
            if pid is not None and (sample := process_sample(pid)) is not None:
                exabgp_pids.add(pid)
                exabgp_samples.append((now - started, sample))
            if now >= next_report:
                next_report += 60
                d = daemon_samples[-1][1]
                print(
                    f"soak: {now - started:5.0f}s events={churn.events} kvip-bgp "
                    f"rss={d.rss_kib}KiB threads={d.threads} fds={d.fds}",
                    flush=True,
                )
            time.sleep(args.interval)
        churn.pause()
        events = churn.events
        ok = True
        try:
            scenario.wait_routes(churn.matches, "FRR equals the oracle after the soak", 90)
        except (TimeoutError, AssertionError) as error:
            print(f"soak: FAILED to converge: {error}", file=sys.stderr)
            ok = False
        tracebacks = [
            line
            for line in scenario.log_lines()
            if "Traceback" in str(line) or line.get("event") == "unparsed"
        ]
        restarts = sum(1 for e in scenario.log_lines() if e.get("event") == "app.exabgp_exited")
        churn.stop()
        print()
        print(
            f"soak: {args.duration:.0f}s, {events} object changes "
            f"({events / args.duration:.1f}/s), {len(churn.expected())} routes at the end, "
            f"ExaBGP processes seen: {len(exabgp_pids)}, ExaBGP exits: {restarts}"
        )
        for line in summarise("kvip-bgp", daemon_samples) + summarise("exabgp", exabgp_samples):
            print(line)
        if tracebacks:
            print(f"soak: {len(tracebacks)} traceback/unparsed log lines, first: {tracebacks[0]}")
            ok = False
        print("soak:", "OK" if ok else "FAILED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
