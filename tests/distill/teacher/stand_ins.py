"""Stand-in servers on 127.0.0.1 that answer as each server's documentation shows, with injectable faults.

Rerank flavours (request checked, answer shaped as documented):

* ``cohere-v1``: POST /v1/rerank {model?, query, documents, top_n, return_documents} ->
  {"id", "results": [{"index", "relevance_score", "document"?}], "meta": {"api_version": {"version": "1"},
  "billed_units": {"search_units"}}} (docs.cohere.com/v1/reference/rerank);
* ``cohere-v2``: POST /v2/rerank {model (required), query, documents, top_n, max_tokens_per_doc} -> the same
  without ``document``, api_version "2" (docs.cohere.com/reference/rerank); unknown fields are refused here;
* ``jina``: POST /v1/rerank -> {"model", "usage": {"total_tokens"}, "results": [{"index", "document"?,
  "relevance_score"}]} (jina.ai/reranker API; return_documents defaults to true there);
* ``vllm-rerank``: POST /v1/rerank -> {"id": "rerank-...", "model", "usage": {"prompt_tokens", "total_tokens"},
  "results": [{"index", "document": {"text"}, "relevance_score"}]} (vllm/entrypoints/pooling/score/protocol.py);
* ``vllm-score``: POST /score {model?, text_1: str, text_2: [str]} -> {"id", "object": "list", "created",
  "model", "data": [{"index", "object": "score", "score"}], "usage"} in input order;
* ``tei``: POST /rerank {query, texts, truncate, raw_scores, return_text} -> [{"index", "score", "text"?}]
  sorted by score; a body without ``texts`` is axum's 422 "missing field `texts`" (text-embeddings-inference
  router/src/http/types.rs RerankRequest/Rank);
* ``infinity``: POST /rerank {query, documents, return_documents, raw_scores, model, top_n} ->
  {"object": "rerank", "results": [{"relevance_score", "index", "document": null}], "model", "usage":
  {"prompt_tokens", "total_tokens"}, "id": "infinity-...", "created"} (infinity_emb fastapi_schemas/pymodels.py).

``openai``: GET /v1/models, POST /v1/chat/completions (``logprobs``/``top_logprobs``: choices[].logprobs.content[]
of {token, logprob, bytes, top_logprobs}) and POST /v1/completions (a list ``prompt``, ``logprobs`` N, ``echo``:
choices[].logprobs {tokens, token_logprobs, top_logprobs, text_offset}), as platform.openai.com documents them.
The "LLM" reads the query and passage back out of the prompt and answers from their word overlap.

Faults (``mode``): ok, slow, garbage, dies (garbage after the first call), auth, 503, flaky (every other call
503 + Retry-After: 0), 429 (the first call 429 + Retry-After: 1), huge-retry-after (the first call 429 +
Retry-After: 99999999999999), wrong-count, duplicate, extra; no-logprobs (openai: no logprobs in chat, no echo).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RERANK_FLAVOURS = ("cohere-v1", "cohere-v2", "jina", "vllm-rerank", "vllm-score", "tei", "infinity")
PATHS = {"cohere-v1": "/v1/rerank", "cohere-v2": "/v2/rerank", "jina": "/v1/rerank", "vllm-rerank": "/v1/rerank",
         "vllm-score": "/score", "tei": "/rerank", "infinity": "/rerank", "openai": "/v1"}
MODEL = "stand-in-model"


def overlap(query: str, text: str) -> int:
    return len(set(query.lower().split()) & set(text.lower().split()))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def rerank_score(flavour: str, query: str, text: str, raw: bool = False) -> float:
    """The score a flavour gives: a logit (overlap - 2) for vLLM /score and TEI raw_scores, else its sigmoid."""
    logit = overlap(query, text) - 2.0
    return logit if raw or flavour == "vllm-score" else sigmoid(logit)


def yes_probability(query: str, passage: str) -> float:
    return sigmoid(overlap(query, passage) - 1.5)


def _tokens(text: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group()) for m in re.finditer(r"\s*\S+", text)]


def qlm_logprob(token: str, passage: str) -> float:
    """The stand-in LLM's log p of a query token after a passage: likelier when the passage has the word."""
    return -0.5 if token.strip().lower() in set(passage.lower().split()) else -3.0


def expected_qlm(query: str, passage: str) -> float:
    vals = [qlm_logprob(tok, passage) for _, tok in _tokens(" " + query.strip())]
    return sum(vals) / len(vals)


class _Handler(BaseHTTPRequestHandler):
    flavour = "cohere-v1"
    mode = "ok"
    calls = 0
    lock = threading.Lock()
    requests: list[dict[str, Any]] = []

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") == "/v1/models" and self.flavour == "openai":
            self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 1700000000,
                                                          "owned_by": "distilrank-tests"}]})
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:  # noqa: N802
        cls = type(self)
        with cls.lock:
            cls.calls += 1
            call = cls.calls
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        cls.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self._fault(call):
            return
        status, payload = self._answer(body)
        if status == 200:
            payload = _corrupt(payload, cls.mode)
        self._json(status, payload) if not isinstance(payload, str) else self._send(status, payload.encode(),
                                                                                      "text/plain; charset=utf-8")

    def _fault(self, call: int) -> bool:
        mode = type(self).mode
        if mode == "slow":
            time.sleep(1.5)
        if mode == "garbage" or (mode == "dies" and call > 1):
            self._send(200, b"<html>gateway says hi</html>", "text/html")
        elif mode == "auth" and self.headers.get("Authorization") != "Bearer k":
            self._json(401, {"message": "invalid api token"})
        elif mode == "503" or (mode == "flaky" and call % 2 == 1):
            self._json(503, {"error": "busy"}, {"Retry-After": "0"})
        elif (mode == "429" and call == 1) or (mode == "huge-retry-after" and call == 1):
            wait = "1" if mode == "429" else "99999999999999"
            self._json(429, {"message": "rate limited"}, {"Retry-After": wait})
        else:
            return False
        return True

    def _answer(self, body: Any) -> tuple[int, Any]:
        flavour, path = type(self).flavour, self.path.rstrip("/")
        if flavour == "openai":
            return openai_answer(path, body, type(self).mode)
        if path != PATHS[flavour]:
            return 404, {"error": f"no route {path}"}
        return rerank_answer(flavour, body)

    def _json(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(payload).encode(), "application/json", headers)

    def _send(self, code: int, payload: bytes, ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _corrupt(payload: Any, mode: str) -> Any:
    """wrong-count drops the last result, duplicate repeats the first result's index, extra adds an index."""
    if mode not in ("wrong-count", "duplicate", "extra"):
        return payload
    items = payload if isinstance(payload, list) else payload.get("results") or payload.get("data") \
        or payload.get("choices")
    if mode == "wrong-count":
        items.pop()
    elif mode == "duplicate" and len(items) > 1:
        items[-1] = {**items[-1], "index": items[0]["index"]}
    elif mode == "duplicate":
        items.append(dict(items[0]))
    elif mode == "extra":
        items.append({**items[0], "index": len(items)})
    return payload


def _sorted_results(flavour: str, query: str, docs: list[str], raw: bool) -> list[tuple[int, float]]:
    scored = [(i, rerank_score(flavour, query, d, raw)) for i, d in enumerate(docs)]
    return sorted(scored, key=lambda kv: -kv[1])


def rerank_answer(flavour: str, body: dict[str, Any]) -> tuple[int, Any]:
    if flavour == "tei":
        return _tei(body)
    if flavour == "vllm-score":
        docs = body["text_2"] if isinstance(body["text_2"], list) else [body["text_2"]]
        data = [{"index": i, "object": "score", "score": rerank_score(flavour, body["text_1"], d)}
                for i, d in enumerate(docs)]
        return 200, {"id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                     "model": body.get("model") or MODEL, "data": data,
                     "usage": {"prompt_tokens": 7 * len(docs), "total_tokens": 7 * len(docs), "completion_tokens": 0,
                               "prompt_tokens_details": None}}
    if flavour == "cohere-v2":
        unknown = set(body) - {"model", "query", "documents", "top_n", "max_tokens_per_doc", "priority"}
        if "model" not in body or unknown:
            return 400, {"message": f"invalid request: model is required; unknown fields {sorted(unknown)}"}
    query, docs = body["query"], body["documents"]
    top = body.get("top_n") or len(docs)
    ranked = _sorted_results(flavour, query, docs, raw=False)[:top]
    return 200, _cohere_like(flavour, body, docs, ranked)


def _cohere_like(flavour: str, body: dict[str, Any], docs: list[str], ranked: list[tuple[int, float]]) -> Any:
    with_docs = body.get("return_documents", flavour == "jina")
    if flavour in ("cohere-v1", "cohere-v2"):
        results = [{"index": i, "relevance_score": s, **({"document": {"text": docs[i]}} if with_docs
                                                        and flavour == "cohere-v1" else {})} for i, s in ranked]
        version = "1" if flavour == "cohere-v1" else "2"
        return {"id": str(uuid.uuid4()), "results": results,
                "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}}}
    if flavour == "jina":
        results = [{"index": i, **({"document": {"text": docs[i]}} if with_docs else {}), "relevance_score": s}
                   for i, s in ranked]
        return {"model": body.get("model") or "jina-reranker-v2-base-multilingual",
                "usage": {"total_tokens": 9 * len(docs)}, "results": results}
    if flavour == "vllm-rerank":
        results = [{"index": i, "document": {"text": docs[i]}, "relevance_score": s} for i, s in ranked]
        return {"id": f"rerank-{uuid.uuid4().hex}", "model": body.get("model") or MODEL,
                "usage": {"prompt_tokens": 9 * len(docs), "total_tokens": 9 * len(docs)}, "results": results}
    results = [{"relevance_score": s, "index": i, "document": docs[i] if with_docs else None} for i, s in ranked]
    return {"object": "rerank", "results": results, "model": body.get("model") or MODEL,
            "usage": {"prompt_tokens": 9 * len(docs), "total_tokens": 9 * len(docs)},
            "id": f"infinity-{uuid.uuid4()}", "created": int(time.time())}


def _tei(body: dict[str, Any]) -> tuple[int, Any]:
    if "texts" not in body:
        col = len(json.dumps(body))
        return 422, ("Failed to deserialize the JSON body into the target type: missing field `texts` "
                     f"at line 1 column {col}")
    if not body["texts"]:
        return 400, {"error": "`texts` cannot be empty", "error_type": "empty"}
    ranked = _sorted_results("tei", body["query"], body["texts"], raw=bool(body.get("raw_scores")))
    return 200, [{"index": i, "score": s, **({"text": body["texts"][i]} if body.get("return_text") else {})}
                 for i, s in ranked]


# --- OpenAI-compatible LLM server ---------------------------------------------------------------------------------

def _field(prompt: str, name: str) -> str:
    m = re.search(rf"^{name}: (.*)$", prompt, flags=re.M)
    return m.group(1) if m else ""


def _yes_top(p: float, k: int) -> list[tuple[str, float]]:
    """Top-k (token, logprob) at the answer position: "Yes"/"yes" share p, "No" has 1 - p, filler tokens after."""
    cands = [("Yes", math.log(0.9 * p)), ("yes", math.log(0.1 * p)), ("No", math.log(max(1 - p, 1e-12)))]
    cands += [(f"tok{i}", math.log(1e-6) - i) for i in range(20)]
    return sorted(cands, key=lambda kv: -kv[1])[:k]


def openai_answer(path: str, body: dict[str, Any], mode: str = "ok") -> tuple[int, Any]:
    """``mode="no-logprobs"`` answers like a server without logprobs in chat and without echo in completions."""
    if path == "/v1/chat/completions":
        return _chat(body, mode)
    if path == "/v1/completions":
        return _completions(body, mode)
    return 404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}}


def _chat(body: dict[str, Any], mode: str) -> tuple[int, Any]:
    prompt = body["messages"][-1]["content"]
    p = yes_probability(_field(prompt, "Query"), _field(prompt, "Passage"))
    logprobs = None
    top = _yes_top(p, int(body.get("top_logprobs") or 0) or 1)
    if body.get("logprobs") and mode != "no-logprobs":
        entry = lambda t, lp: {"token": t, "logprob": lp, "bytes": list(t.encode())}  # noqa: E731
        logprobs = {"content": [{**entry(*top[0]), "top_logprobs": [entry(t, lp) for t, lp in top]}], "refusal": None}
    choice = {"index": 0, "message": {"role": "assistant", "content": top[0][0], "refusal": None},
              "logprobs": logprobs, "finish_reason": "length"}
    return 200, {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                 "model": body["model"], "choices": [choice], "system_fingerprint": "fp_stand_in",
                 "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 1,
                           "total_tokens": len(prompt.split()) + 1}}


def _completion_choice(i: int, prompt: str, body: dict[str, Any], mode: str) -> dict[str, Any]:
    k = int(body.get("logprobs") or 0)
    passage = _field(prompt, "Passage")
    if body.get("echo") and mode != "no-logprobs":
        toks = _tokens(prompt)
        query_start = prompt.index("Question:") + len("Question:")
        lps: list[float | None] = [None] + [qlm_logprob(t, passage) if off >= query_start else -2.0
                                            for off, t in toks[1:]]
        tokens, offsets = [t for _, t in toks] + [" Why"], [off for off, _ in toks] + [len(prompt)]
        lps.append(-1.0)
        top = [None] + [{t: lp} for t, lp in zip(tokens[1:], lps[1:], strict=True)]
        text = prompt + " Why"
    else:
        cands = _yes_top(yes_probability(_field(prompt, "Query"), passage), max(k, 1))
        tokens, lps, offsets, top, text = [cands[0][0]], [cands[0][1]], [len(prompt)], [dict(cands)], cands[0][0]
    logprobs = {"tokens": tokens, "token_logprobs": lps, "top_logprobs": top, "text_offset": offsets} if k or \
        body.get("logprobs") == 0 else None
    return {"text": text, "index": i, "logprobs": logprobs, "finish_reason": "length"}


def _completions(body: dict[str, Any], mode: str) -> tuple[int, Any]:
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    choices = [_completion_choice(i, p, body, mode) for i, p in enumerate(prompts)]
    return 200, {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                 "model": body["model"], "choices": choices,
                 "usage": {"prompt_tokens": 10 * len(prompts), "completion_tokens": len(prompts),
                           "total_tokens": 11 * len(prompts)}}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out and left (the "slow" case)


@contextmanager
def serve(flavour: str, mode: str = "ok", port: int = 0) -> Iterator[tuple[str, type[_Handler]]]:
    """(the flavour's URL on 127.0.0.1, the handler class: ``.calls`` and ``.requests`` record the traffic).
    ``port`` 0 picks a free one; a port given again serves a restarted server at the same address."""
    handler = type("H", (_Handler,), {"flavour": flavour, "mode": mode, "calls": 0, "requests": [],
                                      "lock": threading.Lock()})
    server = _QuietServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{PATHS[flavour]}", handler
    finally:
        server.shutdown()
        server.server_close()
