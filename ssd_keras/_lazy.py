"""Lazy re-exports for package ``__init__`` files: a public name imports its module on first use,
so that importing a package stays cheap (no TensorFlow until a name that needs it is used)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(namespace: dict[str, Any], exports: Mapping[str, str],
                 public: Iterable[str] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package.

    Args:
        namespace: the package's ``globals()``.
        exports: public name -> module defining it, relative to the package (``".ssd"``,
            ``"..marknet.data"``).
        public: further names ``dir()`` lists (``__all__``).
    """
    package = namespace["__name__"]
    listed = set(exports) | set(public)

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | listed)

    return __getattr__, __dir__
