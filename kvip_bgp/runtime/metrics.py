"""Prometheus metrics, in a registry of our own (no module-level global collectors).

``Metrics`` is built once by ``app.py`` and handed to the threads that update it. The
prometheus client's collectors are internally locked, so several threads may update one
(each stream thread counts its own watch restarts, each static VIP watcher its check);
a metric is only ever updated, never read back to decide anything.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Info("kvip_bgp_build", "kvip-bgp version and Python", registry=r)
        self.session_up = Gauge(
            "kvip_bgp_session_up",
            "1 while the BGP session to this peer is up",
            ["peer"],
            registry=r,
        )
        self.prefixes_announced = Gauge(
            "kvip_bgp_prefixes_announced",
            "Prefixes currently announced to this peer (as sent to ExaBGP)",
            ["peer"],
            registry=r,
        )
        self.updates_sent = Counter(
            "kvip_bgp_updates_sent",
            "Prefix announcements and withdrawals sent to ExaBGP, per peer",
            ["peer", "kind"],
            registry=r,
        )
        self.command_errors = Counter(
            "kvip_bgp_exabgp_command_errors",
            "ExaBGP commands answered with 'error' (they are retried with backoff)",
            registry=r,
        )
        self.config_reloads = Counter(
            "kvip_bgp_config_reloads",
            "Config reloads (SIGHUP or a changed file), by result: ok or failed",
            ["result"],
            registry=r,
        )
        self.exabgp_restarts = Counter(
            "kvip_bgp_exabgp_restarts", "Times ExaBGP exited and was started again", registry=r
        )
        self.reconcile_seconds = Histogram(
            "kvip_bgp_reconcile_duration_seconds",
            "Time one reconcile pass took (diff, netlink, writing to ExaBGP)",
            registry=r,
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
        )
        self.queue_depth = Gauge(
            "kvip_bgp_queue_depth",
            "Pending keys in the reconciler's coalescing queue",
            registry=r,
        )
        self.queue_coalesced = Gauge(
            "kvip_bgp_queue_coalesced",
            "Updates that replaced a pending value for the same key (since start)",
            registry=r,
        )
        self.watch_restarts = Counter(
            "kvip_bgp_watch_restarts",
            "Kubernetes watch streams restarted, per resource and reason",
            ["resource", "reason"],
            registry=r,
        )
        self.services_refused = Gauge(
            "kvip_bgp_services_refused",
            "LoadBalancer Services this node does not announce, per reason",
            ["reason"],
            registry=r,
        )
        self.invalid_annotations = Counter(
            "kvip_bgp_invalid_annotations",
            "Times a Service was skipped because an annotation did not parse",
            ["annotation"],
            registry=r,
        )
        self.addresses_bound = Gauge(
            "kvip_bgp_addresses_bound", "VIP addresses kvip-bgp has bound locally", registry=r
        )
        self.bfd_session_up = Gauge(
            "kvip_bgp_bfd_session_up",
            "1 while the BFD session to this peer is up",
            ["peer"],
            registry=r,
        )
        self.bfd_state_changes = Counter(
            "kvip_bgp_bfd_state_changes",
            "BFD session state changes, per peer and new state",
            ["peer", "state"],
            registry=r,
        )
        self.bfd_dropped = Counter(
            "kvip_bgp_bfd_dropped_packets",
            "BFD packets dropped on receipt (malformed, wrong TTL, unknown session), per reason",
            ["reason"],
            registry=r,
        )
        self.bfd_max_tx_gap = Gauge(
            "kvip_bgp_bfd_max_tx_gap_seconds",
            "Longest time between two BFD packets sent to this peer while Up (since the "
            "BFD process started): how late it ever was against the negotiated interval",
            ["peer"],
            registry=r,
        )
        self.ipam_addresses = Gauge(
            "kvip_bgp_ipam_addresses",
            "Addresses of each pool and family, assigned or still available (exported by "
            "the Lease holder, which allocates)",
            ["pool", "family", "state"],
            registry=r,
        )
        self.ipam_pending = Gauge(
            "kvip_bgp_ipam_pending_services",
            "Services of ours waiting for an address, each with an AllocationFailed Event "
            "saying why (exported by the Lease holder)",
            registry=r,
        )
        self.health_check_up = Gauge(
            "kvip_bgp_health_check_up",
            "1 while the static VIP's health check passes",
            ["vip"],
            registry=r,
        )
