"""Load and validate the configuration file into frozen values.

A bad config must stop startup with *every* problem listed, each named by its key path
(``bgp.peers[1].asn: must be 1..4294967295``), so an operator fixes the file in one go.
Unknown keys are errors: a misspelt ``graceful_restrat`` silently ignored would hide a
mistake until the day it matters.

Parsing goes through a small ``Reader`` that walks the YAML tree, records problems with
their paths and returns a placeholder so that checking continues past the first error.
The larger sections have modules of their own: ``configfile.bgp``, ``configfile.vips``.
Every key's type, range, default and description is in ``configfile.keys``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kvip_bgp.configfile import keys
from kvip_bgp.configfile.bgp import parse_attributes, parse_bgp
from kvip_bgp.configfile.ipam import parse_ipam
from kvip_bgp.configfile.reader import ConfigError, Reader
from kvip_bgp.configfile.vips import parse_static, parse_vips
from kvip_bgp.domain.config import (
    Config,
    HttpConfig,
    KernelTable,
    KubernetesConfig,
    LogConfig,
)


def load(path: Path | str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raise ``ConfigError`` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError([f"{path}: not valid YAML: {error}"]) from error
    return parse(document, environ=environ, source=path)


def parse(
    document: Any, environ: Mapping[str, str] | None = None, source: Path | None = None
) -> Config:
    """Validate an already-parsed YAML document (a dict) into a ``Config``."""
    env = os.environ if environ is None else environ
    r = Reader()
    top = r.section(document, "")
    if document is None:
        r.fail("(top level)", "the file is empty")

    node_name = r.str_key(top, "", "node_name")
    if node_name is None:
        node_name = env.get("NODE_NAME") or socket.gethostname()

    vips = parse_vips(r, top.get("vips"))
    output = r.choice_key(top, "", "output")
    bgp = parse_bgp(r, top.get("bgp"), require_peers=output == "exabgp")
    if bgp is not None and output == "kernel-table":
        for index, peer in enumerate(bgp.peers):
            if peer.bfd is not None:
                r.fail(
                    f"bgp.peers[{index}].bfd",
                    "needs output: exabgp (with kernel-table the host's routing daemon "
                    "runs the sessions, and BFD with them)",
                )
    advertise = parse_attributes(r, top.get("advertise"), "advertise")
    kubernetes = _parse_kubernetes(r, top.get("kubernetes"))

    kt = r.section(top.get("kernel_table"), "kernel_table")
    kernel_table = KernelTable(
        table=r.int_key(kt, "kernel_table", "table"),
        protocol=r.int_key(kt, "kernel_table", "protocol"),
    )
    if kernel_table.table in (253, 254, 255):
        r.fail("kernel_table.table", "253/254/255 are the kernel's default/main/local tables")

    shutdown_timeout = r.number_key(top, "", "shutdown_timeout")
    static = parse_static(r, top.get("static"), vips)
    ipam = parse_ipam(r, top.get("ipam"), vips)

    http_map = r.section(top.get("http"), "http")
    listen = r.host_port(keys.default("http.listen"), "http.listen")
    if "listen" in http_map:
        raw_listen = http_map["listen"]
        listen = None if raw_listen is None else r.host_port(raw_listen, "http.listen")

    log_map = r.section(top.get("log"), "log")
    log = LogConfig(
        format="console" if r.choice_key(log_map, "log", "format") == "console" else "json",
        level=r.choice_key(log_map, "log", "level"),
    )

    if not kubernetes.enabled and not static:
        r.fail("static", "nothing to announce: kubernetes.enabled is false and static is empty")

    if r.problems or bgp is None or vips is None or advertise is None:
        raise ConfigError(r.problems)
    return Config(
        node_name=node_name,
        bgp=bgp,
        advertise=advertise,
        vips=vips,
        kubernetes=kubernetes,
        output="kernel-table" if output == "kernel-table" else "exabgp",
        kernel_table=kernel_table,
        shutdown_timeout=shutdown_timeout,
        static=static,
        http=HttpConfig(listen=listen),
        log=log,
        ipam=ipam,
        source=source,
    )


def _parse_kubernetes(r: Reader, value: Any) -> KubernetesConfig:
    m = r.section(value, "kubernetes")
    kubeconfig = r.str_key(m, "kubernetes", "kubeconfig")
    return KubernetesConfig(
        enabled=r.bool_key(m, "kubernetes", "enabled"),
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
        load_balancer_class=r.str_key(m, "kubernetes", "load_balancer_class") or "",
        legacy_class_handling=r.bool_key(m, "kubernetes", "legacy_class_handling"),
        withdraw_when_cordoned=r.bool_key(m, "kubernetes", "withdraw_when_cordoned"),
        watch_read_timeout=r.number_key(m, "kubernetes", "watch_read_timeout"),
        lease_duration=r.int_key(m, "kubernetes", "lease_duration"),
    )
