"""A walker over the YAML tree that records every problem with its key path.

It returns a placeholder after a problem so that checking continues past the first one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from kvip_bgp.configfile import keys
from kvip_bgp.domain.model import (
    IPAddress,
)

T = TypeVar("T")
A = TypeVar("A", ipaddress.IPv4Address, ipaddress.IPv6Address)
K = TypeVar("K", bound=keys.Key)


class ConfigError(Exception):
    """Raised with every problem found; ``problems`` lists them as ``path: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


class Reader:
    """Walks a parsed YAML tree, collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def mapping(self, value: Any, path: str, allowed: Sequence[str]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(path or "(top level)", f"must be a mapping, got {type_name(value)}")
            return {}
        for key in value:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                self.fail(where, f"unknown key (allowed: {', '.join(allowed)})")
        return value

    # Keys of the table (configfile.keys): ``where`` is the concrete path of the mapping
    # (``bgp.peers[3]``), ``name`` the key in it; range and default come from the table.

    def section(self, value: Any, where: str) -> Mapping[str, Any]:
        """A mapping whose allowed keys are the table's children of ``where``."""
        return self.mapping(value, where, keys.names(keys.template(where)))

    def int_key(self, m: Mapping[str, Any], where: str, name: str) -> int:
        """A key with a default: always an int (the default when absent or invalid)."""
        key = self._key(where, name, keys.Int)
        if key.default is None:
            raise TypeError(f"{key.path} has no default: use opt_int_key")
        value = self.integer(m.get(name), _join(where, name), key.low, key.high, key.default)
        return key.default if value is None else value

    def opt_int_key(self, m: Mapping[str, Any], where: str, name: str) -> int | None:
        key = self._key(where, name, keys.Int)
        return self.integer(m.get(name), _join(where, name), key.low, key.high, key.default)

    def number_key(self, m: Mapping[str, Any], where: str, name: str) -> float:
        key = self._key(where, name, keys.Number)
        return self.number(m.get(name), _join(where, name), key.low, key.high, key.default)

    def bool_key(self, m: Mapping[str, Any], where: str, name: str) -> bool:
        key = self._key(where, name, keys.Bool)
        return self.boolean(m.get(name), _join(where, name), key.default)

    def str_key(self, m: Mapping[str, Any], where: str, name: str) -> str | None:
        key = self._key(where, name, keys.Str)
        return self.string(m.get(name), _join(where, name), key.default)

    def choice_key(self, m: Mapping[str, Any], where: str, name: str) -> str:
        key = self._key(where, name, keys.Choice)
        return self.choice(m.get(name), _join(where, name), key.choices, key.default)

    @staticmethod
    def _key(where: str, name: str, kind: type[K]) -> K:
        found = keys.BY_PATH[keys.template(_join(where, name))]
        if not isinstance(found, kind):
            raise TypeError(f"{found.path} is {type(found).__name__}, not {kind.__name__}")
        return found

    def integer(
        self, value: Any, path: str, low: int, high: int, default: int | None = None
    ) -> int | None:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer {low}..{high}, got {type_name(value)}")
            return default
        if not low <= value <= high:
            self.fail(path, f"must be {low}..{high}, got {value}")
            return default
        return value

    def number(self, value: Any, path: str, low: float, high: float, default: float) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"must be a number {low}..{high}, got {type_name(value)}")
            return default
        if not low <= value <= high:
            self.fail(path, f"must be {low}..{high}, got {value}")
            return default
        return float(value)

    def boolean(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, got {type_name(value)}")
            return default
        return value

    def string(self, value: Any, path: str, default: str | None = None) -> str | None:
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            self.fail(path, f"must be a non-empty string, got {type_name(value)}")
            return default
        return value

    def choice(self, value: Any, path: str, choices: Sequence[str], default: str) -> str:
        if value is None:
            return default
        if value not in choices:
            self.fail(path, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return str(value)

    def address(self, value: Any, path: str) -> IPAddress | None:
        if value is None:
            return None
        try:
            parsed = ipaddress.ip_address(str(value))
        except ValueError:
            self.fail(path, f"must be an IPv4 or IPv6 address, got {value!r}")
            return None
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.scope_id is not None:
            # The text after '%' is free-form and would be pasted into ExaBGP's input.
            self.fail(path, f"must not carry a %zone, got {value!r}")
            return None
        return parsed

    def address_of(self, value: Any, path: str, kind: type[A]) -> A | None:
        """An address that must be of one IP version (a next hop of a given family)."""
        parsed = self.address(value, path)
        if parsed is None:
            return None
        if not isinstance(parsed, kind):
            self.fail(path, f"must be an IPv{6 if kind is ipaddress.IPv6Address else 4} address")
            return None
        return parsed

    def labels(self, value: Any, path: str) -> tuple[tuple[str, str], ...]:
        """A label selector (``matchLabels``): string keys to string values, sorted."""
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a mapping, got {type_name(value)}")
            return ()
        pairs = []
        for key, val in value.items():
            if not isinstance(key, str) or not isinstance(val, str):
                self.fail(f"{path}.{key}", "label keys and values must be strings")
            else:
                pairs.append((key, val))
        return tuple(sorted(pairs))

    def listing(self, value: Any, path: str) -> Sequence[Any]:
        if value is None:
            return ()
        if isinstance(value, str) or not isinstance(value, Sequence):
            self.fail(path, f"must be a list, got {type_name(value)}")
            return ()
        return value

    def parsed(self, value: Any, path: str, parse: Callable[[str], T]) -> T | None:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {type_name(value)}")
            return None
        try:
            return parse(value)
        except ValueError as error:
            self.fail(path, str(error))
            return None

    def host_port(self, value: Any, path: str) -> tuple[str, int] | None:
        if not isinstance(value, str) or ":" not in value:
            self.fail(path, f"must be 'HOST:PORT', got {value!r}")
            return None
        host, _, port_text = value.rpartition(":")
        host = host.strip("[]")
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            self.fail(path, f"port must be 0..65535, got {port_text!r}")
            return None
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not host:
                self.fail(path, "host is empty")
                return None
        return host, int(port_text)


def type_name(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
