"""Lazy package attributes (PEP 562): a package names what it exports and where each name is
defined, and the defining module (with torch, mlflow ...) is imported on first access only."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Iterable


def lazy_exports(package: str, names: dict[str, str],
                 submodules: Iterable[str] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each of ``names`` (name -> defining module)
    and each of ``submodules`` (``package.<name>``) is imported when first read, then cached.
    ``dir(package)`` lists the public names only: the package's ``__all__`` if it has one, else
    ``names`` and ``submodules`` (not its helpers, nor the sub-modules imported along the way)."""
    namespace = sys.modules[package].__dict__
    submodules = tuple(submodules)

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
        elif name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(namespace.get("__all__") or {*names, *submodules})

    return __getattr__, __dir__
