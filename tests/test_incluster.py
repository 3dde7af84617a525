"""The pieces of an in-cluster start that need no root: the daemon's argv and env, the
certificate's IP entry, and the fake API and the bench's writer over TLS."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.fakeapi_remote import ApiError, FakeApiClient
from kvip_bgp.testing.incluster import SERVICEACCOUNT, InCluster, prepare
from kvip_bgp.testing.objects import service
from kvip_bgp.testing.tls import Certs, client_context, server_context, subject_alt_name


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Certs, Path, str]:
    return prepare(tmp_path_factory.mktemp("in-cluster"), "127.0.0.1")


@pytest.fixture
def tls_api(pki: tuple[Certs, Path, str]) -> Iterator[FakeKubeAPI]:
    certs, _, token = pki
    api = FakeKubeAPI(bookmark_interval=60.0)
    api.accepted_tokens = frozenset({token})
    api.start(tls=server_context(certs.cert, certs.key))
    try:
        yield api
    finally:
        api.stop()


def test_subject_alt_name_has_the_ip_entry_only_when_asked() -> None:
    assert subject_alt_name("kubernetes") == "subjectAltName=DNS:kubernetes"
    assert subject_alt_name("kubernetes", "127.0.0.1") == (
        "subjectAltName=DNS:kubernetes,IP:127.0.0.1"
    )
    assert subject_alt_name("k", "::1") == "subjectAltName=DNS:k,IP:::1"
    with pytest.raises(ValueError):
        subject_alt_name("k", "not-an-address")


def test_prepare_projects_the_token_and_the_ca(pki: tuple[Certs, Path, str]) -> None:
    certs, projected, token = pki
    assert sorted(p.name for p in projected.iterdir()) == ["ca.crt", "token"]
    assert (projected / "token").read_text() == token and len(token) >= 32
    assert (projected / "ca.crt").read_bytes() == certs.ca.read_bytes()


def test_the_argv_binds_the_secrets_privately_then_execs_the_command() -> None:
    where = InCluster("127.0.0.1", 6443, Path("/lab/serviceaccount"), "t")
    argv = where.argv(["kvip-bgp", "run", "--config", "c.yaml"])
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    assert argv[-6:] == [
        "/lab/serviceaccount",
        str(SERVICEACCOUNT),
        "kvip-bgp",
        "run",
        "--config",
        "c.yaml",
    ]
    assert "--fork" not in argv  # unshare must exec, not fork: the pid stays the daemon's
    assert where.env() == {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "6443",
    }
    assert InCluster.at("https://127.0.0.1:40123", Path("/s"), "t").port == 40123
    with pytest.raises(ValueError):
        InCluster.at("http://127.0.0.1:40123", Path("/s"), "t")


def test_the_shell_step_keeps_the_pid_and_passes_the_mount_its_arguments(tmp_path: Path) -> None:
    """The argv's shell part, with a ``mount`` that only records its arguments (the real
    one needs root; the lab test runs that): the command runs as the shell's own pid, so
    as the pid Popen returned, with its arguments intact."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorded = tmp_path / "mount-args"
    fake_mount = bin_dir / "mount"
    fake_mount.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {recorded}\n')
    fake_mount.chmod(0o755)
    where = InCluster("127.0.0.1", 6443, tmp_path / "secrets", "t")
    command = [sys.executable, "-c", "import os, sys; print(os.getpid(), sys.argv[1:])", "a b"]
    argv = where.argv(command, mount_point=tmp_path / "mnt")
    shell = argv[argv.index("--") + 1 :]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.Popen(shell, stdout=subprocess.PIPE, text=True, env=env)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out.split(" ", 1) == [str(proc.pid), "['a b']\n"]
    mounted = recorded.read_text().splitlines()
    assert mounted == ["--bind", "-o", "ro", str(tmp_path / "secrets"), str(tmp_path / "mnt")]


def test_a_failed_mount_starts_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mount").write_text("#!/bin/sh\nexit 32\n")
    (bin_dir / "mount").chmod(0o755)
    marker = tmp_path / "ran"
    argv = InCluster("h", 1, tmp_path, "t").argv(["touch", str(marker)], tmp_path / "mnt")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(argv[argv.index("--") + 1 :], env=env, check=False, timeout=30)
    assert done.returncode == 32 and not marker.exists()


def test_the_certificate_is_valid_for_its_address_only_with_the_ip_entry(
    tmp_path: Path, pki: tuple[Certs, Path, str]
) -> None:
    certs, _, _ = pki
    from kvip_bgp.testing.tls import make_certs

    dns_only = make_certs(tmp_path / "dns-only", name="kubernetes")
    for served, ok in ((certs, True), (dns_only, False)):
        api = FakeKubeAPI()
        url = api.start(tls=server_context(served.cert, served.key))
        try:
            client = FakeApiClient(url, tls=client_context(served.ca))
            if ok:
                assert client.items("Service") == []
            else:
                with pytest.raises(ssl.SSLCertVerificationError, match=r"127\.0\.0\.1"):
                    client.items("Service")
            client.close()
        finally:
            api.stop()


def test_the_writer_speaks_tls_with_the_token(
    tls_api: FakeKubeAPI, pki: tuple[Certs, Path, str]
) -> None:
    certs, _, token = pki
    assert tls_api.url is not None and tls_api.url.startswith("https://127.0.0.1:")
    with pytest.raises(ValueError, match="https"):
        FakeApiClient(tls_api.url)  # an https URL needs the CA's context
    writer = FakeApiClient(tls_api.url, tls=client_context(certs.ca), token=token)
    writer.create(service("a", "100.64.0.1"))
    writer.another().put(service("b", "100.64.0.2"))
    assert sorted(s["metadata"]["name"] for s in writer.items("Service")) == ["a", "b"]
    writer.close()
    stranger = FakeApiClient(tls_api.url, tls=client_context(certs.ca), token="other")
    with pytest.raises(ApiError) as error:
        stranger.items("Service")
    assert error.value.status == 401
    stranger.close()


def test_a_watch_over_tls_outlives_the_peer_probe(
    tls_api: FakeKubeAPI, pki: tuple[Certs, Path, str]
) -> None:
    """The fake checks every 0.5 s that an idle watch's client is still there; over TLS
    that check raised and ended every watch after 0.5 s."""
    certs, _, token = pki
    assert tls_api.url is not None
    port = int(tls_api.url.rsplit(":", 1)[1])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    watch = client_context(certs.ca).wrap_socket(raw, server_hostname="127.0.0.1")
    watch.sendall(
        b"GET /api/v1/services?watch=true HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    reader = watch.makefile("rb")
    assert reader.readline().startswith(b"HTTP/1.1 200")
    time.sleep(1.6)  # three probes
    tls_api.put(service("late", "100.64.0.9"))
    received = b""
    while b"late" not in received:
        line = reader.readline()
        assert line, f"the watch ended; got {received!r}"
        received += line
    reader.close()
    watch.close()


@pytest.mark.parametrize("dash", ["", "-"])
def test_the_fake_process_serves_https_only_with_the_given_cert(
    pki: tuple[Certs, Path, str], dash: str
) -> None:
    """Also with a token that starts with "-", as one of 64 random ones does: passed as
    ``--token=...`` (FakeApiProcess does the same), argparse takes it as the value."""
    certs, _, token = pki
    token = dash + token
    argv = [sys.executable, "-m", "kvip_bgp.testing.fakeapi", "--tls-cert", str(certs.cert)]
    argv += ["--tls-key", str(certs.key), f"--token={token}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("https://127.0.0.1:")
        writer = FakeApiClient(url, tls=client_context(certs.ca), token=token)
        writer.put_many([service("a", "100.64.0.1")])
        assert [s["metadata"]["name"] for s in writer.items("Service")] == ["a"]
        writer.close()
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
            plain.sendall(b"GET /api/v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            try:
                answer = plain.recv(64)
            except ConnectionResetError:
                answer = b""
            assert not answer.startswith(b"HTTP/")  # no plain HTTP beside it
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_the_fake_wants_cert_and_key_together(pki: tuple[Certs, Path, str]) -> None:
    certs, _, _ = pki
    done = subprocess.run(
        [sys.executable, "-m", "kvip_bgp.testing.fakeapi", "--tls-cert", str(certs.cert)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and "--tls-key" in done.stderr
