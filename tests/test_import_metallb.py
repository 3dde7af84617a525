"""``kvip-bgp import metallb`` on MetalLB's own examples (tests/fixtures/metallb/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kvip_bgp import cli
from kvip_bgp.configfile import metallb
from kvip_bgp.configfile.load import parse
from kvip_bgp.configfile.metallb_peers import duration

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "metallb"
POOL = FIXTURES / "ipaddresspool_simple.yaml"
EMPTY_ADVERTISEMENT = {
    "apiVersion": "metallb.io/v1beta1",
    "kind": "BGPAdvertisement",
    "metadata": {"name": "empty", "namespace": "metallb-system"},
}
PEER = FIXTURES / "bgppeer_simple.yaml"


def convert(*names: str, router_id: str | None = None) -> metallb.Conversion:
    return metallb.convert(metallb.read([FIXTURES / n for n in names]), router_id)


def lost_fields(conversion: metallb.Conversion) -> list[str]:
    return [item.split(": ", 1)[0] for item in conversion.lost]


def test_the_simplest_bgp_setup_converts_completely_and_passes_check_config() -> None:
    done = convert("simple_pool_adv_bgp.yaml", "bgppeer_simple.yaml", router_id="192.0.2.1")
    assert done.lost == []
    assert done.config == {
        "bgp": {
            "asn": 64512,
            "router_id": "192.0.2.1",
            "graceful_restart": 0,  # MetalLB's default: off
            "peers": [{"address": "172.30.0.3", "asn": 64512}],
        },
        "vips": {
            "allowed": [
                "192.168.10.0/24",
                "192.168.9.0/29",  # the smallest CIDR around 192.168.9.1-192.168.9.5
                "fc00:f853:ccd:e799::/124",
            ]
        },
        "ipam": {
            "pools": [
                {
                    "name": "example",
                    "addresses": [
                        "192.168.10.0/24",
                        "192.168.9.1-192.168.9.5",
                        "fc00:f853:0ccd:e799::/124",
                    ],
                }
            ]
        },
    }
    parse(done.config, environ={})  # what check-config runs; raises on any problem


def test_without_a_router_id_it_says_so() -> None:
    done = convert("simple_pool_adv_bgp.yaml", "bgppeer_simple.yaml")
    assert lost_fields(done) == ["bgp.router_id"]


@pytest.mark.parametrize(
    ("name", "lost", "config"),
    [
        ("bgppeer_with_vrf.yaml", ["BGPPeer/peer.spec.vrf"], {}),
        ("bgppeer_with_session_options.yaml", ["BGPPeer/peer.spec.connectTime"], {}),
        (
            "bgppeer_withsecret.yaml",
            [
                "BGPPeer/peer-with-secret.spec.keepaliveTime",
                "BGPPeer/peer-with-secret.spec.passwordSecret",
            ],
            {
                "bgp.hold_time": 540,
                "bgp.peers[0].password_file": "/etc/kvip-bgp/secrets/peer-with-secret",
            },
        ),
        (
            "bgppeer_with_bfdprofile.yaml",
            ["BGPPeer/peer.spec.bfdProfile"],  # needs local_address in kvip-bgp
            {"bgp.peers[0].bfd": {"min_rx": 380, "min_tx": 270}},
        ),
        (
            "docs_peer_node_selectors.yaml",
            ["BGPPeer/example.spec.nodeSelectors"],
            {"bgp.peers[0].port": 180},
        ),
        (
            "docs_peer_source_address.yaml",
            [],
            {
                "bgp.peers[0].local_address": "172.30.0.2",
                "bgp.peers[0].node_selector": {"kubernetes.io/hostname": "node-1"},
            },
        ),
        (
            "bgpadvertisement_community_alias.yaml",
            ["BGPAdvertisement/advertisement.spec.ipAddressPools"],  # not the pool given
            {"advertise": {"communities": ["65535:65282"], "local_preference": 150}},
        ),
        (
            "bgpadvertisement_communities_localpref.yaml",
            ["BGPAdvertisement/advertisement.spec.ipAddressPools"],
            {"advertise": {"communities": ["65535:65282"], "local_preference": 150}},
        ),
        (
            "bgpadv_selectspool_by_label.yaml",
            ["BGPAdvertisement/advertisement.spec.ipAddressPoolSelectors"],
            {},
        ),
        (
            "bgpadv_selectspool_by_list.yaml",
            [
                "BGPAdvertisement/advertisement.spec.ipAddressPools",
                "BGPAdvertisement/advertisement.spec.peers",
            ],
            {},
        ),
        (
            "bgpadvertisement_with_node_selector.yaml",
            [
                "BGPAdvertisement/advertisement.spec.ipAddressPools",
                "BGPAdvertisement/advertisement.spec.nodeSelectors",
            ],
            {},
        ),
        (
            "docs_aggregation.yaml",  # its own pool; the /24 aggregate cannot be had
            ["BGPAdvertisement/external.spec.aggregationLength"],
            {"advertise": {"communities": ["65535:65282"], "local_preference": 100}},
        ),
        # L2 only: MetalLB announced nothing over BGP, kvip-bgp will: both are reported.
        ("l2adv_selects_pools_by_list.yaml", ["L2Advertisement/example", "BGPAdvertisement"], {}),
        ("l2adv_with_node_selector.yaml", ["L2Advertisement/example", "BGPAdvertisement"], {}),
        ("simple_pool_adv_l2.yaml", ["L2Advertisement/empty", "BGPAdvertisement"], {}),
    ],
)
def test_each_example_field_by_field(name: str, lost: list[str], config: dict[str, Any]) -> None:
    """Each example with a pool and a peer of its own kind filled in, so the report
    lists only what this example adds."""
    docs = yaml.safe_load_all((FIXTURES / name).read_text(encoding="utf-8"))
    kinds = {d["kind"] for d in docs if d}
    inputs = [name]
    if "IPAddressPool" not in kinds:
        inputs.append(POOL.name)
    if "BGPPeer" not in kinds:
        inputs.append(PEER.name)
    objects = metallb.read([FIXTURES / n for n in inputs])
    if "BGPAdvertisement" not in kinds and not name.startswith(("l2", "simple")):
        objects.append(EMPTY_ADVERTISEMENT)  # as simple_pool_adv_bgp.yaml's
    done = metallb.convert(objects, "192.0.2.1")
    assert sorted(lost_fields(done)) == sorted(lost), done.lost
    for path, expected in config.items():
        node: Any = done.config
        for part in path.replace("[0]", ".0").split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        assert node == expected, path


def test_a_pool_with_selectors() -> None:
    done = convert("ipaddresspool_with_selector.yaml", "bgppeer_simple.yaml", router_id="192.0.2.1")
    assert sorted(lost_fields(done)) == [
        "BGPAdvertisement",  # none given: MetalLB would not announce at all
        "IPAddressPool/ippool-ns-service-alloc-sample.spec.serviceAllocation.namespaceSelectors",
        "IPAddressPool/ippool-ns-service-alloc-sample.spec.serviceAllocation.serviceSelectors[0].matchExpressions",
    ]
    assert done.config["ipam"]["pools"] == [
        {
            "name": "ippool-ns-service-alloc-sample",
            "addresses": ["192.168.20.0/24"],
            "avoid_buggy_ips": True,
            "priority": 50,
            "namespaces": ["namespace-a", "namespace-b"],
        }
    ]


# Fields each kind carries over (read from MetalLB's API types, not from the importer).
CARRIED = {
    "IPAddressPool": {"addresses", "autoAssign", "avoidBuggyIPs", "serviceAllocation"},
    "BGPPeer": {
        "myASN",
        "peerASN",
        "peerAddress",
        "peerPort",
        "sourceAddress",
        "holdTime",
        "ebgpMultiHop",
        "enableGracefulRestart",
        "bfdProfile",
        "nodeSelectors",
        "routerID",
    },
    "BGPAdvertisement": {
        "communities",
        "localPref",
        "ipAddressPools",
        "aggregationLength",
        "aggregationLengthV6",
    },
    "BFDProfile": {"receiveInterval", "transmitInterval", "detectMultiplier"},
    "Community": {"communities"},
}


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.yaml")), ids=lambda p: p.name)
def test_no_field_is_dropped_silently(path: Path) -> None:
    """Every field of every example is carried over or named in the report."""
    done = metallb.convert(metallb.read([path]), "192.0.2.1")
    for obj in metallb.read([path]):
        kind, name = obj["kind"], obj["metadata"]["name"]
        for field in obj.get("spec") or {}:
            named = any(item.startswith(f"{kind}/{name}") for item in done.lost)
            assert field in CARRIED.get(kind, set()) or named, f"{kind}/{name}.spec.{field}"


def test_durations() -> None:
    assert duration("9m0s") == 540
    assert duration("1h2m3s") == 3723
    assert duration("250ms") == 0.25
    with pytest.raises(ValueError):
        duration("9 minutes")


def test_the_command_prints_config_and_reports_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["import", "metallb", str(POOL), str(FIXTURES / "bgppeer_with_vrf.yaml")]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    config = yaml.safe_load(out)
    assert config["bgp"]["peers"] == [{"address": "172.30.0.3", "asn": 64512}]
    assert "# Not carried over" in out  # travels with the file, as comments
    assert "not carried over: BGPPeer/peer.spec.vrf: kvip-bgp peers in the default VRF only" in err
    assert "not carried over: BGPAdvertisement: none among the inputs" in err


def test_kubectl_get_output_is_read(tmp_path: Path) -> None:
    """``kubectl get ... -o yaml`` prints a List whose items carry status and managed
    fields: only the items' specs matter."""
    items = [
        doc
        for name in ("ipaddresspool_simple.yaml", "bgppeer_simple.yaml", "simple_pool_adv_bgp.yaml")
        for doc in yaml.safe_load_all((FIXTURES / name).read_text(encoding="utf-8"))
        if doc
    ]
    for item in items:
        item["metadata"]["managedFields"] = [{"manager": "kubectl"}]
        item["status"] = {}
    listed = tmp_path / "metallb.yaml"
    listed.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    done = metallb.convert(metallb.read([listed]), "192.0.2.1")
    # Two of the examples define the same pool: one pool, and the repetition is named.
    assert lost_fields(done) == ["IPAddressPool/example"]
    assert done.config["bgp"]["peers"] == [{"address": "172.30.0.3", "asn": 64512}]
    assert [p["name"] for p in done.config["ipam"]["pools"]] == ["example"]
    parse(done.config, environ={})
