"""Where the reconciler's routes go: a declarative ``set(desired)`` behind one interface.

MetalLB's speaker hands its BGP layer the full set of advertisements and lets it work out
the difference; so does the reconciler. The implementations live with their I/O (ExaBGP
in ``bgp/announcer.py``, the kernel table in ``netif/announcer.py``) and run in the
reconciler thread only, which owns them and everything they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Protocol

from kvip_bgp.domain.config import Config
from kvip_bgp.domain.model import Advertisement, IPAddress
from kvip_bgp.runtime.messages import ApiMessage, Message, ReplyBox


@dataclass(frozen=True)
class PeerView:
    address: str
    state: str
    since: float
    reason: str | None
    session: int = 0
    """The reader's count of this peer's sessions (see ``PeerState.session``)."""
    bfd: str | None = None
    """The BFD session's state, None where the peer has no BFD (set by the reconciler)."""

    @property
    def up(self) -> bool:
        """Established, and BFD (where configured) up: a BFD Down counts as down."""
        return self.state == "up" and self.bfd in (None, "up")


Receive = Callable[[float], Iterable[Message]]
"""Wait up to the given seconds for the reconciler's next messages (used at shutdown)."""


class Announcer(Protocol):
    """The output mode: the reconciler says what should be announced, this makes it so."""

    def start(self) -> None:
        """Adopt what an earlier run left; it is kept until every source synced."""

    def handle(self, message: ApiMessage, now: float) -> None:
        """A message from the routing daemon's side (acks, sessions, connections)."""

    def resync(self) -> None:
        """The periodic full resync is due: repair what the daemon may have lost."""

    def set(
        self,
        desired: Mapping[IPAddress, Advertisement],
        held: Set[IPAddress],
        synced: bool,
        now: float,
        changed: Set[IPAddress] | None = None,
    ) -> None:
        """Announce ``desired`` except ``held`` (not bound yet: neither sent nor withdrawn).

        Until ``synced`` (every source delivered its full state) only what was applied
        in this run is withdrawn; what an earlier run left waits.
        ``changed``: the only VIPs whose desired value changed since the last call (None:
        any may have); an announcer may compare just those and what it held back.
        """

    def withdraw_all(self, deadline: float, receive: Receive) -> None:
        """Withdraw everything and wait, until ``deadline``, for it to be carried out."""

    def announced(self) -> Mapping[IPAddress, Advertisement]:
        """What is applied now (sent and not failed)."""

    def changes(self) -> int:
        """A count that moves whenever ``announced()`` may have changed (and may move
        more often): the reconciler copies it for the status only then."""

    def withdrawing(self) -> Set[IPAddress]:
        """VIPs whose withdrawal is sent but not yet acknowledged by the routing daemon."""

    def peers(self) -> tuple[PeerView, ...]:
        """The BGP sessions this announcer knows of, sorted by address."""

    def connected(self) -> bool:
        """Whether the routing daemon is reachable (ExaBGP's API connection)."""

    def wake_at(self) -> float | None:
        """When a retry is due (on the reconciler's clock), if one is."""

    def take_errors(self) -> list[str]:
        """Errors since the last call, oldest first, for the status's ``last_errors``."""

    def reconfigure(self, config: Config, routes_left: ReplyBox[bool] | None = None) -> None:
        """A reload: ``config.bgp.peers`` are this node's peers from now on. Answer
        ``routes_left`` once the routes are withdrawn from the peers that are gone."""
