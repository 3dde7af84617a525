"""An FRR ``bgpd`` running inside a lab namespace: the BGP peer that lab tests talk to.

FRR plays the top-of-rack router. Tests judge kvip-bgp by what FRR *received* (prefix,
next hop, communities, MED, AS path, stale flag during a graceful restart), not by what
kvip-bgp believes it sent, so this module's main job is :meth:`FrrPeer.routes`.

bgpd runs alone (``-Z``: no zebra, so nothing reaches a kernel routing table; ``-S``: no
user switch, we are root), daemonised, with its vty socket, pid file, config and log in
a private work directory, and no TCP vty (``-P 0``) so several bgpds can share one
namespace. Facts about FRR 8.4 this code relies on (checked on the lab machines):

- eBGP routes are dropped unless ``no bgp ebgp-requires-policy``;
- ``show bgp ipv4 unicast json`` is a summary table *without* communities; ``show bgp
  ipv4 unicast json detail`` has every attribute for every prefix in one call. Its
  per-prefix list starts with a header object (``prefix``, ``advertisedTo``) followed
  by one object per path (``aspath``, ``community``, ``largeCommunity``, ``metric``,
  ``locPrf``, ``stale``, ``bestpath.overall``, ``nexthops``);
- ``show bgp summary json`` is ``{"ipv4Unicast": {"peers": {ADDR: {"state",
  "pfxRcd", ...}}}, "ipv6Unicast": {...}}``;
- ``bgpd -C`` (dry run) exits 0 even for a broken config; errors are only on stderr
  (``[EC 100663304] No such command on config line N: ...``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvip_bgp.testing.daemon import LabDaemon, ReceivedRoute, end_process, read_pid_file
from kvip_bgp.testing.netlab import Netns, wait_for_value, wait_until

__all__ = [
    "BGPD",
    "VTYSH",
    "FrrError",
    "FrrNeighbor",
    "FrrNetwork",
    "FrrPeer",
    "FrrRoute",
    "parse_routes_detail",
    "time_routes",
]

BGPD = "/usr/lib/frr/bgpd"
VTYSH = "vtysh"
_AFIS = ("ipv4", "ipv6")
_SUMMARY_KEYS = {"ipv4": "ipv4Unicast", "ipv6": "ipv6Unicast"}
# What bgpd -C prints for a bad line ("[EC nnn]" tags FRR's logged errors).
_CONFIG_ERROR_MARKERS = ("[EC ", "Config Failed", "No such command", "Unknown command")


@dataclass(frozen=True)
class FrrNeighbor:
    """One ``neighbor`` of the FRR router (typically the kvip-bgp node)."""

    address: str
    remote_as: int
    password: str | None = None
    ebgp_multihop: int | None = None
    passive: bool = False
    update_source: str | None = None
    bfd: bool = False
    """``neighbor X bfd``: bgpd drops the session when BFD goes down (needs ZebraBgp)."""


@dataclass(frozen=True)
class FrrNetwork:
    """A prefix FRR itself originates (``network`` statement), with optional attributes.

    Lets a test make FRR the announcer (FRR-to-FRR sessions check the harness itself,
    and give a reference for what a correct announcement looks like).
    """

    prefix: str
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    med: int | None = None


@dataclass(frozen=True)
class FrrRoute(ReceivedRoute):
    """The best path FRR holds for one prefix, reduced to what tests assert on."""

    stale: bool


def _is_v6(address: str) -> bool:
    return ipaddress.ip_address(address).version == 6


def _path_to_route(prefix: str, path: dict[str, Any]) -> FrrRoute:
    aspath = path.get("aspath") or {}
    as_path: list[int] = []
    for segment in aspath.get("segments") or ():
        as_path.extend(int(asn) for asn in segment.get("list") or ())
    nexthops: list[dict[str, Any]] = path.get("nexthops") or []
    # For IPv6 FRR may list a global and a link-local next hop; the global one is the
    # one a sender chose, so prefer it.
    chosen = next((nh for nh in nexthops if nh.get("scope") == "global"), None)
    if chosen is None and nexthops:
        chosen = nexthops[0]
    community = (path.get("community") or {}).get("string", "")
    large = (path.get("largeCommunity") or {}).get("string", "")
    med = path.get("metric")
    local_pref = path.get("locPrf")
    return FrrRoute(
        prefix=prefix,
        next_hop=str(chosen.get("ip", "")) if chosen else "",
        communities=tuple(community.split()),
        large_communities=tuple(large.split()),
        med=int(med) if med is not None else None,
        local_pref=int(local_pref) if local_pref is not None else None,
        as_path=tuple(as_path),
        stale=bool(path.get("stale", False)),
    )


def parse_routes_detail(data: dict[str, Any]) -> dict[str, FrrRoute]:
    """Best path per prefix from ``show bgp AFI unicast json detail`` output.

    Each prefix maps to a list whose first element is a header (no ``nexthops``); the
    rest are paths. The best path is the one with ``bestpath.overall``; if FRR marks
    none (e.g. every path invalid), the first path is reported so a test sees the route
    rather than a confusing absence.
    """
    result: dict[str, FrrRoute] = {}
    for prefix, entries in (data.get("routes") or {}).items():
        paths = [e for e in entries if "nexthops" in e or "aspath" in e]
        if not paths:
            continue
        best = next((p for p in paths if (p.get("bestpath") or {}).get("overall")), paths[0])
        result[prefix] = _path_to_route(prefix, best)
    return result


class FrrError(RuntimeError):
    """bgpd refused its config, failed to start, or vtysh reported an error."""


class FrrPeer(LabDaemon):
    """An FRR ``bgpd`` inside a namespace, configured from typed values.

    ``start()`` validates and writes ``bgpd.conf``, starts bgpd and waits until vtysh
    answers; ``stop()`` ends it via its pid file (SIGTERM: bgpd sends a Cease
    NOTIFICATION; ``stop(graceful=False)``: SIGKILL, a crash the peers must notice by
    themselves). Graceful restart is always on, so when the *other* side restarts its
    routes stay here, marked stale, which is what hitless-restart tests look at.
    """

    program = "bgpd"
    pid_name = "bgpd.pid"
    error = FrrError

    def __init__(
        self,
        ns: Netns | str,
        asn: int,
        router_id: str,
        neighbors: Sequence[FrrNeighbor],
        workdir: Path,
        ipv6: bool = True,
        *,
        networks: Sequence[FrrNetwork] = (),
        extra_config: str = "",
        hold_time: int = 9,
        keepalive: int = 3,
    ) -> None:
        super().__init__(ns, workdir)
        self.asn = asn
        self.router_id = router_id
        self.neighbors = tuple(neighbors)
        self.ipv6 = ipv6
        self.networks = tuple(networks)
        self.extra_config = extra_config
        self.hold_time = hold_time
        self.keepalive = keepalive
        self._check_socket_path(self.vty_socket)

    # -- files ------------------------------------------------------------------------

    @property
    def vty_socket(self) -> Path:
        return self.workdir / "bgpd.vty"

    def render_config(self) -> str:
        """The ``bgpd.conf`` text for this peer."""
        lines = [
            f"hostname frr-{self.ns.name}",
            "!",
            f"router bgp {self.asn}",
            f" bgp router-id {self.router_id}",
            " no bgp ebgp-requires-policy",
            " no bgp network import-check",
            " bgp graceful-restart",
            " bgp log-neighbor-changes",
            f" timers bgp {self.keepalive} {self.hold_time}",
        ]
        for nb in self.neighbors:
            addr = nb.address
            lines.append(f" neighbor {addr} remote-as {nb.remote_as}")
            # Reconnect fast after a peer restart (the default retry is 120 s).
            lines.append(f" neighbor {addr} timers connect 1")
            lines.append(f" neighbor {addr} advertisement-interval 0")
            if nb.password is not None:
                lines.append(f" neighbor {addr} password {nb.password}")
            if nb.ebgp_multihop is not None:
                lines.append(f" neighbor {addr} ebgp-multihop {nb.ebgp_multihop}")
            if nb.passive:
                lines.append(f" neighbor {addr} passive")
            if nb.update_source is not None:
                lines.append(f" neighbor {addr} update-source {nb.update_source}")
            if nb.bfd:
                lines.append(f" neighbor {addr} bfd")
        route_maps: dict[tuple[tuple[str, ...], tuple[str, ...], int | None], str] = {}
        for afi in _AFIS:
            if afi == "ipv6" and not self.ipv6:
                continue
            lines.append(f" address-family {afi} unicast")
            for net in self.networks:
                if ipaddress.ip_network(net.prefix, strict=False).version != int(afi[-1]):
                    continue
                key = (net.communities, net.large_communities, net.med)
                if key == ((), (), None):
                    lines.append(f"  network {net.prefix}")
                else:
                    name = route_maps.setdefault(key, f"KVL-NET-{len(route_maps) + 1}")
                    lines.append(f"  network {net.prefix} route-map {name}")
            for nb in self.neighbors:
                # IPv4 sessions also carry IPv6 unicast: kvip-bgp may send /128s over an
                # IPv4 session with an explicit IPv6 next hop.
                lines.append(f"  neighbor {nb.address} activate")
            lines.append(" exit-address-family")
        lines.append("exit")
        for (communities, large, med), name in route_maps.items():
            lines.append("!")
            lines.append(f"route-map {name} permit 10")
            if communities:
                lines.append(f" set community {' '.join(communities)}")
            if large:
                lines.append(f" set large-community {' '.join(large)}")
            if med is not None:
                lines.append(f" set metric {med}")
            lines.append("exit")
        if self.extra_config:
            lines.append("!")
            lines.extend(self.extra_config.strip("\n").splitlines())
        lines.append("!")
        return "\n".join(lines) + "\n"

    # -- process ----------------------------------------------------------------------

    def _bgpd_argv(self, pid_file: Path, *extra: str) -> list[str]:
        return [
            BGPD,
            "-Z",
            "-S",
            "-P",
            "0",
            "-f",
            str(self.config_path),
            "-i",
            str(pid_file),
            "--vty_socket",
            str(self.workdir),
            *extra,
        ]

    def check_config(self) -> None:
        # The dry run exits 0 even on errors, so look at what it printed instead.
        dry = subprocess.run(
            self._bgpd_argv(self.workdir / "dryrun.pid", "-C"),
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        complaints = [
            line
            for line in (dry.stdout + dry.stderr).splitlines()
            if any(marker in line for marker in _CONFIG_ERROR_MARKERS)
        ]
        if dry.returncode != 0 or complaints:
            raise FrrError(
                f"bgpd rejects {self.config_path} (exit {dry.returncode}): "
                + "; ".join(complaints or [dry.stderr.strip()])
            )

    def launch(self) -> None:
        self.ns.run(*self._bgpd_argv(self.pid_path, "-d", "--log", f"file:{self.log_path}"))

    def answers(self) -> bool:
        return self.vtysh("show bgp summary json") is not None

    # -- vtysh ------------------------------------------------------------------------

    def vtysh(self, cmd: str, *more: str) -> str:
        """Run one or more vtysh commands (in order, one session); return the output.

        vtysh talks to bgpd over the unix socket, so it needs no namespace switch.
        """
        argv = [VTYSH, "--vty_socket", str(self.workdir)]
        for command in (cmd, *more):
            argv += ["-c", command]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode != 0:
            raise FrrError(
                f"vtysh {[cmd, *more]!r} failed (exit {proc.returncode}): "
                f"{(proc.stdout + proc.stderr).strip()}"
            )
        return proc.stdout

    def vtysh_json(self, cmd: str) -> Any:
        """Run a ``... json`` show command and decode it."""
        return json.loads(self.vtysh(cmd))

    def configure(self, *lines: str) -> str:
        """Apply config lines at runtime (``configure terminal`` then each line)."""
        return self.vtysh("configure terminal", *lines)

    # -- state ------------------------------------------------------------------------

    def routes(self, afi: str = "ipv4") -> dict[str, FrrRoute]:
        """Best path of every prefix in the ``afi`` unicast table, with all attributes.

        One ``json detail`` call for the whole table (per-prefix queries would take
        minutes at 10,000 prefixes).
        """
        if afi not in _AFIS:
            raise ValueError(f"afi must be one of {_AFIS}, not {afi!r}")
        return parse_routes_detail(self.vtysh_json(f"show bgp {afi} unicast json detail"))

    def summary(self) -> dict[str, Any]:
        """``show bgp summary json``: ``{"ipv4Unicast": {"peers": {ADDR: {...}}}, ...}``."""
        data: dict[str, Any] = self.vtysh_json("show bgp summary json")
        return data

    def _peer_entries(self, address: str, afi: str | None) -> list[dict[str, Any]]:
        summary = self.summary()
        keys = [_SUMMARY_KEYS[afi]] if afi is not None else list(_SUMMARY_KEYS.values())
        canonical = str(ipaddress.ip_address(address))
        entries = []
        for key in keys:
            peers = (summary.get(key) or {}).get("peers") or {}
            for addr, entry in peers.items():
                if str(ipaddress.ip_address(addr)) == canonical:
                    entries.append(entry)
        return entries

    def peer_state(self, address: str) -> str:
        """FSM state of neighbor ``address`` ("Established", "Active", "Connect", ...)."""
        entries = self._peer_entries(address, None)
        if not entries:
            raise LookupError(f"{address} is not a neighbor of bgpd in {self.ns.name}")
        return str(entries[0].get("state", "Unknown"))

    def prefixes_received(self, address: str, afi: str | None = None) -> int:
        """Prefixes accepted from ``address``: in ``afi``, or summed over IPv4+IPv6."""
        return sum(int(e.get("pfxRcd", 0)) for e in self._peer_entries(address, afi))

    def wait_established(self, address: str, timeout: float = 15.0) -> None:
        """Block until the session with ``address`` is Established."""
        wait_until(
            lambda: self.peer_state(address) == "Established",
            timeout,
            what=f"BGP session {self.ns.name} -> {address} to be Established",
        )

    def wait_routes(
        self,
        predicate: Callable[[dict[str, FrrRoute]], bool],
        timeout: float = 15.0,
        afi: str = "ipv4",
        what: str = "routes",
    ) -> dict[str, FrrRoute]:
        """Poll :meth:`routes` until ``predicate`` holds; return the table that passed."""
        return wait_for_value(
            lambda: self.routes(afi), predicate, timeout, what=f"{what} at {self.ns.name}"
        )


def time_routes(peer: FrrPeer, afi: str = "ipv4") -> tuple[int, float]:
    """``(number of prefixes, seconds)`` for one :meth:`FrrPeer.routes` call."""
    start = time.monotonic()
    table = peer.routes(afi)
    return len(table), time.monotonic() - start


class ZebraBgp(FrrPeer):
    """FRR with zebra (and optionally bfdd): bgpd talks to a zebra in the same namespace
    instead of running -Z, so its routes reach the namespace's kernel FIB and ``neighbor
    X bfd`` works (bgpd asks bfdd for sessions through zebra).

    zebra has no ``--skip_runas``; as root it insists on root being in ``frrvty``, so it
    (and bfdd) run as the ``frr`` user (Debian's package creates it) from a directory it
    owns. ``zebra_config`` is zebra's whole config file.
    """

    def __init__(
        self,
        *args: Any,
        zebra_config: str = "",
        bfdd: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.zebra_config = zebra_config
        self.bfdd = bfdd

    @property
    def zserv(self) -> Path:
        return self.workdir / "zserv.api"

    @property
    def zebra_pid(self) -> Path:
        return self.workdir / "zebra.pid"

    @property
    def bfdd_pid(self) -> Path:
        return self.workdir / "bfdd.pid"

    def _bgpd_argv(self, pid_file: Path, *extra: str) -> list[str]:
        argv = super()._bgpd_argv(pid_file, *extra)
        argv.remove("-Z")
        return [*argv, "-z", str(self.zserv)]

    def _as_frr(self, program: str, conf_text: str, pid: Path, *extra: str) -> None:
        conf = self.workdir / f"{program}.conf"
        conf.write_text(conf_text)
        shutil.chown(conf, "frr", "frr")
        self.ns.run(
            f"/usr/lib/frr/{program}",
            "-d",
            "-u",
            "frr",
            "-g",
            "frr",
            "-f",
            str(conf),
            "-i",
            str(pid),
            "-z",
            str(self.zserv),
            "--vty_socket",
            str(self.workdir),
            "--log",
            f"file:{self.workdir / f'{program}.log'}",
            *extra,
        )

    def start(self, timeout: float | None = None) -> None:
        wait = 10.0 if timeout is None else timeout
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir.parent, 0o711)
        shutil.chown(self.workdir, "frr", "frr")
        self._as_frr("zebra", self.zebra_config, self.zebra_pid, "-P", "0")
        wait_until(self.zserv.exists, wait, what="zebra's zserv socket")
        if self.bfdd:
            self._as_frr("bfdd", "", self.bfdd_pid, "--bfdctl", str(self.workdir / "bfdd.sock"))
        super().start(timeout)

    def stop(self, timeout: float = 5.0, *, graceful: bool = True) -> None:
        super().stop(timeout, graceful=graceful)
        for pid_file, what in ((self.bfdd_pid, "bfdd"), (self.zebra_pid, "zebra")):
            pid = read_pid_file(pid_file)
            if pid is not None:
                end_process(pid, timeout, what=what)

    def bfd_peers(self) -> list[dict[str, Any]]:
        """``show bfd peers json`` (bfdd's sessions, the ones bgpd asked for included)."""
        out = self.vtysh("show bfd peers json")
        peers: list[dict[str, Any]] = json.loads(out)
        return peers
