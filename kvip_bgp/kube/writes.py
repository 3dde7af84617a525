"""Writes whose reply the caller does not need: the status writer's PATCHes.

Apart from ``client`` because it has a transport of its own to keep (see ``Writer``);
everything else about the API (auth, TLS, errors) is the client's.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Sequence
from typing import Any, Final

import urllib3

from kvip_bgp.kube.client import JSON, ApiClient, ApiException, rest
from kvip_bgp.kube.http11 import Http11Connection, Reply

# Seconds before each read of pipelined replies. Against the fake API 40 PATCHes sent at
# once cost 31 µs of CPU each with their replies read at once, 16.4-20 µs with one pause
# of 2-20 ms after the send (a prototype), 16.9 µs with this pause before each read: the
# replies come in a few reads, not one wake-up each.
PIPELINE_GATHER: Final = 0.005


class NotAnswered(ConnectionError):
    """A write not sent, or sent and left without a reply: it may have been applied."""


class Writer:
    """Writes whose reply the caller does not need (Service status PATCHes) on one
    thread's client: the reply is read and thrown away; non-2xx raises the same
    ``ApiException`` subclasses as ``request``.

    Why not ``request``: a burst of 10,000 Services is 10,000 status PATCHes, and most
    of their client-side CPU was the layers in between: through urllib3 and
    ``http.client`` a PATCH cost ~300 µs of this thread's CPU against the fake API,
    where sending it and reading the reply on the socket cost ~26 µs (both measured in
    one process). So the PATCH goes out on a connection of our own (``kube.http11``),
    opened by the pool urllib3 keeps for the host, so that TLS, the CA, client
    certificates and hostname checks are the client's. What this keeps from the client,
    read from it on every call: its default headers (User-Agent) and cookie, as
    ``param_serialize`` adds them; the bearer token through ``update_params_for_auth``,
    which runs the configuration's refresh hook (exec plugins, the rotated in-cluster
    token; at most once a second, see ``RefreshAtMostEvery``); and the host (a refresh
    may rewrite it). Like ``RESTClientObject.request``, the body is sent as
    ``json.dumps(body)`` (JSON types only: no model objects to sanitise) and an SSL
    error becomes ``ApiException(status=0)``.

    What the connection of our own does not do goes to the client's pool manager as
    before: a proxy (its manager rewrites the request), a host with a path, a path
    ``parse_url`` would rewrite (a dot segment, an escape, a query), and a redirect
    (the manager follows it, stripping credentials across hosts; it is asked again).
    """

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        # (host, manager, our connection on the host's pool or None): see _connection.
        self._route: tuple[str, Any, Http11Connection | None] | None = None

    def write_many(
        self,
        method: str,
        writes: Sequence[tuple[str, Any]],
        content_type: str = JSON,
        timeout: tuple[float, float] = (5.0, 10.0),
    ) -> list[Exception | None]:
        """``write`` each (path, body) of ``writes``; for each, None or what it raised.

        On the connection of our own they go out pipelined (``exchange_many``, replies
        gathered for ``PIPELINE_GATHER``): against the fake API a status PATCH cost
        ~59 µs of this thread's CPU one at a time, ~17 µs 40 at a time. Only for writes
        that may be sent twice (a status PATCH sets the same value again): one whose
        reply did not come is ``NotAnswered``, and it may have been applied. A write the
        connection of our own cannot take (see the class), and a redirect, goes through
        ``write``. Elsewhere one write after another, and the first error leaves the
        rest ``NotAnswered``, unsent (as the status writer stopped at an error before).
        """
        connection = self._connection()
        plain = all(_PLAIN_PATH.fullmatch(path) for path, _ in writes)
        if len(writes) > 1 and connection is not None and plain:
            return self._pipelined(connection, method, writes, content_type, timeout)
        results: list[Exception | None] = []
        for path, body in writes:
            if results and results[-1] is not None:
                results.append(NotAnswered(f"{method} {path}: not sent after an error"))
            else:
                results.append(self._one(method, path, body, content_type, timeout))
        return results

    def _pipelined(
        self,
        connection: Http11Connection,
        method: str,
        writes: Sequence[tuple[str, Any]],
        content_type: str,
        timeout: tuple[float, float],
    ) -> list[Exception | None]:
        headers = self._headers(method, writes[0][0], content_type)
        requests = [(path, headers, json.dumps(body).encode()) for path, body in writes]
        try:
            replies = connection.exchange_many(method, requests, timeout, PIPELINE_GATHER)
        except (urllib3.exceptions.SSLError, ssl.SSLError) as error:
            failed = ApiException(status=0, reason=f"{type(error).__name__}\n{error}")
            return [failed] * len(writes)
        except Exception as error:  # nothing was answered
            return [error] * len(writes)
        results: list[Exception | None] = []
        for (path, body), reply in zip(writes, replies, strict=True):
            if reply is None:
                results.append(NotAnswered(f"{method} {path}: no reply"))
            elif 300 <= reply.status <= 399:
                results.append(self._one(method, path, body, content_type, timeout))
            elif not 200 <= reply.status <= 299:
                results.append(_api_error(reply))
            else:
                results.append(None)
        return results

    def _one(
        self, method: str, path: str, body: Any, content_type: str, timeout: tuple[float, float]
    ) -> Exception | None:
        try:
            self.write(method, path, body, content_type, timeout)
        except Exception as error:
            return error
        return None

    def write(
        self,
        method: str,
        path: str,
        body: Any,
        content_type: str = JSON,
        timeout: tuple[float, float] = (5.0, 10.0),
    ) -> None:
        api = self.api
        headers = self._headers(method, path, content_type)
        data = json.dumps(body)
        try:
            connection = self._connection()
            if connection is not None and _PLAIN_PATH.fullmatch(path):
                reply = connection.exchange(method, path, headers, data.encode(), timeout)
                if not 300 <= reply.status <= 399:
                    if not 200 <= reply.status <= 299:
                        raise ApiException.from_response(http_resp=reply, body=None, data=None)
                    return
            response = api.rest_client.pool_manager.request(
                method,
                api.configuration.host + path,
                body=data,
                headers=headers,
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                preload_content=False,
            )
        except (urllib3.exceptions.SSLError, ssl.SSLError) as error:
            raise ApiException(status=0, reason=f"{type(error).__name__}\n{error}") from error
        try:
            if not 200 <= response.status <= 299:
                failed = rest.RESTResponse(response)
                failed.read()  # type: ignore[no-untyped-call]
                raise ApiException.from_response(http_resp=failed, body=None, data=None)
            response.read()
        finally:
            response.release_conn()

    def _headers(self, method: str, path: str, content_type: str) -> dict[str, str]:
        api = self.api
        headers = {"Accept": JSON, "Content-Type": content_type, **api.default_headers}
        if api.cookie:
            headers["Cookie"] = api.cookie
        # The bearer token does not depend on the path or body (BearerToken only).
        api.update_params_for_auth(headers, None, ["BearerToken"], path, method, None)
        return headers

    def _connection(self) -> Http11Connection | None:
        """Our connection to the configured host, or None where the manager must send."""
        api = self.api
        host = api.configuration.host
        manager = api.rest_client.pool_manager
        route = self._route
        if route is None or route[0] != host or route[1] is not manager:
            if route is not None and route[2] is not None:
                route[2].close()
            pool = _pool_for(manager, host)
            netloc = urllib3.util.parse_url(host).netloc
            connection = None if pool is None or not netloc else Http11Connection(pool, netloc)
            route = self._route = (host, manager, connection)
        return route[2]


# Paths that urllib3's parse_url leaves as they are: segments of unreserved characters
# that do not start with a dot (no dot segment to remove), no escape, query or fragment.
_PLAIN_PATH: Final = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+")


def _api_error(reply: Reply) -> ApiException:
    """The client's exception for ``reply`` (``from_response`` raises some, returns some)."""
    try:
        return ApiException.from_response(http_resp=reply, body=None, data=None)
    except ApiException as error:
        return error


def _pool_for(manager: Any, host: str) -> Any:
    """The pool ``manager`` sends ``host + path`` to, if ``Writer`` may use it."""
    if type(manager) is not urllib3.PoolManager:  # ProxyManager, SOCKSProxyManager
        return None
    url = urllib3.util.parse_url(host)
    if url.scheme is None or url.path or url.query is not None or url.fragment is not None:
        return None
    return manager.connection_from_host(url.host, port=url.port, scheme=url.scheme)
