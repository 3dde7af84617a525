"""A BIRD 2 (Debian ``bird2``) BGP router inside a lab namespace, as a peer for interop tests.

``bird`` runs in the foreground of its own process (``-f``) with a private control socket
(``-s``), so several BIRDs can share one machine and nothing touches ``/run/bird``. Tests
read what it received with ``birdc -s SOCK show route all``, whose text is parsed into
:class:`BirdRoute` (prefix, next hop, ``BGP.community``, ``BGP.large_community``,
``BGP.med``, ``BGP.local_pref``, ``BGP.as_path``).

Facts about BIRD 2.0.12 this code relies on (checked on the lab machines):

- every ``birdc`` answer starts with ``BIRD 2.0.12 ready.``; ``show route all`` prints
  ``Table master4:`` headers, then per route a line ``PREFIX  unicast [PROTO TIME] * (PREF)
  [AS64512i]`` (the prefix is left out when the previous route had the same one), then
  tab-indented attribute lines such as ``BGP.community: (64512,100) (64512,200)``;
- ``show protocols all NAME`` has a ``BGP state:`` line (``Established`` when up);
- BIRD drops nothing by default; ``import all`` keeps every route, no policy needed.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kvip_bgp.testing.daemon import LabDaemon, ReceivedRoute
from kvip_bgp.testing.netlab import Netns, wait_for_value

__all__ = ["BIRD", "BIRDC", "BirdError", "BirdNeighbor", "BirdPeer", "BirdRoute", "parse_routes"]

BIRD = "bird"
BIRDC = "birdc"


@dataclass(frozen=True)
class BirdNeighbor:
    """One BGP neighbor of the BIRD router (the kvip-bgp node)."""

    address: str
    remote_as: int
    password: str | None = None
    multihop: int | None = None
    export: str = "none"
    """The channels' export clause (``none``, ``all``, ``where proto = "k4"``...)."""
    next_hop_v6: str | None = None
    """IPv6 next hop for IPv6 routes this side exports over an IPv4 session."""


@dataclass(frozen=True)
class BirdRoute(ReceivedRoute):
    """The preferred route BIRD holds for one prefix, reduced to what tests assert on."""

    protocol: str


class BirdError(RuntimeError):
    """bird refused its config, did not start, or birdc failed."""


_ROUTE_LINE = re.compile(r"^(?P<prefix>\S+)?\s+\S+\s+\[(?P<proto>\S+)\s[^\]]*\](?P<best>\s\*)?")
_COMMUNITY = re.compile(r"\((\d+),\s*(\d+)\)")
_LARGE_COMMUNITY = re.compile(r"\((\d+),\s*(\d+),\s*(\d+)\)")


def _prefix_of(text: str) -> str | None:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return None


@dataclass
class _RouteBuilder:
    """One route of ``show route all`` while its attribute lines are being read."""

    prefix: str
    protocol: str
    best: bool
    next_hop: str = ""
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    med: int | None = None
    local_pref: int | None = None
    as_path: tuple[int, ...] = ()

    def attribute(self, line: str) -> None:
        key, _, value = line.partition(":")
        value = value.strip()
        if line.startswith("via "):
            self.next_hop = line.split()[1]
        elif key == "BGP.next_hop" and not self.next_hop:
            self.next_hop = value.split()[0] if value else ""
        elif key == "BGP.community":
            self.communities = tuple(f"{a}:{b}" for a, b in _COMMUNITY.findall(value))
        elif key == "BGP.large_community":
            self.large_communities = tuple(
                f"{a}:{b}:{c}" for a, b, c in _LARGE_COMMUNITY.findall(value)
            )
        elif key == "BGP.med":
            self.med = int(value)
        elif key == "BGP.local_pref":
            self.local_pref = int(value)
        elif key == "BGP.as_path":
            self.as_path = tuple(int(asn) for asn in value.split() if asn.isdigit())

    def build(self) -> BirdRoute:
        return BirdRoute(
            prefix=self.prefix,
            next_hop=self.next_hop,
            communities=self.communities,
            large_communities=self.large_communities,
            med=self.med,
            local_pref=self.local_pref,
            as_path=self.as_path,
            protocol=self.protocol,
        )


def parse_routes(text: str) -> dict[str, BirdRoute]:
    """Preferred route per prefix from ``birdc show route all`` output.

    A route line starts with the prefix (or with blanks when it repeats the previous
    prefix); its attributes follow on tab-indented lines. The route marked ``*`` is the
    preferred one; if none is, the first is reported.
    """
    builders: list[_RouteBuilder] = []
    prefix: str | None = None
    for raw in text.splitlines():
        if not raw.strip() or raw.startswith(("BIRD ", "Table ")):
            continue
        if not raw.startswith(("\t", " ")) or (raw.startswith(" ") and "[" in raw):
            match = _ROUTE_LINE.match(raw)
            if match is None:
                continue
            if match.group("prefix"):
                prefix = _prefix_of(match.group("prefix"))
            if prefix is not None:
                builders.append(
                    _RouteBuilder(prefix, match.group("proto"), match.group("best") is not None)
                )
        elif builders:
            builders[-1].attribute(raw.strip())
    result: dict[str, BirdRoute] = {}
    for builder in builders:
        if builder.prefix not in result or builder.best:
            result[builder.prefix] = builder.build()
    return result


class BirdPeer(LabDaemon):
    """``bird`` in a namespace with one ``protocol bgp`` per neighbor."""

    program = "bird"
    error = BirdError

    def __init__(
        self,
        ns: Netns | str,
        asn: int,
        router_id: str,
        local_address: str,
        neighbors: Sequence[BirdNeighbor],
        workdir: Path,
        *,
        hold_time: int = 9,
        extra_config: str = "",
    ) -> None:
        super().__init__(ns, workdir)
        self.asn = asn
        self.router_id = router_id
        self.local_address = local_address
        self.neighbors = tuple(neighbors)
        self.hold_time = hold_time
        self.extra_config = extra_config
        self._check_socket_path(self.control_socket)

    @property
    def control_socket(self) -> Path:
        return self.workdir / "bird.ctl"

    @staticmethod
    def protocol_name(index: int) -> str:
        return f"kvip{index}"

    def render_config(self) -> str:
        lines = [
            f"router id {self.router_id};",
            f'log "{self.log_path}" all;',
            "protocol device { scan time 2; }",
        ]
        if self.extra_config:
            lines.extend(self.extra_config.strip("\n").splitlines())
        for index, nb in enumerate(self.neighbors):
            lines += [
                f"protocol bgp {self.protocol_name(index)} {{",
                f"  local {self.local_address} as {self.asn};",
                f"  neighbor {nb.address} as {nb.remote_as};",
                f"  hold time {self.hold_time};",
                "  connect retry time 1;",
                "  error wait time 1, 5;",
                "  graceful restart on;",
            ]
            if nb.password is not None:
                lines.append(f'  password "{nb.password}";')
            if nb.multihop is not None:
                lines.append(f"  multihop {nb.multihop};")
            v6_next_hop = f" next hop address {nb.next_hop_v6};" if nb.next_hop_v6 else ""
            lines += [
                f"  ipv4 {{ import all; export {nb.export}; }};",
                f"  ipv6 {{ import all; export {nb.export};{v6_next_hop} }};",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def check_config(self) -> None:
        check = subprocess.run(
            [BIRD, "-p", "-c", str(self.config_path)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise BirdError(f"bird rejects {self.config_path}: {check.stderr.strip()}")

    def launch(self) -> None:
        self._process = self.ns.popen(
            [BIRD, "-f", "-c", str(self.config_path), "-s", str(self.control_socket)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def answers(self) -> bool:
        return self.birdc("show status").find("Daemon is up") >= 0

    def birdc(self, *command: str) -> str:
        proc = subprocess.run(
            [BIRDC, "-s", str(self.control_socket), *command],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if proc.returncode != 0:
            raise BirdError(f"birdc {command!r}: {(proc.stdout + proc.stderr).strip()}")
        return proc.stdout

    def routes(self) -> dict[str, BirdRoute]:
        """Preferred route of every prefix in every table (IPv4 and IPv6)."""
        return parse_routes(self.birdc("show", "route", "all"))

    def state(self, index: int = 0) -> str:
        """``BGP state`` of neighbor ``index`` (``Established`` when up)."""
        text = self.birdc("show", "protocols", "all", self.protocol_name(index))
        for line in text.splitlines():
            if "BGP state:" in line:
                return line.split(":", 1)[1].strip()
        return "unknown"

    def wait_routes(
        self,
        predicate: Callable[[dict[str, BirdRoute]], bool],
        timeout: float = 20.0,
        what: str = "routes",
    ) -> dict[str, BirdRoute]:
        return wait_for_value(
            self.routes, predicate, timeout, what=f"{what} at bird in {self.ns.name}"
        )
