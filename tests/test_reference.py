"""The key table (configfile.keys) drives the validator, the docs and the chart's schema.

The chart's ``values.schema.json`` is enforced by Helm itself (helm-python-sdk: Helm's Go
SDK, see test_chart.py); the config-file schema is checked with ``jsonschema`` against
the example configs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvip_bgp.configfile import keys, reference
from kvip_bgp.configfile.load import parse
from kvip_bgp.configfile.reader import ConfigError
from tests.test_chart import MINIMAL, _need_module, render_raw

ROOT = Path(__file__).resolve().parent.parent

BASE: dict[str, Any] = {
    "node_name": "n1",
    "bgp": {
        "asn": 64512,
        "peers": [{"address": "192.0.2.1", "asn": 64500, "local_address": "192.0.2.10"}],
    },
    "vips": {"allowed": ["198.51.100.0/24"]},
    "static": [{"address": "198.51.100.1", "check": {"tcp": "127.0.0.1:1"}}],
    "ipam": {"pools": [{"name": "p", "addresses": ["198.51.100.128/25"]}]},
}


def problems(document: dict[str, Any]) -> list[str]:
    try:
        parse(document, environ={})
    except ConfigError as error:
        return list(error.problems)
    return []


def set_path(document: dict[str, Any], path: str, value: Any) -> str:
    """Set ``bgp.peers[].bfd.min_rx`` in the first item of each list; return the
    concrete path (``bgp.peers[0].bfd.min_rx``)."""
    node: Any = document
    concrete = []
    *parents, leaf = path.split(".")
    for part in parents:
        name = part.removesuffix("[]")
        node = node.setdefault(name, [{}] if part.endswith("[]") else {})
        concrete.append(name + ("[0]" if part.endswith("[]") else ""))
        if part.endswith("[]"):
            if isinstance(node[0], str):  # vips.allowed: a bare CIDR is {cidr: CIDR}
                node[0] = {"cidr": node[0]}
            node = node[0]
    node[leaf] = value
    return ".".join([*concrete, leaf])


def test_the_base_document_is_valid() -> None:
    assert problems(copy.deepcopy(BASE)) == []


def _bad(key: keys.Key) -> tuple[Any, str]:
    if isinstance(key, keys.Int):
        return key.high + 1, f"must be {key.low}..{key.high}, got {key.high + 1}"
    if isinstance(key, keys.Number):
        return key.high + 1, f"must be {key.low:g}..{key.high:g}, got {key.high + 1:g}"
    if isinstance(key, keys.Bool):
        return "yes", "must be true or false, got str"
    if isinstance(key, keys.Str):
        return 5, "must be a non-empty string, got int"
    assert isinstance(key, keys.Choice)
    return "bogus", f"must be one of {', '.join(key.choices)}, got 'bogus'"


TYPED = [k for k in keys.KEYS if isinstance(k, keys.Int | keys.Number | keys.Bool | keys.Str)]
TYPED += [k for k in keys.KEYS if isinstance(k, keys.Choice)]


@pytest.mark.parametrize("key", TYPED, ids=lambda k: k.path)
def test_every_typed_key_is_validated_with_the_tables_range(key: keys.Key) -> None:
    """A key the parser read with its own numbers would not give the table's message."""
    document = copy.deepcopy(BASE)
    if key.path.startswith("static[].check.") and key.name in ("http", "exec"):
        del document["static"][0]["check"]["tcp"]  # exactly one kind of check
    value, message = _bad(key)
    concrete = set_path(document, key.path, value)
    found = problems(document)
    if isinstance(key, keys.Number):  # "601" or "601.0": compare the number
        assert any(p.startswith(f"{concrete}: must be ") for p in found), found
    else:
        assert f"{concrete}: {message}" in found, found


@pytest.mark.parametrize("key", keys.KEYS, ids=lambda k: k.path)
def test_every_key_in_the_table_is_accepted_by_the_parser(key: keys.Key) -> None:
    document = copy.deepcopy(BASE)
    concrete = set_path(document, key.path, None)
    assert not [p for p in problems(document) if "unknown key" in p and concrete in p]


def test_a_key_outside_the_table_is_unknown() -> None:
    document = copy.deepcopy(BASE)
    document["bgp"]["peers"][0]["bfd"] = {"min_rx": 300, "mni_tx": 300}
    assert problems(document) == [
        "bgp.peers[0].bfd.mni_tx: unknown key (allowed: min_rx, min_tx, multiplier)"
    ]


def test_the_generated_files_are_up_to_date() -> None:
    """Run ``make docs`` after changing configfile/keys.py."""
    assert (ROOT / reference.DOCS).read_text(encoding="utf-8") == reference.markdown()
    assert (ROOT / reference.CHART_SCHEMA).read_text(encoding="utf-8") == (reference.schema_text())
    operating = (ROOT / reference.OPERATING).read_text(encoding="utf-8")
    assert operating == reference.operating_text(operating)
    assert "`kvip_bgp_session_up` | gauge | peer |" in operating


def test_the_docs_name_every_key() -> None:
    text = reference.markdown()
    for key in keys.KEYS:
        assert f"| `{key.path}` |" in text


def test_the_config_schema_accepts_the_examples_and_rejects_what_check_config_does() -> None:
    jsonschema = _need_module("jsonschema", "jsonschema")
    validator = jsonschema.Draft7Validator(reference.config_schema())
    for example in ("exabgp-conf/example-node.yaml", "deploy/systemd/config.example.yaml"):
        document = yaml.safe_load((ROOT / example).read_text(encoding="utf-8"))
        assert list(validator.iter_errors(document)) == [], example
    assert list(validator.iter_errors(copy.deepcopy(BASE))) == []
    for path, value in (("bgp.hold_time", 2), ("vips.bind", "route"), ("bgp.peers[].tll", 1)):
        document = copy.deepcopy(BASE)
        set_path(document, path, value)
        assert problems(document), path
        assert list(validator.iter_errors(document)), path


# --------------------------------------------------------------------------- the chart


@pytest.fixture(scope="module")
def helm() -> Any:
    return _need_module("helm_python", "helm-python-sdk")


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"bgp": {"holdTime": 2}}, "/bgp/holdTime"),
        ({"bgp": {"asn": 0}}, "/bgp/asn"),
        ({"bgp": {"gracefulRestat": 60}}, "/bgp"),
        ({"vips": {"bind": "route"}}, "/vips/bind"),
        ({"log": {"level": "verbose"}}, "/log/level"),
        ({"shutdownTimeout": 0}, "/shutdownTimeout"),
        ({"bgp": {"peers": [{"address": "192.0.2.1", "asn": 64500, "tll": 2}]}}, "/bgp/peers/0"),
        ({"bgp": {"peers": [{"address": "192.0.2.1", "asn": 70000000000}]}}, "/bgp/peers/0/asn"),
        ({"kubernetes": {"watchReadTimeout": 5}}, "/kubernetes"),
    ],
)
def test_helm_rejects_a_bad_value_by_the_schema(
    helm: Any, values: dict[str, Any], where: str
) -> None:
    merged = copy.deepcopy(MINIMAL)
    for section, body in values.items():
        merged[section] = {**merged.get(section, {}), **body} if isinstance(body, dict) else body
    with pytest.raises(helm.HelmValuesError, match="schema") as raised:
        render_raw(helm, merged)
    assert f"at '{where}'" in str(raised.value)


def test_the_chart_defaults_and_a_full_values_file_pass_the_schema(helm: Any) -> None:
    from tests.test_chart import FULL

    jsonschema = _need_module("jsonschema", "jsonschema")
    schema = json.loads((ROOT / reference.CHART_SCHEMA).read_text(encoding="utf-8"))
    defaults = yaml.safe_load((ROOT / "charts/kvip-bgp/values.yaml").read_text(encoding="utf-8"))
    jsonschema.validate(defaults, schema)
    assert render_raw(helm, copy.deepcopy(FULL))
