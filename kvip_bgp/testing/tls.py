"""A throwaway CA, a server certificate it signs, and an HTTPS endpoint whose answer a
test sets: the local API server's ``/readyz`` as a control-plane VIP's check sees it."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def subject_alt_name(name: str, ip: str | None = None) -> str:
    """The openssl extension line: DNS ``name``, and IP ``ip`` if given (an address
    client connects to by number, as in-cluster clients do to KUBERNETES_SERVICE_HOST,
    is checked against IP entries only)."""
    entries = [f"DNS:{name}"]
    if ip is not None:
        entries.append(f"IP:{ipaddress.ip_address(ip)}")
    return "subjectAltName=" + ",".join(entries)


def make_certs(directory: Path, name: str = "kubernetes", ip: str | None = None) -> Certs:
    """A self-signed CA and a certificate for DNS ``name`` (and for address ``ip``, if
    given; else not for 127.0.0.1), made with the openssl command line, as kubeadm's CA
    signs the API server's."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text(subject_alt_name(name, ip) + "\n", encoding="utf-8")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-subj", "/CN=test-ca", "-keyout", str(ca_key), "-out", str(ca)),
    )
    openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}"),
        *("-keyout", str(key), "-out", str(csr)),
    )
    openssl(
        *("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key)),
        *("-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert)),
    )
    return Certs(ca=ca, cert=cert, key=key)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context serving ``cert`` (no client certificates asked for)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


def client_context(ca: Path) -> ssl.SSLContext:
    """A TLS client context that trusts only ``ca`` and checks the server's name, as
    the daemon's client does with the service account's ca.crt."""
    return ssl.create_default_context(cafile=str(ca))


class HttpsEndpoint:
    """Serves ``GET`` with ``status`` (a test flips it) over TLS on a listening socket,
    which may live in another network namespace (netlab.listen_socket_in_netns)."""

    def __init__(self, sock: socket.socket, certs: Certs) -> None:
        self.status = 200
        self.requests = 0
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.requests += 1
                self.send_response(endpoint.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        context = server_context(certs.cert, certs.key)
        self.server = http.server.ThreadingHTTPServer(
            sock.getsockname()[:2], Handler, bind_and_activate=False
        )
        self.server.socket.close()
        self.port: int = sock.getsockname()[1]
        self.server.socket = context.wrap_socket(sock, server_side=True)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
