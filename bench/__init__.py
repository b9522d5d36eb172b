"""Benchmarks as one tool: ``python -m bench NAME [options]`` (``python -m bench --help`` lists them);
``python -m bench.NAME`` runs one too. Each bench module defines one click command, ``main``, declared with
:func:`command`, and ends with ``run(main)``. Results go to ``bench/results`` with a run header
(:func:`write_results`); the current figures and the commands that reproduce them are in docs/results.md.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from bench._header import RunHeader, run_header, stamp_results, write_results

__all__ = ["RunHeader", "command", "json_object", "run", "run_header", "stamp_results", "write_results"]

F = TypeVar("F", bound=Callable[..., Any])


class BenchCommand(click.Command):
    """A bench's command. Its help is the module docstring as written: examples and lists keep their layout."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        text = inspect.cleandoc(self.help or "")
        if text:
            formatter.write_paragraph()
            for line in text.splitlines():
                formatter.write(f"{'':>{formatter.current_indent + 2}}{line}\n" if line else "\n")


def command(doc: str | None) -> Callable[[F], click.Command]:
    """``@command(__doc__)``: declare a bench's ``main``; ``-h``/``--help`` print ``doc`` and the options with
    their defaults."""
    return click.command(cls=BenchCommand, help=doc,
                         context_settings={"help_option_names": ["-h", "--help"], "show_default": True,
                                           "max_content_width": 120})


def run(main: click.Command | Callable[[], int | None], args: list[str] | None = None) -> NoReturn:
    """Run a bench the way the ``distilrank`` CLI runs a command, and exit with its code.

    ``main`` is a click command (given ``args``, default ``sys.argv[1:]``) or a plain function. A data or config
    error (a missing collection, a bad file) is one ``error:`` line and its exit code from
    :mod:`distill.core.errors`, not a traceback; a bad option is click's usage message and exit 2; an int the
    command returns is the exit code. The run header (command line, commit, date) is taken before it starts.
    """
    from distill.core.errors import DistilrankError, exit_code_for

    run_header()
    try:
        if isinstance(main, click.Command):
            rc = main.main(args=args, standalone_mode=False)
        else:
            rc = main()
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.Abort:
        click.echo("Aborted!", err=True)
        raise SystemExit(1) from None
    except DistilrankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exit_code_for(exc)) from None
    raise SystemExit(rc or 0)


def json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any]:
    """A click callback: an option's value parsed as a JSON object (``{}`` when the option is not given)."""
    import json

    if value is None:
        return {}
    try:
        obj = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise click.BadParameter('expected a JSON object, e.g. \'{"max_steps": 100}\'')
    return obj
