"""``kvip-bgp status`` and ``kvip-bgp explain``: the daemon's HTTP answers, for humans.

They only read the running daemon's ``/status`` and ``/explain`` endpoints, so they show
exactly what the daemon believes, and they work in a container with nothing but
the package installed (``kubectl exec ... kvip-bgp status``).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from kvip_bgp.domain.config import Config

DEFAULT_URL = "http://127.0.0.1:9472"


def base_url(args: argparse.Namespace, cfg: Config | None) -> str:
    """``--url``, else the address ``cfg`` (read by the cli from ``--config``) listens on."""
    if args.url:
        return str(args.url).rstrip("/")
    if cfg is not None:
        if cfg.http.listen is None:
            raise SystemExit(
                "kvip-bgp: http.listen is null in the config: the daemon serves no HTTP"
            )
        host, port = cfg.http.listen
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"
    return DEFAULT_URL


def fetch(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace").strip()
        raise SystemExit(f"kvip-bgp: {url}: HTTP {error.code}: {body}") from error
    except (urllib.error.URLError, OSError) as error:
        raise SystemExit(f"kvip-bgp: cannot reach the daemon at {url}: {error}") from error


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ago(timestamp: float | None, now: float) -> str:
    if not timestamp:
        return "-"
    seconds = int(now - timestamp)
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def render_status(doc: dict[str, Any]) -> str:
    now = float(doc.get("now") or time.time())
    out = [
        f"synced: {doc.get('synced')}   exabgp connected: {doc.get('exabgp_connected')}",
        "",
        "PEERS",
        table(
            ("PEER", "STATE", "BFD", "SINCE", "REASON"),
            [
                (
                    p["address"],
                    p["state"],
                    p.get("bfd") or "-",
                    _ago(p.get("since"), now),
                    p.get("reason") or "",
                )
                for p in doc.get("peers", [])
            ],
        ),
        "",
        "ANNOUNCED",
        table(
            ("PREFIX", "SOURCES", "COMMUNITIES", "MED", "LOCAL-PREF", "PREPEND"),
            [
                (
                    a["prefix"],
                    ",".join(a["sources"]),
                    " ".join(a["communities"] + a["large_communities"]),
                    "" if a["med"] is None else a["med"],
                    "" if a["local_preference"] is None else a["local_preference"],
                    a["as_path_prepend"] or "",
                )
                for a in doc.get("announced", [])
            ],
        ),
    ]
    refused = [s for s in doc.get("services", []) if not s["announced"]]
    if refused:
        out += [
            "",
            "NOT ANNOUNCED",
            table(
                ("SERVICE", "REASON", "VIPS"),
                [
                    (s["service"], s["reason"], " ".join(v["vip"] for v in s["vips"]))
                    for s in refused
                ],
            ),
        ]
    out += _render_ipam(doc.get("ipam"))
    if doc.get("last_errors"):
        out += ["", "LAST ERRORS", *(f"  {e}" for e in doc["last_errors"])]
    config = doc.get("config") or {}
    if config.get("hash"):
        out += [
            "",
            f"config: sha256 {config['hash'][:16]}, loaded {_ago(config.get('loaded_at'), now)}",
        ]
    if config.get("last_reload_error"):
        when = _ago(config.get("last_reload_error_at"), now)
        out += [f"last reload FAILED ({when}), the config above still runs:"]
        out += [f"  {problem}" for problem in config["last_reload_error"]]
    return "\n".join(out)


def _render_ipam(ipam: dict[str, Any] | None) -> list[str]:
    """Pools, allocations and pending Services (only the Lease holder allocates)."""
    if ipam is None:
        return []
    if not ipam.get("allocating"):
        return ["", "IPAM: allocation is made by the Lease holder, not this node"]
    out = [
        "",
        "IPAM POOLS",
        table(
            ("POOL", "FAMILY", "ASSIGNED", "AVAILABLE"),
            [
                (p["pool"], f"IPv{p['family']}", p["assigned"], p["available"])
                for p in ipam["pools"]
            ],
        ),
        "",
        "ALLOCATIONS",
        table(
            ("SERVICE", "POOL", "IPS"),
            [(a["service"], a["pool"], " ".join(a["ips"])) for a in ipam["allocations"]],
        ),
    ]
    if ipam.get("pending"):
        out += [
            "",
            "PENDING ALLOCATION",
            table(("SERVICE", "WHY"), [(p["service"], p["reason"]) for p in ipam["pending"]]),
        ]
    return out


def render_explanation(doc: dict[str, Any]) -> str:
    lines = [f"{doc['service']}:"]
    lines += [f"  {step}" for step in doc["steps"]]
    return "\n".join(lines)


def main(args: argparse.Namespace, cfg: Config | None = None) -> int:
    url = base_url(args, cfg)
    if args.command == "status":
        doc = fetch(f"{url}/status")
        print(json.dumps(doc, indent=2) if args.json else render_status(doc))
        return 0
    query = urllib.parse.urlencode({"service": args.service})
    doc = fetch(f"{url}/explain?{query}")
    print(json.dumps(doc, indent=2) if args.json else render_explanation(doc))
    return 0 if doc.get("announced") else 3
