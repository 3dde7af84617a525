"""TLS for https health checks: a CA file, a fixed server name, or no verification."""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass

from kvip_bgp.domain.config import HealthCheck


@dataclass(frozen=True)
class Tls:
    context: ssl.SSLContext
    server_name: str | None = None


def tls_settings(check: HealthCheck) -> Tls | None:
    """The TLS settings of an https check (the CA file is read at each check: a CA that
    appears or changes later is picked up, and a missing one fails the check)."""
    if check.http is None or not check.http.startswith("https://"):
        return None
    if check.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return Tls(context)
    cafile = str(check.ca_file) if check.ca_file else None
    return Tls(ssl.create_default_context(cafile=cafile), check.server_name)


class _HTTPSConnection(http.client.HTTPSConnection):
    """Verifies (and sends as SNI) ``server_name`` rather than the URL's host: an API
    server reached at 127.0.0.1 has a certificate for ``kubernetes``, not for 127.0.0.1."""

    def __init__(
        self, host: str, port: int | None, timeout: float, tls: ssl.SSLContext, name: str
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=tls)
        self._tls = tls
        self._name = name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._name)


def https_connection(
    host: str, port: int | None, timeout: float, tls: Tls | None
) -> http.client.HTTPSConnection:
    if tls is None or tls.server_name is None:
        context = tls.context if tls is not None else None
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    return _HTTPSConnection(host, port, timeout, tls.context, tls.server_name)
