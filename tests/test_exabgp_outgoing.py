"""The outgoing-RIB fix of ``kvip_bgp.bgp.exabgp`` on ExaBGP's own objects, no network:
the updates one cycle sends carry one change per prefix, the newest.

The same three sequences as ``test_exabgp_rib.py`` (which runs them through ExaBGP and
FRR); withdrawals carry no attributes but the next hop, as kvip-bgp's do.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from exabgp.bgp.message import Action
from exabgp.bgp.message.update.attribute import Attributes
from exabgp.bgp.message.update.attribute.community.initial.communities import Communities
from exabgp.bgp.message.update.attribute.community.initial.community import Community
from exabgp.bgp.message.update.nlri.cidr import CIDR
from exabgp.bgp.message.update.nlri.inet import INET
from exabgp.environment import getenv
from exabgp.logger import option
from exabgp.protocol.family import AFI, SAFI
from exabgp.rib.change import Change
from exabgp.rib.outgoing import OutgoingRIB

from kvip_bgp.bgp.exabgp import patch_outgoing_rib

option.setup(getenv())  # ExaBGP's logger must exist before its RIB logs


def change(prefix: str, community: int | None, action: Any) -> Any:
    nlri = INET(AFI.ipv4, SAFI.unicast, action)
    nlri.cidr = CIDR(ipaddress.ip_address(prefix).packed, 32)
    attributes = Attributes()
    if community is not None:
        attributes.add(Communities([Community.cached(community.to_bytes(4, "big"))]))
    return Change(nlri, attributes)


def sent(rib: Any) -> list[tuple[str, str, tuple[int, ...]]]:
    """(prefix, action, communities) in the order the cycle's UPDATEs carry them."""
    out = []
    for update in rib.updates(True):
        communities = update.attributes.get(Communities.ID)
        values = tuple(
            int.from_bytes(c.community, "big")
            for c in (communities.communities if communities else ())
        )
        for nlri in update.nlris:
            out.append((str(nlri.cidr), nlri.action.name, values))
    return out


def rib_class(patched: bool) -> Any:
    cls = type("RIB", (OutgoingRIB,), {})
    if patched:
        assert patch_outgoing_rib(cls)
    return cls


SEQUENCES = {
    # announce A1, announce A2, withdraw (a withdrawal opened its bucket first)
    "withdrawn": (
        [
            ("del", "198.51.100.51", None),
            ("add", "198.51.100.50", 1),
            ("add", "198.51.100.50", 2),
            ("del", "198.51.100.50", None),
        ],
        ("198.51.100.50/32", "WITHDRAW", ()),
    ),
    # withdraw, then announce with attributes whose bucket was opened first
    "announced": (
        [("add", "198.51.100.52", 9), ("del", "198.51.100.50", None), ("add", "198.51.100.50", 9)],
        ("198.51.100.50/32", "ANNOUNCE", (9,)),
    ),
    # A1 then A2, A2's bucket opened first
    "new attributes": (
        [("add", "198.51.100.53", 2), ("add", "198.51.100.50", 1), ("add", "198.51.100.50", 2)],
        ("198.51.100.50/32", "ANNOUNCE", (2,)),
    ),
}


def play(patched: bool, steps: list[tuple[str, str, int | None]]) -> list[Any]:
    rib = rib_class(patched)(None, [(AFI.ipv4, SAFI.unicast)])
    for op, prefix, community in steps:
        if op == "add":
            rib.add_to_rib(change(prefix, community, Action.ANNOUNCE))
        else:
            rib.del_from_rib(change(prefix, community, Action.ANNOUNCE))
    return [entry for entry in sent(rib) if entry[0] == "198.51.100.50/32"]


@pytest.mark.parametrize("case", sorted(SEQUENCES))
def test_one_change_per_prefix_the_newest(case: str) -> None:
    steps, newest = SEQUENCES[case]
    assert play(True, steps) == [newest]


@pytest.mark.parametrize("case", sorted(SEQUENCES))
def test_unpatched_exabgp_sends_the_prefix_twice_the_newest_not_last(case: str) -> None:
    """Pins why the fix exists: when this fails, ExaBGP itself got fixed."""
    steps, newest = SEQUENCES[case]
    sent_changes = play(False, steps)
    assert len(sent_changes) == 2 and sent_changes[-1] != newest, sent_changes


def test_an_exabgp_without_the_method_is_left_alone() -> None:
    assert patch_outgoing_rib(type("Other", (), {})) is False
