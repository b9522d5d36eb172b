"""``distilrank teacher cpt|sft|label|synthesize|rerank``. Flags mirror the config fields; ``--config FILE``
(a JSON object) supplies any of them, flags given on the command line win."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import click

logger = logging.getLogger(__name__)

_DEVICE = click.Choice(["auto", "cpu", "cuda"])


def _train_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="JSON config; flags override it."),
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory of the stage."),
        click.option("--base-model", help="'default' (SmolLM2-135M-Instruct), a local HF causal-LM dir or a Hub id "
                     "(org/name[@revision])."),
        click.option("--max-length", type=int, help="Tokens per sequence (default 192)."),
        click.option("--batch-size", type=int), click.option("--grad-accum", type=int),
        click.option("--lr", type=float), click.option("--epochs", type=int),
        click.option("--max-steps", type=int, help="Cap on optimiser steps (0 = use --epochs)."),
        click.option("--checkpoint-every", type=int, help="Steps between resumable checkpoints."),
        click.option("--seed", type=int), click.option("--device", type=_DEVICE),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"])),
        click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None),
        click.option("--lora/--no-lora", default=None, help="LoRA adapters (pip install 'distilrank[lora]')."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in kwargs.items() if k not in {"config_file", "out", "lora"} and v is not None}
    if kwargs.get("lora") is not None:
        out["lora"] = {"enabled": kwargs["lora"]}
    return out


def _progress() -> bool:
    return sys.stderr.isatty()


@click.group()
def teacher() -> None:
    """Train and use the LLM teacher (CPT, rank SFT, labelling, synthetic queries, reranking)."""


@teacher.command("cpt")
@_train_options
@click.option("--pairs", type=click.Path(dir_okay=False), help="JSONL of {query, title, text} (weak supervision).")
@click.option("--queries", type=click.Path(dir_okay=False), help="With --qrels and --corpus instead of --pairs.")
@click.option("--qrels", type=click.Path(dir_okay=False))
@click.option("--corpus", type=click.Path(dir_okay=False))
@click.option("--max-pairs", type=int, help="Seeded random subset of the pairs (0 = all).")
def cpt_cmd(**kwargs: Any) -> None:
    """Continual pre-training: generate a relevant document from the query (loss on document tokens)."""
    from distill.core.config import load_config
    from distill.teacher.config import CPTConfig
    from distill.teacher.cpt import run_cpt

    cfg = load_config(CPTConfig, kwargs["config_file"], _overrides(kwargs))
    model = _stage(kwargs["out"], cfg, lambda d: {"model": run_cpt(cfg, d, progress=_progress())})["model"]
    click.echo(f"CPT model: {model}")


@teacher.command("sft")
@_train_options
@click.option("--queries", type=click.Path(dir_okay=False), help="Training queries.")
@click.option("--qrels", type=click.Path(dir_okay=False), help="Training qrels (positives).")
@click.option("--corpus", type=click.Path(dir_okay=False))
@click.option("--run", type=click.Path(dir_okay=False), help="First-stage run for negatives (default: BM25).")
@click.option("--num-negatives", type=int)
@click.option("--negative-depth", type=int, help="Negatives are drawn from this many top candidates.")
@click.option("--max-queries", type=int, help="Seeded random subset of training queries (0 = all).")
@click.option("--template", help="e.g. 'query: {query} document: {title} {text}' (end token appended).")
@click.option("--gen-weight", type=float, help="Generation-loss weight on the positive (default 0.1).")
@click.option("--kl-weight", type=float, help="KL-to-reference weight (default 0: needs a 2nd model copy).")
@click.option("--kl-reference", help="Reference model for the KL term (default: --base-model).")
def sft_cmd(**kwargs: Any) -> None:
    """Rank SFT: last-token score head, listwise softmax CE over 1 positive + k BM25 negatives."""
    from distill.core.config import load_config
    from distill.teacher.config import SFTConfig
    from distill.teacher.sft import run_sft

    cfg = load_config(SFTConfig, kwargs["config_file"], _overrides(kwargs))
    teacher = _stage(kwargs["out"], cfg, lambda d: {"teacher": run_sft(cfg, d, progress=_progress())})["teacher"]
    click.echo(f"teacher: {teacher}")


@teacher.command("label")
@click.option("--config", "config_file", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--source", type=click.Choice(["llm", "run", "endpoint", "openai", "dense", "bm25", "ensemble"]),
              help="Teacher source [default: llm]; see distill.teacher.sources.")
@click.option("--teacher", "teacher_dir", type=click.Path(file_okay=False),
              help="llm: a `teacher sft` dir (--llm-score head) or any causal LM dir (--llm-score qlm).")
@click.option("--llm-score", type=click.Choice(["head", "qlm"]), help="llm: score head, or query likelihood.")
@click.option("--run", type=click.Path(dir_okay=False), help="run: TREC run of the teacher (e.g. a 7B reranker's).")
@click.option("--run-depth", type=int, help="run: candidates per query taken from the run [100].")
@click.option("--endpoint-url", help="endpoint: a rerank URL, e.g. http://host:8080/v1/rerank (Cohere, Jina, vLLM "
              "/rerank or /score, TEI, Infinity); openai: the server's base URL, e.g. http://host:8000/v1.")
@click.option("--endpoint-format", type=click.Choice(["auto", "cohere", "tei", "vllm-score"]),
              help="endpoint: request shape [auto: /score is vllm-score, else cohere; tei when the server asks].")
@click.option("--endpoint-model", help="endpoint/openai: model name sent (openai default: the first of GET /models).")
@click.option("--endpoint-api-key", envvar="DISTILRANK_ENDPOINT_API_KEY",
              help="endpoint/openai: bearer token (or env; openai also reads OPENAI_API_KEY).")
@click.option("--endpoint-batch-size", type=int, help="endpoint/openai: documents (prompts) per request [32].")
@click.option("--endpoint-concurrency", type=int, help="endpoint/openai: requests in flight [4].")
@click.option("--endpoint-retries", type=int, help="endpoint/openai: retries with exponential backoff [4].")
@click.option("--openai-score", type=click.Choice(["yes", "qlm"]),
              help="openai: log-odds of 'Yes' (chat or completions) or query likelihood (completions + echo) [yes].")
@click.option("--members", help="ensemble: comma-separated members [llm,dense,bm25].")
@click.option("--weights", help="ensemble: fixed weights, e.g. dense=0.5,bm25=0.5 (default: fitted on qrels).")
@click.option("--fit-queries", type=int, help="ensemble: labelled queries with qrels used to fit weights [100].")
@click.option("--qrels-kind", type=click.Choice(["real", "synthetic"]), help="What --qrels are (recorded).")
@click.option("--shard", help="Label only slice I of N (0-based), e.g. 0/4; the label files concatenate.")
@click.option("--queries", type=click.Path(dir_okay=False))
@click.option("--corpus", type=click.Path(dir_okay=False))
@click.option("--qrels", type=click.Path(dir_okay=False),
              help="Adds judged positives to the candidates; fits ensembles.")
@click.option("--n-bm25", type=int)
@click.option("--n-dense", type=int)
@click.option("--n-random", type=int)
@click.option("--max-queries", type=int)
@click.option("--batch-size", type=int)
@click.option("--max-length", type=int)
@click.option("--device", type=_DEVICE)
def label_cmd(**kwargs: Any) -> None:
    """Score candidates of each training query with a teacher source (labels JSONL, resumable)."""
    from distill.core.config import load_config
    from distill.core.errors import ConfigError
    from distill.teacher.config import LabelConfig
    from distill.teacher.label import run_label

    kwargs["teacher"] = kwargs.pop("teacher_dir")
    if kwargs.get("members"):
        kwargs["members"] = tuple(m.strip() for m in kwargs["members"].split(",") if m.strip())
    if kwargs.get("weights"):
        try:
            kwargs["weights"] = {k.strip(): float(v) for k, v in (p.split("=") for p in kwargs["weights"].split(","))}
        except ValueError as exc:
            raise ConfigError(f"--weights {kwargs['weights']!r}: use NAME=NUMBER pairs, "
                              "e.g. dense=0.5,bm25=0.5") from exc
    cfg = load_config(LabelConfig, kwargs["config_file"], _overrides(kwargs))
    labels = _stage(kwargs["out"], cfg, lambda d: {"labels": run_label(cfg, d, progress=_progress())})["labels"]
    click.echo(f"labels: {labels}")


@teacher.command("synthesize")
@click.option("--config", "config_file", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--corpus", type=click.Path(dir_okay=False))
@click.option("--generator", help="'default' (SmolLM2-135M-Instruct), a local instruct LM dir or a Hub id.")
@click.option("--num-docs", type=int)
@click.option("--crop-sentences", type=int)
@click.option("--max-new-tokens", type=int)
@click.option("--batch-size", type=int)
@click.option("--seed", type=int)
@click.option("--device", type=_DEVICE)
def synthesize_cmd(**kwargs: Any) -> None:
    """Generate training queries from cropped passages; writes queries.tsv + qrels.txt."""
    from distill.core.config import load_config
    from distill.teacher.config import SynthConfig
    from distill.teacher.synthesize import synthesize_queries

    cfg = load_config(SynthConfig, kwargs["config_file"], _overrides(kwargs))
    out = _stage(kwargs["out"], cfg, lambda d: dict(zip(("queries", "qrels"),
                                                        synthesize_queries(cfg, d, progress=_progress()), strict=True)))
    click.echo(f"queries: {out['queries']}\nqrels: {out['qrels']}")


@teacher.command("rerank")
@click.option("--teacher", "teacher_dir", type=click.Path(file_okay=False),
              help="Teacher dir from `teacher sft` (omit with --zero-shot).")
@click.option("--zero-shot", is_flag=True, help="Score with the instruct base's yes/no prompt instead.")
@click.option("--base-model", default="default", show_default=True,
              help="Model for --zero-shot: 'default', a local dir or a Hub id.")
@click.option("--corpus", required=True, type=click.Path(dir_okay=False))
@click.option("--queries", required=True, type=click.Path(dir_okay=False))
@click.option("--run", "run_path", required=True, type=click.Path(dir_okay=False), help="First-stage TREC run.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Reranked TREC run to write.")
@click.option("--top-k", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--max-length", default=192, show_default=True, type=click.IntRange(min=16))
@click.option("--device", default="auto", type=_DEVICE)
def rerank_cmd(teacher_dir: str | None, zero_shot: bool, base_model: str, corpus: str, queries: str, run_path: str,
               out: str, top_k: int, batch_size: int, max_length: int, device: str) -> None:
    """Rerank the top-k of a run; evaluate the result with `distilrank evaluate`."""
    from distill.core.errors import ConfigError
    from distill.core.formats import read_corpus, read_queries, read_run, write_run
    from distill.teacher.rerank import rerank_run, rerank_with

    if zero_shot == bool(teacher_dir):
        raise ConfigError("give exactly one of --teacher DIR or --zero-shot")
    docs, qs, run = read_corpus(corpus), read_queries(queries), read_run(run_path)
    if zero_shot:
        from distill.teacher.zero_shot import YesNoScorer

        reranked = rerank_with(YesNoScorer(base_model, batch_size=batch_size, device=device), docs, qs, run, top_k,
                               progress=_progress())
    else:
        reranked = rerank_run(teacher_dir, docs, qs, run, top_k=top_k, batch_size=batch_size,
                              max_length=max_length, device=device, progress=_progress())
    path = write_run(out, reranked, tag="teacher-zeroshot" if zero_shot else "teacher")
    click.echo(f"wrote {sum(len(v) for v in reranked.values())} results for {len(reranked)} queries to {path}")


def _stage(out: str, cfg: Any, body: Any) -> dict[str, Any]:
    """Run a stage command through the one stage runner: reused when finished with this config and the same input
    contents, resumed when interrupted; the files the config names are hashed by content."""
    from distill.core.stage_runner import run_standalone

    cfg.require_data()  # before the stage directory is made: bad arguments leave nothing behind
    config = cfg.to_dict()
    files = {k: v for k, v in config.items() if k in _INPUT_FIELDS and isinstance(v, str)}
    return run_standalone(out, config, body, files)


#: config fields that name input files (their content, not their path, is part of the stage's key)
_INPUT_FIELDS = ("pairs", "queries", "qrels", "corpus", "run")
