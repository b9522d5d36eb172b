"""PEP 562 lazy exports (``import distill.student`` must not import torch until a name is used), and the
error a missing optional dependency becomes: :class:`MissingExtraError`, naming the ``pip install`` extra."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from distill.core.errors import MissingExtraError

__all__ = ["FIRST_PARTY", "MissingExtraError", "lazy_exports", "missing_extra_error"]

#: this distribution's top-level packages: one of them missing is a broken install (a bug), not a missing extra
FIRST_PARTY = frozenset({"distill", "export", "ranker", "opensearch_plugin", "loadtests"})


def missing_extra_error(exc: ModuleNotFoundError, extra: str | None, what: str) -> MissingExtraError | None:
    """The error to raise instead of ``exc`` when ``what`` (a command or an API name) is used without the
    extra ``extra`` (``None``: a core requirement). ``None`` when the missing module is one of ours."""
    module = (exc.name or "").partition(".")[0]
    if not module or module in FIRST_PARTY:
        return None
    install = f"pip install 'distilrank[{extra}]'" if extra else "pip install distilrank (a core requirement)"
    err = MissingExtraError(f"{what} needs the Python module {module!r}, which is not installed: {install}")
    err.name = module
    return err


def lazy_exports(package: str, where: Mapping[str, str], extra: str | None = None,
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``where[name]`` is a submodule (``"loss"``) or an absolute
    module (``"distill.core.config"``) that defines ``name``. A third-party module missing on first use raises
    :class:`MissingExtraError` naming ``pip install 'distilrank[extra]'``."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module-level hook's required name
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = where[name]
        try:
            loaded = importlib.import_module(module if "." in module else f"{package}.{module}")
        except ModuleNotFoundError as exc:
            err = missing_extra_error(exc, extra, f"{package}.{name}")
            if err is None:
                raise
            raise err from exc
        return getattr(loaded, name)

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(where)

    return __getattr__, __dir__
