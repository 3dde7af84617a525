"""Live reload at scale: N Services, then a second ToR added live and a communities change.

Run as root (network namespaces, FRR), serialised with other labs:
    python -m bench.reload 10000
Prints how long the added ToR took to hold every route, how long the new communities
took to reach both ToRs, and whether the first ToR's session stayed the same one.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_reload_lab import (
    PEER1,
    PEER2,
    Lab2,
    second_tor,
    session,
    start_tor2,
)

from kvip_bgp.testing.frr import FrrNeighbor
from kvip_bgp.testing.netlab import Lab
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.scenario import NODE_ASN, Scenario


def main(count: int) -> int:
    with Scenario(
        prefix="kvrs-", topology=second_tor, tor_neighbors=[FrrNeighbor(Lab.NODE_V4, NODE_ASN)]
    ) as scenario:
        assert scenario.frr is not None
        tor1 = scenario.frr
        tor2 = start_tor2(scenario)
        scenario.api.put(node())
        for index in range(count):
            vip = str(ipaddress.ip_address("10.50.0.1") + index)
            scenario.api.put(endpoint_slice(f"s{index}", [NODE_NAME]))
            scenario.api.put(service(f"s{index}", vip))
        lab = Lab2(scenario, tor2)
        lab.config["vips"]["allowed"] = ["10.50.0.0/16"]
        lab.config.pop("static")
        started = time.monotonic()
        scenario.start_daemon(lab.config)
        tor1.wait_routes(lambda r: len(r) == count, 300, what="every route")
        print(
            f"cold start: {count} routes at the first ToR after {time.monotonic() - started:.1f} s"
        )
        time.sleep(3)
        before = session(tor1, Lab.NODE_V4)
        started = time.monotonic()
        lab.write(lab.edited(bgp__peers=[PEER1, PEER2]))
        tor2.wait_routes(lambda r: len(r) == count, 300, what="every route at tor2")
        print(f"second ToR added live: every route there after {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        lab.write(lab.edited(advertise={"communities": ["64512:777"]}))
        for frr in (tor1, tor2):
            frr.wait_routes(
                lambda r: (
                    len(r) == count
                    and all(route.communities == ("64512:777",) for route in r.values())
                ),
                300,
                what="the new communities",
            )
        print(f"communities changed: at both ToRs after {time.monotonic() - started:.1f} s")
        same = session(tor1, Lab.NODE_V4)[0] == before[0]
        print(f"first ToR's session the same one throughout: {same}")
        return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
