"""Health-checked static VIPs (bare-metal anycast) through the lab: FRR sees them come/go."""

from __future__ import annotations

import socket
import threading

import pytest

from kvip_bgp.testing.netlab import listen_socket_in_netns
from kvip_bgp.testing.scenario import Scenario, daemon_config

pytestmark = pytest.mark.lab

DNS = "198.51.100.53"
INGRESS = "198.51.100.80"


def _serve(listener: socket.socket, stop: threading.Event) -> None:
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
            conn.close()
        except OSError:
            continue


def test_tcp_check_rise_fall_down_med_and_maintenance(lab_required: None) -> None:
    with Scenario(kubernetes=False) as scenario:
        listener = listen_socket_in_netns(scenario.lab.node.name, "127.0.0.1", 0)
        port = listener.getsockname()[1]
        stop = threading.Event()
        server = threading.Thread(target=_serve, args=(listener, stop), daemon=True)
        server.start()
        drain = scenario.lab.workdir / "drain-dns"
        check = {"tcp": f"127.0.0.1:{port}", "interval": 0.2, "timeout": 0.2, "rise": 2, "fall": 2}
        config = daemon_config(
            None,
            static=[
                {"address": DNS, "check": check, "maintenance_file": str(drain)},
                {"address": INGRESS, "check": {**check, "tcp": "127.0.0.1:1"}, "down_med": 500},
            ],
        )
        scenario.start_daemon(config)
        # INGRESS's check always fails: it stays announced, with the worse MED.
        routes = scenario.wait_routes(
            lambda r: f"{DNS}/32" in r and f"{INGRESS}/32" in r, "both static VIPs"
        )
        assert routes[f"{INGRESS}/32"].med == 500
        assert routes[f"{DNS}/32"].med is None

        # The service behind DNS stops: withdrawn after `fall` failed checks.
        stop.set()
        server.join()
        listener.close()
        scenario.wait_routes(lambda r: f"{DNS}/32" not in r, "DNS withdrawn when its check fails")
        assert f"{INGRESS}/32" in scenario.routes()

        # It comes back: announced again after `rise` passes.
        listener = listen_socket_in_netns(scenario.lab.node.name, "127.0.0.1", port)
        stop = threading.Event()
        server = threading.Thread(target=_serve, args=(listener, stop), daemon=True)
        server.start()
        scenario.wait_routes(lambda r: f"{DNS}/32" in r, "DNS back after rise")

        # Maintenance file drains it while present.
        drain.write_text("")
        scenario.wait_routes(lambda r: f"{DNS}/32" not in r, "drained by maintenance file")
        drain.unlink()
        scenario.wait_routes(lambda r: f"{DNS}/32" in r, "maintenance over")
        stop.set()
        server.join()
        listener.close()
        events = {line.get("event") for line in scenario.log_lines()}
        assert {"health.down", "health.up", "health.maintenance_on"} <= events
