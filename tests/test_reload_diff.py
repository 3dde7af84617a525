"""The reload diff: which keys changed, which need a restart, which sessions it touches."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from kvip_bgp.configfile.load import parse
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.reload import (
    RELOAD_KEYS,
    RESTART_KEYS,
    config_diff,
    peer_changes,
    refusal_message,
)

BASE: dict[str, Any] = {
    "node_name": "worker-1",
    "bgp": {
        "asn": 64512,
        "router_id": "192.0.2.1",
        "peers": [
            {"address": "192.0.2.2", "asn": 64500},
            {"address": "192.0.2.3", "asn": 64500},
        ],
    },
    "vips": {"allowed": ["198.51.100.0/24"]},
}


def config(**edits: Any) -> Config:
    """BASE with dotted-path edits (``bgp.asn=...`` is written ``bgp__asn=...``)."""
    document = copy.deepcopy(BASE)
    for dotted, value in edits.items():
        node = document
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return parse(document, environ={})


@pytest.mark.parametrize(
    ("edits", "restart", "changed"),
    [
        ({}, (), ()),
        ({"bgp__asn": 64513}, ("bgp.asn",), ()),
        ({"bgp__router_id": "192.0.2.9"}, ("bgp.router_id",), ()),
        ({"node_name": "worker-2"}, ("node_name",), ()),
        ({"vips__interface": "eth0"}, ("vips.interface",), ()),
        ({"vips__bind": "local-route"}, ("vips.bind",), ()),
        ({"http": {"listen": "127.0.0.1:1"}}, ("http.listen",), ()),
        ({"kubernetes": {"kubeconfig": "/k"}}, ("kubernetes.kubeconfig",), ()),
        ({"log": {"format": "console"}}, ("log.format",), ()),
        ({"log": {"level": "debug"}}, (), ("log.level",)),
        ({"advertise": {"communities": ["64512:7"]}}, (), ("advertise",)),
        ({"vips__allowed": ["198.51.100.0/25"]}, (), ("vips.allowed",)),
        (
            {"vips__allowed": [{"cidr": "198.51.100.0/24", "namespaces": ["a"]}]},
            (),
            ("vips.allowed",),
        ),
        ({"kubernetes": {"load_balancer_class": "x/y"}}, (), ("kubernetes.load_balancer_class",)),
        (
            {"kubernetes": {"withdraw_when_cordoned": True}},
            (),
            ("kubernetes.withdraw_when_cordoned",),
        ),
        ({"static": [{"address": "198.51.100.9"}]}, (), ("static",)),
        ({"bgp__hold_time": 9}, (), ("bgp.hold_time",)),
        ({"bgp__peers": [{"address": "192.0.2.2", "asn": 64500}]}, (), ("bgp.peers",)),
        (
            {"bgp__asn": 1, "output": "kernel-table", "advertise": {"med": 5}},
            ("bgp.asn", "output"),
            ("advertise",),
        ),
    ],
)
def test_config_diff(
    edits: dict[str, Any], restart: tuple[str, ...], changed: tuple[str, ...]
) -> None:
    diff = config_diff(config(), config(**edits))
    assert diff.restart_needed == restart
    assert diff.changed == changed
    assert diff.empty == (not restart and not changed)


def test_the_default_router_id_follows_the_first_peer() -> None:
    """Without bgp.router_id, reordering the peers changes it: that needs a restart."""
    document = copy.deepcopy(BASE)
    del document["bgp"]["router_id"]
    document["bgp"]["peers"] = [
        {"address": "192.0.2.2", "asn": 64500, "local_address": "192.0.2.1"},
        {"address": "192.0.2.3", "asn": 64500, "local_address": "192.0.2.10"},
    ]
    old = parse(document, environ={})
    document["bgp"]["peers"].reverse()
    new = parse(document, environ={})
    assert config_diff(old, new).restart_needed == ("bgp.router_id",)


def _leaves(value: object, prefix: str) -> set[str]:
    if dataclasses.is_dataclass(value) and prefix.count(".") < 1 and prefix != "advertise":
        out: set[str] = set()
        for f in dataclasses.fields(value):
            path = f"{prefix}.{f.name}" if prefix else f.name
            out |= _leaves(getattr(value, f.name), path)
        return out
    return {prefix}


def test_every_config_key_is_either_reloadable_or_restart_only() -> None:
    """A new Config field must be classified, or a reload would silently ignore it."""
    leaves = _leaves(config(), "") - {"source"}
    covered = set(RESTART_KEYS) | set(RELOAD_KEYS)
    assert not set(RESTART_KEYS) & set(RELOAD_KEYS)
    # Prefix keys (kernel_table, bgp.peers...) cover everything below them.
    uncovered = {
        leaf for leaf in leaves if not any(leaf == k or leaf.startswith(k + ".") for k in covered)
    }
    assert not uncovered, uncovered


PEER_A = {"address": "192.0.2.2", "asn": 64500}
PEER_B = {"address": "192.0.2.3", "asn": 64500}


@pytest.mark.parametrize(
    ("old", "new", "added", "removed", "changed"),
    [
        ([PEER_A], [PEER_A], (), (), ()),
        ([PEER_A], [PEER_A, PEER_B], ("192.0.2.3",), (), ()),
        ([PEER_A, PEER_B], [PEER_B], (), ("192.0.2.2",), ()),
        ([PEER_A, PEER_B], [PEER_B, PEER_A], (), (), ()),
        ([PEER_A, PEER_B], [{**PEER_A, "port": 1179}, PEER_B], (), (), ("192.0.2.2",)),
        ([PEER_A], [{**PEER_A, "ttl": 3}], (), (), ("192.0.2.2",)),
        ([PEER_A], [{**PEER_A, "asn": 64501}], (), (), ("192.0.2.2",)),
        (
            [{**PEER_A, "local_address": "192.0.2.1"}],
            [
                {
                    **PEER_A,
                    "local_address": "192.0.2.1",
                    "bfd": {"min_rx": 300, "min_tx": 300, "multiplier": 3},
                }
            ],
            (),
            (),
            ("192.0.2.2",),
        ),
        # Where a selector applies decides presence, not the session's settings.
        ([PEER_A], [{**PEER_A, "node_selector": {"rack": "r1"}}], (), (), ()),
    ],
)
def test_peer_changes(
    old: list[dict[str, Any]],
    new: list[dict[str, Any]],
    added: tuple[str, ...],
    removed: tuple[str, ...],
    changed: tuple[str, ...],
) -> None:
    result = peer_changes(config(bgp__peers=old).bgp.peers, config(bgp__peers=new).bgp.peers)
    assert tuple(str(p.address) for p in result.added) == added
    assert tuple(str(p.address) for p in result.removed) == removed
    assert tuple(str(p.address) for p in result.changed) == changed
    assert bool(result) == bool(added or removed or changed)


def test_a_password_change_is_a_changed_session(tmp_path: Any) -> None:
    secret = tmp_path / "md5"
    secret.write_text("one\n")
    old = config(bgp__peers=[{**PEER_A, "password_file": str(secret)}, PEER_B])
    secret.write_text("two\n")
    new = config(bgp__peers=[{**PEER_A, "password_file": str(secret)}, PEER_B])
    assert config_diff(old, new).changed == ("bgp.peers",)
    assert [str(p.address) for p in peer_changes(old.bgp.peers, new.bgp.peers).changed] == [
        "192.0.2.2"
    ]


def test_refusal_names_every_restart_key() -> None:
    diff = config_diff(config(), config(bgp__asn=1, node_name="x"))
    assert refusal_message(diff).endswith(": node_name, bgp.asn")
