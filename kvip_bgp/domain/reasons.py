"""Why a node does not announce a VIP: stable strings for logs, Events, /status, explain."""

from __future__ import annotations

from typing import Final

# Stable reasons. Those that take a detail are written "reason:detail".
NOT_LOAD_BALANCER: Final = "not-load-balancer"
CLASS_MISMATCH: Final = "class-mismatch"
IGNORED: Final = "ignored"
NO_VIP: Final = "no-vip"
INVALID_ANNOTATION: Final = "invalid-annotation"
OUTSIDE_ALLOWED: Final = "outside-allowed-ranges"
FORBIDDEN_ADDRESS: Final = "forbidden-address"
NO_LOCAL_ENDPOINT: Final = "no-local-endpoint"
NO_READY_ENDPOINT: Final = "no-ready-endpoint"
NODE_EXCLUDED: Final = "node-excluded"
NODE_NOT_FOUND: Final = "node-not-found"
