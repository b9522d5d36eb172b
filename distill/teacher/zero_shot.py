"""Zero-shot baseline: an instruct LM asked "is the document relevant? yes/no"; score = logit(yes) - logit(no).

The difference of the two next-token logits equals log P(yes)/P(no) restricted to those two tokens,
a monotone function of P(yes), so rankings equal those by P(yes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch

from distill.core.base_models import resolve_teacher_base
from distill.teacher._device import autocast, pick_device, pick_dtype
from distill.teacher.decoder_ranker import prepare_tokenizer

__all__ = ["YesNoScorer"]

logger = logging.getLogger(__name__)

PROMPT = ("Query: {query}\nDocument: {title} {text}\n"
          "Is the document relevant to the query? Answer yes or no.")


class YesNoScorer:
    def __init__(self, model: str | os.PathLike[str] = "default", batch_size: int = 8, max_doc_tokens: int = 128,
                 device: str = "auto", prompt: str = PROMPT):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_teacher_base(str(model))
        self.device = pick_device(device)
        self.dtype = pick_dtype("auto", self.device)
        self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(self.device).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.yes = self.tokenizer.encode("yes", add_special_tokens=False)[-1]
        self.no = self.tokenizer.encode("no", add_special_tokens=False)[-1]
        self.batch_size, self.max_doc_tokens, self.prompt = batch_size, max_doc_tokens, prompt

    def _text(self, query: str, title: str, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.max_doc_tokens]
        doc = self.tokenizer.decode(ids)
        msg = [{"role": "user", "content": self.prompt.format(query=query, title=title, text=doc)}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(msg, tokenize=False, add_generation_prompt=True)
        return msg[0]["content"] + "\nAnswer:"

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return self.score_triples([(q, "", d) for q, d in pairs])

    @torch.inference_mode()
    def score_triples(self, triples: Sequence[tuple[str, str, str]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(triples), self.batch_size):
            texts = [self._text(*t) for t in triples[start:start + self.batch_size]]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with autocast(self.device, self.dtype):
                logits = self.model(**enc, use_cache=False).logits[:, -1].float()  # left padding: last = next token
            out.extend((logits[:, self.yes] - logits[:, self.no]).cpu().tolist())
        return out
