"""Synthetic training queries (TWOLAR, arXiv 2403.17759): sentence cropping + generation with the instruct LM.

For ``num_docs`` seeded-random documents: crop ``crop_sentences`` consecutive sentences at a random
start, ask the model (chat template, greedy) for a query the passage answers, then clean and filter.
Outputs a queries TSV (``qid<TAB>text``) and weak qrels (``qid 0 source_doc 1``).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from distill.base_models import resolve_teacher_base
from distill.data import Query, read_corpus, write_qrels, write_queries
from distill.errors import DataError
from distill.manifest import is_complete, write_manifest
from distill.teacher._device import pick_device
from distill.teacher.config import SynthConfig
from distill.teacher.scoring import prepare_tokenizer

__all__ = ["QUERIES_FILE", "QRELS_FILE", "clean_query", "crop_sentences", "keep_query", "synthesize_queries"]

logger = logging.getLogger(__name__)

QUERIES_FILE = "queries.tsv"
QRELS_FILE = "qrels.txt"
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def crop_sentences(text: str, n: int, rng: random.Random, max_chars: int) -> str:
    sents = [s.strip() for s in _SENT.split(text) if s.strip()]
    if not sents:
        return text[:max_chars]
    start = rng.randrange(max(1, len(sents) - n + 1))
    return " ".join(sents[start:start + n])[:max_chars]


def clean_query(raw: str) -> str:
    line = next((ln for ln in raw.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*(search\s+)?query\s*:\s*", "", line, flags=re.I)
    return " ".join(line.strip().strip('"\'`*').split())


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: the key for de-dup and copy detection."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def keep_query(query: str, passage: str, min_words: int, max_words: int) -> bool:
    """Length in words within bounds and not a verbatim span of the passage (a copy teaches nothing)."""
    words = query.split()
    if not min_words <= len(words) <= max_words:
        return False
    return normalise(query) not in normalise(passage)


def _generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, stop_ids: list[int],  # noqa: ANN001
              device: torch.device) -> list[str]:
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    with torch.inference_mode():
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def synthesize_queries(config: SynthConfig, out_dir: str | Path, progress: bool = False) -> tuple[Path, Path]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    q_path, qrels_path = out_dir / QUERIES_FILE, out_dir / QRELS_FILE
    resolved = config.to_dict()
    if is_complete(out_dir, resolved) and q_path.exists() and qrels_path.exists():
        logger.info("synthesize: %s is complete for this config; skipping", out_dir)
        return q_path, qrels_path
    started = time.perf_counter()
    corpus = read_corpus(config.corpus)
    rng = random.Random(config.seed)
    doc_ids = rng.sample(list(corpus), min(config.num_docs, len(corpus)))
    path = resolve_teacher_base(config.generator)
    device = pick_device(config.device)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    stop_ids = sorted({i for i in (model.config.eos_token_id, tokenizer.eos_token_id,
                                   tokenizer.convert_tokens_to_ids("<|im_end|>")) if isinstance(i, int) and i >= 0})
    passages = [crop_sentences(corpus[d].text, config.crop_sentences, rng, config.max_passage_chars) for d in doc_ids]

    def prompt(p: str) -> str:
        msg = [{"role": "user", "content": f"{config.instruction}\n\nPassage: {p}"}]
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(msg, tokenize=False, add_generation_prompt=True)
        return msg[0]["content"] + "\nQuery:"

    starts = range(0, len(doc_ids), config.batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="synthesize", unit="batch")
    queries: list[Query] = []
    qrels: dict[str, dict[str, int]] = {}
    seen: set[str] = set()
    rejected = 0
    for s in starts:
        batch = passages[s:s + config.batch_size]
        for k, raw in enumerate(_generate(model, tokenizer, [prompt(p) for p in batch], config.max_new_tokens, stop_ids, device)):
            q = clean_query(raw)
            key = normalise(q)
            if not keep_query(q, batch[k], config.min_words, config.max_words) or key in seen:
                rejected += 1
                continue
            seen.add(key)
            qid = f"{config.qid_prefix}-{len(queries)}"
            queries.append(Query(qid, q))
            qrels[qid] = {doc_ids[s + k]: 1}
    if not queries:
        raise DataError(f"synthesize: all {len(doc_ids)} generated queries were filtered out; "
                        "relax min_words/max_words or try another generator")
    write_queries(q_path, queries)
    write_qrels(qrels_path, qrels)
    write_manifest(out_dir, "teacher-synthesize", resolved, inputs={"corpus": config.corpus},
                   metrics={"docs": len(doc_ids), "queries": len(queries), "rejected": rejected},
                   wall_time_s=time.perf_counter() - started, extra={"generator_path": str(path)})
    logger.info("synthesize: kept %d of %d generated queries", len(queries), len(doc_ids))
    return q_path, qrels_path
