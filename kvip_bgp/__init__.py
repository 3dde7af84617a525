"""kvip-bgp: a BGP-mode load-balancer speaker built on ExaBGP."""

from __future__ import annotations


def installed_version() -> str:
    """The installed distribution's version (``kvip_bgp_build_info``), "unknown" when run
    from a source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kvip-bgp")
    except PackageNotFoundError:
        return "unknown"
