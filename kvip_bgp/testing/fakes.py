"""Test doubles for the reconciler's edges: addresses, kernel routes, ExaBGP's API end.

Each stands in for an object the reconciler thread owns, so only that thread calls it
(``FakeExabgp`` is the far end of the pipe: the test thread reads and acks on it).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any, Final

from kvip_bgp.domain.model import BindResult, IPAddress
from kvip_bgp.runtime.messages import ApiConnected, CommandAck, Inbox, post

# The smallest config document a reconciler test needs: one peer, one allowed range.
CONFIG: Final[dict[str, Any]] = {
    "node_name": "n1",
    "bgp": {
        "asn": 64512,
        "router_id": "192.0.2.1",
        "peers": [{"address": "192.0.2.2", "asn": 64500}],
    },
    "vips": {"allowed": ["198.51.100.0/24"]},
}


class FakeAddresses:
    """Stands in for netif.AddressTable; only the reconciler thread calls it."""

    def __init__(self, owned: set[IPAddress]) -> None:
        self.bound = set(owned)
        self.log: list[str] = []
        self.events: list[tuple[str, int]] = []  # ("bind", chunk size) in call order
        self.foreign: set[IPAddress] = set()  # exist as someone else's address
        self.broken: set[IPAddress] = set()  # the kernel refuses them
        self.delay = 0.0
        # Cleared: the reconciler thread waits at its start (in ``owned``) until set, so a
        # test can queue several messages that its first pass must see together.
        self.released = threading.Event()
        self.released.set()

    def owned(self) -> set[IPAddress]:
        assert self.released.wait(10)
        return set(self.bound)

    def bind_many(self, vips: Iterable[IPAddress]) -> BindResult:
        wanted = list(vips)
        if self.delay:
            time.sleep(self.delay)
        ok = {v for v in wanted if v not in self.foreign and v not in self.broken}
        self.bound |= ok
        self.log.extend(f"bind {vip}" for vip in wanted if vip in ok)
        self.events.append(("bind", len(wanted)))
        return BindResult(
            frozenset(ok),
            frozenset(v for v in wanted if v in self.foreign),
            tuple((v, OSError(19, "No such device")) for v in wanted if v in self.broken),
        )

    def unbind_many(self, vips: set[IPAddress]) -> dict[IPAddress, OSError]:
        for vip in vips:
            self.bound.discard(vip)
            self.log.append(f"unbind {vip}")
        return {}


class FakeRoutes:
    """Stands in for netif.RouteTable: our routes, someone else's, and refused ones."""

    def __init__(self, ours: set[IPAddress] | None = None) -> None:
        self.ours = set(ours or ())
        self.foreign: set[IPAddress] = set()  # routed by another protocol
        self.broken: set[IPAddress] = set()  # the kernel refuses them
        self.log: list[str] = []

    def routes(self) -> set[IPAddress]:
        return set(self.ours)

    def install(self, vip: IPAddress) -> bool:
        if vip in self.broken:
            raise OSError(22, "Invalid argument")
        if vip in self.foreign:
            return False
        self.ours.add(vip)
        self.log.append(f"install {vip}")
        return True

    def remove(self, vip: IPAddress) -> None:
        if vip in self.broken:
            raise OSError(22, "Invalid argument")
        self.ours.discard(vip)
        self.log.append(f"remove {vip}")


class FakeExabgp:
    """ExaBGP's end of the relay's socket: reads the command lines, answers with acks."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.generation = 0
        self.acks = 0
        self.sock: socket.socket | None = None
        self.buffer = b""

    def connect(self) -> None:
        """A new connection, as the exabgp reader thread announces one."""
        ours, theirs = socket.socketpair()
        self.generation += 1
        self.acks = 0
        self.sock = theirs
        post(self.inbox, ApiConnected(self.generation, os.dup(ours.fileno())))
        ours.close()

    def lines(self, wait: float = 0.3) -> list[str]:
        """Every command line received until ``wait`` seconds of quiet (5 s at most)."""
        assert self.sock is not None
        self.sock.settimeout(wait)
        deadline = time.monotonic() + max(5.0, wait)
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return [line.decode() for line in lines]

    def ack(self, count: int, ok: bool = True) -> None:
        for _ in range(count):
            self.acks += 1
            post(self.inbox, CommandAck(self.generation, self.acks, ok))
