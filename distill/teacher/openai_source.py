"""The ``openai`` teacher source: any LLM behind an OpenAI-compatible server (vLLM, SGLang, llama.cpp's server,
Ollama, TGI, OpenAI itself) labels (query, document) pairs pointwise.

* ``score="yes"`` (default): the relevance-generation prompt of RankingGPT/TWOLAR-style pointwise rankers
  (:data:`YES_PROMPT`), one token generated at temperature 0 with ``logprobs``; the label is the log-odds
  ``log P(yes) - log P(no)`` summed over the spellings of each answer among the ``top_logprobs`` (a monotone
  function of P(yes), unbounded, so the top of a list does not saturate at 1.0). An answer missing from the
  top list is bounded by the least likely token listed. Through ``/v1/chat/completions`` (one pair per
  request, ``concurrency`` in flight) or ``/v1/completions`` (``batch_size`` prompts per request).
* ``score="qlm"``: query likelihood (RankingGPT, UPR): ``/v1/completions`` with ``echo`` and ``logprobs``
  over :data:`QLM_PROMPT` followed by the query; the label is the mean log-probability of the query's tokens
  (found by ``text_offset``). Needs a server that echoes prompt log-probabilities (vLLM, OpenAI's legacy
  models); a server that does not is an :class:`EndpointError` saying so.

``url`` is the server's base (``http://host:8000/v1``) or a full ``.../chat/completions`` or
``.../completions`` URL. ``model`` defaults to the first id of ``GET {base}/models``; the API key defaults to
``$OPENAI_API_KEY``. Requests go through :class:`~distill.teacher._endpoint.EndpointClient` and choices
through :func:`~distill.teacher._endpoint.scores_by_index`, exactly as the ``endpoint`` source's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from distill.core.errors import ConfigError
from distill.core.formats import Document, Query, Run
from distill.teacher._endpoint import EndpointClient, EndpointConfig, answer_error, scores_by_index

__all__ = ["OPENAI_SCORES", "QLM_PROMPT", "YES_PROMPT", "OpenAIScore", "OpenAISource", "yes_log_odds"]

logger = logging.getLogger(__name__)

OpenAIScore = Literal["yes", "qlm"]
OPENAI_SCORES: tuple[str, ...] = ("yes", "qlm")

YES_PROMPT = "Passage: {passage}\nQuery: {query}\nDoes the passage answer the query? Answer 'Yes' or 'No'."
QLM_PROMPT = "Passage: {passage}\nPlease write a question based on this passage.\nQuestion:"
_CHAT = "/chat/completions"
_COMPLETIONS = "/completions"
_EXPECTED_CHAT = ('{"choices": [{"index": 0, "logprobs": {"content": [{"token": str, "logprob": float, '
                  '"top_logprobs": [{"token": str, "logprob": float}, ...]}]}}]}')
_EXPECTED_COMPLETIONS = ('{"choices": [{"index": int, "logprobs": {"tokens": [...], "token_logprobs": [...], '
                         '"top_logprobs": [{token: logprob}, ...], "text_offset": [...]}}, ...]}')


def _answer(token: str) -> str | None:
    word = token.strip().strip("'\".,:!").lower()
    return word if word in ("yes", "no") else None


def yes_log_odds(candidates: Sequence[tuple[str, float]]) -> float | None:
    """``log P(yes) - log P(no)`` from (token, logprob) pairs of the first generated position (the chosen token
    and its top alternatives); spellings ("Yes", " yes", "YES") add up. An answer absent from the list gets the
    probability of the least likely listed token, an upper bound. None when neither answer is listed."""
    mass = {"yes": 0.0, "no": 0.0}
    seen: set[str] = set()
    for token, logprob in candidates:
        if not isinstance(token, str) or isinstance(logprob, bool) or not isinstance(logprob, int | float):
            raise ValueError(f"a top_logprobs entry is not (str, number): {token!r}, {logprob!r}")
        if not math.isfinite(logprob) and logprob != -math.inf:
            raise ValueError(f"logprob {logprob!r} of token {token!r} is not a number")
        word = _answer(token)
        if word and token not in seen:
            mass[word] += math.exp(logprob)
        seen.add(token)
    if not mass["yes"] and not mass["no"]:
        return None
    floor = min(math.exp(lp) for _, lp in candidates)
    yes, no = mass["yes"] or floor, mass["no"] or floor
    return math.log(max(yes, 1e-300)) - math.log(max(no, 1e-300))


def _api_urls(url: str, score: str) -> tuple[str, str]:
    """(the completions URL to call, the API base for ``/models``) of a base or full URL."""
    path = url.rstrip("/")
    for suffix in (_CHAT, _COMPLETIONS):
        if path.endswith(suffix):
            base = path[: -len(suffix)]
            if score == "qlm" and suffix == _CHAT:
                raise ConfigError(f"--openai-score qlm needs /v1/completions (echo of prompt logprobs), got {url}; "
                                  "pass the server's base URL, e.g. http://host:8000/v1")
            return path, base
    return path + (_CHAT if score == "yes" else _COMPLETIONS), path


class OpenAISource:
    """Labels from an OpenAI-compatible server (see the module docstring). ``top_logprobs``: alternatives
    asked for at the answer position (OpenAI allows 20 in chat, 5 in completions; vLLM 20 by default)."""

    name = "openai"

    def __init__(self, corpus: Mapping[str, Document], config: EndpointConfig, score: OpenAIScore = "yes",
                 top_logprobs: int = 20, client: Any = None):
        if score not in OPENAI_SCORES:
            raise ConfigError(f"openai score must be one of {list(OPENAI_SCORES)}, got {score!r}")
        if not 1 <= top_logprobs <= 20:
            raise ConfigError(f"top_logprobs must be in 1..20, got {top_logprobs}")
        if config.api_key is None and os.environ.get("OPENAI_API_KEY", "").strip():
            config = dataclasses.replace(config, api_key=os.environ["OPENAI_API_KEY"].strip())
        self.corpus, self.config, self.score_kind = corpus, config, score
        self.top_logprobs = top_logprobs
        self.url, self.base = _api_urls(config.url, score)
        self.chat = self.url.endswith(_CHAT)
        self.http = EndpointClient(config, client, what="openai endpoint", answer="an OpenAI completions response")
        self._model = config.model
        self.unanswered = 0

    @property
    def model(self) -> str:
        """The model named in requests: the configured one, else the first the server lists at ``/models``."""
        if self._model is None:
            payload = self.http.get_json(self.base + "/models")
            try:
                self._model = str(payload["data"][0]["id"])
            except (KeyError, IndexError, TypeError) as exc:
                raise answer_error(self.http, self.base + "/models", f"no model id: {exc!r}", payload,
                                   '{"data": [{"id": str}, ...]}; or pass --endpoint-model') from exc
            logger.info("openai: labelling with model %r (the first listed at %s/models)", self._model, self.base)
        return self._model

    def score(self, queries: Mapping[str, Query], candidates: Mapping[str, Sequence[str]]) -> Run:
        out: Run = {}
        for qid, docs in candidates.items():
            query = queries[qid].text
            pairs = [(query, self.corpus[d].full_text[: self.config.max_doc_chars]) for d in docs]
            if self.chat:
                scores = self.http.map(self._chat_yes, pairs)
            else:
                bs = self.config.batch_size
                batches = [pairs[i:i + bs] for i in range(0, len(pairs), bs)]
                scores = [s for batch in self.http.map(self._completions, batches) for s in batch]
            out[qid] = dict(zip(docs, scores, strict=True))
        return out

    def _chat_yes(self, pair: tuple[str, str]) -> float:
        query, passage = pair
        body = {"model": self.model, "temperature": 0, "max_tokens": 1, "logprobs": True,
                "top_logprobs": self.top_logprobs,
                "messages": [{"role": "user", "content": YES_PROMPT.format(query=query, passage=passage)}]}
        payload = self.http.post_json(self.url, body)
        try:
            choices = payload["choices"]
            return scores_by_index(((c["index"], self._chat_choice(c)) for c in choices), 1)[0]
        except (KeyError, TypeError, ValueError) as exc:
            raise answer_error(self.http, self.url, _problem(exc), payload, _EXPECTED_CHAT) from exc

    def _chat_choice(self, choice: Mapping[str, Any]) -> float:
        content = (choice.get("logprobs") or {}).get("content")
        if not content:
            raise ValueError("no logprobs in the answer: does this server support logprobs/top_logprobs?")
        first = content[0]
        top = first.get("top_logprobs") or []
        cands = [(first["token"], first["logprob"])] + [(t["token"], t["logprob"]) for t in top]
        return self._odds(cands)

    def _odds(self, cands: Sequence[tuple[str, float]]) -> float:
        odds = yes_log_odds(cands)
        if odds is None:  # the model answered neither: even odds, counted and reported
            self.unanswered += 1
            logger.warning("openai: neither yes nor no among the top %d tokens (%s); scored as even odds (%d so far)",
                           len(cands), [t for t, _ in cands[:5]], self.unanswered)
            return 0.0
        return odds

    def _completions(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if self.score_kind == "qlm":
            heads = [QLM_PROMPT.format(passage=p) for _, p in pairs]
            prompts = [h + " " + q.strip() for h, (q, _) in zip(heads, pairs, strict=True)]
            body = {"model": self.model, "prompt": prompts, "max_tokens": 1, "temperature": 0, "echo": True,
                    "logprobs": 1}
        else:
            heads = [YES_PROMPT.format(query=q, passage=p) + "\nAnswer:" for q, p in pairs]
            prompts = heads
            body = {"model": self.model, "prompt": prompts, "max_tokens": 1, "temperature": 0,
                    "logprobs": min(self.top_logprobs, 5)}
        payload = self.http.post_json(self.url, body)
        try:
            items = [(c["index"], self._completion_choice(c, heads, prompts)) for c in payload["choices"]]
            return scores_by_index(items, len(prompts))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise answer_error(self.http, self.url, _problem(exc), payload, _EXPECTED_COMPLETIONS) from exc

    def _completion_choice(self, choice: Mapping[str, Any], heads: Sequence[str], prompts: Sequence[str]) -> float:
        lp = choice.get("logprobs")
        if not lp:
            raise ValueError("no logprobs in the answer: does this server support logprobs?")
        if self.score_kind == "yes":
            top = (lp.get("top_logprobs") or [None])[0]
            if not isinstance(top, dict):
                raise ValueError("no top_logprobs at the answer position")
            return self._odds(list(top.items()))
        idx = choice["index"]
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(prompts):
            return 0.0  # scores_by_index reports the bad index
        return _query_likelihood(lp, len(heads[idx]), len(prompts[idx]))


def _query_likelihood(lp: Mapping[str, Any], start: int, end: int) -> float:
    """Mean log-probability of the echoed tokens at character offsets ``start <= offset < end`` (the query)."""
    offsets, logprobs = lp.get("text_offset"), lp.get("token_logprobs")
    if not offsets or not logprobs or len(offsets) != len(logprobs):
        raise ValueError("no echoed prompt logprobs (text_offset/token_logprobs): does this server support echo "
                         "with logprobs? If not, use --openai-score yes")
    vals = [v for off, v in zip(offsets, logprobs, strict=True) if start <= off < end and v is not None]
    if not vals:
        raise ValueError("no logprob for the query's tokens: the server did not echo the prompt")
    if any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in vals):
        raise ValueError(f"a query token's logprob is not a finite number: {vals[:5]}")
    return sum(vals) / len(vals)


def _problem(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ValueError) else f"missing or wrong field {exc!r}"
