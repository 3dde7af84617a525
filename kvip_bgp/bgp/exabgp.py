"""ExaBGP's ``server``, with one fix to its outgoing RIB: what kvip-bgp runs as ExaBGP.

ExaBGP 5.0.15 queues the changes it has not sent yet in buckets per attribute set, sent
in the order the buckets were created within one update cycle, and a new change for a
prefix that is already queued removes the older one from its bucket only when the new
one is a withdrawal. So within one cycle a prefix can sit in two buckets, and the older
change may go out last: announce P (A1), announce P (A2), withdraw P leaves P at the
peer; withdraw P, announce P can leave it withdrawn; A1 then A2 can leave A1. The fix
keeps one queued change per prefix, the newest, as the API's order says.
``tests/test_exabgp_rib.py`` reproduces all three against unpatched ExaBGP.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["main", "patch_outgoing_rib"]


def patch_outgoing_rib(rib_class: Any) -> bool:
    """Make ``_update_rib`` drop the prefix's older queued change first; False when the
    class is not shaped as the fix expects (another ExaBGP version): left alone."""
    original = getattr(rib_class, "_update_rib", None)
    if original is None or getattr(original, "_kvip_bgp_fixed", False):
        return original is not None

    def _update_rib(self: Any, change: Any) -> Any:
        # Each queued prefix sits in the bucket of its newest change (this keeps it so),
        # so the older one is found in O(1), whatever the number of attribute sets.
        index = change.index()
        previous = self._new_nlri.get(index)
        if previous is not None:
            family = change.nlri.family().afi_safi()
            bucket = self._new_attr_af_nlri.get(previous.attributes.index(), {})
            bucket.get(family, {}).pop(index, None)
        return original(self, change)

    _update_rib._kvip_bgp_fixed = True  # type: ignore[attr-defined]
    rib_class._update_rib = _update_rib
    return True


def main() -> None:
    from exabgp.application.main import main as exabgp_main
    from exabgp.rib.outgoing import OutgoingRIB

    rib = OutgoingRIB(None, [])
    if not (
        isinstance(getattr(rib, "_new_attr_af_nlri", None), dict)
        and patch_outgoing_rib(OutgoingRIB)
    ):
        print(
            "kvip-bgp: ExaBGP's outgoing RIB is not the 5.0 one; running it unpatched",
            file=sys.stderr,
        )
    sys.argv[0] = "exabgp"
    exabgp_main()


if __name__ == "__main__":
    main()
