"""Rank SFT (RankLLaMA / RankingGPT stage 2): score head on the last token, listwise loss, regularisers.

Per training example (one query, one judged positive, ``k`` negatives from first-stage candidates):

* rank loss: softmax cross-entropy over the ``1 + k`` raw scores, the positive at index 0
  (:func:`listwise_softmax_ce`);
* ``gen_weight`` x causal-LM loss on the positive pair's document tokens (keeps CPT knowledge);
* ``kl_weight`` x KL(p_ref || p_model) of next-token distributions on the positive's document tokens,
  the reference being the frozen CPT model.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distill.core import distributed
from distill.core.atomic_io import atomic_dir
from distill.core.base_models import resolve_teacher_base
from distill.core.bm25 import BM25Index
from distill.core.errors import DataError
from distill.core.formats import Document, Qrels, Query, Run, read_corpus, read_qrels, read_queries, read_run
from distill.core.manifest import write_manifest
from distill.teacher import _train
from distill.teacher._training_pairs import subsample
from distill.teacher.config import SFTConfig
from distill.teacher.decoder_ranker import (
    TeacherRanker,
    TeacherSpec,
    end_token_id,
    pad_rows,
    save_teacher,
    tokenize_pair,
)

__all__ = ["ListwiseSoftmaxCE", "SFTExample", "build_sft_examples", "listwise_softmax_ce", "masked_lm_loss",
           "run_sft", "token_kl"]

logger = logging.getLogger(__name__)

TEACHER_SUBDIR = "teacher"


def listwise_softmax_ce(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over rows of ``-log softmax(scores / T)[0]``; ``scores`` [batch, 1 + k], column 0 = positive."""
    return -F.log_softmax(scores / temperature, dim=-1)[:, 0].mean()


class ListwiseSoftmaxCE(nn.Module):
    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.dim() != 2 or scores.shape[1] < 2:
            raise ValueError(f"scores must be [batch, 1 + k] with k >= 1 negatives (positive first), "
                             f"got shape {tuple(scores.shape)}")
        return listwise_softmax_ce(scores, self.temperature)


def masked_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Next-token CE averaged over positions whose *target* token has ``target_mask`` 1."""
    shift_logits = logits[:, :-1].float()
    shift_labels = input_ids[:, 1:].masked_fill(target_mask[:, 1:] == 0, -100)
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                           ignore_index=-100)


def token_kl(ref_logits: torch.Tensor, logits: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p) per predicted position, averaged over positions predicting a target token."""
    mask = target_mask[:, 1:].float()
    ref_logp = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1.0)


@dataclass(frozen=True)
class SFTExample:
    """One query, its positive ``docs[0]`` and negatives ``docs[1:]`` as (title, text)."""

    query: str
    docs: tuple[tuple[str, str], ...]


def build_sft_examples(queries: dict[str, Query], qrels: Qrels, corpus: dict[str, Document], run: Run,
                       num_negatives: int, negative_depth: int, seed: int) -> list[SFTExample]:
    """One example per judged (query, positive); negatives drawn (seeded) from the run's top
    ``negative_depth``, never a judged positive; queries with too few negatives are skipped."""
    out: list[SFTExample] = []
    skipped = 0
    for qid, judged in qrels.items():
        positives = [d for d, rel in judged.items() if rel > 0 and d in corpus]
        if qid not in queries or not positives:
            continue
        ranked = sorted(run.get(qid, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:negative_depth]
        pool = [d for d, _ in ranked if judged.get(d, 0) <= 0 and d in corpus]
        if len(pool) < num_negatives:
            skipped += 1
            continue
        for j, pos in enumerate(positives):
            rng = random.Random(f"{seed}:{qid}:{j}")
            negs = rng.sample(pool, num_negatives)
            docs = tuple((corpus[d].title, corpus[d].text) for d in [pos, *negs])
            out.append(SFTExample(queries[qid].text, docs))
    if skipped:
        logger.warning("sft: %d queries skipped (fewer than %d non-positive candidates)", skipped, num_negatives)
    if not out:
        raise DataError("no SFT example could be built: check that qrels ids match the queries and corpus")
    return out


def _first_stage(config: SFTConfig, queries: dict[str, Query], corpus: dict[str, Document]) -> Run:
    if config.run:
        return read_run(config.run)
    logger.info("sft: BM25 top-%d negatives for %d queries", config.negative_depth, len(queries))
    return BM25Index(corpus).search(queries, top_k=config.negative_depth)


def _sft_examples(config: SFTConfig) -> tuple[dict[str, Query], list[SFTExample]]:
    """The judged training queries (a seeded subset when ``max_queries``) and their 1 + k examples."""
    queries = read_queries(config.queries)
    qrels = read_qrels(config.qrels)
    corpus = read_corpus(config.corpus)
    judged_qids = subsample([q for q in qrels if q in queries], config.max_queries, config.seed)
    queries = {q: queries[q] for q in judged_qids}
    qrels = {q: qrels[q] for q in judged_qids}
    return queries, build_sft_examples(queries, qrels, corpus, _first_stage(config, queries, corpus),
                                       config.num_negatives, config.negative_depth, config.seed)


def _reference_model(config: SFTConfig, base: Any, device: torch.device) -> Any:
    """The frozen model of the KL term (``kl_weight`` > 0), else None."""
    if config.kl_weight <= 0:
        return None
    from transformers import AutoModelForCausalLM

    ref_path = resolve_teacher_base(config.kl_reference) if config.kl_reference else base
    ref = AutoModelForCausalLM.from_pretrained(ref_path, dtype=torch.float32).to(device).eval()
    ref.requires_grad_(False)
    return ref


def run_sft(config: SFTConfig, out_dir: str | Path, progress: bool = False) -> Path:
    """Train (or resume from the checkpoints in ``out_dir``) the ranker; returns the teacher dir ``out_dir/teacher``."""
    config.require_data()
    distributed.init()
    out_dir = Path(out_dir)
    teacher_dir = out_dir / TEACHER_SUBDIR
    resolved = config.to_dict()
    started = time.perf_counter()

    queries, examples = _sft_examples(config)
    lm = _train.load_trainable_lm(config)
    base, tokenizer, model, peft_model, device, dtype = (lm.base, lm.tokenizer, lm.model, lm.peft_model, lm.device,
                                                         lm.dtype)
    ranker = TeacherRanker(model, seed=config.seed).to(device)
    ref = _reference_model(config, base, device)
    end_id = end_token_id(tokenizer, model.config)
    rank_loss = ListwiseSoftmaxCE(config.temperature)
    group = 1 + config.num_negatives
    lm_head = model.get_output_embeddings()

    def loss_fn(batch: Sequence[SFTExample]) -> dict[str, torch.Tensor]:
        rows, n_prompt = [], []
        for ex in batch:
            for title, text in ex.docs:
                ids, n = tokenize_pair(tokenizer, ex.query, title, text, config.template, config.max_length, end_id)
                rows.append(ids)
                n_prompt.append(n)
        enc = {k: v.to(device) for k, v in pad_rows(rows, tokenizer.pad_token_id, "right").items()}
        hidden = ranker.hidden_states(enc["input_ids"], enc["attention_mask"])
        scores = ranker.score_hidden(hidden, enc["attention_mask"]).float().view(len(batch), group)
        terms = {"rank": rank_loss(scores)}
        loss = terms["rank"]
        if config.gen_weight > 0 or ref is not None:
            pos = torch.arange(0, len(rows), group, device=device)
            ids, mask = enc["input_ids"][pos], enc["attention_mask"][pos]
            target = mask.clone()
            for i, r in enumerate(range(0, len(rows), group)):
                target[i, : n_prompt[r]] = 0
            logits = lm_head(hidden[pos])
            if config.gen_weight > 0:
                terms["gen"] = masked_lm_loss(logits, ids, target)
                loss = loss + config.gen_weight * terms["gen"]
            if ref is not None:
                with torch.no_grad():
                    ref_logits = ref(input_ids=ids, attention_mask=mask, use_cache=False).logits
                terms["kl"] = token_kl(ref_logits, logits, target)
                loss = loss + config.kl_weight * terms["kl"]
        terms["loss"] = loss
        return terms

    backbone_params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": backbone_params, "lr": config.lr},
              {"params": list(ranker.head.parameters()), "lr": config.head_lr}]
    result = _train.train_loop(ranker, groups, examples, loss_fn, config, out_dir, device, dtype,
                               progress=progress, stage="sft")
    _train.merge_lora(peft_model)
    model.config.use_cache = True
    spec = TeacherSpec(template=config.template, max_length=config.max_length, end_token_id=end_id)
    if not distributed.is_main():  # rank 0 writes the teacher; the others wait for it
        distributed.barrier()
        return teacher_dir
    ranker.to("cpu")
    with atomic_dir(teacher_dir) as tmp:
        save_teacher(ranker, tokenizer, tmp, spec)
    metrics = {"examples": len(examples), "queries": len(queries), "steps": result.steps,
               "resumed_from_step": result.resumed_from_step, "final_loss": result.final_loss,
               "mean_loss_last_10": result.mean_loss_last_10}
    inputs = {"queries": config.queries, "qrels": config.qrels, "corpus": config.corpus}
    if config.run:
        inputs["run"] = config.run
    write_manifest(out_dir, "teacher-sft", resolved, inputs=inputs, metrics=metrics,
                   wall_time_s=time.perf_counter() - started, extra={"base_model_path": str(base)})
    _train.remove_checkpoints(out_dir)
    logger.info("sft: wrote %s (%d steps, last loss %.4f)", teacher_dir, result.steps, result.final_loss)
    distributed.barrier()
    return teacher_dir
