"""Lazy package exports: names imported from their module on first use (PEP 562)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any], exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps each public name to the module
    defining it (absolute, or relative to ``package`` with a leading dot). The module is
    imported when the name is first asked for, and the value kept in ``namespace``. Any other
    name that is a submodule of ``package`` is imported as one (``taskrank.adapt.adapt`` after
    a plain ``import taskrank``)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
                return importlib.import_module(f"{package}.{name}")  # the import sets the attribute
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
