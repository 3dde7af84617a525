"""The only module that talks to the Kubernetes API (the only ``kubernetes`` import).

Stream threads list and then watch one resource each and push frozen, parsed objects to
the cluster-state thread. They own no cluster state: all they remember is the
``resourceVersion`` to resume from.

Requests go through the client's configuration and REST layer (kubeconfig and
in-cluster loading, auth and token refresh, TLS, urllib3, ``ApiException``), one client
per thread (see ``new_api_client``), but not through its generated ``CoreV1Api``-style
classes (see ``request``) nor its own ``ApiClient`` (see ``ApiClient`` here). Payloads
are decoded by ``jsonbody`` and parsed by ``domain/objects.py``: the client's model
deserialisation costs seconds for 10,000 Services, and we need a dozen fields of each.
Initial lists are read in pages (``LIST_PAGE_SIZE``), never as JSON dicts all at once.

Robustness against real API servers: watches resume from the last ``resourceVersion``
(bookmarks keep it fresh); ``410 Gone`` triggers a relist; a read timeout longer than the
server-side watch timeout notices a silently dead stream; errors back off exponentially
with jitter. A relist replaces the whole cache for that resource, so nothing that changed
during an outage is missed; nothing is ever withdrawn because the API is unreachable.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import structlog

from kvip_bgp.kube import jsonbody
from kvip_bgp.runtime.imports import register_without_init

register_without_init("kubernetes")  # see runtime.imports
# In-cluster credentials need only ``incluster_config``; ``kube_config`` (a kubeconfig
# file) imports oauthlib, requests and dateutil, so it is loaded when a kubeconfig is.
register_without_init("kubernetes.config")

from kubernetes import client as k8s  # noqa: E402 (after the package's registration)
from kubernetes.client import rest as rest  # noqa: E402 (kube.writes reads error replies)
from kubernetes.client.exceptions import ApiException as ApiException  # noqa: E402
from kubernetes.client.exceptions import ApiValueError  # noqa: E402
from kubernetes.config import incluster_config  # noqa: E402
from kubernetes.config.config_exception import ConfigException  # noqa: E402

# Re-exported: the other kube modules name the client types without importing ``kubernetes``.
Configuration = k8s.Configuration

log = structlog.get_logger("kvip_bgp.kube")


class KubeConfigError(Exception):
    """No usable cluster credentials; the message lists what was tried."""


class KubeError(Exception):
    """A request the daemon cannot start without failed; the message says which."""


LIST_PAGE_SIZE: Final = 500
# Seconds between two runs of a client's credential refresh hook (see RefreshAtMostEvery).
REFRESH_EVERY: Final = 1.0
JSON: Final = "application/json"
# What the generated client sends for a dict body to PATCH on built-in kinds.
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"


class ApiClient:
    """What the daemon calls of ``kubernetes.client.ApiClient``, with the same results.

    Why not the library's: its module imports pydantic (``SecretStr``, the
    ``ApiResponse`` model) and dateutil for the model (de)serialisation we never use
    (``request`` reads raw JSON): ~60 ms of the main thread's CPU and ~9 MB at an
    in-cluster start (docs/performance.md). What this keeps, as the library's does it:
    the User-Agent default header; the bearer token from the configuration's
    ``auth_settings`` (which runs its refresh hook: the rotated in-cluster token, exec
    plugins); the URL, the configuration's host + path + the query with each value
    percent-encoded (``parameters_to_url_query``); and the request through the
    library's own ``RESTClientObject`` (TLS, proxy, retries, ``ApiException``). Bodies
    are JSON types only: no model object to sanitise. A kubeconfig's loader
    (``kube_config``) imports the library's ``ApiClient`` itself; this one is used
    either way.
    tests/test_kube_client.py checks ``param_serialize`` against the library's.
    """

    def __init__(self, configuration: k8s.Configuration) -> None:
        self.configuration = configuration
        self.rest_client = rest.RESTClientObject(configuration)
        self.default_headers: dict[str, str] = {"User-Agent": _USER_AGENT}
        self.cookie: str | None = None

    def close(self) -> None:
        self.rest_client.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update_params_for_auth(
        self,
        headers: dict[str, Any],
        queries: list[tuple[str, Any]] | None,
        auth_settings: Sequence[str] | None,
        resource_path: str,
        method: str,
        body: Any,
    ) -> None:
        """Each named auth setting of the configuration into the headers (or the query)."""
        for name in auth_settings or ():
            setting: Any = self.configuration.auth_settings().get(name)
            if not setting:
                continue
            if setting["in"] == "header":
                if setting["type"] != "http-signature":
                    headers[setting["key"]] = setting["value"]
            elif setting["in"] == "query" and queries is not None:
                queries.append((setting["key"], setting["value"]))
            else:
                raise ApiValueError("Authentication token must be in `query` or `header`")

    def param_serialize(
        self,
        method: str,
        resource_path: str,
        *,  # the library's takes more, in another order: by name only
        query_params: list[tuple[str, Any]] | None = None,
        header_params: dict[str, Any] | None = None,
        body: Any = None,
        auth_settings: Sequence[str] | None = None,
    ) -> tuple[str, str, dict[str, Any], Any, None]:
        """``(method, url, headers, body, post_params)`` for ``call_api``."""
        headers = {**(header_params or {}), **self.default_headers}
        if self.cookie:
            headers["Cookie"] = self.cookie
        headers = {k: str(v).lower() if isinstance(v, bool) else v for k, v in headers.items()}
        self.update_params_for_auth(
            headers, query_params, auth_settings, resource_path, method, body
        )
        url = self.configuration.host + resource_path
        if query_params:
            url += "?" + "&".join(f"{k}={quote(_query_text(v))}" for k, v in query_params)
        return method, url, headers, body, None

    def call_api(
        self,
        method: str,
        url: str,
        header_params: dict[str, Any] | None = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        """The request through the library's REST layer: its ``RESTResponse``."""
        return self.rest_client.request(  # type: ignore[no-untyped-call]
            method,
            url,
            headers=header_params,
            body=body,
            post_params=post_params,
            _request_timeout=_request_timeout,
        )


# What the library's ApiClient sends (its generator's name and the package's version).
_USER_AGENT: Final = f"OpenAPI-Generator/{k8s.__version__}/python"


def _query_text(value: Any) -> str:
    """A query value's text as ``ApiClient.parameters_to_url_query`` writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def api_path(template: str, *names: str) -> str:
    """``template`` with each ``{}`` replaced by one name, percent-encoded as a path segment."""
    return template.format(*(quote(name, safe="") for name in names))


def request(
    api: ApiClient,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]] = (),
    body: Any = None,
    content_type: str = JSON,
    timeout: tuple[float, float] = (5.0, 10.0),
) -> Any:
    """One API call; the streaming urllib3 response, or ``ApiException`` for non-2xx.

    Why not ``CoreV1Api`` and friends: in this client the first use of a generated API
    class imports the pydantic models of its whole group and builds their validators
    (tens of MB resident, docs/performance.md), to check parameters we build ourselves.
    ``param_serialize``/``call_api`` are the layer those classes call (through the
    library's ``ApiClient``; here through ours, which does the same), so auth
    (bearer token, exec plugins, refresh), TLS and the host come from the same
    configuration, and errors raise the same ``ApiException`` subclasses as the generated
    methods do with ``_preload_content=False``. The caller must read the response and
    ``release_conn()`` it (``request_json`` does both).
    """
    headers = {"Accept": JSON}
    if body is not None:
        headers["Content-Type"] = content_type
    serialized = api.param_serialize(
        method,
        path,
        query_params=list(query),
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response: Any = api.call_api(*serialized, _request_timeout=timeout)
    if not 200 <= response.status <= 299:
        response.read()
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return response.response


def request_json(
    api: ApiClient,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = JSON,
    timeout: tuple[float, float] = (5.0, 10.0),
) -> Any:
    """``request``, with the reply body parsed and the connection back in the pool."""
    response = request(api, method, path, body=body, content_type=content_type, timeout=timeout)
    try:
        return jsonbody.loads(response.data)
    finally:
        response.release_conn()


def node_labels(api: ApiClient, node_name: str) -> dict[str, str]:
    """This node's labels (for per-rack peer selection at startup)."""
    try:
        body = request_json(api, "GET", api_path("/api/v1/nodes/{}", node_name), timeout=(10, 30))
    except ApiException as error:
        raise KubeError(
            f"cannot read Node {node_name!r}: HTTP {error.status} {error.reason}"
        ) from error
    except Exception as error:
        raise KubeError(f"cannot read Node {node_name!r}: {error}") from error
    labels = (body.get("metadata") or {}).get("labels") or {}
    return {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}


class Gone(Exception):
    """The resourceVersion we resume from is too old (410): relist."""


def load_configuration(kubeconfig: Path | None) -> k8s.Configuration:
    """In-cluster credentials, then ``kubernetes.kubeconfig``, then ``$KUBECONFIG``.

    Loaded once, by the main thread, into a configuration of our own (never the client
    library's process-wide default); each thread then gets a client of its own from it
    (``new_api_client``).
    """
    tried: list[str] = []
    if kubeconfig is not None:
        try:
            return _from_kubeconfig(str(kubeconfig))
        except Exception as error:  # the loader raises several unrelated types
            raise KubeConfigError(f"kubernetes.kubeconfig {kubeconfig}: {error}") from error
    try:
        configuration = k8s.Configuration()
        incluster_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return configuration
    except ConfigException as error:
        tried.append(f"in-cluster: {error}")
    try:
        return _from_kubeconfig(None)
    except Exception as error:
        tried.append(f"$KUBECONFIG/~/.kube/config: {error}")
    raise KubeConfigError("no Kubernetes credentials found; tried " + "; ".join(tried))


def _from_kubeconfig(path: str | None) -> k8s.Configuration:
    kube_config = _kube_config_loader()
    configuration = k8s.Configuration()
    kube_config.load_kube_config(config_file=path, client_configuration=configuration)
    return configuration


def _kube_config_loader() -> Any:
    """The library's ``kube_config`` module, imported with a stand-in for ``ApiClient``.

    Why: ``kube_config`` imports ``kubernetes.client.ApiClient``, whose module imports
    pydantic, the client's response models, dateutil and ``multiprocessing.pool``
    (~50 ms of CPU at every start with a kubeconfig), and builds one only to refresh an
    OIDC token. The stand-in builds the library's own ``ApiClient`` when called, so that
    refresh is unchanged. Only ``kube_config`` holds it: it is taken out again.
    """
    names = vars(k8s)  # where the package's lazy __getattr__ caches what it imported
    stand_in = "ApiClient" not in names
    if stand_in:
        names["ApiClient"] = _LibraryApiClient
    try:
        from kubernetes.config import kube_config
    finally:
        if stand_in and names.get("ApiClient") is _LibraryApiClient:
            del names["ApiClient"]
    return kube_config


class _LibraryApiClient:
    """``kubernetes.client.ApiClient(...)``, imported when first called (see above)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.api_client import ApiClient as LibraryApiClient

        return LibraryApiClient(*args, **kwargs)


class RefreshAtMostEvery:
    """A configuration's credential refresh hook, run at most once per ``every`` seconds.

    The client runs the hook before every request (``get_api_key_with_prefix``), and
    both loaders' hooks end by applying the whole loaded configuration again, host
    included, whose setter re-reads the proxy variables from ``os.environ``: ~39 µs a
    call with 36 variables, of a status PATCH's ~300 µs client CPU (measured with the
    fake API in its own process), 200 PATCHes a second in a burst.

    Why a second's delay is safe: what the hooks can bring is minutes old. The
    in-cluster hook (``InClusterConfigLoader``) re-reads the token file at most once a
    minute anyway, and the kubelet rotates a projected token once 80% of its lifetime
    (at least 10 minutes) has passed, so the old token stays valid at least 2 minutes
    after the new one is written. The kubeconfig hook (``KubeConfigLoader``) runs the
    exec plugin or auth provider again only once the token's expiry is less than 5
    minutes away (``EXPIRY_SKEW_PREVENTION_DELAY``), and never re-reads a static token.
    Neither changes the host, TLS files or proxy after loading: those are applied again
    with the values loaded at startup. The header itself is still set on every request,
    from the configuration's ``api_key``.

    Both hooks also install a fresh closure of themselves on every call; that one
    becomes the hook to run and this wrapper stays installed. A hook that raises is run
    again on the next request, as before. One per configuration copy, i.e. per thread
    (``new_api_client``): no lock.
    """

    __slots__ = ("_clock", "_due", "_every", "_hook")

    def __init__(
        self,
        hook: Callable[[k8s.Configuration], None],
        every: float = REFRESH_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hook = hook
        self._every = every
        self._clock = clock
        self._due = float("-inf")

    def __call__(self, configuration: k8s.Configuration) -> None:
        now = self._clock()
        if now < self._due:
            return
        self._hook(configuration)
        self._due = now + self._every
        installed: Any = configuration.refresh_api_key_hook  # typed None by the client
        if installed is not self and installed is not None:
            self._hook = installed
            configuration.refresh_api_key_hook = self  # type: ignore[assignment]


def new_api_client(
    configuration: k8s.Configuration, clock: Callable[[], float] = time.monotonic
) -> ApiClient:
    """A client for one thread only, on its own copy of ``configuration``.

    The bearer-token refresh (in-cluster token file, kubeconfig exec plugins) rewrites the
    configuration's ``api_key`` from inside a request, so a configuration shared by
    threads is written by one while another reads it. With a copy each, only the thread
    using the client ever writes its configuration. What stays shared is the loader's
    refresh hook (a function the copies all reference): it re-reads the token into the
    loader and then writes only the configuration it was called with. Each copy runs it
    at most once per REFRESH_EVERY seconds of ``clock`` (``RefreshAtMostEvery``). The
    connection pool is the client's own too, so no other thread ever holds one of its
    connections.
    """
    copied = copy.deepcopy(configuration)
    hook: Any = copied.refresh_api_key_hook  # typed None by the client
    if isinstance(hook, RefreshAtMostEvery):  # a copy of a client's own configuration
        hook = hook._hook
    if hook is not None:
        copied.refresh_api_key_hook = RefreshAtMostEvery(hook, REFRESH_EVERY, clock)  # type: ignore[assignment]
    return ApiClient(copied)


def load_api_client(kubeconfig: Path | None) -> ApiClient:
    """``load_configuration`` and one client on it, for a caller that needs only one."""
    return new_api_client(load_configuration(kubeconfig))
