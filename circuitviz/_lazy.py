"""Package namespaces whose names load on first use.

A package ``__init__`` lists what it exports and from which submodule; nothing is imported until a
name is read. So ``import circuitviz.tasks.catalog`` or the CLI's ``--help`` never pays for torch,
while ``from circuitviz.tasks import build_task_data`` works as usual.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def exports(*groups: tuple[str, Iterable[str]]) -> dict[str, str]:
    """``{name: submodule}`` from ``(submodule, names)`` pairs."""
    return {name: module for module, names in groups for name in names}


def lazy_namespace(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """(``__getattr__``, ``__dir__``, ``__all__``) for ``package`` exporting ``names``."""
    listed = sorted(names)

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    def __dir__() -> list[str]:
        return listed

    return __getattr__, __dir__, listed
