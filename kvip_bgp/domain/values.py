"""A cheaper ``__init__`` for the frozen dataclasses built for every Service.

A frozen dataclass's generated ``__init__`` stores each field with
``object.__setattr__(self, name, value)``, because its own ``__setattr__`` refuses.
For the values a cold start or a burst builds ten thousand times over (a parsed
Service and its slice, a decision and its verdict, a route, the messages that carry
them) that generic call is most of the constructor: ~0.75 µs for three fields, where
storing each through the class's slot descriptor (``Class.field.__set__``, what the
interpreter does for an ordinary slotted class) takes ~0.29 (timeit, the lab's EPYC).

``fast_init`` keeps everything else the dataclass made (frozen ``__setattr__``,
``__eq__``, ``__hash__``, ``__repr__``, ``replace``, ``fields``, pickling) and
replaces only ``__init__`` by one with the same signature that stores the same values
in the same order and then calls ``__post_init__`` if the class has one. The
dataclass's own ``__init__`` stays on the class as ``_dataclass_init``, so that
tests/test_values.py can compare the two for every class that uses this.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """``cls`` (a frozen dataclass with ``slots=True``) with the cheaper ``__init__``.

    Put it above ``@dataclass(frozen=True, slots=True)``. Anything else is refused at
    import, where it is found at once: a class without slots has no descriptors to
    store through, and a ``default_factory`` is not handled (nor ``InitVar``, which
    ``fields`` does not list: tests/test_values.py compares the signatures).
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or not params.init:
        raise TypeError(f"fast_init: {cls.__qualname__} is not a frozen dataclass with __init__")
    if "__slots__" not in cls.__dict__:
        raise TypeError(f"fast_init: {cls.__qualname__} needs slots=True")
    namespace: dict[str, Any] = {}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    klass: Any = cls  # a dataclass, checked above (the TypeVar cannot say so)
    for i, f in enumerate(dataclasses.fields(klass)):
        if f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"fast_init: {cls.__qualname__}.{f.name} has a default_factory")
        namespace[f"_set{i}"] = cls.__dict__[f.name].__set__
        value, default = f.name, ""
        if f.default is not dataclasses.MISSING:
            namespace[f"_default{i}"] = f.default
            default = f"=_default{i}"
            if not f.init:
                value = f"_default{i}"
        elif not f.init:
            continue  # no default: the dataclass leaves it unset too (__post_init__ may)
        if f.init:
            (keyword if f.kw_only else positional).append(f"{f.name}{default}")
        body.append(f"    _set{i}(self, {value})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    source = f"def __init__({signature}):\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, namespace)  # the fields' names are identifiers: dataclasses checked them
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(klass.__init__.__annotations__)  # inspect sees the same
    type.__setattr__(cls, "_dataclass_init", klass.__init__)
    type.__setattr__(cls, "__init__", init)
    return cls
