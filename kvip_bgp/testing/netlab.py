"""Network-namespace plumbing for lab tests: namespaces, veth links, sockets inside them.

The lab gives every test real kernel networking (real TCP, real BGP sessions, TCP-MD5)
without touching the host's own interfaces: everything lives in network namespaces whose
names start with a reserved prefix (``kvl-``), so :func:`cleanup` can always remove the
leftovers of a crashed run without guessing.

This module drives the ``ip`` command line only. In this project exactly one module uses
pyroute2 (``netif.py``, the daemon's own interface code), and test plumbing must not
become a second one.

Run ``python -m kvip_bgp.testing.netlab up`` to build the standard two-namespace topology
for manual poking, and ``... down`` to remove every ``kvl-`` namespace again.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import http.client
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from kvip_bgp.testing.procfs import pid_alive

__all__ = [
    "DEFAULT_PREFIX",
    "Lab",
    "Netns",
    "NetnsCommandError",
    "cleanup",
    "connect_in_netns",
    "http_get_in_netns",
    "in_netns",
    "link",
    "list_netns",
    "listen_socket_in_netns",
    "send_signal",
    "terminate_pids",
    "wait_until",
]

T = TypeVar("T")

DEFAULT_PREFIX = "kvl-"
"""Namespace/link name prefix reserved for this lab; :func:`cleanup` owns everything under it."""

_CLONE_NEWNET = 0x40000000
_NETNS_RUN_DIR = Path("/run/netns")


# --------------------------------------------------------------------------- helpers


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = 0.1,
    *,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` until it is true, or raise ``TimeoutError`` naming ``what``.

    Lab tests wait for real protocol state (a session coming up, a route arriving);
    fixed sleeps make them both slow and flaky. An exception raised by the predicate
    counts as "not yet" (a daemon that is still starting refuses connections), and the
    last one is put into the timeout message so a failure explains itself.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if predicate():
                return
            last_error = None
        except Exception as exc:  # "not yet"; reported below if it never clears
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


def wait_for_value(
    fetch: Callable[[], T],
    predicate: Callable[[T], bool],
    timeout: float,
    interval: float = 0.2,
    *,
    what: str = "condition",
) -> T:
    """Poll ``fetch()`` until ``predicate`` holds for its result; return that result.

    The routing-table waits of every peer harness (FRR, BIRD, GoBGP) are this.
    """
    seen: list[T] = []

    def check() -> bool:
        seen[:] = [fetch()]
        return predicate(seen[0])

    wait_until(check, timeout, interval, what=what)
    return seen[0]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; with ``check`` raise with ip's own error text on failure."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"ip {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return proc


def list_netns() -> list[str]:
    """Names of all named network namespaces (``ip netns list`` prints ``NAME (id: N)``)."""
    proc = _ip("netns", "list", check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _netns_pids(name: str) -> list[int]:
    proc = _ip("netns", "pids", name, check=False)
    pids = [int(tok) for tok in proc.stdout.split() if tok.isdigit()]
    # Never shoot ourselves: a thread of this process may have entered the namespace.
    return [pid for pid in pids if pid != os.getpid()]


def send_signal(pid: int, sig: signal.Signals) -> None:
    """``kill(pid, sig)`` that ignores a process which is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def terminate_pids(pids: Iterable[int], grace: float = 2.0) -> None:
    """SIGTERM every pid, then SIGKILL whatever still runs after ``grace`` seconds."""
    pending = [pid for pid in pids if pid_alive(pid)]
    for pid in pending:
        send_signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [pid for pid in pending if pid_alive(pid)]
    for pid in pending:
        send_signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while pending and time.monotonic() < deadline:
        time.sleep(0.02)
        pending = [pid for pid in pending if pid_alive(pid)]


def cleanup(prefix: str = DEFAULT_PREFIX) -> None:
    """Remove every namespace and root-namespace link whose name starts with ``prefix``.

    Processes inside a namespace are stopped first (SIGTERM, then SIGKILL): a daemon left
    running would keep the namespace's sockets alive after the name is gone. Safe to call
    any number of times; things that vanished in the meantime are not errors.
    """
    if not prefix:
        raise ValueError("refusing to clean up with an empty prefix")
    for name in list_netns():
        if not name.startswith(prefix):
            continue
        terminate_pids(_netns_pids(name))
        _ip("netns", "delete", name, check=False)
    proc = _ip("-o", "link", "show", check=False)
    for line in proc.stdout.splitlines():
        # "7: kvl-x0@kvl-x1: <BROADCAST,...> ..." -> "kvl-x0"
        parts = line.split(":", 2)
        if len(parts) < 3:
            continue
        ifname = parts[1].strip().split("@", 1)[0]
        if ifname.startswith(prefix):
            _ip("link", "delete", ifname, check=False)


@contextlib.contextmanager
def fresh_netns(prefix: str) -> Iterator[Netns]:
    """A namespace of a test's own, ``prefix`` and this process's id, removed afterwards;
    whatever an earlier run left with ``prefix`` is removed first (``cleanup``)."""
    cleanup(prefix)
    ns = Netns.create(f"{prefix}{os.getpid()}")
    try:
        yield ns
    finally:
        ns.delete()


def add_vip_link(ns: Netns, name: str = "vip0") -> None:
    """``name``, up, in ``ns``: one end of a veth pair (its peer ``name`` with 1 for 0), as
    this kernel may lack the dummy driver and ``lo`` carries 127/8."""
    ns.run("ip", "link", "add", name, "type", "veth", "peer", "name", name[:-1] + "1")
    ns.run("ip", "link", "set", name, "up")


# --------------------------------------------------------------------------- namespaces


class NetnsCommandError(subprocess.CalledProcessError):
    """A command in a namespace failed; unlike its base class, ``str()`` shows stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()} stderr: {self.stderr}"


class Netns:
    """A named network namespace, driven through ``ip netns``.

    ``Netns(name)`` is only a handle; :meth:`create` makes the namespace (with ``lo`` up,
    so loopback addresses work at once) and :meth:`delete` stops its processes and
    removes it.
    """

    def __init__(self, name: str) -> None:
        if not name or "/" in name or len(name) > 200:
            raise ValueError(f"bad namespace name: {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def create(cls, name: str) -> Netns:
        """Create namespace ``name`` (it must not exist yet) and bring up its ``lo``."""
        ns = cls(name)
        _ip("netns", "add", name)
        try:
            ns.run("ip", "link", "set", "lo", "up")
        except BaseException:
            ns.delete()
            raise
        return ns

    def exists(self) -> bool:
        return self.name in list_netns()

    def pids(self) -> list[int]:
        """Processes whose network namespace is this one (not counting this process)."""
        return _netns_pids(self.name)

    def delete(self) -> None:
        """Stop every process inside, then delete the namespace (its veths go with it)."""
        terminate_pids(self.pids())
        _ip("netns", "delete", self.name, check=False)

    def argv(self, *cmd: str) -> list[str]:
        """The command line that runs ``cmd`` inside this namespace."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(
        self, *cmd: str, check: bool = True, timeout: float | None = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the namespace; output captured as text.

        With ``check`` a failure raises :class:`NetnsCommandError` whose message includes
        stderr, because a bare exit status is useless when a lab test fails in CI.
        """
        proc = subprocess.run(
            self.argv(*cmd), capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise NetnsCommandError(
                proc.returncode,
                proc.args,
                output=proc.stdout,
                stderr=f"[netns {self.name}] {proc.stderr.strip()}",
            )
        return proc

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace (``ip netns exec`` execs it, so the Popen's
        pid is the command's own pid and signals reach it directly)."""
        return subprocess.Popen(self.argv(*argv), **kwargs)

    def add_address(self, ifname: str, cidr: str) -> None:
        """Add ``cidr`` to ``ifname``; IPv6 addresses skip DAD so they are usable at once."""
        extra = ["nodad"] if ipaddress.ip_interface(cidr).version == 6 else []
        self.run("ip", "addr", "add", cidr, "dev", ifname, *extra)


def _ns_name(ns: Netns | str) -> str:
    return ns.name if isinstance(ns, Netns) else ns


def link(
    ns_a: Netns | str,
    if_a: str,
    ns_b: Netns | str,
    if_b: str,
    addrs_a: Sequence[str] = (),
    addrs_b: Sequence[str] = (),
) -> None:
    """Create a veth pair ``if_a`` (in ``ns_a``) <-> ``if_b`` (in ``ns_b``), address it, up.

    Both ends are created directly inside their namespaces, so no interface ever appears
    in the root namespace (no name clashes with the host, nothing to leak there).
    Addresses are CIDR strings, IPv4 or IPv6.
    """
    a, b = _ns_name(ns_a), _ns_name(ns_b)
    for ifname in (if_a, if_b):
        if not 0 < len(ifname) <= 15:
            raise ValueError(f"interface name must be 1..15 characters: {ifname!r}")
    _ip("link", "add", "name", if_a, "netns", a, "type", "veth", "peer", "name", if_b, "netns", b)
    for ns, ifname, addrs in ((Netns(a), if_a, addrs_a), (Netns(b), if_b, addrs_b)):
        for cidr in addrs:
            ns.add_address(ifname, cidr)
        ns.run("ip", "link", "set", ifname, "up")


# --------------------------------------------------------------------------- sockets


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET) failed: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Move the *calling thread* into network namespace ``name`` for the ``with`` body.

    ``setns`` is per thread, so other threads of the process are unaffected. A socket
    keeps the namespace it was created in for its whole life, which is what
    :func:`listen_socket_in_netns` relies on. The original namespace is remembered as an
    open fd (taken before switching) so the way back works even if names change.
    """
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        target = os.open(_NETNS_RUN_DIR / name, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def _family_of(host: str) -> socket.AddressFamily:
    try:
        version = ipaddress.ip_address(host.strip("[]")).version
    except ValueError:
        return socket.AF_UNSPEC
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def listen_socket_in_netns(
    name: str,
    host: str,
    port: int = 0,
    family: socket.AddressFamily = socket.AF_INET,
    backlog: int = 64,
) -> socket.socket:
    """A bound, listening TCP socket that lives in namespace ``name``.

    Created inside the namespace, usable from any thread afterwards: this lets an
    in-process server of the test (say a fake Kubernetes API) serve a daemon that runs
    inside the namespace. ``port=0`` picks a free port; read it from ``getsockname()``.
    """
    with in_netns(name):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host.strip("[]"), port))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
    return sock


def connect_in_netns(name: str, host: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP client socket connected from inside namespace ``name`` to ``host:port``."""
    with in_netns(name):
        infos = socket.getaddrinfo(host.strip("[]"), port, _family_of(host), socket.SOCK_STREAM)
        last: OSError | None = None
        for family, socktype, proto, _canon, addr in infos:
            sock = socket.socket(family, socktype, proto)
            sock.settimeout(timeout)
            try:
                sock.connect(addr)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            return sock
    raise last or OSError(errno.EHOSTUNREACH, f"no address for {host!r}")


class _NetnsHTTPConnection(http.client.HTTPConnection):
    """``http.client`` connection whose socket is opened inside a network namespace."""

    def __init__(self, netns: str, host: str, port: int | None, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._netns = netns
        self._timeout = timeout

    def connect(self) -> None:
        self.sock = connect_in_netns(self._netns, self.host, self.port, self._timeout)


def http_get_in_netns(name: str, url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """``GET url`` from inside namespace ``name``; returns ``(status, body)``.

    Uses ``http.client`` over a namespace socket, so chunked bodies and keep-alive
    framing are handled by the standard library rather than by a hand-rolled parser.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"only http://HOST[:PORT]/... URLs are supported: {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    conn = _NetnsHTTPConnection(name, parts.hostname, parts.port or 80, timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- topology


class Lab:
    """The standard lab topology: a node and its top-of-rack router, one veth apart.

    ``kvl-node`` (``node0``: 192.0.2.1/24, 2001:db8:0:1::1/64) <->
    ``kvl-tor`` (``tor0``: 192.0.2.2/24, 2001:db8:0:1::2/64).

    Use it as a context manager: entering first removes leftovers of an earlier (crashed)
    run, then builds; leaving stops every process and callback it tracks, removes the
    namespaces and the work directory. :meth:`add_netns` and :meth:`add_link` extend the
    topology (a router namespace between node and ToR for multihop sessions, a second
    ToR, ...).
    """

    NODE_IF = "node0"
    TOR_IF = "tor0"
    NODE_V4 = "192.0.2.1"
    TOR_V4 = "192.0.2.2"
    NODE_V6 = "2001:db8:0:1::1"
    TOR_V6 = "2001:db8:0:1::2"

    def __init__(self, prefix: str = DEFAULT_PREFIX, *, keep_workdir: bool = False) -> None:
        if not prefix:
            raise ValueError("the lab needs a non-empty name prefix")
        self.prefix = prefix
        self.keep_workdir = keep_workdir
        self.namespaces: dict[str, Netns] = {}
        self._processes: list[subprocess.Popen[Any]] = []
        self._on_exit: list[Callable[[], object]] = []
        self._workdir: Path | None = None

    # -- building ---------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        """A private directory for this lab's files (daemon configs, sockets, logs)."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=self.prefix))
        return self._workdir

    @property
    def node(self) -> Netns:
        return self.namespaces["node"]

    @property
    def tor(self) -> Netns:
        return self.namespaces["tor"]

    def add_netns(self, short: str) -> Netns:
        """Create namespace ``PREFIX + short`` and track it (``lab.namespaces[short]``)."""
        if short in self.namespaces:
            raise ValueError(f"namespace {short!r} already exists in this lab")
        ns = Netns.create(self.prefix + short)
        self.namespaces[short] = ns
        return ns

    def add_link(
        self,
        ns_a: Netns | str,
        if_a: str,
        ns_b: Netns | str,
        if_b: str,
        addrs_a: Sequence[str] = (),
        addrs_b: Sequence[str] = (),
    ) -> None:
        """Veth between two lab namespaces (by :class:`Netns` or short name)."""
        link(self._resolve(ns_a), if_a, self._resolve(ns_b), if_b, addrs_a, addrs_b)

    def _resolve(self, ns: Netns | str) -> Netns:
        if isinstance(ns, Netns):
            return ns
        return self.namespaces.get(ns) or Netns(ns)

    def build(self) -> Lab:
        """Create the standard node <-> tor topology."""
        node = self.add_netns("node")
        tor = self.add_netns("tor")
        self.add_link(
            node,
            self.NODE_IF,
            tor,
            self.TOR_IF,
            addrs_a=(f"{self.NODE_V4}/24", f"{self.NODE_V6}/64"),
            addrs_b=(f"{self.TOR_V4}/24", f"{self.TOR_V6}/64"),
        )
        return self

    # -- tracking ---------------------------------------------------------------------

    def popen(self, ns: Netns | str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in a lab namespace; it is terminated and reaped on close."""
        proc = self._resolve(ns).popen(argv, **kwargs)
        self._processes.append(proc)
        return proc

    def on_exit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on close, before namespaces go (last registered runs first).

        Meant for things that know how to stop themselves cleanly, e.g. ``FrrPeer.stop``.
        """
        self._on_exit.append(callback)

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything this lab started and remove all ``PREFIX`` namespaces/links."""
        errors: list[BaseException] = []
        while self._on_exit:
            callback = self._on_exit.pop()
            try:
                callback()
            except Exception as exc:  # keep tearing down; report at the end
                errors.append(exc)
        for proc in self._processes:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=3)
        self._processes.clear()
        self.namespaces.clear()
        cleanup(self.prefix)
        if self._workdir is not None and not self.keep_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        if errors:
            raise RuntimeError(f"lab teardown: {len(errors)} callback(s) failed: {errors!r}")

    def __enter__(self) -> Lab:
        cleanup(self.prefix)
        try:
            return self.build()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``up``: build the standard topology and leave it; ``down``: remove all of it."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["up"]:
        cleanup()
        Lab().build()
        print(f"{Lab.NODE_V4} ({DEFAULT_PREFIX}node) <-> {Lab.TOR_V4} ({DEFAULT_PREFIX}tor)")
        return 0
    if args == ["down"]:
        cleanup()
        return 0
    print("usage: python -m kvip_bgp.testing.netlab up|down", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
