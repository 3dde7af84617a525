"""``domain.values.fast_init``: the same construction as the dataclass's own ``__init__``.

Every class that uses it keeps the dataclass's ``__init__`` as ``_dataclass_init``;
each is compared with it here: the signature, and the object built from the same
arguments (every slot, ``__post_init__``'s included), positionally, by keyword, with
defaults left out, and with wrong arguments (the same error).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import ipaddress
import pkgutil
from typing import Any

import pytest

import kvip_bgp
from kvip_bgp.domain.model import Advertisement, RouteAttributes
from kvip_bgp.domain.objects import ObjectKey
from kvip_bgp.domain.policy import ServiceDecision, VipVerdict
from kvip_bgp.domain.reasons import Reason, Refusal
from kvip_bgp.domain.values import fast_init


def classes_with_fast_init() -> list[type[Any]]:
    found = []
    for module in pkgutil.walk_packages(kvip_bgp.__path__, "kvip_bgp."):
        if ".testing" in module.name:
            continue
        for value in vars(importlib.import_module(module.name)).values():
            if (
                isinstance(value, type)
                and "_dataclass_init" in value.__dict__
                and value.__module__ == module.name
            ):
                found.append(value)
    return found


@fast_init
@dataclasses.dataclass(frozen=True, slots=True)
class EveryKind:
    """The kinds of field none of the daemon's classes has (yet), to compare them too."""

    plain: object
    defaulted: object = 7
    derived: object = dataclasses.field(init=False, default="d")
    late: object = dataclasses.field(init=False)
    named: object = dataclasses.field(kw_only=True, default=None)
    needed: object = dataclasses.field(kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "late", (self.plain, self.defaulted, self.derived))


CLASSES = [*classes_with_fast_init(), EveryKind]


def test_the_classes_built_per_service_use_it() -> None:
    names = {c.__qualname__ for c in CLASSES}
    assert {
        "ServiceInfo",
        "Endpoint",
        "EndpointSliceInfo",
        "VipVerdict",
        "ServiceDecision",
        "Advertisement",
        "Changed",
        "StatusWanted",
        "VipDesired",
    } <= names


def slots(obj: object) -> dict[str, Any]:
    """Every field's slot, set or not (``init=False`` fields included)."""
    unset = object()
    return {f.name: getattr(obj, f.name, unset) for f in dataclasses.fields(obj)}  # type: ignore[arg-type]


def the_dataclass_way(cls: type[Any], *args: Any, **kwargs: Any) -> Any:
    obj = object.__new__(cls)
    cls._dataclass_init(obj, *args, **kwargs)
    return obj


def outcome(build: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "built", slots(build(*args, **kwargs))
    except Exception as error:  # the same error, word for word, is the point
        return type(error).__name__, str(error).replace("_dataclass_init", "__init__")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__qualname__)
def test_the_signature_is_the_dataclasses(cls: type[Any]) -> None:
    assert inspect.signature(cls.__init__) == inspect.signature(cls._dataclass_init)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__qualname__)
def test_any_arguments_build_the_same_object_or_fail_the_same_way(cls: type[Any]) -> None:
    """Stand-in arguments (each a distinct object): the same slots, or the same error
    (a ``__post_init__`` that reads them may fail, and must fail alike)."""
    params = [p for p in inspect.signature(cls.__init__).parameters.values()][1:]
    values = {p.name: object() for p in params}
    positional = [values[p.name] for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keywords = {p.name: values[p.name] for p in params if p.kind is p.KEYWORD_ONLY}
    required = [p for p in params if p.default is p.empty]
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((*positional,), keywords),
        ((), values),
        ((), {p.name: values[p.name] for p in required}),
        ((*positional, object()), keywords),  # one too many
        ((), {**values, "no_such_field": 1}),
    ]
    if required:
        calls.append(((), {p.name: values[p.name] for p in required[1:]}))  # one missing
    for args, kwargs in calls:
        slow = outcome(lambda *a, **k: the_dataclass_way(cls, *a, **k), args, kwargs)
        assert outcome(cls, args, kwargs) == slow


V4 = ipaddress.ip_address("192.0.2.1")
V6 = ipaddress.ip_address("2001:db8::1")
ATTRS = RouteAttributes(local_preference=200, med=5)


@pytest.mark.parametrize(
    ("cls", "args", "kwargs"),
    [
        (VipVerdict, (V4, True), {}),
        (VipVerdict, (V6, False, Refusal(Reason.NOT_LOAD_BALANCER)), {}),
        (ServiceDecision, (ObjectKey("ns", "a"), None), {}),
        (
            ServiceDecision,
            (ObjectKey("ns", "a"), None, (VipVerdict(V4, True), VipVerdict(V6, False))),
            {"attributes": ATTRS, "vip_source": "annotation", "message": "m"},
        ),
        (ServiceDecision, (ObjectKey("", "b"), None, (VipVerdict(V6, True),)), {}),
        (Advertisement, (V4, ATTRS), {}),
        (Advertisement, (V6, ATTRS, ("kubernetes",)), {}),
    ],
)
def test_real_values_build_equal_objects_with_the_same_derived_fields(
    cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    fast, slow = cls(*args, **kwargs), the_dataclass_way(cls, *args, **kwargs)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert slots(fast) == slots(slow)  # ``announced``, which __post_init__ derives, too
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fast, dataclasses.fields(fast)[0].name, V6)  # still frozen
    assert dataclasses.replace(fast) == fast


def test_what_it_cannot_build_alike_is_refused_at_import() -> None:
    class Plain:
        pass

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    for cls, words in [
        (Plain, "not a frozen dataclass"),
        (NoSlots, "needs slots=True"),
        (NotFrozen, "not a frozen dataclass"),
        (Factory, "Factory.a has a default_factory"),
    ]:
        with pytest.raises(TypeError, match=words):
            fast_init(cls)
