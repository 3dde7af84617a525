"""The ExaBGP helper process: a byte relay between ExaBGP's pipes and the daemon.

ExaBGP talks to "processes" it spawns itself over their stdin/stdout. kvip-bgp wants to
own ExaBGP instead (start it, supervise it, restart it), so ExaBGP's configured process is
this relay: it connects to the daemon's Unix socket and copies bytes both ways, nothing
more. It holds no state, so when it dies ExaBGP respawns it and the daemon simply sees a
new connection and re-sends the full desired set.

It always drains its stdin: a full pipe blocks ExaBGP and with it every BGP session.

Usage (written into ExaBGP's config by ``kvip-bgp render-exabgp``):
    python -m kvip_bgp.bgp.relay /run/kvip-bgp/exabgp-api.sock
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

CONNECT_TIMEOUT = 30.0
CHUNK = 1 << 16


def _connect(path: str, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _copy_socket_to_stdout(sock: socket.socket) -> None:
    """Commands from the daemon to ExaBGP."""
    out = sys.stdout.fileno()
    while True:
        try:
            data = sock.recv(CHUNK)
        except OSError:
            data = b""
        if not data:
            # The daemon went away. Exit at once (the main thread may be blocked reading
            # stdin) so that ExaBGP respawns us and we reconnect to the next daemon.
            os._exit(0)
        view = memoryview(data)
        while view:
            try:
                written = os.write(out, view)
            except OSError:
                # ExaBGP went away (EPIPE: it was killed or is stopping). Our stderr is
                # ExaBGP's, which the daemon logs, so leave without a traceback; the main
                # thread may be blocked reading stdin, hence _exit.
                os._exit(0)
            view = view[written:]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kvip_bgp.bgp.relay SOCKET_PATH", file=sys.stderr)
        return 2
    try:
        sock = _connect(args[0], CONNECT_TIMEOUT)
    except OSError as error:
        print(f"kvip-bgp relay: cannot connect to {args[0]}: {error}", file=sys.stderr)
        return 1
    # ExaBGP may hand us non-blocking pipes; an EAGAIN must not end the relay.
    os.set_blocking(sys.stdin.fileno(), True)
    os.set_blocking(sys.stdout.fileno(), True)
    writer = threading.Thread(target=_copy_socket_to_stdout, args=(sock,), daemon=True)
    writer.start()
    stdin = sys.stdin.fileno()
    try:
        while writer.is_alive():
            data = os.read(stdin, CHUNK)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    # Either side closed: exit so ExaBGP respawns us and the daemon resynchronises.
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
