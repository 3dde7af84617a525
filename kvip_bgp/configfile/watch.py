"""Reading the config file again: its content hash, and whether it changed on disk.

A mounted ConfigMap is never rewritten in place: the kubelet writes a new timestamped
directory and swaps the ``..data`` symlink, so the path the daemon was given keeps its
name while what it resolves to changes. Polling the resolved path and a hash of the
content (of the file and of each password file it names) sees both that swap and an
editor's in-place write, with no inotify and no new dependency.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from kvip_bgp.configfile.load import parse
from kvip_bgp.configfile.reader import ConfigError
from kvip_bgp.domain.config import Config


@dataclass(frozen=True)
class Loaded:
    """A validated config and the SHA-256 of the file's bytes it was read from."""

    config: Config
    digest: str


def read(path: Path, environ: Mapping[str, str] | None = None) -> Loaded:
    """Read, hash and validate ``path`` in one go (the hash is of what was parsed)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from error
    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError([f"{path}: not valid YAML: {error}"]) from error
    return Loaded(parse(document, environ=environ, source=path), hashlib.sha256(data).hexdigest())


def fingerprint(paths: Iterable[Path]) -> str:
    """What the files resolve to and hold; a changed value means "read them again".

    A file that cannot be read counts by its error, so it changing back is seen too.
    """
    digest = hashlib.sha256()
    for path in paths:
        resolved = os.path.realpath(path)
        digest.update(resolved.encode() + b"\0")
        try:
            digest.update(Path(resolved).read_bytes())
        except OSError as error:
            digest.update(f"error {error.errno}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


def watched_files(path: Path, config: Config) -> tuple[Path, ...]:
    """The config file and every password file the running config read."""
    secrets = (peer.password_file for peer in config.bgp.peers if peer.password_file is not None)
    return (path, *secrets)
