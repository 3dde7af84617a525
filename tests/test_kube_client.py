"""``kube.client.ApiClient`` builds the requests the library's ``ApiClient`` builds.

Ours exists so that an in-cluster start does not import the library's (pydantic,
dateutil); every request the daemon makes goes through ``param_serialize`` and
``call_api``, so both are compared with the library's on the same configuration.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as library

from kvip_bgp.kube import client as kube
from kvip_bgp.testing.fakeapi import FakeKubeAPI


def configuration(token: str | None = "secret", host: str = "https://10.96.0.1:443") -> Any:
    config = kube.Configuration()
    config.host = host
    if token is not None:
        config.api_key = {"authorization": token}
        config.api_key_prefix = {"authorization": "Bearer"}
    return config


CASES = [
    ("GET", "/api/v1/nodes/node-1", [], {"Accept": "application/json"}, None),
    (
        "GET",
        "/api/v1/services",
        [("limit", "500"), ("continue", "eyJ2Ijoi+/=&?"), ("fieldSelector", "a=b,c!=d e")],
        {"Accept": "application/json"},
        None,
    ),
    ("GET", "/api/v1/x", [("watch", True), ("timeoutSeconds", 290), ("n", 1.5)], {}, None),
    (
        "PATCH",
        "/api/v1/namespaces/ns/services/web/status",
        [],
        {"Accept": "application/json", "Content-Type": "application/merge-patch+json"},
        {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}},
    ),
    (
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
        [],
        {"Accept": "application/json", "Content-Type": "application/json"},
        {"spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 15, "x": [1, "é"]}},
    ),
    ("PUT", "/api/v1/y", [], {"User-Agent": "mine", "X-Flag": True}, {}),
]


@pytest.mark.parametrize("token", ["secret", None])
@pytest.mark.parametrize(("method", "path", "query", "headers", "body"), CASES)
def test_param_serialize_gives_the_librarys_request(
    method: str, path: str, query: list[Any], headers: dict[str, Any], body: Any, token: str | None
) -> None:
    ours = kube.ApiClient(configuration(token))
    theirs = library.ApiClient(configuration(token))
    args = dict(query_params=list(query), body=body, auth_settings=["BearerToken"])
    assert ours.param_serialize(method, path, header_params=dict(headers), **args) == (
        theirs.param_serialize(method, path, header_params=dict(headers), **args)
    )


def test_the_refresh_hook_runs_as_in_the_librarys_client() -> None:
    """Exec plugins and the in-cluster token rotation refresh through this hook."""

    def calls(api_type: Any) -> tuple[list[str], Any]:
        seen: list[str] = []
        config = configuration("old")

        def refresh(c: Any) -> None:
            seen.append(c.api_key["authorization"])
            c.api_key = {"authorization": f"new{len(seen)}"}

        config.refresh_api_key_hook = refresh
        api = api_type(config)
        first = api.param_serialize("GET", "/a", query_params=[], auth_settings=["BearerToken"])
        second = api.param_serialize("GET", "/b", query_params=[], auth_settings=["BearerToken"])
        return seen, (first[2], second[2])

    assert calls(kube.ApiClient) == calls(library.ApiClient)


def test_call_api_reads_the_fake_api_and_raises_the_librarys_errors() -> None:
    with FakeKubeAPI() as api:
        assert api.url is not None
        config = configuration(None, host=api.url)
        with kube.ApiClient(config) as ours:
            listed = kube.request_json(ours, "GET", "/api/v1/services")
            assert listed["kind"] == "ServiceList"
            with pytest.raises(kube.ApiException) as error:
                kube.request_json(ours, "GET", "/api/v1/namespaces/default/services/none")
            assert error.value.status == 404
            assert json.loads(error.value.body)["reason"] == "NotFound"
