"""PEP 562 lazy exports: ``import distill.student`` must not import torch until a name is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``where[name]`` is a submodule (``"loss"``) or an absolute
    module (``"distill.config"``) that defines ``name``."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module-level hook's required name
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = where[name]
        return getattr(importlib.import_module(module if "." in module else f"{package}.{module}"), name)

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(where)

    return __getattr__, __dir__
