"""The ``distilrank`` command line. Logging is configured here and nowhere else.

Subcommands live next to the code they drive and are imported lazily, so ``distilrank evaluate``
does not pay for importing torch. Exit codes come from :data:`distill.core.errors.EXIT_CODES`.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import click

from distill.core.bm25 import B_RANGE, K1_RANGE, BM25Config
from distill.core.config import default
from distill.core.errors import ConfigError, DistilrankError, MissingExtraError, exit_code_for
from distill.core.evaluation import DEFAULT_METRICS
from distill.core.lazy import missing_extra_error
from distill.core.params import INT32_MAX, Count, FiniteFloat

logger = logging.getLogger(__name__)

#: command name -> "module:attribute". A command is listed only if its module imports.
_LAZY_COMMANDS: dict[str, str] = {
    "retrieve": "distill.cli:retrieve",
    "evaluate": "distill.cli:evaluate_cmd",
    "teacher": "distill.teacher.cli:teacher",
    "student": "distill.student.cli:student",
    "pipeline": "distill.pipeline_cli:pipeline",
    "export": "export.cli:export_cmd",
    "serve": "ranker.cli:serve",
    "opensearch": "opensearch_plugin.cli:opensearch",
    "loadtest": "loadtests.cli:loadtest",
}

#: command name -> the pip extra that installs what it imports (pyproject.toml); absent: core requirements.
COMMAND_EXTRAS: dict[str, str] = {
    "teacher": "train",
    "student": "train",
    "pipeline": "train",
    "export": "export",
    "serve": "serve",
    "opensearch": "opensearch",
    "loadtest": "loadtest",
}


def _missing_extra(name: str, exc: ModuleNotFoundError) -> MissingExtraError | None:
    return missing_extra_error(exc, COMMAND_EXTRAS.get(name), f"distilrank {name}")


def _unavailable(name: str, error: MissingExtraError) -> click.Command:
    """Stands in for a command whose module cannot be imported for want of an extra: listed in --help
    with the install line, and any invocation (``--help`` too) exits 3 with the full message."""

    def callback() -> None:
        raise error

    extra = COMMAND_EXTRAS.get(name)
    install = f"pip install 'distilrank[{extra}]'" if extra else "pip install distilrank"
    return click.Command(name, callback=callback, add_help_option=False,
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                         help=str(error), short_help=f"(not installed: {install})")


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in _LAZY_COMMANDS if self._load(name, quiet=True) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name, quiet=False)

    def invoke(self, ctx: click.Context) -> object:
        # Commands import their heavy dependencies when they run: a third-party module missing there
        # is a missing extra (exit 3, naming it), not a traceback.
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            error = _missing_extra(ctx.invoked_subcommand or "", exc) if ctx.invoked_subcommand else None
            if error is None:
                raise
            raise error from exc

    @staticmethod
    def _load(name: str, quiet: bool) -> click.Command | None:
        target = _LAZY_COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                return None  # this part is not built yet: no placeholder command
            error = _missing_extra(name, exc)
            if error is not None:
                return _unavailable(name, error)
            if quiet:
                return None
            raise
        return getattr(module, attr, None)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="distilrank")
def cli(verbose: int, quiet: bool) -> None:
    """distilrank: distil an LLM ranker into a fast BERT cross-encoder and serve it in OpenSearch.

    \b
    Exit codes: 0 ok, 1 internal error (a bug), 2 bad arguments/config,
    3 missing prerequisite, 4 bad input data, 5 quality/parity gate failed.
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("bm25s", "httpx", "urllib3", "opensearch", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


#: ``retrieve`` subcommands that live with another stage's code, imported when used: name -> "module:attribute"
_LAZY_RETRIEVE: dict[str, str] = {"opensearch": "opensearch_plugin.cli:retrieve_opensearch"}


class _RetrieveGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY_RETRIEVE])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY_RETRIEVE:
            module_name, attr = _LAZY_RETRIEVE[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)


@cli.group(cls=_RetrieveGroup)
def retrieve() -> None:
    """First-stage retrieval (candidate generation)."""


_IDENTICAL_IDS_HELP = ("Drop hits whose doc id equals the query id, as BEIR's evaluator does (ignore_identical_ids). "
                       "Default: auto -- on when queries look like documents (most queries whose id is a doc id "
                       "retrieve that doc first); the choice and its reason are printed.")


def _identical_ids_option(f):  # noqa: ANN001, ANN202 - a click decorator
    return click.option("--ignore-identical-ids/--keep-identical-ids", "ignore_identical_ids", default=None,
                        help=_IDENTICAL_IDS_HELP)(f)


@retrieve.command("bm25")
@click.option("--corpus", required=True, type=click.Path(dir_okay=False),
              help="BEIR JSONL or MS MARCO TSV corpus (.gz/.bz2 ok).")
@click.option("--queries", required=True, type=click.Path(dir_okay=False),
              help="Queries TSV or BEIR JSONL (.gz/.bz2 ok).")
@click.option("--top-k", default=100, show_default=True, type=Count(min=1), help="Candidates per query.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="TREC run to write (atomically; .gz compresses). Ids with whitespace are refused (exit 4).")
@click.option("--k1", default=default(BM25Config, "k1"), show_default=True, type=FiniteFloat(*K1_RANGE),
              help="Term-frequency saturation.")
@click.option("--b", default=default(BM25Config, "b"), show_default=True, type=FiniteFloat(*B_RANGE),
              help="Document-length normalisation.")
@_identical_ids_option
def retrieve_bm25(corpus: str, queries: str, top_k: int, out: str, k1: float, b: float,
                  ignore_identical_ids: bool | None) -> None:
    """BM25 (bm25s, Lucene variant, English stemming) over title + text."""
    from distill.core.bm25 import BM25Config, BM25Index
    from distill.core.evaluation import drop_self_hits, resolve_identical_ids
    from distill.core.formats import read_corpus, read_queries, write_run

    config = BM25Config(k1=k1, b=b)
    docs = read_corpus(corpus)
    qs = read_queries(queries)
    logger.info("indexing %d documents", len(docs))
    index = BM25Index(docs, config, show_progress=sys.stderr.isatty())
    # one spare candidate, so that a dropped self hit still leaves top_k (BEIR's searchers do the same)
    run = index.search(qs, top_k=top_k + 1)
    drop, why = resolve_identical_ids(ignore_identical_ids, [run], doc_ids=docs)
    dropped = 0
    if drop:
        run, dropped = drop_self_hits(run)
    path = _write_output(lambda: write_run(out, run, tag="bm25", top_k=top_k), out)
    n_results = sum(min(len(v), top_k) for v in run.values())
    click.echo(f"wrote {n_results} results for {len(run)} queries to {path}")
    click.echo(f"identical ids: {'dropped' if drop else 'kept'} ({why}; {dropped} self hits removed)")


def _write_output(write, path: str):  # noqa: ANN001, ANN202
    """Run ``write``; an OS error on the output path (a file where a folder should be, no permission)
    is a bad argument (exit 2), not a traceback. Missing parent folders are created by atomic_write."""
    try:
        return write()
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _run_spec(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    if not path.strip():
        raise ConfigError(f"--run {spec!r}: empty path; use --run PATH or --run NAME=PATH")
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"--run {spec!r}: {file} is a directory; give the run file inside it")
    from distill.core.formats import compression_of

    return name or (file.with_suffix("") if compression_of(file) else file).stem, file


@cli.command("evaluate")
@click.option("--qrels", required=True, type=click.Path(dir_okay=False), help="TREC or BEIR-TSV qrels (.gz/.bz2 ok).")
@click.option("--run", "runs", required=True, multiple=True,
              help="TREC run (.gz/.bz2 ok); repeat to compare. NAME=PATH names a run.")
@click.option("--metrics", default=",".join(DEFAULT_METRICS), show_default=True,
              help="Comma-separated: ndcg@k, mrr@k, recall@k, map[@k], p@k (k >= 1).")
@click.option("--rel-threshold", default=1, show_default=True, type=Count(min=1, max=INT32_MAX),
              help="Minimum relevance counted as relevant for MRR/recall/MAP/P (2 for TREC DL).")
@click.option("--corpus", type=click.Path(dir_okay=False), help="Check that every doc id in qrels and runs exists.")
@click.option("--allow-unknown-ids", is_flag=True, help="Only warn about doc ids unknown to --corpus.")
@_identical_ids_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Write metrics and a 'conventions' block as JSON (parent folders are created).")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), help="Write a Markdown table.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), help="Write a bar chart PNG.")
def evaluate_cmd(qrels: str, runs: tuple[str, ...], metrics: str, rel_threshold: int, corpus: str | None,
                 allow_unknown_ids: bool, ignore_identical_ids: bool | None, json_out: str | None,
                 md_out: str | None, plot_out: str | None) -> None:
    """Evaluate one or more TREC runs (ir-measures / trec_eval definitions)."""
    import dataclasses

    from distill.core.errors import DataError
    from distill.core.evaluation import (
        evaluate,
        format_markdown,
        parse_metrics,
        resolve_identical_ids,
        write_reports,
    )
    from distill.core.formats import check_ids, iter_corpus, read_qrels, read_run

    metric_list = parse_metrics(metrics)
    specs = [_run_spec(spec) for spec in runs]
    judged = read_qrels(qrels)
    loaded: dict[str, dict[str, dict[str, float]]] = {}
    for name, path in specs:
        if name in loaded:
            name = f"{name}#{len(loaded)}"
        loaded[name] = read_run(path)
    doc_ids: list[str] | None = None
    if corpus:
        doc_ids = [d.doc_id for d in iter_corpus(corpus)]
        for what, pairs in [(qrels, judged), *loaded.items()]:
            check = check_ids(pairs, doc_ids)
            if not check.ok:
                if allow_unknown_ids:
                    logger.warning(check.describe(what))
                else:
                    raise DataError(check.describe(str(what)) + "; fix the ids or pass --allow-unknown-ids")
    drop, why = resolve_identical_ids(ignore_identical_ids, loaded.values(), judged, doc_ids)
    evaluated = {name: evaluate(judged, run, metric_list, rel_threshold, ignore_identical_ids=drop,
                                identical_ids_reason=why) for name, run in loaded.items()}
    results = {name: res.metrics for name, res in evaluated.items()}
    dropped = sum(r.conventions.self_hits_dropped for r in evaluated.values())
    conventions = dataclasses.replace(next(iter(evaluated.values())).conventions, self_hits_dropped=dropped)
    click.echo(format_markdown(results), nl=False)
    click.echo(conventions.describe())
    for out in (json_out, md_out, plot_out):
        if out and Path(out).is_dir():
            raise ConfigError(f"{out} is a directory; give a file path")
    _write_output(lambda: write_reports(results, json_out, md_out, plot_out, single=len(results) == 1,
                                        conventions=conventions), json_out or md_out or plot_out or "")


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="distilrank", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except DistilrankError as exc:
        click.echo(f"error: {exc}", err=True)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        click.echo("interrupted; completed stages are kept and resume on the next run", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
