"""Writes whose reply the caller does not need: the status writer's PATCHes.

Apart from ``client`` because it has a transport of its own to keep (see ``Writer``);
everything else about the API (auth, TLS, errors) is the client's.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import urllib3

from kvip_bgp.kube.client import JSON, ApiClient, ApiException, rest


class Writer:
    """Writes whose reply the caller does not need (Service status PATCHes) on one
    thread's client: the reply is read and thrown away, the connection goes back to
    the pool; non-2xx raises the same ``ApiException`` subclasses as ``request``.

    Why not ``request``: a burst of 10,000 Services is 10,000 status PATCHes, and most
    of their client-side CPU is ours to spare (measured per PATCH against the fake API:
    parsing the reply, a whole Service, ~24 µs; ``param_serialize`` ~23 µs; the rest of
    ``RESTClientObject.request``, content-type regexes mostly, ~25 µs; of ~400). What this
    keeps from the client, read from it on every call: its default headers (User-Agent)
    and cookie, as ``param_serialize`` adds them; the bearer token through
    ``update_params_for_auth``, which runs the configuration's refresh hook (exec
    plugins, the rotated in-cluster token; at most once a second, see
    ``RefreshAtMostEvery``); the host (a refresh may rewrite it); and the pool manager
    the client built from the configuration (TLS, client certificates, proxy). Like
    ``RESTClientObject.request``, the body is sent as ``json.dumps(body)`` (``body``
    holds JSON types only: no model objects to sanitise) and an SSL error becomes
    ``ApiException(status=0)``.

    Why an object: it keeps the manager's connection pool for the host (``_send``).
    """

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        # (host, manager, its pool for the host or None): see _send.
        self._route: tuple[str, Any, Any] | None = None

    def write(
        self,
        method: str,
        path: str,
        body: Any,
        content_type: str = JSON,
        timeout: tuple[float, float] = (5.0, 10.0),
    ) -> None:
        api = self.api
        headers = {"Accept": JSON, "Content-Type": content_type, **api.default_headers}
        if api.cookie:
            headers["Cookie"] = api.cookie
        api.update_params_for_auth(headers, None, ["BearerToken"], path, method, body)
        timeouts = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        try:
            response = self._send(method, path, json.dumps(body), headers, timeouts)
        except urllib3.exceptions.SSLError as error:
            raise ApiException(status=0, reason=f"{type(error).__name__}\n{error}") from error
        try:
            if not 200 <= response.status <= 299:
                reply = rest.RESTResponse(response)
                reply.read()  # type: ignore[no-untyped-call]
                raise ApiException.from_response(http_resp=reply, body=None, data=None)
            response.read()
        finally:
            response.release_conn()

    def _send(self, method: str, path: str, body: str, headers: Any, timeout: Any) -> Any:
        """The request as ``PoolManager.request`` sends it, without finding its pool again.

        Per request the manager parses the URL and derives the pool's key from its
        whole context, to find the same pool each time: ~30 µs of a PATCH's client CPU
        (measured against the fake API in its own process). The pool is taken from the
        manager once per host instead, and used where that is the same request: a plain
        ``PoolManager`` (a proxy's manager rewrites the request line and headers), a
        host without a path, a path with no character ``parse_url`` would rewrite (no
        dot segment, escape, query), and no redirect in the reply (the manager follows
        it, stripping credentials across hosts: it is asked again). A pool the manager
        drops stays usable (urllib3 2 does not close it); one closed all the same
        raises before sending and is taken again. Anything else goes to the manager.
        """
        api = self.api
        host = api.configuration.host
        manager = api.rest_client.pool_manager
        route = self._route
        if route is None or route[0] != host or route[1] is not manager:
            route = self._route = (host, manager, _pool_for(manager, host))
        pool = route[2]
        if pool is not None and _PLAIN_PATH.fullmatch(path):
            try:
                response = pool.urlopen(
                    method,
                    path,
                    body=body,
                    headers=headers,
                    timeout=timeout,
                    preload_content=False,
                    redirect=False,
                    assert_same_host=False,
                )
            except urllib3.exceptions.ClosedPoolError:  # raised before anything is sent
                self._route = None
            else:
                if not response.get_redirect_location():
                    return response
                response.drain_conn()
                response.release_conn()
        return manager.request(
            method, host + path, body=body, headers=headers, timeout=timeout, preload_content=False
        )


# Paths that urllib3's parse_url leaves as they are: segments of unreserved characters
# that do not start with a dot (no dot segment to remove), no escape, query or fragment.
_PLAIN_PATH: Final = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+")


def _pool_for(manager: Any, host: str) -> Any:
    """The pool ``manager`` sends ``host + path`` to, if ``Writer._send`` may use it."""
    if type(manager) is not urllib3.PoolManager:  # ProxyManager, SOCKSProxyManager
        return None
    url = urllib3.util.parse_url(host)
    if url.scheme is None or url.path or url.query is not None or url.fragment is not None:
        return None
    return manager.connection_from_host(url.host, port=url.port, scheme=url.scheme)
