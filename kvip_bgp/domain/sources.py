"""Who asks for a VIP, with one stable wire form.

Two places name sources. The reconciler's inputs are publishers: ``kubernetes`` (the
cluster-state thread, for every Service) and ``static:<vip>`` (each static VIP's
watcher), each synced on its own. An ``Advertisement`` names its claimants, shown in
logs and ``/status``: Services (``namespace/name``) and static VIPs (``static:<vip>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kvip_bgp.domain.model import IPAddress, parse_ip
from kvip_bgp.domain.objects import ObjectKey


class SourceKind(StrEnum):
    KUBERNETES = "kubernetes"  # the cluster as a whole: the cluster-state thread
    SERVICE = "service"  # one Service's claim; detail: namespace/name
    STATIC = "static"  # one static VIP of the config file; detail: its address


@dataclass(frozen=True)
class VipSource:
    """A source of desired routes; ``wire`` is the string logs, /status and messages carry."""

    kind: SourceKind
    detail: str | None = None

    def __post_init__(self) -> None:
        if (self.detail is None) != (self.kind is SourceKind.KUBERNETES) or self.detail == "":
            raise ValueError(f"source {self.kind.value} with detail {self.detail!r}")

    @classmethod
    def kubernetes(cls) -> VipSource:
        return cls(SourceKind.KUBERNETES)

    @classmethod
    def service(cls, key: ObjectKey) -> VipSource:
        return cls(SourceKind.SERVICE, service_wire(key))

    @classmethod
    def static(cls, vip: IPAddress) -> VipSource:
        return cls(SourceKind.STATIC, str(vip))

    @property
    def wire(self) -> str:
        """``kubernetes``, ``namespace/name`` or ``static:<vip>``."""
        if self.kind is SourceKind.KUBERNETES:
            return SourceKind.KUBERNETES.value
        if self.kind is SourceKind.SERVICE:
            return str(self.detail)
        return f"{SourceKind.STATIC.value}:{self.detail}"

    @classmethod
    def parse(cls, wire: str) -> VipSource:
        """The source whose wire form is ``wire`` (ValueError if none is)."""
        if wire == SourceKind.KUBERNETES.value:
            return cls.kubernetes()
        static = f"{SourceKind.STATIC.value}:"
        if wire.startswith(static):
            return cls.static(parse_ip(wire.removeprefix(static)))
        namespace, slash, name = wire.partition("/")
        if not slash:  # how ObjectKey writes a key without a namespace
            namespace, name = "", wire
        if (slash and not namespace) or not name:
            raise ValueError(f"not a VIP source: {wire!r}")
        return cls.service(ObjectKey(namespace, name))

    def __str__(self) -> str:
        return self.wire


def service_wire(key: ObjectKey) -> str:
    """``VipSource.service(key).wire`` without building the value: the merge runs per VIP."""
    return str(key)
