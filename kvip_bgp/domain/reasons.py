"""Why a node does not announce a VIP, with one stable wire form.

The wire form (``class-mismatch``, ``invalid-annotation:kvip-bgp.io/med``) is what logs,
Events, ``/status``, the ``services_refused`` metric and ``kvip-bgp explain`` show;
people and alerts match on it, so a member's value never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Reason(StrEnum):
    """A refusal's kind; the value is its wire form (the metric's ``reason`` label)."""

    NOT_LOAD_BALANCER = "not-load-balancer"
    CLASS_MISMATCH = "class-mismatch"
    IGNORED = "ignored"
    NO_VIP = "no-vip"
    INVALID_ANNOTATION = "invalid-annotation"  # detail: the annotation (or spec field)
    OUTSIDE_ALLOWED = "outside-allowed-ranges"
    FORBIDDEN_ADDRESS = "forbidden-address"  # detail: loopback, node-address, peer-address...
    NO_LOCAL_ENDPOINT = "no-local-endpoint"
    NO_READY_ENDPOINT = "no-ready-endpoint"
    NODE_EXCLUDED = "node-excluded"  # detail: label, network-unavailable, cordoned
    NODE_NOT_FOUND = "node-not-found"
    # Not answers of the policy:
    NOT_FOUND = "not-found"  # explain: the Service is not in the cache
    DELETED = "deleted"  # logs: a decision that went away with its Service


POLICY_REASONS: Final = tuple(r for r in Reason if r not in (Reason.NOT_FOUND, Reason.DELETED))
"""What ``policy.decide`` can answer: every value of the ``services_refused`` metric."""


DETAILED: Final = frozenset(
    {Reason.INVALID_ANNOTATION, Reason.FORBIDDEN_ADDRESS, Reason.NODE_EXCLUDED}
)
"""The reasons that always carry a (non-empty) detail, and the only ones that may."""

ADDRESS_REASONS: Final = frozenset({Reason.OUTSIDE_ALLOWED, Reason.FORBIDDEN_ADDRESS})


@dataclass(frozen=True)
class Refusal:
    """One "no": its reason and, for the reasons in ``DETAILED``, what exactly."""

    reason: Reason
    detail: str | None = None

    def __post_init__(self) -> None:
        if (self.detail is not None) != (self.reason in DETAILED) or self.detail == "":
            raise ValueError(f"reason {self.reason.value} with detail {self.detail!r}")

    @property
    def wire(self) -> str:
        """``reason`` or ``reason:detail``."""
        if self.detail is None:
            return self.reason.value
        return f"{self.reason.value}:{self.detail}"

    @classmethod
    def parse(cls, wire: str) -> Refusal:
        """The refusal whose wire form is ``wire`` (ValueError if none is)."""
        reason, colon, detail = wire.partition(":")
        return cls(Reason(reason), detail if colon else None)

    @property
    def of_address(self) -> bool:
        """A refusal of the VIP itself, not of this node's state: the same on every node."""
        return self.reason in ADDRESS_REASONS

    def __str__(self) -> str:
        return self.wire


def wire(refusal: Refusal | None) -> str | None:
    """The wire form of an optional refusal (None: announced)."""
    return None if refusal is None else refusal.wire
