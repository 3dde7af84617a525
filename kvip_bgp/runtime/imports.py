"""Importing a third-party package's submodules without its ``__init__``.

``kubernetes/__init__.py`` and ``pyroute2/__init__.py`` import every subpackage they
ship (kubernetes: ``dynamic`` with jsonschema, ``watch``, ``stream``...; pyroute2: IPDB,
NDB, nftables, WireGuard...). The daemon needs a few submodules of each, and the rest
costs ~90 ms of CPU and ~10 MB resident on the way to the first route. The adapters that
own those packages (kube.client, netif.netlink) register them here before importing
what they use.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def register_without_init(package: str) -> None:
    """Make ``package``'s submodules importable without running its ``__init__`` first.

    The package's module object is registered unexecuted (its ``__path__`` set, as the
    import system would), so ``import package.sub`` loads only ``sub``. The first read
    of any other attribute (``from package import Name``, ``package.__version__``) runs
    the real ``__init__`` then, in the same module object: other code in the process
    sees the whole package as if nothing had been skipped (a name that is a submodule is
    just imported: ``from package import sub`` reads the attribute first). Nothing
    happens if the package is already imported, or is not a regular package (the import
    that follows reports that).
    """
    if package in sys.modules:
        return
    spec = importlib.util.find_spec(package)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(name: str) -> Any:
        # ``from package import sub`` asks for the attribute before importing ``sub``.
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        # Once: the real __init__ defines the rest; it does not define __getattr__.
        del module.__dict__["__getattr__"]
        loader.exec_module(module)
        return getattr(module, name)

    module.__dict__["__getattr__"] = complete
    sys.modules[package] = module
