"""Hostile and broken input, property-based: nothing raises, nothing unsafe is emitted.

Hypothesis feeds the config loader, the object parsers and the policy with JSON of random
shape (missing fields, wrong types, huge numbers, unicode, control characters), and every
ExaBGP line that could follow from what the policy decides is checked against the
independent grammar in ``tests/exabgp_grammar.py``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import types
from pathlib import Path
from typing import Any, Final

import pytest
from exabgp_grammar import GrammarError, validate_command, validate_config
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kvip_bgp.bgp.api import parse_api_line
from kvip_bgp.bgp.commands import (
    NextHopPolicy,
    announce_commands,
    end_of_rib_commands,
    withdraw_commands,
)
from kvip_bgp.bgp.config import render_config
from kvip_bgp.configfile import load as config_load
from kvip_bgp.configfile.reader import ConfigError
from kvip_bgp.domain import config as config_module
from kvip_bgp.domain.annotations import (
    AnnotationError,
    parse_service_attributes,
    parse_uint,
    parse_vip_list,
)
from kvip_bgp.domain.model import (
    Advertisement,
    Community,
    IPAddress,
    LargeCommunity,
    RouteAttributes,
    host_prefix,
    host_prefix_text,
    parse_ip,
)
from kvip_bgp.domain.objects import (
    NodeInfo,
    ServiceInfo,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)
from kvip_bgp.domain.policy import ServiceDecision, address_refusal, advertisements, decide
from kvip_bgp.domain.reasons import POLICY_REASONS, Refusal
from kvip_bgp.domain.sources import SourceKind, VipSource

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SOCKET = Path("/run/kvip-bgp/exabgp-api.sock")
PYTHON = "/usr/bin/python3"

# ------------------------------------------------------------------------- strategies

HOSTILE_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\n",
        "198.51.100.5\nannounce route 203.0.113.66/32 next-hop self",
        "64512:1]\nannounce route 0.0.0.0/0 next-hop self",
        "64512:1 ] nlri 203.0.113.0/24",
        "[64512:1]",
        "64512:1;",
        "# 64512:1",
        "198.51.100.0/24",
        "0.0.0.0",
        "::",
        "224.0.0.5",
        "169.254.1.1",
        "fe80::1%lo",
        "2001:db8:100::1%eth0",
        "127.0.0.1",
        "192.0.2.1",
        "198.51.100.5,198.51.100.5",
        ",198.51.100.5",
        "\uff11\uff19\uff18.\uff15\uff11.\uff11\uff10\uff10.\uff15",
        "\uff16\uff14\uff15\uff11\uff12:\uff11",
        "\uff15\uff10",
        "99999999999999999999999",
        "-1",
        "4294967296",
        "no-export",
        "64512:1:2",
        "x" * 5000,
        "198.51.100.5" + "\u202e",
        "\x00",
        "true",
    ]
)
TEXT = st.one_of(
    HOSTILE_TEXT, st.text(max_size=40), st.text(alphabet="0123456789:,. []", max_size=30)
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=12,
)


def _maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes anything at all, sometimes missing."""
    return st.one_of(value, value, value, JSON)


VIPS = st.sampled_from(
    [
        "198.51.100.5",
        "198.51.100.6",
        "198.51.100.200",
        "2001:db8:100::5",
        "203.0.113.1",
        "203.0.113.2",
        "192.0.2.1",
        "192.0.2.2",
        "0.0.0.0",
        "224.0.0.1",
        "169.254.0.1",
        "fe80::1",
        "127.0.0.1",
        "::1",
        "2001:db8::1",
    ]
)
VIP_LIST = st.lists(VIPS, min_size=1, max_size=4).map(",".join)
COMMUNITIES = st.lists(
    st.one_of(
        st.builds(lambda a, b: f"{a}:{b}", st.integers(0, 70000), st.integers(0, 70000)),
        st.sampled_from(["no-export", "NO-ADVERTISE", "blackhole", "no-export-subconfed"]),
    ),
    min_size=1,
    max_size=5,
).map(",".join)
LARGE = st.lists(
    st.builds(
        lambda a, b, c: f"{a}:{b}:{c}",
        st.integers(0, 2**32 + 5),
        st.integers(0, 2**32),
        st.integers(0, 2**32),
    ),
    min_size=1,
    max_size=3,
).map(",".join)
NUMBER_TEXT = st.one_of(st.integers(-5, 2**32 + 5).map(str), TEXT)

ANNOTATIONS = st.fixed_dictionaries(
    {},
    optional={
        "kvip-bgp.io/loadbalancerIPs": st.one_of(VIP_LIST, TEXT),
        "kube-vip.io/loadbalancerIPs": st.one_of(VIP_LIST, TEXT),
        "kvip-bgp.io/ignore": st.one_of(st.sampled_from(["true", "TRUE", " true ", "false"]), TEXT),
        "kube-vip.io/ignore": TEXT,
        "kvip-bgp.io/communities": st.one_of(COMMUNITIES, TEXT),
        "kvip-bgp.io/large-communities": st.one_of(LARGE, TEXT),
        "kvip-bgp.io/local-preference": NUMBER_TEXT,
        "kvip-bgp.io/med": NUMBER_TEXT,
        "kvip-bgp.io/as-path-prepend": st.one_of(st.integers(-1, 12).map(str), TEXT),
        "other.io/x": TEXT,
    },
)

SERVICE = st.fixed_dictionaries(
    {},
    optional={
        "kind": _maybe(st.just("Service")),
        "metadata": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": _maybe(st.sampled_from(["web", "dns", "a", "b"])),
                    "namespace": _maybe(st.sampled_from(["default", "team-a", "team-b"])),
                    "uid": _maybe(st.text(max_size=8)),
                    "annotations": _maybe(ANNOTATIONS),
                    "resourceVersion": _maybe(st.integers(0, 10**9).map(str)),
                },
            )
        ),
        "spec": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "type": _maybe(st.sampled_from(["LoadBalancer", "ClusterIP", "NodePort"])),
                    "loadBalancerClass": _maybe(
                        st.sampled_from(["kvip-bgp.io/bgp", "example.com/other"])
                    ),
                    "loadBalancerIP": _maybe(VIPS),
                    "externalTrafficPolicy": _maybe(st.sampled_from(["Local", "Cluster"])),
                },
            )
        ),
        "status": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "loadBalancer": _maybe(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "ingress": _maybe(
                                    st.lists(
                                        st.fixed_dictionaries({"ip": _maybe(VIPS)}), max_size=3
                                    )
                                )
                            },
                        )
                    )
                },
            )
        ),
    },
)
NODE_NAMES = st.sampled_from(["node-1", "node-2", "", "NODE-1"])
ENDPOINT = st.fixed_dictionaries(
    {},
    optional={
        "nodeName": _maybe(NODE_NAMES),
        "conditions": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "ready": _maybe(st.booleans()),
                    "serving": _maybe(st.booleans()),
                    "terminating": _maybe(st.booleans()),
                },
            )
        ),
        "addresses": JSON,
    },
)
SLICE = st.fixed_dictionaries(
    {},
    optional={
        "metadata": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": _maybe(st.text(max_size=6)),
                    "namespace": _maybe(st.sampled_from(["default", "team-a"])),
                    "labels": _maybe(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "kubernetes.io/service-name": _maybe(st.sampled_from(["web", "a"]))
                            },
                        )
                    ),
                },
            )
        ),
        "endpoints": _maybe(st.lists(ENDPOINT, max_size=5)),
    },
)
NODE = st.fixed_dictionaries(
    {},
    optional={
        "metadata": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": _maybe(NODE_NAMES),
                    "labels": _maybe(
                        st.dictionaries(
                            st.sampled_from(
                                [
                                    "node.kubernetes.io/exclude-from-external-load-balancers",
                                    "rack",
                                ]
                            ),
                            TEXT,
                            max_size=2,
                        )
                    ),
                },
            )
        ),
        "spec": _maybe(st.fixed_dictionaries({}, optional={"unschedulable": JSON})),
        "status": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "addresses": _maybe(
                        st.lists(
                            st.fixed_dictionaries(
                                {"type": st.just("InternalIP"), "address": _maybe(VIPS)}
                            ),
                            max_size=3,
                        )
                    ),
                    "conditions": JSON,
                },
            )
        ),
    },
)


def _policy_config(**kubernetes: Any) -> config_module.Config:
    """Peers of every kind, so the commands cover every next-hop and session type."""
    return config_load.parse(
        {
            "node_name": "node-1",
            "bgp": {
                "asn": 64512,
                "peers": [
                    {"address": "192.0.2.2", "asn": 64500, "local_address": "192.0.2.1"},
                    {
                        "address": "192.0.2.3",
                        "asn": 64512,
                        "local_address": "192.0.2.1",
                        "next_hop_v6": "2001:db8::1",
                    },
                    {"address": "2001:db8::2", "asn": 64501, "local_address": "2001:db8::1"},
                ],
            },
            "advertise": {"communities": ["64512:100"], "large_communities": ["64512:0:1"]},
            "vips": {
                "allowed": [
                    "198.51.100.0/25",
                    {"cidr": "198.51.100.128/25", "namespaces": ["team-a"]},
                    "2001:db8:100::/64",
                    "192.0.2.0/24",
                    "2001:db8::/64",
                ]
            },
            "kubernetes": {"enabled": True, **kubernetes},
        },
        environ={},
    )


CONFIGS = [
    _policy_config(),
    _policy_config(legacy_class_handling=False, withdraw_when_cordoned=True),
]


def _check_commands(adverts: list[Advertisement], config: config_module.Config) -> None:
    next_hops = NextHopPolicy(config.bgp.peers)
    for command in announce_commands(adverts, config.bgp.asn, next_hops):
        validate_command(command.text)
    for command in withdraw_commands([a.prefix for a in adverts], next_hops):
        validate_command(command.text)


# ---------------------------------------------------------------------- parsers, policy


@SETTINGS
@given(obj=st.one_of(SERVICE, JSON))
def test_parse_service_is_total(obj: Any) -> None:
    if isinstance(obj, dict):
        parse_service(obj)


@SETTINGS
@given(obj=st.one_of(SLICE, JSON))
def test_parse_endpoint_slice_is_total(obj: Any) -> None:
    if isinstance(obj, dict):
        parse_endpoint_slice(obj)


def _read_only(value: Any) -> Any:
    """``value`` with every dict in it a read-only mapping (not a ``dict``)."""
    if isinstance(value, dict):
        return types.MappingProxyType({k: _read_only(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_read_only(v) for v in value]
    return value


@SETTINGS
@given(service=SERVICE, slice_=SLICE)
def test_parsers_read_any_mapping_as_they_read_a_dict(service: Any, slice_: Any) -> None:
    """The parsers check for dicts first (the fast case, JSON's); other mappings count too."""
    assert parse_service(_read_only(service)) == parse_service(service)
    assert parse_endpoint_slice(_read_only(slice_)) == parse_endpoint_slice(slice_)


@SETTINGS
@given(obj=st.one_of(NODE, JSON))
def test_parse_node_is_total(obj: Any) -> None:
    if isinstance(obj, dict):
        parse_node(obj)


@SETTINGS
@given(name=TEXT, value=st.one_of(TEXT, VIP_LIST, COMMUNITIES, LARGE, NUMBER_TEXT))
def test_annotation_parsers_raise_only_annotation_errors(name: str, value: str) -> None:
    for parse in (parse_vip_list, parse_uint):
        try:
            result = parse(name, value)
        except AnnotationError:
            continue
        if parse is parse_uint:
            assert isinstance(result, int) and 0 <= result <= 2**32 - 1
            assert value.strip().isascii()
        else:
            assert isinstance(result, tuple)
            for vip in result:
                assert str(vip).isascii() and "%" not in str(vip)
    for parse_one in (Community.parse, LargeCommunity.parse):
        with contextlib.suppress(ValueError):
            parse_one(value)


# What the cluster thread decides on: a few Services, slices, maybe this Node, a config.
CLUSTER_INPUTS: dict[str, st.SearchStrategy[Any]] = {
    "services": st.lists(SERVICE, min_size=1, max_size=4),
    "slices": st.lists(SLICE, max_size=4),
    "node": st.one_of(st.none(), NODE),
    "which": st.sampled_from([0, 1]),
}


def _decide_all(
    services: list[dict[str, Any]],
    slices: list[dict[str, Any]],
    node_info: NodeInfo | None,
    config: config_module.Config,
) -> list[tuple[ServiceInfo, ServiceDecision]]:
    """Parse the generated objects and decide every Service, as the cluster thread does."""
    parsed_slices = [parse_endpoint_slice(s) for s in slices]
    decided = []
    for raw in services:
        svc = parse_service(raw)
        endpoints = [ep for s in parsed_slices if s.service == svc.key for ep in s.endpoints]
        decided.append((svc, decide(svc, endpoints, node_info, config)))
    return decided


@SETTINGS
@given(**CLUSTER_INPUTS)
def test_decide_never_raises_and_emits_only_valid_commands(
    services: list[dict[str, Any]],
    slices: list[dict[str, Any]],
    node: dict[str, Any] | None,
    which: int,
) -> None:
    config = CONFIGS[which]
    node_info = None if node is None else parse_node(node)
    decided = _decide_all(services, slices, node_info, config)
    decisions = [decision for _svc, decision in decided]
    for svc, decision in decided:
        if decision.attributes is not None:
            parse_service_attributes(svc, config.advertise)  # consistent: no raise here
        for verdict in decision.verdicts:
            if verdict.announce:
                # The policy never lets a forbidden or foreign address through.
                assert address_refusal(verdict.vip, svc.key.namespace, config, node_info) is None
    merged, _conflicts = advertisements(decisions)
    adverts = list(merged.values())
    for advert in adverts:
        assert config.vips.admits(advert.vip, None) or any(
            r.admits(advert.vip, ns) for r in config.vips.allowed for ns in r.namespaces
        )
    _check_commands(adverts, config)


@SETTINGS
@given(**CLUSTER_INPUTS)
def test_every_reason_and_source_the_policy_gives_parses_back(
    services: list[dict[str, Any]],
    slices: list[dict[str, Any]],
    node: dict[str, Any] | None,
    which: int,
) -> None:
    config = CONFIGS[which]
    node_info = None if node is None else parse_node(node)
    decisions = [d for _svc, d in _decide_all(services, slices, node_info, config)]
    refusals = [d.reason for d in decisions] + [v.reason for d in decisions for v in d.verdicts]
    for refusal in refusals:
        if refusal is not None:
            assert refusal.reason in POLICY_REASONS
            assert Refusal.parse(refusal.wire) == refusal
    merged, _conflicts = advertisements(decisions)
    for advert in merged.values():
        for source in advert.sources:
            assert VipSource.parse(source).kind is SourceKind.SERVICE
            assert VipSource.parse(source).wire == source


@SETTINGS
@given(
    vips=st.lists(
        st.one_of(
            st.ip_addresses(v=4, network="198.51.100.0/24"),
            st.ip_addresses(v=6, network="2001:db8:100::/64"),
        ),
        min_size=1,
        max_size=30,
        unique=True,
    ),
    communities=st.lists(st.integers(0, 2**32 - 1).map(Community), max_size=4),
    large=st.lists(
        st.tuples(
            st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)
        ).map(lambda t: LargeCommunity(*t)),
        max_size=3,
    ),
    local_pref=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    med=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    prepend=st.integers(0, 10),
    which=st.sampled_from([0, 1]),
)
def test_every_attribute_combination_renders_valid_commands(
    vips: list[Any],
    communities: list[Community],
    large: list[LargeCommunity],
    local_pref: int | None,
    med: int | None,
    prepend: int,
    which: int,
) -> None:
    attributes = RouteAttributes(tuple(communities), tuple(large), local_pref, med, prepend)
    adverts = [Advertisement(vip, attributes, ("default/x",)) for vip in vips]
    _check_commands(adverts, CONFIGS[which])
    for peer in ("192.0.2.2", "2001:db8::2"):
        for command in end_of_rib_commands(peer):
            validate_command(command.text)


@SETTINGS
@given(line=st.one_of(TEXT, JSON.map(lambda v: __import__("json").dumps(v))))
def test_parse_api_line_is_total(line: str) -> None:
    parse_api_line(line, 1, 0)


# -------------------------------------------------------------------------------- config


def _valid_document(tmp: Path, password: str | None = None) -> dict[str, Any]:
    peer: dict[str, Any] = {"address": "192.0.2.2", "asn": 64500, "local_address": "192.0.2.1"}
    if password is not None:
        pw_file = tmp / "pw"
        pw_file.write_text(password, encoding="utf-8")
        peer["password_file"] = str(pw_file)
    return {
        "node_name": "node-1",
        "bgp": {"asn": 64512, "peers": [peer]},
        "vips": {"allowed": ["198.51.100.0/24"]},
        "kubernetes": {"enabled": True},
    }


CONFIG_PATHS = [
    ("node_name",),
    ("bgp",),
    ("bgp", "asn"),
    ("bgp", "router_id"),
    ("bgp", "hold_time"),
    ("bgp", "graceful_restart"),
    ("bgp", "peers"),
    ("bgp", "peers", 0),
    ("bgp", "peers", 0, "address"),
    ("bgp", "peers", 0, "asn"),
    ("bgp", "peers", 0, "port"),
    ("bgp", "peers", 0, "local_address"),
    ("bgp", "peers", 0, "password_file"),
    ("bgp", "peers", 0, "ttl"),
    ("bgp", "peers", 0, "node_selector"),
    ("bgp", "peers", 0, "next_hop_v6"),
    ("advertise",),
    ("advertise", "communities"),
    ("advertise", "large_communities"),
    ("advertise", "med"),
    ("advertise", "local_preference"),
    ("vips",),
    ("vips", "allowed"),
    ("vips", "allowed", 0),
    ("vips", "interface"),
    ("kubernetes",),
    ("kubernetes", "kubeconfig"),
    ("kubernetes", "load_balancer_class"),
    ("output",),
    ("kernel_table",),
    ("shutdown_timeout",),
    ("static",),
    ("http",),
    ("http", "listen"),
    ("log",),
    ("log", "level"),
    ("unknown",),
]


def _set(document: Any, path: tuple[Any, ...], value: Any) -> None:
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _parse_only_config_errors(document: Any) -> config_module.Config | None:
    try:
        return config_load.parse(document, environ={})
    except ConfigError as error:
        assert error.problems, "a ConfigError must name at least one problem"
        for problem in error.problems:
            assert ": " in problem
        return None


@SETTINGS
@given(document=JSON)
def test_config_parse_of_anything_raises_only_config_error(document: Any) -> None:
    _parse_only_config_errors(document)


@SETTINGS
@given(
    mutations=st.lists(
        st.tuples(
            st.sampled_from(CONFIG_PATHS),
            st.one_of(JSON, VIPS, st.sampled_from([0, -1, 2**32, 2**64, 1.5, True])),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_config_parse_of_mutated_config_raises_only_config_error(
    tmp_path_factory: pytest.TempPathFactory, mutations: list[tuple[tuple[Any, ...], Any]]
) -> None:
    document = _valid_document(tmp_path_factory.getbasetemp())
    for path, value in mutations:
        try:
            _set(document, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # a mutation earlier in the list replaced a parent
    config = _parse_only_config_errors(document)
    if config is not None:
        validate_config(render_config(config, SOCKET, python=PYTHON))


@SETTINGS
@given(
    password=st.text(min_size=1, max_size=90),
    ttl=st.integers(1, 255),
    port=st.integers(1, 65535),
    hold=st.sampled_from([0, 3, 9, 90, 65535]),
    gr=st.integers(0, 4095),
    peer_asn=st.sampled_from([64500, 64512, 4_200_000_000]),
)
def test_every_accepted_config_renders_a_valid_exabgp_config(
    tmp_path_factory: pytest.TempPathFactory,
    password: str,
    ttl: int,
    port: int,
    hold: int,
    gr: int,
    peer_asn: int,
) -> None:
    assume("\x00" not in password)
    tmp = tmp_path_factory.mktemp("pw")
    document = _valid_document(tmp, password)
    peer = document["bgp"]["peers"][0]
    peer.update({"ttl": ttl, "port": port, "asn": peer_asn})
    document["bgp"].update({"hold_time": hold, "graceful_restart": gr})
    config = _parse_only_config_errors(document)
    if config is None:
        return
    for show_secrets in (False, True):
        rendered = render_config(config, SOCKET, python=PYTHON, show_secrets=show_secrets)
        try:
            validate_config(rendered)
        except GrammarError as error:
            raise AssertionError(
                f"config.parse accepted password {password!r}, but the rendered ExaBGP "
                f"config is not valid: {error}"
            ) from None
        if not show_secrets:
            assert f'md5-password "{password.strip()}"' not in rendered
            assert 'md5-password "<redacted' in rendered


def test_password_file_path_with_nul_is_a_config_error(tmp_path: Path) -> None:
    """Found by the mutation property above: Path.read_text raises ValueError on NUL."""
    document = _valid_document(tmp_path)
    document["bgp"]["peers"][0]["password_file"] = "/etc/kvip\x00bgp.md5"
    _parse_only_config_errors(document)


@pytest.mark.parametrize(
    "password",
    ["it's-secret", "a'b'c", "x'", "\u00e9" * 41],
    ids=["quote", "two-quotes", "trailing-quote", "82-bytes-41-chars"],
)
def test_password_is_refused_or_renders_valid(tmp_path: Path, password: str) -> None:
    """ExaBGP's tokenizer treats ' as a quote even inside "...": the config breaks
    (``exabgp validate``: invalid syntax). TCP-MD5 keys are at most 80 *bytes*."""
    config = _parse_only_config_errors(_valid_document(tmp_path, password))
    if config is not None:
        validate_config(render_config(config, SOCKET, python=PYTHON, show_secrets=True))


# ------------------------------------------------------------------ the validator itself


VALID_COMMANDS = [
    "announce attributes next-hop self community [64512:100] nlri 198.51.100.1/32",
    "announce attributes next-hop self community [64512:100 64512:7] large-community "
    "[64512:1:2] local-preference 200 med 50 as-path [ 64512 64512 ] nlri "
    "198.51.100.1/32 198.51.100.2/32",
    "neighbor 192.0.2.3 announce attributes next-hop 2001:db8::1 nlri 2001:db8:100::1/128",
    "withdraw attributes next-hop self nlri 198.51.100.1/32",
    "neighbor 192.0.2.2 announce eor ipv4 unicast",
    "announce route 198.51.100.1/32 next-hop self community [64512:100]",
    "withdraw route 198.51.100.1/32",
]
INVALID_COMMANDS = [
    "announce attributes next-hop self nlri 198.51.100.1/32\nannounce route 0.0.0.0/0",
    "announce attributes next-hop self nlri 198.51.100.1/32; withdraw route 1.2.3.4/32",
    "announce attributes next-hop self nlri 198.51.100.1/32 # comment",
    "announce attributes next-hop self community [64512:1]] nlri 198.51.100.1/32",
    "announce attributes next-hop self community [64512:1 nlri 198.51.100.1/32",
    "announce attributes next-hop self community [] nlri 198.51.100.1/32",
    "announce attributes next-hop self community [64512:70000] nlri 198.51.100.1/32",
    "announce attributes next-hop self med 4294967296 nlri 198.51.100.1/32",
    "announce attributes next-hop self med 050 nlri 198.51.100.1/32",
    "announce attributes next-hop self origin igp nlri 198.51.100.1/32",
    "announce attributes next-hop self nlri 198.51.100.0/24",
    "announce attributes next-hop self nlri 198.51.100.1",
    "announce attributes next-hop self nlri 198.51.100.01/32",
    "announce attributes next-hop self nlri",
    "announce attributes nlri 198.51.100.1/32",
    "announce attributes next-hop self med 1 med 2 nlri 198.51.100.1/32",
    "withdraw attributes next-hop self med 5 nlri 198.51.100.1/32",
    "shutdown",
    "neighbor 192.0.2.2 teardown 2",
    "neighbor 192.0.2.999 announce eor ipv4 unicast",
    "announce eor ipv4 multicast",
    "announce  attributes next-hop self nlri 198.51.100.1/32",
    "announce attributes next-hop self nlri 198.51.100.1/32 ",
    "announce attributes next-hop self community [\uff16\uff14\uff15\uff11\uff12:1] "
    "nlri 198.51.100.1/32",
    "announce attributes next-hop self community [64512:1{] nlri 198.51.100.1/32",
    "announce route 198.51.100.1/32 next-hop self nlri 198.51.100.2/32",
    "",
]


@pytest.mark.parametrize("line", VALID_COMMANDS)
def test_grammar_accepts_known_good_commands(line: str) -> None:
    validate_command(line)


@pytest.mark.parametrize("line", INVALID_COMMANDS)
def test_grammar_rejects_injections_and_unknown_forms(line: str) -> None:
    with pytest.raises(GrammarError):
        validate_command(line)


def test_grammar_config_accepts_real_render_and_rejects_tampering(tmp_path: Path) -> None:
    config = _parse_only_config_errors(_valid_document(tmp_path, "s3cr3t-Pa55"))
    assert config is not None
    rendered = render_config(config, SOCKET, python=PYTHON, show_secrets=True)
    validate_config(rendered)
    for tampered in (
        rendered.replace("hold-time 30;", "hold-time 30; }\nneighbor 203.0.113.1 {"),
        rendered.replace("s3cr3t-Pa55", "s3cr3t'Pa55"),
        rendered.replace("local-as 64512;", "local-as 64512; # x"),
        rendered.replace("encoder json;", "encoder text;"),
        rendered + "\nneighbor 192.0.2.2 {\n}\n",
        rendered.replace(
            "adj-rib-in false;", "adj-rib-in false;\n    static { route 0.0.0.0/0 next-hop self; }"
        ),
    ):
        with pytest.raises(GrammarError):
            validate_config(tampered)
    # A sanity check on the addresses the grammar sees.
    assert ipaddress.ip_address("192.0.2.2")


def _ip_or_error(parse: Any, text: str) -> str:
    try:
        return repr(parse(text))
    except ValueError:
        return "ValueError"


_DOTTED: Final = st.lists(
    st.one_of(
        st.integers(0, 300).map(str),
        st.sampled_from(["00", "01", "007", "0x1", "-1", "+1", " 1", "1 ", "\u0661", "", "1e1"]),
    ),
    min_size=1,
    max_size=6,
).map(".".join)


@pytest.mark.parametrize(
    "text",
    ["1.2.3.4", "01.2.3.4", "1.2.3.00", "255.255.255.255", "256.0.0.1", "1.2.3", "127.1",
     "1.2.3.4 ", "\t1.2.3.4", "1.2.3.4\n", "1.2.3.4\x00", "1.2.3.4/32", "1.2.3.4%eth0",
     "0x7f.0.0.1", "\u0661.\u0662.\u0663.\u0664", "", "::1", "::ffff:1.2.3.4",
     "fe80::1%eth0", "1.2.3.4."],
)  # fmt: skip
def test_fast_ip_parser_agrees_with_ipaddress_on_tricky_text(text: str) -> None:
    assert _ip_or_error(parse_ip, text) == _ip_or_error(ipaddress.ip_address, text)


@given(st.one_of(_DOTTED, st.text(max_size=20)))
@settings(max_examples=500)
def test_fast_ip_parser_agrees_with_ipaddress_on_any_text(text: str) -> None:
    assert _ip_or_error(parse_ip, text) == _ip_or_error(ipaddress.ip_address, text)


@pytest.mark.parametrize(
    "text",
    ["0.0.0.0", "1.2.3.4", "10.64.0.1", "255.255.255.255", "::", "::1", "2001:db8::7",
     "::ffff:1.2.3.4", "64:ff9b::1.2.3.4", "fe80::1%eth0", "2001:db8:0:1:1:1:1:1"],
)  # fmt: skip
def test_host_prefix_text_is_the_host_prefix_formatted(text: str) -> None:
    vip = ipaddress.ip_address(text)
    assert host_prefix_text(vip) == str(host_prefix(vip))


@given(
    st.one_of(
        st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
        st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
    )
)
def test_host_prefix_text_agrees_with_ipaddress_on_any_address(vip: IPAddress) -> None:
    assert host_prefix_text(vip) == str(host_prefix(vip))
