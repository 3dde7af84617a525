"""Every message that crosses a queue, one section per queue; each a frozen value.

The unions at the end of each section are exhaustive: a consumer dispatches on them
with ``match``, and mypy checks that no type is forgotten.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final, Generic, TypeVar, assert_never

from kvip_bgp.domain.config import Config, StaticVip
from kvip_bgp.domain.explain import Explanation
from kvip_bgp.domain.model import (
    Advertisement,
    IPAddress,
    RouteAttributes,
)
from kvip_bgp.domain.objects import (
    EndpointSliceInfo,
    NodeInfo,
    ObjectKey,
    ServiceInfo,
)
from kvip_bgp.domain.values import fast_init
from kvip_bgp.runtime.workqueue import CoalescingQueue

T = TypeVar("T")

# ------------------------------------------- stream threads -> cluster-state thread

RESOURCES: Final = ("services", "endpointslices", "nodes")
KubeObject = ServiceInfo | EndpointSliceInfo | NodeInfo


@dataclass(frozen=True)
class Listed:
    """A complete list of ``resource``: the cluster thread replaces its cache with it."""

    resource: str
    objects: tuple[KubeObject, ...]
    resource_version: str


@fast_init
@dataclass(frozen=True, slots=True)
class Changed:
    """One watch event (``ADDED``, ``MODIFIED`` or ``DELETED``)."""

    resource: str
    kind: str
    object: KubeObject


StreamEvent = Listed | Changed


@dataclass(frozen=True)
class ClusterConfig:
    """A reload: decide every Service again under ``config`` (from the main thread)."""

    config: Config


class ClusterStop:
    """Sentinel put on the cluster queue to end the thread."""


class ReplyBox(Generic[T]):
    """A one-shot channel back to the thread that asked: written once, read once.

    The asker creates it and sends it inside its (frozen) request; from then on the only
    write is the answering thread's single ``put``, and the only read is the asker's
    ``get``. The value handed over must be immutable. A second ``put`` is a bug and
    raises. An answer that comes after the asker gave up is dropped with the box.
    """

    __slots__ = ("_done", "_value")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: T | None = None

    def put(self, value: T) -> None:
        if self._done.is_set():
            raise RuntimeError("ReplyBox written twice")
        self._value = value
        self._done.set()  # publishes _value to the reader (Event orders the two)

    def get(self, timeout: float) -> T | None:
        """The answer, or None if none came within ``timeout`` seconds."""
        return self._value if self._done.wait(timeout) else None


@dataclass(frozen=True)
class ExplainRequest:
    """Asked by the HTTP thread; answered once, by the cluster thread, on ``reply``."""

    service: ObjectKey
    reply: ReplyBox[Explanation]


# ------------------------------------------- cluster-state thread -> cluster writer


@dataclass(frozen=True)
class ServiceEvent:
    """A Kubernetes Event to put on a Service (only the elected writer posts it)."""

    service: str  # namespace/name
    uid: str
    reason: str  # CamelCase, e.g. InvalidAnnotation
    message: str
    type: str = "Warning"


@fast_init
@dataclass(frozen=True, slots=True)
class StatusWanted:
    """``status.loadBalancer.ingress`` should list ``ips``; None cancels an earlier want."""

    service: str
    ips: tuple[str, ...] | None


@dataclass(frozen=True)
class ServiceSeen:
    """For the allocator (pools configured): a Service as a watch event showed it."""

    service: ServiceInfo
    deleted: bool = False


@dataclass(frozen=True)
class ServicesListed:
    """For the allocator: a full list of Services at ``resource_version``."""

    services: tuple[ServiceInfo, ...]
    resource_version: str


@dataclass(frozen=True)
class AllocatorConfig:
    """New pools and classes for the allocator (a config reload)."""

    config: Config


AllocatorInput = ServiceSeen | ServicesListed | AllocatorConfig
WriteRequest = ServiceEvent | StatusWanted | AllocatorInput


# ----------------------------------------------- exabgp reader thread -> reconciler


@dataclass(frozen=True)
class ApiConnected:
    """The relay connected; ``fd`` is a duplicate the reconciler now owns for writing."""

    generation: int
    fd: int


@dataclass(frozen=True)
class ApiDisconnected:
    generation: int


@dataclass(frozen=True)
class CommandAck:
    """The ``index``-th answer (1-based) on connection ``generation``: done or error."""

    generation: int
    index: int
    ok: bool


@dataclass(frozen=True)
class PeerState:
    """A neighbor state change from ExaBGP's JSON (``connected``, ``up``, ``down``).

    The inbox keeps only the latest state per peer, so a down and an up between two
    passes arrive as one "up"; ``session`` (the reader's count of this peer's "up"s)
    still tells a new session from the one before.
    """

    peer: str
    state: str
    reason: str | None
    at: float
    session: int = 0


@dataclass(frozen=True)
class ExabgpShutdown:
    """ExaBGP announced it is exiting (its ``shutdown`` notification)."""

    generation: int


ApiMessage = ApiConnected | ApiDisconnected | CommandAck | PeerState | ExabgpShutdown


# ------------------------------------------------------- bfd reader -> reconciler


@dataclass(frozen=True)
class BfdState:
    """The BFD process reports a session's new state (``admin-down|down|init|up``).

    Coalesced per peer like ``PeerState``: the reconciler only needs the latest state
    (it takes no action on a transition); every change is counted by the reader.
    """

    peer: str
    state: str
    diagnostic: int
    at: float


# ------------------------------------------- main thread -> static VIP watcher


@dataclass(frozen=True)
class StaticChanged:
    """A reload changed this VIP's entry or the default attributes: evaluate again."""

    vip: StaticVip
    defaults: RouteAttributes


class StaticRetired:
    """A reload removed this VIP: the watcher ends without publishing again."""


StaticUpdate = StaticChanged | StaticRetired


# ------------------------------------------------------- every source -> reconciler


@fast_init
@dataclass(frozen=True, slots=True)
class VipDesired:
    """Source ``source`` wants ``vip`` announced as ``advert`` (None: no longer wants it)."""

    source: str
    vip: IPAddress
    advert: Advertisement | None


@dataclass(frozen=True)
class SourceSynced:
    """``source`` has delivered its complete state at least once."""

    source: str


@dataclass(frozen=True)
class Stop:
    """Withdraw everything, wait for acks, unbind, then end; give up at ``deadline``."""

    deadline: float


@dataclass(frozen=True)
class ConfigChanged:
    """A reload (from the main thread): ``config`` holds this node's peers only, and
    ``sources`` every source that now feeds the reconciler. ``routes_left`` is answered
    once the peers no longer in ``config`` had every route withdrawn (ExaBGP acked), so
    that only then are they removed from ExaBGP: removed without a NOTIFICATION, a
    graceful-restart peer would keep our routes as stale."""

    config: Config
    sources: tuple[str, ...]
    routes_left: ReplyBox[bool] | None = None


Message = VipDesired | SourceSynced | Stop | ApiMessage | BfdState | ConfigChanged
Inbox = CoalescingQueue[tuple[object, ...], Message]


def message_key(message: Message) -> tuple[object, ...]:
    """The coalescing key: only a newer value *about the same thing* replaces an older one.

    Exhaustive (mypy checks the ``assert_never``): a new message type needs its own key.
    """
    match message:
        case VipDesired():
            return ("vip", message.source, message.vip)
        case SourceSynced():
            return ("synced", message.source)
        case PeerState():
            return ("peer", message.peer)
        case CommandAck():
            return ("ack", message.generation, message.index)
        case ApiConnected() | ApiDisconnected() | ExabgpShutdown():
            return (type(message).__name__, message.generation)
        case Stop():
            return ("stop",)
        case BfdState():
            return ("bfd", message.peer)
        case ConfigChanged():
            return ("config",)
        case _:
            assert_never(message)


def post(inbox: Inbox, message: Message) -> None:
    inbox.put(message_key(message), message)
