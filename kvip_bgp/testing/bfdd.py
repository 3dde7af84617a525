"""FRR's bfdd in a lab namespace: the ToR's side of BFD for the lab tests.

Run as user ``frr``: with a vty socket directory FRR's daemons refuse to run as root.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
from typing import Any

from kvip_bgp.testing.netlab import Lab, Netns, wait_until

BFDD = "/usr/lib/frr/bfdd"
BFDD_CONF = """\
bfd
 peer {node} local-address {tor}
  receive-interval 300
  transmit-interval 300
  detect-multiplier 3
 !
!
"""


class Bfdd:
    """FRR's bfdd in the ToR namespace, run as user ``frr`` as FRR insists with a vty dir."""

    def __init__(
        self, lab: Lab, ns: Netns | None = None, peer: str = Lab.NODE_V4, local: str = Lab.TOR_V4
    ) -> None:
        self.lab = lab
        self.dir = lab.workdir / "bfdd"
        self.dir.mkdir()
        (self.dir / "bfdd.conf").write_text(BFDD_CONF.format(node=peer, tor=local))
        frr = pwd.getpwnam("frr")
        for path in (self.dir, self.dir / "bfdd.conf"):
            os.chown(path, frr.pw_uid, frr.pw_gid)
        os.chmod(lab.workdir, 0o755)
        (ns or lab.tor).run(
            BFDD,
            "-d",
            "-u",
            "frr",
            "-g",
            "frr",
            "-f",
            str(self.dir / "bfdd.conf"),
            "-i",
            str(self.dir / "bfdd.pid"),
            "--vty_socket",
            str(self.dir),
            "--bfdctl",
            str(self.dir / "bfdd.sock"),
            "--log",
            f"file:{self.dir / 'bfdd.log'}",
        )
        lab.on_exit(self.stop)
        wait_until(lambda: self.peer() is not None, 10, what="bfdd to answer vtysh")

    def peer(self) -> dict[str, Any] | None:
        out = subprocess.run(
            ["vtysh", "--vty_socket", str(self.dir), "-c", "show bfd peers json"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        peers = json.loads(out)
        return peers[0] if peers else None

    def status(self) -> str:
        peer = self.peer()
        return peer["status"] if peer else "missing"

    def stop(self) -> None:
        pid_file = self.dir / "bfdd.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
