"""``python -m bench NAME [options]``: run one bench; ``python -m bench --help`` lists them.

A bench is a module ``bench/NAME.py`` (not ``_private``) whose ``main`` is a click command; the list is read
from the folder, and a module is imported only when its bench runs, so the listing needs no optional extras.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import click

from bench import run

BENCH = Path(__file__).resolve().parent


def bench_names() -> list[str]:
    """Every bench in ``bench/``, sorted."""
    return sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))


def summary(name: str) -> str:
    """The first line of a bench's module docstring, read without importing it."""
    doc = ast.get_docstring(ast.parse((BENCH / f"{name}.py").read_text(encoding="utf-8"))) or ""
    return doc.strip().split("\n", 1)[0]


class Benches(click.Group):
    """The benches as subcommands, imported on use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return bench_names()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        name = cmd_name.replace("-", "_")
        if name not in bench_names():
            return None
        main = getattr(importlib.import_module(f"bench.{name}"), "main", None)
        if not isinstance(main, click.Command):
            raise click.ClickException(f"bench/{name}.py: its main is not a click command (declare it with "
                                       "@bench.command(__doc__))")
        return main

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = bench_names()
        width = max(map(len, names), default=0)
        with formatter.section("Benches"):
            for name in names:  # one line each, not wrapped: the summaries are written to fit
                formatter.write(f"{'':>{formatter.current_indent}}{name:<{width}}  {summary(name)}\n")


main = Benches(name="bench", subcommand_metavar="NAME [ARGS]...",
               help="Run one benchmark: python -m bench NAME [options]; python -m bench NAME --help describes it. "
               "Results go to bench/results; current figures are in docs/results.md.",
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})

if __name__ == "__main__":
    run(main)
