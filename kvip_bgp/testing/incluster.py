"""Start the daemon the way a DaemonSet's pod starts it: in-cluster credentials over TLS.

Why: with no ``kubernetes.kubeconfig`` the daemon loads the kubernetes library's
in-cluster credentials, which read the env KUBERNETES_SERVICE_HOST/PORT and two files
at a fixed path, ``SERVICEACCOUNT``/{token,ca.crt}, and import less than a kubeconfig's
loader (no oauthlib, requests, dateutil); every request is then HTTPS. A bench or lab
test that loads a kubeconfig over plain HTTP measures neither.

The files must be at that path for the daemon only, never for the host (which may be a
node whose path is taken): ``InCluster.argv`` runs the daemon in a private mount
namespace (``unshare --mount --propagation private``) where our directory is bound
read-only on ``SERVICEACCOUNT``. Nothing propagates back to the host, and the mount
goes with the namespace when its last process (the daemon or a child) exits.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from kvip_bgp.testing.fakeapi_remote import FakeApiProcess
from kvip_bgp.testing.netlab import Lab
from kvip_bgp.testing.tls import Certs, make_certs

SERVICEACCOUNT: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# $0 names the script in sh's messages; $1 the directory, $2 the mount point, the rest
# the command. ``exec``: the shell becomes the command (same pid), mount is its only child.
_BIND_THEN_EXEC: Final = 'mount --bind -o ro "$1" "$2" && shift 2 && exec "$@"'


@dataclass(frozen=True)
class InCluster:
    """Where a daemon started in-cluster finds its API server (``host``:``port``, given
    as the env the kubelet sets) and its credentials (``secrets``: a directory holding
    ``token`` and ``ca.crt``, seen at ``SERVICEACCOUNT`` by the daemon only)."""

    host: str
    port: int
    secrets: Path
    token: str

    @classmethod
    def at(cls, url: str, secrets: Path, token: str) -> InCluster:
        """For an API server at ``url`` (``https://HOST:PORT``)."""
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.hostname is None or parts.port is None:
            raise ValueError(f"in-cluster credentials need https://HOST:PORT, got {url!r}")
        return cls(parts.hostname, parts.port, secrets, token)

    def env(self) -> dict[str, str]:
        """What the kubelet puts in every container's environment for the API server."""
        return {"KUBERNETES_SERVICE_HOST": self.host, "KUBERNETES_SERVICE_PORT": str(self.port)}

    def argv(self, command: Sequence[str], mount_point: Path = SERVICEACCOUNT) -> list[str]:
        """``command`` in a private mount namespace with ``secrets`` bound on
        ``mount_point`` (which must exist: see ``ensure_mount_point``).

        Every step execs the next: ``unshare`` without ``--fork`` execs sh, sh execs
        ``command`` after ``mount`` (its one child, run and reaped before). So the pid
        that runs this (``ip netns exec`` execs too) is the command's own pid: /proc/PID
        and signals reach the daemon itself. The CPU of unshare, sh and mount before the
        exec (~1 ms) is counted in that pid's, as ``ip netns exec``'s already is."""
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            _BIND_THEN_EXEC,
            "kvip-in-cluster",
            str(self.secrets),
            str(mount_point),
            *command,
        ]


def prepare(workdir: Path, address: str) -> tuple[Certs, Path, str]:
    """A CA and a server certificate for ``address`` (an IP SAN, since the daemon
    connects by number) under ``workdir``/pki, and the directory the kubelet would
    project (``workdir``/serviceaccount: ``token``, a fresh random one, and ``ca.crt``).
    Returns the certificates, that directory and the token."""
    certs = make_certs(workdir / "pki", name="kubernetes", ip=address)
    projected = workdir / "serviceaccount"
    projected.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    (projected / "token").write_text(token, encoding="ascii")
    shutil.copyfile(certs.ca, projected / "ca.crt")
    return certs, projected, token


def ensure_mount_point(path: Path = SERVICEACCOUNT) -> None:
    """Create the mount point on the host if it is missing. It stays empty there: the
    bind mount exists only in the daemon's own mount namespace. It is left in place
    (an empty directory under /run, which the next boot clears)."""
    path.mkdir(parents=True, exist_ok=True)


def fake_api_in_cluster(lab: Lab, workdir: Path) -> tuple[FakeApiProcess, InCluster]:
    """The fake API in its own process in the lab's node namespace, serving HTTPS only
    on 127.0.0.1 and accepting only the projected token, and the daemon's in-cluster
    view of it. The bench's client of it (``.client``) speaks TLS and sends the token."""
    certs, projected, token = prepare(workdir / "in-cluster", "127.0.0.1")
    fake = FakeApiProcess(lab, lab.node, workdir / "fakeapi", certs=certs, token=token)
    return fake, InCluster.at(fake.url, projected, token)
