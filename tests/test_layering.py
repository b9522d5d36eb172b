"""Layering rules of the source tree, read from the ASTs (no imports are executed).

1. No package imports another package's private module (``X._y``, a ``_name.py`` or ``_name/``): a private
   module is imported only from inside the package that holds it (``export._onnx`` by ``export.*``,
   ``distill.teacher._device`` by ``distill.teacher.*``, not by ``distill.student``); what several packages
   need belongs to a public module. ``tests`` are exempt as importers.
2. The base layer is the folder ``distill/core/``: every module in it, present or future. It imports no
   first-party module outside that folder, anywhere (module level, inside functions, under
   ``TYPE_CHECKING``): not ``distill.teacher``/``student``/``pipeline``/``presets``/``cli``, nor ``export``,
   ``ranker``, ``opensearch_plugin``, ``loadtests``, ``bench``.
3. ``export/`` imports nothing from training code (``distill.teacher``, ``distill.student``): what export and
   training share (the scorer, layer selection, the model card) lives in the core folder.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("distill", "export", "ranker", "opensearch_plugin", "loadtests", "bench")
CORE = "distill.core"
FIRST_PARTY = ("distill", "export", "ranker", "opensearch_plugin", "loadtests", "bench", "tests")
TRAINING = ("distill.teacher", "distill.student")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def is_module(dotted: str) -> bool:
    base = REPO.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved against ``importer``)."""
    if not node.level:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(tree: ast.AST, importer: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """``(line, dotted name)`` of every module an import statement anywhere in ``tree`` names; for
    ``from m import n`` also ``m.n`` when that is a module in this repository."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            target = resolve(node, importer, is_package)
            yield node.lineno, target
            for alias in node.names:
                if is_module(f"{target}.{alias.name}"):
                    yield node.lineno, f"{target}.{alias.name}"


def module_level_imports(tree: ast.Module, importer: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """Imports that run when the module is imported: module-level statements, also inside ``if``/``try``/``with``
    blocks, but not inside functions or classes, nor under ``if TYPE_CHECKING:``."""
    def walk(body: list[ast.stmt]) -> Iterator[tuple[int, str]]:
        for stmt in body:
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                yield from imported_modules(stmt, importer, is_package)
            elif isinstance(stmt, ast.If):
                if not (isinstance(stmt.test, ast.Name) and stmt.test.id == "TYPE_CHECKING"
                        or isinstance(stmt.test, ast.Attribute) and stmt.test.attr == "TYPE_CHECKING"):
                    yield from walk(stmt.body)
                yield from walk(stmt.orelse)
            elif isinstance(stmt, ast.Try):
                for block in (stmt.body, stmt.orelse, stmt.finalbody, *(h.body for h in stmt.handlers)):
                    yield from walk(block)
            elif isinstance(stmt, ast.With):
                yield from walk(stmt.body)

    yield from walk(tree.body)


def parsed() -> Iterator[tuple[Path, str, bool, ast.Module]]:
    for path in source_files():
        yield (path, module_name(path), path.name == "__init__.py",
               ast.parse(path.read_text(encoding="utf-8"), str(path)))


def private_module_of(dotted: str) -> str | None:
    """The first private component's module (``export._candidates`` for ``export._candidates.x``), else None."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[: i + 1])
    return None


def test_the_walk_sees_every_package():
    names = {module_name(p) for p in source_files()}
    for package in PACKAGES:
        assert package in names, f"{package}/__init__.py not found"
    assert CORE in names and sum(n.startswith(CORE + ".") for n in names) >= 10, "the core folder is missing"


def test_no_package_imports_another_packages_private_module():
    bad = []
    for path, importer, is_package, tree in parsed():
        for line, target in imported_modules(tree, importer, is_package):
            private = private_module_of(target)
            if not private or target.split(".")[0] not in PACKAGES + ("tests",):
                continue
            owner = private.rsplit(".", 1)[0]
            if importer != owner and not importer.startswith(owner + "."):
                bad.append(f"{path.relative_to(REPO)}:{line}: {importer} imports {private}, private to {owner}")
    assert not bad, "import the package's public surface instead:\n" + "\n".join(sorted(set(bad)))


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def core_violations(importer: str, targets: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Imports of a core module that leave the core folder for another first-party module."""
    if within(importer, CORE):
        for line, target in targets:
            if target.split(".")[0] in FIRST_PARTY and not within(target, CORE) and target != "distill":
                yield line, target


def export_violations(importer: str, targets: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Imports of an ``export`` module that reach into training code."""
    if within(importer, "export"):
        for line, target in targets:
            if any(within(target, t) for t in TRAINING):
                yield line, target


def test_core_imports_nothing_above_it():
    bad = [f"{path.relative_to(REPO)}:{line}: imports {target}"
           for path, importer, is_package, tree in parsed()
           for line, target in core_violations(importer, imported_modules(tree, importer, is_package))]
    assert not bad, "distill/core must not depend on anything above it:\n" + "\n".join(sorted(set(bad)))


def test_export_imports_no_training_code():
    bad = [f"{path.relative_to(REPO)}:{line}: imports {target}"
           for path, importer, is_package, tree in parsed()
           for line, target in export_violations(importer, imported_modules(tree, importer, is_package))]
    assert not bad, "export/ must not import training code; move what it needs to distill/core:\n" + "\n".join(
        sorted(set(bad)))


def test_the_checks_catch_what_they_are_for():
    """The rules themselves, on small sources (so a broken walk cannot pass silently)."""
    tree = ast.parse("from export._candidates import x\nfrom ._node import y\n"
                     "def f():\n    from ranker._cache import z\n")
    found = [t for _, t in imported_modules(tree, "ranker.server", False)]
    assert "export._candidates" in found and "ranker._node" in found and "ranker._cache" in found
    assert (private_module_of("export._candidates.x") == "export._candidates"
            and private_module_of("export.report") is None)
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ranker\n"
                     "try:\n    from . import teacher\nexcept ImportError:\n    pass\ndef f():\n    import export\n")
    assert [t for _, t in module_level_imports(tree, "distill.pipeline", False)] \
        == ["typing", "distill", "distill.teacher"]
    deferred = ast.parse("def f():\n    from distill.student.model import drop_layers\n"
                         "    from distill.core.errors import E\n")
    assert [t for _, t in core_violations("distill.core.layers",
                                          imported_modules(deferred, "distill.core.layers", False))] \
        == ["distill.student.model"]
    assert [t for _, t in export_violations("export.layers", imported_modules(deferred, "export.layers", False))] \
        == ["distill.student.model"]
    assert not list(core_violations("distill.teacher.label",
                                    imported_modules(deferred, "distill.teacher.label", False)))


#: the longest a function of the library packages may be (one screen: a function is one idea)
MAX_FUNCTION_LINES = 80
LIBRARY = ("distill", "export", "ranker", "opensearch_plugin", "loadtests")


def test_no_library_function_is_longer_than_a_screen():
    long = [f"{path.relative_to(REPO)}:{node.lineno}: {node.name} has {node.end_lineno - node.lineno + 1} lines"
            for path, _, _, tree in parsed() if path.relative_to(REPO).parts[0] in LIBRARY
            for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"split these into functions of at most {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)
