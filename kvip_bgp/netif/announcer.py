"""``output: kernel-table``: the announcer that keeps one host route per VIP.

The host's FRR/BIRD exports the table; BGP attributes cannot travel in a kernel route,
so its export policy sets them. Only routes carrying our protocol number are ever
removed. Runs in the reconciler thread, which owns it and the table's netlink socket.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Protocol

import structlog

from kvip_bgp.domain.config import Config
from kvip_bgp.domain.model import Advertisement, IPAddress, address_order
from kvip_bgp.runtime.announcer import PeerView, Receive
from kvip_bgp.runtime.messages import ApiMessage, ReplyBox

# The reconciler's events, whichever output mode carries them out.
log = structlog.get_logger("kvip_bgp.reconciler")


class RouteInstaller(Protocol):
    """What the announcer needs from ``netif.RouteTable`` (a fake in unit tests)."""

    def routes(self) -> set[IPAddress]: ...
    def install(self, vip: IPAddress) -> bool: ...
    def remove(self, vip: IPAddress) -> None: ...


class KernelTableAnnouncer:
    """Installs and removes VIP host routes in a kernel table of our own."""

    def __init__(self, routes: RouteInstaller) -> None:
        self._routes = routes
        self._applied: dict[IPAddress, Advertisement] = {}
        self._maybe_present: set[IPAddress] = set()
        self._errors: list[str] = []
        self._changes = 0  # moves at every set and withdraw_all (see changes())

    def start(self) -> None:
        # Routes of an earlier run: kept until every source synced, then reconciled.
        self._maybe_present = self._routes.routes()

    def handle(self, message: ApiMessage, now: float) -> None:
        """Nothing to do: no ExaBGP runs in this mode, the host's daemon has the peers."""

    def resync(self) -> None:
        """Nothing to repeat: the kernel acks each change, so none is lost on the way."""

    def set(
        self,
        desired: Mapping[IPAddress, Advertisement],
        held: Set[IPAddress],
        synced: bool,
        now: float,
        changed: Set[IPAddress] | None = None,
    ) -> None:
        self._changes += 1
        remove = {v for v in self._applied if v not in desired}
        if synced:
            remove |= {v for v in self._maybe_present if v not in desired}
        for vip in sorted(remove, key=address_order):
            try:
                self._routes.remove(vip)
                log.info("reconciler.route_removed", vip=str(vip))
            except OSError as error:
                self._errors.append(f"remove route {vip}: {error}")
                log.error("reconciler.route_remove_failed", vip=str(vip), error=str(error))
                continue
            self._applied.pop(vip, None)
            self._maybe_present.discard(vip)
        for vip, advert in sorted(desired.items(), key=lambda i: address_order(i[0])):
            if vip in held:
                continue
            if vip in self._applied:
                self._applied[vip] = advert
                continue
            try:
                if self._routes.install(vip):
                    log.info(
                        "reconciler.route_installed", vip=str(vip), services=list(advert.sources)
                    )
                else:
                    log.warning(
                        "reconciler.foreign_route",
                        vip=str(vip),
                        reason="a route of another protocol exists: left alone",
                    )
            except OSError as error:
                self._errors.append(f"install route {vip}: {error}")
                log.error("reconciler.route_install_failed", vip=str(vip), error=str(error))
                continue
            self._applied[vip] = advert
            self._maybe_present.discard(vip)

    def withdraw_all(self, deadline: float, receive: Receive) -> None:
        """Remove every route of ours in the table, also those of an earlier run."""
        log.info("reconciler.shutdown", withdrawing=len(set(self._applied) | self._maybe_present))
        for vip in self._routes.routes():
            try:
                self._routes.remove(vip)
            except OSError as error:
                log.error("reconciler.route_remove_failed", vip=str(vip), error=str(error))
        self._applied.clear()
        self._maybe_present.clear()
        self._changes += 1

    def announced(self) -> Mapping[IPAddress, Advertisement]:
        return self._applied

    def changes(self) -> int:
        return self._changes

    def withdrawing(self) -> Set[IPAddress]:
        """Nothing: the kernel has removed a route when ``remove`` returns."""
        return frozenset()

    def peers(self) -> tuple[PeerView, ...]:
        return ()

    def connected(self) -> bool:
        return False

    def wake_at(self) -> float | None:
        return None

    def take_errors(self) -> list[str]:
        errors, self._errors = self._errors, []
        return errors

    def reconfigure(self, config: Config, routes_left: ReplyBox[bool] | None = None) -> None:
        """Nothing to do: the host's routing daemon owns the sessions, the attributes
        come with each advertisement."""
        if routes_left is not None:
            routes_left.put(True)
