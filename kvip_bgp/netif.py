"""Local addresses (and kernel routes) through netlink. The only module that uses pyroute2.

Ownership is recorded in the kernel itself: every address kvip-bgp adds carries the
address protocol ``ADDRESS_PROTO`` (``IFA_PROTO``, Linux >= 5.18). After a SIGKILL and a
restart the daemon therefore knows exactly which addresses are its own, and an address
someone else added to the same interface (protocol 0) is never touched, even if it is a
VIP we also want.

Used by the reconciler thread only; the netlink socket is never shared.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Final

import structlog
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from kvip_bgp.model import IPAddress

log = structlog.get_logger("kvip_bgp.netif")

ADDRESS_PROTO: Final = 248  # IFA_PROTO marking "added by kvip-bgp"
_EEXIST: Final = 17
_ENOENT: Final = 2
_EADDRNOTAVAIL: Final = 99
_EOPNOTSUPP: Final = 95


class InterfaceError(Exception):
    """The VIP interface is missing and cannot be created; the message says what to do."""


@dataclass(frozen=True)
class LocalAddress:
    address: IPAddress
    owned: bool


class AddressTable:
    """The VIP addresses on one interface."""

    def __init__(self, interface: str, create: bool = True) -> None:
        self.interface = interface
        self._ipr: Any = IPRoute()
        self._index = self._lookup_or_create(create)

    def close(self) -> None:
        self._ipr.close()

    def _lookup_or_create(self, create: bool) -> int:
        found = self._ipr.link_lookup(ifname=self.interface)
        if found:
            return int(found[0])
        if not create:
            raise InterfaceError(f"vips.interface {self.interface!r} does not exist")
        try:
            self._ipr.link("add", ifname=self.interface, kind="dummy")
            self._ipr.link("set", index=self._ipr.link_lookup(ifname=self.interface)[0], state="up")
        except NetlinkError as error:
            raise InterfaceError(
                f"vips.interface {self.interface!r} does not exist and could not be created "
                f"as a dummy link ({error.args[-1] if error.args else error}); this kernel may "
                "lack the dummy driver: create the interface yourself or set "
                "vips.interface: lo"
            ) from error
        log.info("netif.created", interface=self.interface, kind="dummy")
        return int(self._ipr.link_lookup(ifname=self.interface)[0])

    def addresses(self) -> dict[IPAddress, LocalAddress]:
        """Every host address (/32, /128) on the interface, and whether it is ours."""
        result: dict[IPAddress, LocalAddress] = {}
        for msg in self._ipr.get_addr(index=self._index):
            raw = msg.get("IFA_ADDRESS")
            if raw is None:
                continue
            address = ipaddress.ip_address(raw)
            if msg["prefixlen"] != address.max_prefixlen:
                continue
            owned = msg.get("IFA_PROTO") == ADDRESS_PROTO
            result[address] = LocalAddress(address, owned)
        return result

    def owned(self) -> set[IPAddress]:
        return {a.address for a in self.addresses().values() if a.owned}

    def bind(self, vip: IPAddress) -> bool:
        """Add the VIP as ours. False if it already exists as someone else's address."""
        try:
            self._ipr.addr(
                "add",
                index=self._index,
                address=str(vip),
                prefixlen=vip.max_prefixlen,
                IFA_PROTO=ADDRESS_PROTO,
                **({"nodad": True} if vip.version == 6 else {}),
            )
        except NetlinkError as error:
            if error.code == _EEXIST:
                return self.addresses().get(vip, LocalAddress(vip, False)).owned
            raise
        return True

    def unbind(self, vip: IPAddress) -> None:
        """Remove the VIP only if it is ours (carries our protocol mark)."""
        current = self.addresses().get(vip)
        if current is None or not current.owned:
            return
        try:
            self._ipr.addr("del", index=self._index, address=str(vip), prefixlen=vip.max_prefixlen)
        except NetlinkError as error:
            if error.code not in (_EADDRNOTAVAIL, _ENOENT):
                raise
