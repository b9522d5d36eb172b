"""Synthetic training queries that are queries: few-shot generation, filters, round-trip check, crop fallback.

For ``num_docs`` seeded-random documents:

1. **Generate** (InPars, arXiv 2202.05144): a plain-text few-shot prompt of three fixed
   (passage, query) examples, then the document's passage (``crop_sentences`` consecutive sentences);
   the model (the instruct base, or a CPT'd teacher) continues with a query, greedy, stopping at the
   line end. No chat template: a chat preamble is what made small instruct models answer "Here is
   the query:" instead of a query.
2. **Filter**, each rejection counted by reason: ``meta`` (text about the passage or the task:
   "This passage...", "The search query is:"), ``copy`` (a verbatim span of the passage), ``length``
   (outside ``min_words``..``max_words``), ``duplicate``.
3. **Round trip** (InPars-v2, Promptagator): keep a query only when its source document is in the top
   ``roundtrip_k`` of BM25 or of the dense retriever for it (``roundtrip_k=0`` turns it off).
4. **Crop fallback** (TWOLAR, arXiv 2403.17759): a document whose generated query was rejected gets a
   cropped query instead, a random span of ``crop_words`` words of its text, so a weak or random
   generator never ends the pipeline (``crop_fallback=false`` turns it off).

Outputs: ``queries.tsv``, weak qrels ``qrels.txt`` (``qid 0 source_doc 1``), and ``synth_report.json``
with kept/rejected counts per reason and sample queries.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distill.core.atomic_io import atomic_write, config_hash, write_json
from distill.core.errors import DataError
from distill.core.fault_injection import fault_point
from distill.core.formats import Document, Query, read_corpus, write_qrels, write_queries
from distill.core.manifest import write_manifest
from distill.teacher.config import SynthConfig

__all__ = ["FEW_SHOT", "QRELS_FILE", "QUERIES_FILE", "REPORT_FILE", "clean_query", "crop_sentences", "crop_words",
           "keep_query", "reject_reason", "synthesize_queries"]

logger = logging.getLogger(__name__)

QUERIES_FILE = "queries.tsv"
QRELS_FILE = "qrels.txt"
REPORT_FILE = "synth_report.json"
#: the generations so far, one line per batch: what a killed run resumes from
PARTIAL_FILE = "generations.partial.jsonl"
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")

#: three fixed (passage, query) examples, InPars style; short so the prompt stays cheap on a CPU
FEW_SHOT: tuple[tuple[str, str], ...] = (
    ("The Manhattan Project was a research effort during World War II that produced the first nuclear weapons. "
     "It was led by the United States with the support of the United Kingdom and Canada.",
     "who led the manhattan project"),
    ("Vitamin D deficiency is common in elderly patients and is associated with reduced bone density and a higher "
     "risk of hip fractures. Supplementation lowered fracture rates in a randomized trial.",
     "does vitamin d supplementation reduce hip fractures in the elderly"),
    ("Photosynthesis converts light energy into chemical energy stored in glucose. In plants it takes place in "
     "the chloroplasts, using water and carbon dioxide and releasing oxygen.",
     "where does photosynthesis take place in plant cells"),
)

#: text about the passage or the task, not a query (checked on the lower-cased, cleaned output)
_META = re.compile(
    r"^(this|the|that|these) (passage|text|document|article|abstract|paragraph|study|paper)\b"
    r"|\b(search )?query (is|would be|could be)\b|^(here is|here's|sure|certainly|okay|ok)\b"
    r"|\b(the|this) (passage|text|document|article|paragraph) "
    r"(provides|describes|explains|discusses|states|says|is about)\b"
    r"|^(write|generate|answer|question|query|passage|example)\s*[:\-]?$|[:]$|\bas an ai\b",
    re.I)


def crop_sentences(text: str, n: int, rng: random.Random, max_chars: int) -> str:
    sents = [s.strip() for s in _SENT.split(text) if s.strip()]
    if not sents:
        return text[:max_chars]
    start = rng.randrange(max(1, len(sents) - n + 1))
    return " ".join(sents[start:start + n])[:max_chars]


def crop_words(text: str, n_words: tuple[int, int], rng: random.Random) -> str:
    """A random span of ``n_words[0]..n_words[1]`` words of ``text`` (TWOLAR's cropped query)."""
    words = re.sub(r"[^\w\s-]", " ", text).split()
    if not words:
        return ""
    n = min(len(words), rng.randint(*n_words))
    start = rng.randrange(len(words) - n + 1)
    return " ".join(words[start:start + n]).lower()


def clean_query(raw: str) -> str:
    line = next((ln for ln in raw.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*(search\s+)?(query|question)\s*:\s*", "", line, flags=re.I)
    return " ".join(line.strip().strip('"\'`*').split())


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: the key for de-dup and copy detection."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def reject_reason(query: str, passage: str, min_words: int, max_words: int) -> str | None:
    """Why ``query`` is not a usable query (``meta``, ``length``, ``copy``), or None."""
    if not query or _META.search(query):
        return "meta"
    if not min_words <= len(query.split()) <= max_words:
        return "length"
    if normalise(query) in normalise(passage):
        return "copy"
    return None


def keep_query(query: str, passage: str, min_words: int, max_words: int) -> bool:
    return reject_reason(query, passage, min_words, max_words) is None


def _prompt(passage: str) -> str:
    shots = "".join(f"Passage: {p}\nQuery: {q}\n\n" for p, q in FEW_SHOT)
    return f"{shots}Passage: {passage}\nQuery:"


def _read_partial(path: Path, key: str, starts: Sequence[int]) -> list[list[str]]:
    """The batches a killed run generated (``path``: a key line, then one line per batch, in order). A torn
    last line, or lines from another config, are dropped; the file is rewritten to the batches kept."""
    done: list[list[str]] = []
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        try:
            same = bool(lines) and json.loads(lines[0]).get("key") == key
        except ValueError:
            same = False
        for line in lines[1:] if same else []:
            try:
                rec = json.loads(line)
            except ValueError:
                break  # torn by the kill
            if len(done) >= len(starts) or rec.get("start") != starts[len(done)]:
                break
            done.append([str(t) for t in rec["out"]])
    with atomic_write(path) as fh:
        fh.write(json.dumps({"key": key}) + "\n")
        fh.writelines(json.dumps({"start": s, "out": out}) + "\n" for s, out in zip(starts, done, strict=False))
    return done


def _generate(config: SynthConfig, passages: Sequence[str], progress: bool, partial: Path) -> list[str]:
    """Greedy generations for ``passages``, in batches of ``config.batch_size``. Each batch is appended to
    ``partial`` as it finishes, and a rerun starts after the last whole batch (the same batches, so the same
    text as an uninterrupted run)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.core.base_models import resolve_teacher_base
    from distill.teacher._device import pick_device
    from distill.teacher.decoder_ranker import prepare_tokenizer

    path = resolve_teacher_base(config.generator)
    device = pick_device(config.device)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    stop_ids = sorted({i for i in (model.config.eos_token_id, tokenizer.eos_token_id, *newline[-1:])
                       if isinstance(i, int) and i >= 0})
    all_starts = list(range(0, len(passages), config.batch_size))
    key = config_hash({"config": config.to_dict(), "passages": list(passages)})
    done = _read_partial(partial, key, all_starts)
    out: list[str] = [text for batch in done for text in batch]
    if done:
        logger.info("synthesize: resuming after %d of %d batches", len(done), len(all_starts))
    starts: Any = all_starts[len(done):]
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="synthesize", unit="batch")
    with partial.open("a", encoding="utf-8") as sink:
        for n, s in enumerate(starts, start=len(done) + 1):
            prompts = [_prompt(p) for p in passages[s:s + config.batch_size]]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.inference_mode():
                gen = model.generate(**enc, max_new_tokens=config.max_new_tokens, do_sample=False,
                                     eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out.extend(texts)
            sink.write(json.dumps({"start": s, "out": texts}) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            fault_point("synthesize:batch")
            if n % 10 == 0 or n == len(all_starts):
                logger.info("synthesize: %d of %d batches generated", n, len(all_starts))
    return out


def _roundtrip(queries: Mapping[str, Query], source: Mapping[str, str], k: int, retrievers: Sequence[Any]) -> set[str]:
    """Qids whose source document is in the top ``k`` of at least one retriever."""
    ok: set[str] = set()
    for r in retrievers:
        run = r.search(queries, top_k=k)
        ok |= {q for q, docs in run.items() if source[q] in docs}
    return ok


def _after_roundtrip(config: SynthConfig, generated: dict[str, Query], source: dict[str, str],
                     corpus: Mapping[str, Document], bm25: Any, dense: Any, rejected: Counter[str]) -> dict[str, Query]:
    """The generated queries whose source document BM25 (or dense) finds again in its top ``roundtrip_k``;
    the others are counted in ``rejected["roundtrip"]``."""
    if not (config.roundtrip_k > 0 and generated):
        return dict(generated)
    retrievers = [bm25] if bm25 is not None else []
    if not retrievers:
        from distill.core.bm25 import BM25Index

        retrievers = [BM25Index(corpus)]
    if dense is not None:
        retrievers.append(dense)
    passed = _roundtrip(generated, source, config.roundtrip_k, retrievers)
    rejected["roundtrip"] += len(generated) - len(passed)
    return {q: v for q, v in generated.items() if q in passed}


def synthesize_queries(config: SynthConfig, out_dir: str | Path, progress: bool = False,
                       corpus: Mapping[str, Document] | None = None, bm25: Any = None,
                       dense: Any = None) -> tuple[Path, Path]:
    """Write synthetic queries + weak qrels (+ ``synth_report.json``); returns (queries, qrels) paths.

    ``bm25`` / ``dense``: built indexes to reuse for the round trip (BM25 is built when not given).
    """
    config.require_data()
    out_dir = Path(out_dir)
    q_path, qrels_path = out_dir / QUERIES_FILE, out_dir / QRELS_FILE
    resolved = config.to_dict()
    started = time.perf_counter()
    corpus = corpus if corpus is not None else read_corpus(config.corpus)
    rng = random.Random(config.seed)
    doc_ids = rng.sample(list(corpus), min(config.num_docs, len(corpus)))
    passages = [crop_sentences(corpus[d].text or corpus[d].title, config.crop_sentences, rng, config.max_passage_chars)
                for d in doc_ids]
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = _generate(config, passages, progress, partial=out_dir / PARTIAL_FILE)

    rejected: Counter[str] = Counter()
    seen: set[str] = set()
    generated: dict[str, Query] = {}
    source: dict[str, str] = {}
    for k, (doc_id, passage, text) in enumerate(zip(doc_ids, passages, raw, strict=True)):
        q = clean_query(text)
        why = reject_reason(q, passage, config.min_words, config.max_words)
        if why is None and normalise(q) in seen:
            why = "duplicate"
        if why:
            rejected[why] += 1
            continue
        seen.add(normalise(q))
        qid = f"{config.qid_prefix}-{k}"
        generated[qid] = Query(qid, q)
        source[qid] = doc_id
    kept = _after_roundtrip(config, generated, source, corpus, bm25, dense, rejected)
    n_generated_kept = len(kept)
    cropped = 0
    if config.crop_fallback:
        crop_rng = random.Random(config.seed + 1)
        kept_docs = {source[q] for q in kept}
        for k, doc_id in enumerate(doc_ids):
            if doc_id in kept_docs:
                continue
            text = crop_words(corpus[doc_id].text or corpus[doc_id].title,
                              (config.min_words, min(config.max_words, 12)), crop_rng)
            if len(text.split()) < config.min_words or normalise(text) in seen:
                continue
            seen.add(normalise(text))
            qid = f"{config.qid_prefix}-{k}c"
            kept[qid] = Query(qid, text)
            source[qid] = doc_id
            cropped += 1
    if not kept:
        raise DataError(f"synthesize: all {len(doc_ids)} generated queries were filtered out ({dict(rejected)}) "
                        "and the crop fallback is off; set synth.crop_fallback: true, relax min_words/max_words "
                        "or use another generator")
    order = sorted(kept, key=lambda q: int(q.split("-")[-1].rstrip("c")))
    write_queries(q_path, [kept[q] for q in order])
    write_qrels(qrels_path, {q: {source[q]: 1} for q in order})
    report = {"docs": len(doc_ids), "generated": len(doc_ids), "kept": len(kept), "kept_generated": n_generated_kept,
              "cropped": cropped, "rejected": dict(sorted(rejected.items())), "roundtrip_k": config.roundtrip_k,
              "samples": [kept[q].text for q in order if not q.endswith("c")][:50]}
    write_json(out_dir / REPORT_FILE, report)
    write_manifest(out_dir, "teacher-synthesize", resolved, inputs={"corpus": config.corpus}, metrics=report,
                   wall_time_s=time.perf_counter() - started)
    (out_dir / PARTIAL_FILE).unlink(missing_ok=True)
    logger.info("synthesize: %d generated queries kept of %d, %d cropped fallbacks; rejected %s", n_generated_kept,
                len(doc_ids), cropped, dict(rejected))
    return q_path, qrels_path
