"""What /status shows about configuration reloads (published by the main thread)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReloadStatus:
    """The running config's hash, and how the last reload attempts went."""

    config_hash: str = ""
    """SHA-256 of the config file the running config was read from."""
    loaded_at: float = 0.0
    """Wall-clock time the running config was loaded (start or last good reload)."""
    last_error: tuple[str, ...] = ()
    """Every problem of the last failed reload; empty once a reload succeeded."""
    last_error_at: float = 0.0
