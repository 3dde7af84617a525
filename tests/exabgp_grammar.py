"""A validator of the ExaBGP text our code may emit: API command lines and config files.

Independent of ``kvip_bgp.bgp``: it encodes what ExaBGP 5 accepts (lab-facts.md and
ExaBGP's own tokenizer) restricted to the forms kvip-bgp uses, so a property test can
check that every line the daemon could ever write is one of them. Anything else is
refused: an unknown keyword, a second command smuggled in by a newline, a ``;``, ``#``,
``{``/``}`` (ExaBGP's configuration tokens), a non-canonical prefix, an out-of-range
number, a quote inside a quoted string.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

MAX_LINE_BYTES: Final = 1 << 20
U16: Final = 65_535
U32: Final = 4_294_967_295

# Printable ASCII only; no ExaBGP syntax characters outside where the grammar puts them.
_PRINTABLE: Final = re.compile(r"^[\x21-\x7e]+( [\x21-\x7e]+)*$")
_FORBIDDEN_IN_COMMANDS: Final = frozenset(";#{}\"'\\")


class GrammarError(ValueError):
    """The line is not in the grammar; the message says where."""


def _uint(token: str, high: int, what: str) -> int:
    if not token.isascii() or not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise GrammarError(f"{what}: {token!r} is not a canonical unsigned integer")
    value = int(token)
    if value > high:
        raise GrammarError(f"{what}: {value} > {high}")
    return value


def _address(token: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(token)
    except ValueError:
        raise GrammarError(f"{what}: {token!r} is not an IP address") from None
    if str(address) != token:
        raise GrammarError(f"{what}: {token!r} is not in canonical form")
    return address


def _prefix(token: str, host_only: bool) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        network = ipaddress.ip_network(token, strict=True)
    except ValueError:
        raise GrammarError(f"nlri: {token!r} is not a prefix") from None
    if str(network) != token or "/" not in token:
        raise GrammarError(f"nlri: {token!r} is not in canonical PREFIX/LEN form")
    if host_only and network.prefixlen != network.max_prefixlen:
        raise GrammarError(f"nlri: {token!r} is not a host route (/32 or /128)")
    return network


def _bracketed(tokens: list[str], at: int, what: str) -> tuple[list[str], int]:
    """``[ a b c ]`` (tokens split on spaces, brackets glued or not) starting at ``at``."""
    if at >= len(tokens):
        raise GrammarError(f"{what}: missing value")
    first = tokens[at]
    if not first.startswith("["):
        return [first], at + 1  # a single value without brackets
    items: list[str] = []
    token = first[1:]
    index = at
    while True:
        closing = token.endswith("]")
        body = token[:-1] if closing else token
        if "[" in body or "]" in body:
            raise GrammarError(f"{what}: stray bracket in {token!r}")
        if body:
            items.append(body)
        if closing:
            break
        index += 1
        if index >= len(tokens):
            raise GrammarError(f"{what}: unterminated [")
        token = tokens[index]
    if not items:
        raise GrammarError(f"{what}: empty list")
    return items, index + 1


def _community(token: str) -> None:
    parts = token.split(":")
    if len(parts) != 2:
        raise GrammarError(f"community: {token!r} is not ASN:VALUE")
    for part in parts:
        _uint(part, U16, "community")


def _large_community(token: str) -> None:
    parts = token.split(":")
    if len(parts) != 3:
        raise GrammarError(f"large-community: {token!r} is not G:L1:L2")
    for part in parts:
        _uint(part, U32, "large-community")


def validate_command(line: str, *, host_only: bool = True) -> None:
    """Raise ``GrammarError`` unless ``line`` is one ExaBGP API command kvip-bgp may send.

    Accepted (each optionally prefixed by ``neighbor ADDRESS``):
      announce attributes next-hop NH [community [..]] [large-community [..]]
          [local-preference N] [med N] [as-path [ N.. ]] nlri PREFIX..
      withdraw attributes next-hop NH nlri PREFIX..
      announce route PREFIX next-hop NH [attributes as above]
      withdraw route PREFIX [next-hop NH]
      announce eor ipv4|ipv6 unicast
    """
    if not isinstance(line, str):
        raise GrammarError(f"not a string: {type(line).__name__}")
    if len(line.encode("utf-8", "surrogatepass")) >= MAX_LINE_BYTES:
        raise GrammarError("line of 1 MiB or more")
    if not _PRINTABLE.match(line):
        raise GrammarError(f"not single-spaced printable ASCII: {line[:80]!r}")
    bad = _FORBIDDEN_IN_COMMANDS.intersection(line)
    if bad:
        raise GrammarError(f"forbidden characters {sorted(bad)}: {line[:80]!r}")
    tokens = line.split(" ")
    at = 0
    if tokens[0] == "neighbor":
        if len(tokens) < 3:
            raise GrammarError("neighbor without an address and a command")
        _address(tokens[1], "neighbor")
        at = 2
    verb = tokens[at] if at < len(tokens) else ""
    if verb not in ("announce", "withdraw"):
        raise GrammarError(f"unknown command {verb!r}")
    kind = tokens[at + 1] if at + 1 < len(tokens) else ""
    rest = tokens[at + 2 :]
    if kind == "eor":
        if verb != "announce" or rest not in (["ipv4", "unicast"], ["ipv6", "unicast"]):
            raise GrammarError(f"bad eor: {rest!r}")
        return
    if kind == "attributes":
        _attributes(rest, verb, host_only, batched=True)
        return
    if kind == "route":
        if not rest:
            raise GrammarError("route without a prefix")
        prefix = _prefix(rest[0], host_only)
        if verb == "withdraw" and len(rest) == 1:
            return
        _attributes(rest[1:], verb, host_only, batched=False, family=prefix.version)
        return
    raise GrammarError(f"unknown command form {verb} {kind!r}")


def _attributes(
    tokens: list[str], verb: str, host_only: bool, *, batched: bool, family: int | None = None
) -> None:
    seen: set[str] = set()
    index = 0
    prefixes: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    next_hop: str | None = None
    while index < len(tokens):
        keyword = tokens[index]
        if keyword in seen:
            raise GrammarError(f"{keyword} given twice")
        seen.add(keyword)
        if keyword == "next-hop":
            if index + 1 >= len(tokens):
                raise GrammarError("next-hop without a value")
            next_hop = tokens[index + 1]
            if next_hop != "self":
                _address(next_hop, "next-hop")
            index += 2
        elif keyword == "nlri":
            if not batched:
                raise GrammarError("nlri in a single-route command")
            prefixes = [_prefix(token, host_only) for token in tokens[index + 1 :]]
            if not prefixes:
                raise GrammarError("nlri without prefixes")
            if len({p.version for p in prefixes}) != 1:
                raise GrammarError("nlri mixes address families")
            if len(set(prefixes)) != len(prefixes):
                raise GrammarError("nlri lists a prefix twice")
            index = len(tokens)
        elif verb == "withdraw":
            raise GrammarError(f"withdraw with attribute {keyword!r}")
        elif keyword in ("community", "large-community", "as-path"):
            items, index = _bracketed(tokens, index + 1, keyword)
            for item in items:
                if keyword == "community":
                    _community(item)
                elif keyword == "large-community":
                    _large_community(item)
                else:
                    _uint(item, U32, "as-path")
        elif keyword in ("local-preference", "med"):
            if index + 1 >= len(tokens):
                raise GrammarError(f"{keyword} without a value")
            _uint(tokens[index + 1], U32, keyword)
            index += 2
        else:
            raise GrammarError(f"unknown keyword {keyword!r}")
    if batched and not prefixes:
        raise GrammarError("attributes command without nlri")
    if verb == "announce" and next_hop is None:
        raise GrammarError("announce without next-hop")
    version = prefixes[0].version if prefixes else family
    if (
        next_hop not in (None, "self")
        and version == 4
        and ipaddress.ip_address(str(next_hop)).version != 4
    ):
        raise GrammarError("IPv6 next-hop on an IPv4 route")


# ----------------------------------------------------------------------------- config

_IDENT: Final = r"[A-Za-z0-9_.-]+"
_PATH: Final = r"/[A-Za-z0-9_./+@-]+"
_CONFIG_LINES: Final = [
    (re.compile(rf"^process {_IDENT} \{{$"), "open-process"),
    (re.compile(rf"^    run {_PATH}( [A-Za-z0-9_./+@=-]+)*;$"), "process"),
    (re.compile(r"^    encoder json;$"), "process"),
    (re.compile(r"^neighbor (\S+) \{$"), "open-neighbor"),
    (re.compile(r"^    router-id (\S+);$"), "neighbor"),
    (re.compile(r"^    local-address (\S+);$"), "neighbor"),
    (re.compile(r"^    local-as (\d+);$"), "neighbor"),
    (re.compile(r"^    peer-as (\d+);$"), "neighbor"),
    (re.compile(r"^    hold-time (\d+);$"), "neighbor"),
    (re.compile(r"^    connect (\d+);$"), "neighbor"),
    (re.compile(r"^    outgoing-ttl (\d+);$"), "neighbor"),
    # Inside quotes ExaBGP's tokenizer treats ' as a quote too and \ as an escape.
    (re.compile(r'^    md5-password "([^"\'\\\n\r]+)";$'), "neighbor"),
    (re.compile(r"^    family \{ ipv4 unicast; ipv6 unicast; \}$"), "neighbor"),
    (re.compile(r"^    capability \{ graceful-restart (\d+); \}$"), "neighbor"),
    (re.compile(r"^    manual-eor true;$"), "neighbor"),
    (re.compile(r"^    adj-rib-in false;$"), "neighbor"),
    (re.compile(rf"^    api \{{ processes \[ {_IDENT} \]; neighbor-changes; \}}$"), "neighbor"),
]
_RANGES: Final = {
    "local-as": U32,
    "peer-as": U32,
    "hold-time": U16,
    "connect": U16,
    "outgoing-ttl": 255,
    "graceful-restart": 4095,
}


def validate_config(text: str) -> None:
    """Raise ``GrammarError`` unless ``text`` is an ExaBGP config of the form we render."""
    block: str | None = None
    neighbors: set[str] = set()
    processes = 0
    for number, line in enumerate(text.split("\n"), 1):
        where = f"line {number}: {line[:100]!r}"
        if line == "":
            continue
        if number == 1 and line.startswith("# ") and _PRINTABLE.match(line):
            continue  # the generated-file header
        if line == "}":
            if block is None:
                raise GrammarError(f"{where}: unbalanced }}")
            block = None
            continue
        for pattern, kind in _CONFIG_LINES:
            match = pattern.match(line)
            if match is None:
                continue
            if kind.startswith("open-"):
                if block is not None:
                    raise GrammarError(f"{where}: nested block")
                block = kind[5:]
                if block == "neighbor":
                    address = _address(match.group(1), "neighbor")
                    if str(address) in neighbors:
                        raise GrammarError(f"{where}: neighbor twice")
                    neighbors.add(str(address))
                else:
                    processes += 1
            elif kind != block:
                raise GrammarError(f"{where}: {kind} statement outside its block")
            _check_values(line, match, where)
            break
        else:
            raise GrammarError(f"{where}: not a statement kvip-bgp renders")
    if block is not None:
        raise GrammarError("unterminated block at end of file")
    if processes != 1:
        raise GrammarError(f"expected exactly one process block, got {processes}")


def _check_values(line: str, match: re.Match[str], where: str) -> None:
    words = line.split()
    keyword = words[0] if words[0] not in ("capability",) else "graceful-restart"
    if keyword in ("router-id", "local-address"):
        address = _address(match.group(1), f"{where}: {keyword}")
        if keyword == "router-id" and address.version != 4:
            raise GrammarError(f"{where}: router-id must be IPv4")
    elif keyword in _RANGES:
        value = _uint(match.group(1), _RANGES[keyword], f"{where}: {keyword}")
        if keyword in ("local-as", "peer-as", "outgoing-ttl") and value == 0:
            raise GrammarError(f"{where}: {keyword} must not be 0")
    elif keyword == "md5-password":
        password = match.group(1)
        if len(password.encode()) > 80:
            raise GrammarError(f"{where}: TCP-MD5 keys are at most 80 bytes")
        if password != password.strip():
            raise GrammarError(f"{where}: password with surrounding blanks")
