"""A GoBGP (Debian ``gobgpd``) BGP router inside a lab namespace, as a peer for interop tests.

``gobgpd`` reads a TOML config and serves its gRPC API on ``127.0.0.1:PORT`` *inside the
namespace* (``--api-hosts``), so nothing listens on the host and several instances can
run at once. Tests read what it received with ``gobgp -j global rib -a ipv4|ipv6`` (run
in the namespace too), decoded into :class:`GobgpRoute`.

Facts about GoBGP 3.10 this code relies on (checked on the lab machines):

- ``gobgp -j global rib`` prints ``{PREFIX: [path, ...]}``; a path has ``best``,
  ``stale``, ``attrs`` (a list of ``{"type": CODE, ...}``: 1 origin, 2 ``as_paths`` as
  ``[{"type": 2, "asns": [...]}]``, 3 ``nexthop``, 4 ``metric``, 5 ``value`` local-pref,
  8 ``communities`` as 32-bit integers, 14 MP_REACH with ``nexthop``, 32
  ``value`` as ``[{"ASN":..,"LocalData1":..,"LocalData2":..}]``);
- ``gobgp -j neighbor`` lists peers with ``state.session_state`` (6 = established).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvip_bgp.testing.daemon import LabDaemon, ReceivedRoute
from kvip_bgp.testing.netlab import Netns, wait_for_value

__all__ = ["GOBGP", "GOBGPD", "GobgpError", "GobgpNeighbor", "GobgpPeer", "GobgpRoute"]

GOBGPD = "gobgpd"
GOBGP = "gobgp"
API_PORT = 50051
_ESTABLISHED = (6, "established", "ESTABLISHED", "SESSION_STATE_ESTABLISHED")
_WELL_KNOWN = {0xFFFFFF01: "no-export", 0xFFFFFF02: "no-advertise", 0xFFFFFF03: "no-peer"}


@dataclass(frozen=True)
class GobgpNeighbor:
    address: str
    remote_as: int
    password: str | None = None
    multihop_ttl: int | None = None


@dataclass(frozen=True)
class GobgpRoute(ReceivedRoute):
    """The best path GoBGP holds for one prefix, reduced to what tests assert on."""

    stale: bool


class GobgpError(RuntimeError):
    """gobgpd refused its config, did not start, or the gobgp CLI failed."""


def _community(value: int) -> str:
    return _WELL_KNOWN.get(value, f"{value >> 16}:{value & 0xFFFF}")


def _path_to_route(prefix: str, path: dict[str, Any]) -> GobgpRoute:
    next_hop = ""
    communities: tuple[str, ...] = ()
    large: tuple[str, ...] = ()
    med: int | None = None
    local_pref: int | None = None
    as_path: list[int] = []
    for attr in path.get("attrs") or ():
        kind = attr.get("type")
        if kind == 2:
            for segment in attr.get("as_paths") or ():
                as_path.extend(int(asn) for asn in segment.get("asns") or ())
        elif kind == 3:
            next_hop = str(attr.get("nexthop", ""))
        elif kind == 4:
            med = int(attr.get("metric", 0))
        elif kind == 5:
            local_pref = int(attr.get("value", 0))
        elif kind == 8:
            communities = tuple(_community(int(c)) for c in attr.get("communities") or ())
        elif kind == 14 and not next_hop:
            next_hop = str(attr.get("nexthop", ""))
        elif kind == 32:
            large = tuple(
                f"{v['ASN']}:{v['LocalData1']}:{v['LocalData2']}" for v in attr.get("value") or ()
            )
    return GobgpRoute(
        prefix=prefix,
        next_hop=next_hop,
        communities=communities,
        large_communities=large,
        med=med,
        local_pref=local_pref,
        as_path=tuple(as_path),
        stale=bool(path.get("stale", False)),
    )


def parse_rib(data: dict[str, Any]) -> dict[str, GobgpRoute]:
    """Best path per prefix from ``gobgp -j global rib`` output."""
    result: dict[str, GobgpRoute] = {}
    for prefix, paths in (data or {}).items():
        if not paths:
            continue
        best = next((p for p in paths if p.get("best")), paths[0])
        result[prefix] = _path_to_route(prefix, best)
    return result


class GobgpPeer(LabDaemon):
    """``gobgpd`` in a namespace with a TOML config and a namespace-local gRPC API."""

    program = "gobgpd"
    config_suffix = ".toml"
    start_timeout = 15.0
    error = GobgpError

    def __init__(
        self,
        ns: Netns | str,
        asn: int,
        router_id: str,
        neighbors: Sequence[GobgpNeighbor],
        workdir: Path,
        *,
        hold_time: int = 9,
        api_port: int = API_PORT,
    ) -> None:
        super().__init__(ns, workdir)
        self.asn = asn
        self.router_id = router_id
        self.neighbors = tuple(neighbors)
        self.hold_time = hold_time
        self.api_port = api_port

    def render_config(self) -> str:
        lines = [
            "[global.config]",
            f"  as = {self.asn}",
            f'  router-id = "{self.router_id}"',
            "",
        ]
        for nb in self.neighbors:
            lines += [
                "[[neighbors]]",
                "  [neighbors.config]",
                f'    neighbor-address = "{nb.address}"',
                f"    peer-as = {nb.remote_as}",
            ]
            if nb.password is not None:
                lines.append(f'    auth-password = "{nb.password}"')
            lines += [
                "  [neighbors.timers.config]",
                "    connect-retry = 1",
                f"    hold-time = {self.hold_time}",
                f"    keepalive-interval = {max(1, self.hold_time // 3)}",
            ]
            if nb.multihop_ttl is not None:
                lines += [
                    "  [neighbors.ebgp-multihop.config]",
                    "    enabled = true",
                    f"    multihop-ttl = {nb.multihop_ttl}",
                ]
            for family in ("ipv4-unicast", "ipv6-unicast"):
                lines += [
                    "  [[neighbors.afi-safis]]",
                    "    [neighbors.afi-safis.config]",
                    f'      afi-safi-name = "{family}"',
                ]
            lines.append("")
        return "\n".join(lines)

    def check_config(self) -> None:
        check = subprocess.run(
            [GOBGPD, "-d", "-f", str(self.config_path), "-t", "toml"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if check.returncode != 0:
            raise GobgpError(f"gobgpd rejects {self.config_path}: {check.stdout}{check.stderr}")

    def launch(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (kept while gobgpd runs)
        self._process = self.ns.popen(
            [
                GOBGPD,
                "-f",
                str(self.config_path),
                "-t",
                "toml",
                "-p",
                "--pprof-disable",
                f"--api-hosts=127.0.0.1:{self.api_port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def answers(self) -> bool:
        return self.gobgp("global") is not None

    def gobgp(self, *args: str, as_json: bool = False) -> str:
        """Run the ``gobgp`` CLI against this instance (inside its namespace)."""
        argv = [GOBGP, "-u", "127.0.0.1", "-p", str(self.api_port)]
        if as_json:
            argv.append("-j")
        proc = self.ns.run(*argv, *args, check=False)
        if proc.returncode != 0:
            raise GobgpError(f"gobgp {list(args)!r}: {(proc.stdout + proc.stderr).strip()}")
        return proc.stdout

    def routes(self, afi: str = "ipv4") -> dict[str, GobgpRoute]:
        data = json.loads(self.gobgp("global", "rib", "-a", afi, as_json=True) or "{}")
        return parse_rib(data)

    def state(self, address: str) -> str:
        """Session state of ``address`` (``established`` when up)."""
        for entry in json.loads(self.gobgp("neighbor", as_json=True) or "[]"):
            conf = entry.get("conf") or {}
            if conf.get("neighbor_address") == address:
                state = (entry.get("state") or {}).get("session_state")
                return "established" if state in _ESTABLISHED else str(state)
        raise LookupError(f"{address} is not a neighbor of gobgpd in {self.ns.name}")

    def wait_routes(
        self,
        predicate: Callable[[dict[str, GobgpRoute]], bool],
        timeout: float = 20.0,
        afi: str = "ipv4",
        what: str = "routes",
    ) -> dict[str, GobgpRoute]:
        return wait_for_value(
            lambda: self.routes(afi), predicate, timeout, what=f"{what} at gobgpd in {self.ns.name}"
        )
