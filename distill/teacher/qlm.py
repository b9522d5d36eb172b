"""Query likelihood (RankingGPT, arXiv 2311.16720; UPR, arXiv 2204.07496): score = mean log p(query | document).

The causal LM reads ``PROMPT`` filled with the (truncated) document and is scored on the query tokens
that follow it: the mean of their log-probabilities, so long and short queries are comparable within
one query's candidate list (the normalisation cancels across a list anyway). Works zero-shot with
any causal LM directory: the instruct base, the CPT output or the SFT teacher's backbone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch

from distill.teacher._device import autocast, pick_device, pick_dtype
from distill.teacher.decoder_ranker import prepare_tokenizer

__all__ = ["PROMPT", "QueryLikelihoodScorer"]

logger = logging.getLogger(__name__)

PROMPT = "Passage: {title} {text}\nPlease write a question based on this passage.\nQuestion:"


class QueryLikelihoodScorer:
    def __init__(self, model_dir: str | os.PathLike[str], batch_size: int = 8, max_length: int = 192,
                 device: str = "auto", prompt: str = PROMPT, max_query_tokens: int = 48):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from distill.core.base_models import resolve_teacher_base

        path = resolve_teacher_base(str(model_dir))
        self.device = pick_device(device)
        self.dtype = pick_dtype("auto", self.device)
        self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(self.device).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length, self.prompt, self.max_query_tokens = (batch_size, max_length, prompt,
                                                                                max_query_tokens)

    def _row(self, query: str, title: str, text: str) -> tuple[list[int], int]:
        q_ids = self.tokenizer(" " + query.strip(), add_special_tokens=False)["input_ids"][: self.max_query_tokens]
        head, _, tail = self.prompt.partition("{text}")
        budget = max(8, self.max_length - len(q_ids))
        pre = self.tokenizer(head.format(title=title), add_special_tokens=True)["input_ids"]
        post = self.tokenizer(tail, add_special_tokens=False)["input_ids"]
        doc = self.tokenizer(" " + text, add_special_tokens=False)["input_ids"][: max(0, budget - len(pre) - len(post))]
        ctx = pre + doc + post
        return ctx + q_ids, len(q_ids)

    @torch.inference_mode()
    def score_triples(self, triples: Sequence[tuple[str, str, str]]) -> list[float]:
        out: list[float] = []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(triples), self.batch_size):
            rows = [self._row(*t) for t in triples[start:start + self.batch_size]]
            width = max(len(ids) for ids, _ in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, (r, _) in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r)
                mask[i, : len(r)] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            with autocast(self.device, self.dtype):
                logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            for i, (r, n_q) in enumerate(rows):
                end = len(r) - 1  # logp[t] predicts token t + 1
                out.append(float(logp[i, end - n_q:end].mean()) if n_q else 0.0)
        return out
