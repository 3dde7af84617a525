"""What the real ``kubectl`` asks of an API server beyond list/watch, for the fake API.

``kubectl`` 1.32 against ``FakeKubeAPI`` (found by running it with ``-v=8``):

* discovery: ``/api``, ``/apis`` and each group-version's resource list, with the short
  names (``svc``, ``no``, ``ev``) and singular names it resolves arguments by;
* ``get`` asks for server-side printing (``Accept: application/json;as=Table;...``) and
  prints the Table's columns (``-o wide`` shows those with priority 1);
* ``describe svc`` lists the Service's Events with ``involvedObject.*`` field selectors;
* ``apply`` downloads OpenAPI to validate (``/openapi/v3``, then ``/openapi/v2``); a
  404 on both is answered by kubectl with "failed to download openapi", so ``/openapi/v3``
  lists no group-version: kubectl then validates nothing and applies as usual (a GET, then
  a POST with the last-applied annotation, or a strategic-merge PATCH).

Kept apart from ``fakeapi.py``, which calls :func:`intercept`, :func:`as_table` and
:func:`resource_extras`, so the fake's store semantics and kubectl's needs change apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["as_table", "intercept", "resource_extras"]

JSONObject = dict[str, Any]

_SHORT_NAMES: Final[Mapping[str, tuple[str, ...]]] = {
    "services": ("svc",),
    "nodes": ("no",),
    "events": ("ev",),
}
_CATEGORIES: Final[Mapping[str, tuple[str, ...]]] = {"services": ("all",)}
_INVOLVED: Final = ("kind", "name", "namespace", "uid")


def resource_extras(plural: str, kind: str) -> JSONObject:
    """Fields of a discovery entry that kubectl resolves its arguments by."""
    extras: JSONObject = {"singularName": kind.lower()}
    if plural in _SHORT_NAMES:
        extras["shortNames"] = list(_SHORT_NAMES[plural])
    if plural in _CATEGORIES:
        extras["categories"] = list(_CATEGORIES[plural])
    return extras


def intercept(
    method: str,
    segments: list[str],
    query: Mapping[str, str],
    events: Callable[[], list[JSONObject]],
) -> tuple[int, JSONObject] | None:
    """A reply for the requests the store does not serve itself, else None.

    ``events`` returns every stored Event (for ``involvedObject`` field selectors).
    """
    if method != "GET":
        return None
    if segments == ["openapi", "v3"]:
        return 200, {
            "paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=0"} for gv in _GVS}
        }
    if segments[:2] == ["openapi", "v3"] and "/".join(segments[2:]) in _GVS:
        return 200, _openapi_v3("/".join(segments[2:]))
    if segments[:1] == ["openapi"]:
        return 404, _status(404, "the server could not find the requested resource")
    selector = query.get("fieldSelector", "")
    if segments[-1:] == ["events"] and "involvedObject." in selector:
        namespace = segments[3] if segments[:1] == ["api"] and len(segments) > 3 else None
        return 200, _event_list(events(), namespace, selector)
    return None


_GVS: Final[Mapping[str, tuple[tuple[str, str], ...]]] = {
    "api/v1": (("Service", "core"), ("Node", "core"), ("Event", "core")),
    "apis/discovery.k8s.io/v1": (("EndpointSlice", "discovery"),),
    "apis/coordination.k8s.io/v1": (("Lease", "coordination"),),
}


def _openapi_v3(gv: str) -> JSONObject:
    """A schema per kind that admits any object: kubectl validates nothing but finds its
    kinds (a missing kind is a validation error)."""
    group = "" if gv == "api/v1" else gv.split("/")[1]
    schemas = {
        f"io.k8s.api.{package}.v1.{kind}": {
            "type": "object",
            "x-kubernetes-group-version-kind": [{"group": group, "kind": kind, "version": "v1"}],
        }
        for kind, package in _GVS[gv]
    }
    paths = {
        f"/{gv}/namespaces/{{namespace}}/{kind.lower()}s/{{name}}": {
            "patch": {
                "x-kubernetes-group-version-kind": {"group": group, "kind": kind, "version": "v1"},
                "parameters": [{"name": "fieldValidation", "in": "query"}],
            }
        }
        for kind, _package in _GVS[gv]
    }
    return {
        "openapi": "3.0.0",
        "info": {"title": "fakeapi", "version": "v1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _event_list(events: list[JSONObject], namespace: str | None, selector: str) -> JSONObject:
    wanted: dict[str, str] = {}
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        key, _, value = term.replace("==", "=").partition("=")
        wanted[key.strip()] = value.strip()
    items = []
    for event in events:
        involved = event.get("involvedObject") or {}
        meta = event.get("metadata") or {}
        if namespace is not None and meta.get("namespace") != namespace:
            continue
        ok = True
        for key, value in wanted.items():
            if key.startswith("involvedObject."):
                ok = ok and str(involved.get(key.split(".", 1)[1], "")) == value
            elif key == "metadata.namespace":
                ok = ok and meta.get("namespace") == value
            elif key == "metadata.name":
                ok = ok and meta.get("name") == value
        if ok:
            items.append(event)
    return {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items}


def _status(code: int, message: str) -> JSONObject:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "code": code,
    }


# ------------------------------------------------------------------------ tables


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def as_table(body: bytes, accept: str, now: datetime | None = None) -> bytes | None:
    """``body`` (an object or a list) as a ``meta.k8s.io/v1`` Table if ``accept`` asks
    for one and the body is something kubectl prints; else None."""
    if not wants_table(accept):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    kind = str(data.get("kind", ""))
    items = data.get("items") if kind.endswith("List") else [data]
    kind = kind.removesuffix("List")
    if not isinstance(items, list) or kind == "Status":
        return None
    columns, cells = _PRINTERS.get(kind, _PRINTERS["*"])
    moment = now or datetime.now(UTC)
    table = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": (data.get("metadata") or {}).get("resourceVersion", "")},
        "columnDefinitions": [
            {
                "name": name,
                "type": "string",
                "format": "name" if name == "Name" else "",
                "description": name,
                "priority": priority,
            }
            for name, priority in columns
        ],
        "rows": [{"cells": cells(item, moment), "object": item} for item in items],
    }
    return json.dumps(table, separators=(",", ":")).encode()


def _age(obj: JSONObject, now: datetime, field: str = "") -> str:
    stamp = (obj.get(field) if field else None) or (obj.get("metadata") or {}).get(
        "creationTimestamp"
    )
    if not stamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size if unit != "m" else seconds >= 120:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _name(obj: JSONObject) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _service_cells(svc: JSONObject, now: datetime) -> list[Any]:
    spec = svc.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    external = ",".join(str(i.get("ip") or i.get("hostname") or "") for i in ingress)
    if not external:
        external = "<pending>" if kind == "LoadBalancer" else "<none>"
    ports = ",".join(
        f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}"
        f"/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    )
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    return [
        _name(svc),
        kind,
        spec.get("clusterIP") or "<none>",
        external,
        ports or "<none>",
        _age(svc, now),
        selector or "<none>",
    ]


def _slice_cells(eps: JSONObject, now: datetime) -> list[Any]:
    ports = ",".join(str(p.get("port")) for p in eps.get("ports") or []) or "<unset>"
    addresses = [a for e in eps.get("endpoints") or [] for a in e.get("addresses") or []]
    shown = ",".join(addresses[:3]) + (
        f" + {len(addresses) - 3} more..." if len(addresses) > 3 else ""
    )
    return [_name(eps), eps.get("addressType", ""), ports, shown or "<unset>", _age(eps, now)]


def _node_cells(node: JSONObject, now: datetime) -> list[Any]:
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    status = "Ready" if ready else "NotReady"
    if (node.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    addresses = (node.get("status") or {}).get("addresses") or []
    internal = next((a["address"] for a in addresses if a.get("type") == "InternalIP"), "<none>")
    return [_name(node), status, "<none>", _age(node, now), "v1.32.0-fakeapi", internal]


def _event_cells(event: JSONObject, now: datetime) -> list[Any]:
    involved = event.get("involvedObject") or {}
    target = f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"
    return [
        _age(event, now, "lastTimestamp"),
        event.get("type", ""),
        event.get("reason", ""),
        target,
        event.get("message", ""),
    ]


def _default_cells(obj: JSONObject, now: datetime) -> list[Any]:
    return [_name(obj), _age(obj, now)]


_Printer = tuple[tuple[tuple[str, int], ...], Callable[[JSONObject, datetime], list[Any]]]
_PRINTERS: Final[Mapping[str, _Printer]] = {
    "Service": (
        (
            ("Name", 0),
            ("Type", 0),
            ("Cluster-IP", 0),
            ("External-IP", 0),
            ("Port(s)", 0),
            ("Age", 0),
            ("Selector", 1),
        ),
        _service_cells,
    ),
    "EndpointSlice": (
        (("Name", 0), ("AddressType", 0), ("Ports", 0), ("Endpoints", 0), ("Age", 0)),
        _slice_cells,
    ),
    "Node": (
        (
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
        ),
        _node_cells,
    ),
    "Event": (
        (("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0), ("Message", 0)),
        _event_cells,
    ),
    "*": ((("Name", 0), ("Age", 0)), _default_cells),
}
