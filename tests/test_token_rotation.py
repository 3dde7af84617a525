"""A rotated service-account token: the daemon's clients keep working.

In a pod the kubelet rotates the projected token file, and a bound token expires. The
daemon loads the in-cluster credentials once and gives every thread a deep copy of that
configuration (``kube.client.new_api_client``); this checks, with the real ``kubernetes``
client against the fake API over HTTPS, that each copy still picks up a new token from
the file once the old one is refused, instead of keeping the token it started with.
Over the same HTTPS, a certificate the CA did not sign fails a status write as it
fails ``request_json``.
"""

from __future__ import annotations

import datetime
import ssl
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvip_bgp.kube import client as kube
from kvip_bgp.kube.writes import Writer
from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.objects import node
from kvip_bgp.testing.tls import make_certs


class _Later:
    """Stands in for the ``datetime`` module inside the client's in-cluster loader: its
    clock runs ahead by ``ahead``, so the loader's one-minute token re-read is due now.
    ``monotonic`` runs ahead as far, for the clients' refresh throttle."""

    def __init__(self) -> None:
        self.ahead = datetime.timedelta(0)
        clock = self

        class _DateTime(datetime.datetime):
            @classmethod
            def now(cls, tz: datetime.tzinfo | None = None) -> _DateTime:
                return super().now(tz) + clock.ahead  # type: ignore[return-value]

        self.module = types.SimpleNamespace(datetime=_DateTime, timedelta=datetime.timedelta)

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead.total_seconds()


@pytest.fixture
def in_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeKubeAPI, Path, _Later]]:
    from kubernetes.config import incluster_config

    certs = make_certs(tmp_path / "pki", name="localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    token = tmp_path / "token"
    token.write_text("first-token")
    later = _Later()
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(certs.ca))
    monkeypatch.setattr(incluster_config, "datetime", later.module)
    api = FakeKubeAPI()
    api.accepted_tokens = frozenset({"first-token"})
    url = api.start(tls=context)
    port = url.rsplit(":", 1)[1]
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "localhost")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    api.put(node("node-1", labels={"rack": "r1"}))
    try:
        yield api, token, later
    finally:
        api.stop()


def test_every_threads_client_reads_the_rotated_token(
    in_cluster: tuple[FakeKubeAPI, Path, _Later],
) -> None:
    api, token, later = in_cluster
    configuration = kube.load_configuration(None)  # in-cluster: no kubeconfig given
    clients = [kube.new_api_client(configuration, clock=later.monotonic) for _ in range(3)]
    for api_client in clients:
        assert kube.node_labels(api_client, "node-1").get("rack") == "r1"

    token.write_text("second-token")  # the kubelet rotates the file ...
    api.accepted_tokens = frozenset({"second-token"})  # ... and the old token expires
    later.ahead = datetime.timedelta(minutes=2)
    for api_client in clients:  # a client that kept the old token gets a 401: KubeError
        assert kube.node_labels(api_client, "node-1").get("rack") == "r1"


def test_a_status_write_reads_the_rotated_token_too(
    in_cluster: tuple[FakeKubeAPI, Path, _Later],
) -> None:
    """``Writer.write`` builds its own headers: over HTTPS, with the in-cluster loader's hook."""
    api, token, later = in_cluster
    writes = Writer(kube.new_api_client(kube.load_configuration(None), clock=later.monotonic))
    patch = {"metadata": {"labels": {"written": "first"}}}
    writes.write("PATCH", "/api/v1/nodes/node-1", patch, kube.STRATEGIC_MERGE_PATCH)
    token.write_text("second-token")
    api.accepted_tokens = frozenset({"second-token"})
    later.ahead = datetime.timedelta(minutes=2)
    patch = {"metadata": {"labels": {"written": "second"}}}
    writes.write("PATCH", "/api/v1/nodes/node-1", patch, kube.STRATEGIC_MERGE_PATCH)
    stored = api.get("Node", "node-1")
    assert stored is not None and stored["metadata"]["labels"]["written"] == "second"


@pytest.mark.parametrize("retries", [None, 0, False])
def test_a_tls_failure_fails_the_write_and_sends_nothing(
    tmp_path: Path, retries: int | bool | None
) -> None:
    """A certificate the configured CA did not sign fails the handshake urllib3 makes
    for our connection: ``Writer.write`` raises ``ApiException(status=0)`` naming the
    verification failure (whatever urllib3's retries, which it does not use), as
    ``request_json`` fails too, and nothing is written."""
    served = make_certs(tmp_path / "served", name="localhost")
    trusted = make_certs(tmp_path / "trusted", name="localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(served.cert, served.key)
    api = FakeKubeAPI()
    url = api.start(tls=context)
    api.put(node("node-1"))
    try:
        configuration = kube.Configuration()
        configuration.host = url.replace("127.0.0.1", "localhost")
        configuration.ssl_ca_cert = str(trusted.ca)
        configuration.retries = retries
        client = kube.new_api_client(configuration)
        patch = {"metadata": {"labels": {"written": "yes"}}}
        path = "/api/v1/nodes/node-1"
        with pytest.raises(Exception) as expected:
            kube.request_json(client, "PATCH", path, patch, kube.STRATEGIC_MERGE_PATCH)
        assert "CERTIFICATE_VERIFY_FAILED" in str(expected.value)
        with pytest.raises(kube.ApiException) as raised:
            Writer(client).write("PATCH", path, patch, kube.STRATEGIC_MERGE_PATCH)
        assert raised.value.status == 0
        assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value.reason)
        stored = api.get("Node", "node-1")
        assert stored is not None and "written" not in (stored["metadata"].get("labels") or {})
    finally:
        api.stop()
