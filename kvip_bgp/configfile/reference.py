"""docs/configuration.md and the chart's values.schema.json, generated from ``keys``.

``python -m kvip_bgp.configfile.reference`` (``make docs``) writes both files;
``--check`` exits 1 when a committed one differs from what the table gives.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from kvip_bgp.configfile.keys import KEYS, Bool, Choice, Int, Key, Number, Other, Section, Str

DOCS: Final = Path("docs/configuration.md")
CHART_SCHEMA: Final = Path("charts/kvip-bgp/values.schema.json")

# The chart's values that become config keys (chart path -> config path); their schema is
# the config key's. Chart-only values get the schema given here.
CHART_VALUES: Final[Mapping[str, str]] = {
    "bgp.asn": "bgp.asn",
    "bgp.holdTime": "bgp.hold_time",
    "bgp.gracefulRestart": "bgp.graceful_restart",
    "bgp.peers": "bgp.peers",
    "advertise": "advertise",
    "vips": "vips",
    "kubernetes.loadBalancerClass": "kubernetes.load_balancer_class",
    "kubernetes.legacyClassHandling": "kubernetes.legacy_class_handling",
    "kubernetes.withdrawWhenCordoned": "kubernetes.withdraw_when_cordoned",
    "shutdownTimeout": "shutdown_timeout",
    "log": "log",
}
_NAME: Final = {"type": "string", "minLength": 1}
CHART_ONLY: Final[Mapping[str, Mapping[str, Any]]] = {
    "bgp.routerId": {
        "type": "string",
        "description": "BGP identifier (IPv4); empty: the node's address (status.hostIP)",
    },
    "bgp.listen": {"type": "boolean", "description": "accept BGP connections on port 179"},
    "bgp.passwords": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "existingSecret": {"type": "string"},
            "values": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "description": "TCP-MD5 passwords: an existing Secret, or values the chart puts in one",
    },
    "http.port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "http.bindAddress": {
        "type": "string",
        "description": "empty: 127.0.0.1 (the node's address with serviceMonitor); "
        "'node' or an address",
    },
}
# The chart passes these through int64, which turns null into 0: no null for them.
CHART_NOT_NULL: Final = frozenset({"bgp.holdTime", "bgp.gracefulRestart", "shutdownTimeout"})
# Added to the config key's schema of the chart's peers.
CHART_PEER_EXTRA: Final[Mapping[str, Mapping[str, Any]]] = {
    "passwordSecretKey": {**_NAME, "description": "key of the MD5 password Secret"},
}


def children(parent: str) -> list[Key]:
    return [key for key in KEYS if key.parent == parent]


def _item_path(key: Key) -> str:
    return f"{key.path}[]" if isinstance(key, Section) and key.listed else key.path


def fragment(key: Key) -> dict[str, Any]:
    """The JSON Schema of one key and everything below it (the config file's own shape)."""
    schema: dict[str, Any]
    if isinstance(key, Section):
        subs = children(_item_path(key))
        body: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {sub.name: fragment(sub) for sub in subs},
        }
        required = [sub.name for sub in subs if sub.required]
        if required:
            body["required"] = required
        if key.listed:
            item = {"anyOf": [dict(key.scalar), body]} if key.scalar is not None else body
            schema = {"type": "array", "items": item}
            if key.required:
                schema["minItems"] = 1
        else:
            schema = body
    elif isinstance(key, Int):
        schema = {"type": "integer", "minimum": key.low, "maximum": key.high, **key.also}
    elif isinstance(key, Number):
        schema = {"type": "number", "minimum": key.low, "maximum": key.high}
    elif isinstance(key, Bool):
        schema = {"type": "boolean"}
    elif isinstance(key, Str):
        schema = {"type": "string", "minLength": 1}
    elif isinstance(key, Choice):
        schema = {"enum": list(key.choices)}
    elif isinstance(key, Other):
        schema = dict(key.schema)
    else:
        raise TypeError(f"{key.path}: no schema for {type(key).__name__}")
    if not key.required:
        # YAML null means "absent" (the default), or for a nullable key a value of its own.
        schema = {"anyOf": [schema, {"type": "null"}]}
    return {"description": key.doc, **schema}


def config_schema() -> dict[str, Any]:
    """The whole configuration file as JSON Schema (what ``check-config`` accepts, less
    the checks across keys: ranges inside ``vips.allowed``, duplicates, files)."""
    top = children("")
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "kvip-bgp configuration",
        "type": "object",
        "additionalProperties": False,
        "required": [key.name for key in top if key.required],
        "properties": {key.name: fragment(key) for key in top},
    }


def _loosen(schema: Any) -> Any:
    """The chart's defaults fill required values and its templates name empty lists."""
    if isinstance(schema, dict):
        return {k: _loosen(v) for k, v in schema.items() if k not in ("required", "minItems")}
    if isinstance(schema, list):
        return [_loosen(v) for v in schema]
    return schema


def chart_schema() -> dict[str, Any]:
    by_path = {key.path: key for key in KEYS}
    root: dict[str, Any] = {"type": "object", "properties": {}}

    def place(chart_path: str, schema: Mapping[str, Any]) -> None:
        node = root
        *parents, leaf = chart_path.split(".")
        for part in parents:
            node = node["properties"].setdefault(
                part, {"type": "object", "additionalProperties": False, "properties": {}}
            )
        node["properties"][leaf] = schema

    for chart_path, config_path in CHART_VALUES.items():
        schema = _loosen(fragment(by_path[config_path]))
        if chart_path in CHART_NOT_NULL:
            schema = {"description": schema["description"], **schema["anyOf"][0]}
        if config_path == "bgp.peers":
            items = schema["anyOf"][0]["items"]
            items["properties"].update(CHART_PEER_EXTRA)
        place(chart_path, schema)
    for chart_path, extra in CHART_ONLY.items():
        place(chart_path, extra)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "kvip-bgp chart values (generated from kvip_bgp/configfile/keys.py)",
        **root,
    }


def _type(key: Key) -> str:
    if isinstance(key, Section):
        text = "list of mappings" if key.listed else "mapping"
    elif isinstance(key, Int):
        text = f"integer {key.low}..{key.high}"
    elif isinstance(key, Number):
        text = f"number {key.low:g}..{key.high:g}"
    elif isinstance(key, Bool):
        text = "boolean"
    elif isinstance(key, Choice):
        text = " \\| ".join(f"`{c}`" for c in key.choices)
    elif isinstance(key, Str):
        text = "string or null" if key.nullable else "string"
    else:
        assert isinstance(key, Other)
        text = key.type
    return text


def _default(key: Key) -> str:
    if key.required:
        return "**required**"
    if key.default_doc:
        return key.default_doc
    value = getattr(key, "default", None)
    if value is None:
        return "—" if isinstance(key, Section) else "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return f"`{value}`" if isinstance(value, str) else str(value)


_INTRO: Final = """\
# Configuration reference

<!-- Generated from kvip_bgp/configfile/keys.py by `make docs`; edit that table, not this
file (tests/test_reference.py fails when the two differ). -->

kvip-bgp reads one YAML file (`kvip-bgp run --config FILE`). Unknown keys are errors, and
`kvip-bgp check-config --config FILE` lists every problem by its key path
(`bgp.peers[1].asn: must be 1..4294967295`) before anything starts. `kvip-bgp
render-exabgp --config FILE` prints the ExaBGP configuration it implies (MD5 passwords
only with `--show-secrets`). A key left out, or set to null, takes its default.

Examples: `exabgp-conf/example-node.yaml` (a Kubernetes node),
`deploy/systemd/config.example.yaml` (bare metal, health-checked static VIPs), the chart's
`values.yaml` (whose config values `charts/kvip-bgp/values.schema.json` validates, from the
same table), and `kvip-bgp manifest control-plane` (a static VIP for the API server).

Paths: `bgp.peers[].port` is the `port` of each item of the list `bgp.peers`.
"""

_OUTRO: Final = """\
## Outside the file

- `node_name` falls back to `$NODE_NAME` (the chart sets it from the downward API).
- The status-writer Lease lives in `$POD_NAMESPACE` (the chart sets it), else
  `kube-system`.
"""


def _rows(keys: list[Key]) -> list[str]:
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    rows += [f"| `{k.path}` | {_type(k)} | {_default(k)} | {k.doc} |" for k in keys]
    return rows


def markdown() -> str:
    lines = [_INTRO, "## Top level", "", *_rows(children("")), ""]
    lines += [f"{k.notes}\n" for k in children("") if k.notes and not isinstance(k, Section)]
    for top in children(""):
        if not isinstance(top, Section):
            continue
        below = [k for k in KEYS if k.path.startswith((f"{top.path}.", f"{top.path}[]."))]
        lines += [f"## `{top.path}`", "", top.doc[:1].upper() + top.doc[1:] + ".", ""]
        lines += [*_rows(below), ""]
        for key in [top, *below]:
            if key.notes:
                lines += [key.notes, ""]
    return "\n".join(lines) + _OUTRO


def schema_text() -> str:
    return json.dumps(chart_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    stale = []
    for relative, text in ((DOCS, markdown()), (CHART_SCHEMA, schema_text())):
        target = args.root / relative
        if args.check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(str(relative))
        else:
            target.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale (run make docs): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
