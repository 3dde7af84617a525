"""https health checks: a CA file, a server name other than the URL's host, insecure."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvip_bgp.configfile.load import parse
from kvip_bgp.configfile.reader import ConfigError
from kvip_bgp.domain.config import HealthCheck
from kvip_bgp.runtime.checks import CheckResult, run_check
from kvip_bgp.testing.tls import Certs, HttpsEndpoint, make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def endpoint(certs: Certs) -> Iterator[HttpsEndpoint]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    served = HttpsEndpoint(sock, certs)
    yield served
    served.close()


def check(endpoint: HttpsEndpoint, **tls: object) -> HealthCheck:
    url = f"https://127.0.0.1:{endpoint.port}/readyz"
    return HealthCheck(http=url, timeout=2.0, **tls)  # type: ignore[arg-type]


def test_a_ca_file_and_the_certificates_name_pass(endpoint: HttpsEndpoint, certs: Certs) -> None:
    assert run_check(check(endpoint, ca_file=certs.ca, server_name="kubernetes")) == CheckResult(
        True, "HTTP 200"
    )
    endpoint.status = 500
    assert run_check(check(endpoint, ca_file=certs.ca, server_name="kubernetes")) == CheckResult(
        False, "HTTP 500"
    )


def test_an_untrusted_or_misnamed_certificate_fails(endpoint: HttpsEndpoint, certs: Certs) -> None:
    system_cas = run_check(check(endpoint, server_name="kubernetes"))
    assert not system_cas.passed
    assert system_cas.reason.startswith("certificate not trusted"), system_cas
    wrong_name = run_check(check(endpoint, ca_file=certs.ca))  # the cert is not for 127.0.0.1
    assert not wrong_name.passed
    assert "certificate not trusted" in wrong_name.reason and "mismatch" in wrong_name.reason
    assert endpoint.requests == 0  # nothing was sent to an unverified server


def test_insecure_skips_verification(endpoint: HttpsEndpoint) -> None:
    assert run_check(check(endpoint, insecure=True)) == CheckResult(True, "HTTP 200")


def test_a_missing_ca_file_fails_the_check(endpoint: HttpsEndpoint, tmp_path: Path) -> None:
    result = run_check(check(endpoint, ca_file=tmp_path / "absent.crt"))
    assert not result.passed and "FileNotFoundError" in result.reason


def _problems(check: dict[str, object]) -> list[str]:
    document = {
        "bgp": {
            "asn": 64512,
            "router_id": "192.0.2.1",
            "peers": [{"address": "192.0.2.2", "asn": 1}],
        },
        "vips": {"allowed": ["198.51.100.0/24"]},
        "kubernetes": {"enabled": False},
        "static": [{"address": "198.51.100.1", "check": check}],
    }
    try:
        parse(document, environ={})
    except ConfigError as error:
        return list(error.problems)
    return []


def test_tls_keys_in_the_config() -> None:
    ok = {"http": "https://127.0.0.1:6443/readyz", "ca_file": "/ca.crt", "server_name": "k"}
    assert _problems(ok) == []
    assert _problems({"http": "http://127.0.0.1/", "ca_file": "/ca.crt"}) == [
        "static[0].check.ca_file: only with an https:// URL in http"
    ]
    assert _problems({"tcp": "127.0.0.1:1", "insecure": True}) == [
        "static[0].check.insecure: only with an https:// URL in http"
    ]
    assert _problems({"http": "https://h/", "insecure": True, "ca_file": "/ca.crt"}) == [
        "static[0].check.insecure: contradicts ca_file/server_name (they verify)"
    ]
