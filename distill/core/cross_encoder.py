"""The one place where (query, document) pairs are turned into cross-encoder scores.

Every path that scores pairs with a BERT-style cross-encoder goes through :class:`CrossEncoderScorer`:
the student's dev evaluation and ``student rerank`` (torch backend), the export gates (torch, ONNX
Runtime and OpenVINO backends) and the ranker service (ONNX Runtime or OpenVINO, as the model card's recipe
says). A backend is any callable from padded int64 arrays to one float32 logit per row (:data:`Backend`); the
OpenVINO one lives in :mod:`distill.core.openvino_backend` and is importable from here too. They share

* **one tokenisation and truncation rule** (:class:`PairEncoder`, Rust ``tokenizers``, no
  ``transformers`` needed): the query is cut to ``max_query_tokens``, the document to
  ``max_doc_tokens`` and to whatever room ``max_seq_len`` leaves after the query and the special
  tokens; the model's own post-processor adds ``[CLS] q [SEP] d [SEP]`` (or ``<s> q </s></s> d </s>``);
* **one batching rule**: pairs sorted by token length (longest first), cut into batches of
  ``pairs_per_call`` (one backend call each), each padded only to its own longest pair; scores come back in input order.
  Attention masks hide padding, so a pair's score does not depend on its batch mates (within float
  rounding). With several backends over the same model (a pool of ONNX Runtime sessions, see
  :func:`session_layout`), the batches of one call run in parallel, one batch per backend at a time;
  a batch's score does not depend on which backend ran it.

The token caps travel with the model: :func:`save_caps` writes ``scoring.json`` beside a trained
student, export copies the caps into the model card, and serving reads them from there, so training,
gates and serving truncate identically. Scores are raw logits (higher = more relevant).

Importing this module needs only numpy and tokenizers; torch, onnxruntime or openvino are imported by
the backend that uses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distill.core.atomic_io import write_json
from distill.core.errors import ConfigError, MissingExtraError, MissingPrerequisiteError

if TYPE_CHECKING:  # pragma: no cover - resolved lazily by __getattr__
    from distill.core.openvino_backend import OpenVinoBackend

__all__ = ["CAPS_FILE", "CrossEncoderScorer", "DEFAULT_MAX_QUERY_TOKENS", "DEFAULT_MAX_SEQ_LEN", "MAX_AUTO_SESSIONS",
           "OnnxBackend", "OpenVinoBackend", "PairEncoder", "TokenCaps", "TorchBackend", "load_caps", "save_caps",
           "session_layout", "tie_key", "top_candidates"]

logger = logging.getLogger(__name__)

CAPS_FILE = "scoring.json"

#: a backend maps padded int64 arrays (input_ids, attention_mask, token_type_ids) to float32 logits (n,)
Backend = Callable[[dict[str, np.ndarray]], np.ndarray]


#: the one default query cap (tokens): the student's, the scorer's and every model without its own scoring.json
DEFAULT_MAX_QUERY_TOKENS = 32
#: the one default pair budget (tokens)
DEFAULT_MAX_SEQ_LEN = 256


@dataclass(frozen=True)
class TokenCaps:
    """Token budget of one (query, document) pair.

    ``max_seq_len`` bounds the whole pair (special tokens included); ``max_query_tokens`` and
    ``max_doc_tokens`` bound each side (None = only ``max_seq_len`` bounds it). A query never takes
    more than ``max_seq_len // 2`` tokens, so a very long query cannot push the document out.
    """

    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    max_query_tokens: int | None = DEFAULT_MAX_QUERY_TOKENS
    max_doc_tokens: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_seq_len, int) or not 8 <= self.max_seq_len <= 8192:
            raise ConfigError(f"max_seq_len must be an integer in [8, 8192], got {self.max_seq_len!r}")
        for name in ("max_query_tokens", "max_doc_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or null (no cap), got {value!r}")

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenCaps:
        known = {k: data[k] for k in ("max_seq_len", "max_query_tokens", "max_doc_tokens") if k in data}
        return cls(**known)


def save_caps(model_dir: str | os.PathLike[str], caps: TokenCaps) -> Path:
    return write_json(Path(model_dir) / CAPS_FILE, caps.to_dict())


def load_caps(model_dir: str | os.PathLike[str], default: TokenCaps | None = None) -> TokenCaps:
    """Caps saved beside a model; without ``scoring.json``, ``default``, else the default budget capped at the
    tokenizer's own max length."""
    path = Path(model_dir) / CAPS_FILE
    if path.is_file():
        try:
            return TokenCaps.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: not a valid token-caps file ({exc}); re-save the model") from exc
    if default is not None:
        return default
    # a plain HF directory (no scoring.json): the default budget, shortened to the tokenizer's own limit
    cfg = Path(model_dir) / "tokenizer_config.json"
    max_len = TokenCaps().max_seq_len
    if cfg.is_file():
        value = json.loads(cfg.read_text(encoding="utf-8")).get("model_max_length")
        if isinstance(value, int | float) and 8 <= value < max_len:
            max_len = int(value)
    return TokenCaps(max_seq_len=max_len)


def tie_key(qid: str, doc_id: str) -> int:
    """A fixed pseudo-random rank of ``doc_id`` within ``qid``, for breaking score ties.

    Neither the doc id nor the input order decides a tie: ids follow how a corpus was built (small ids are often
    the oldest documents, or one source's), and the input order can carry another ranker's information (a label
    file written in the teacher's order, whose first stage is all 0.0, would hand the student the teacher's top
    candidates). A hash of (qid, doc id) is independent of both, and the same on every run and machine.
    """
    return int.from_bytes(hashlib.blake2b(f"{qid}\0{doc_id}".encode(), digest_size=8).digest(), "big")


def top_candidates(qid: str, docs: Mapping[str, float], top_k: int) -> list[str]:
    """The ``top_k`` highest-scored doc ids of one query, best first; ties in :func:`tie_key` order."""
    return [d for d, _ in sorted(docs.items(), key=lambda kv: (-kv[1], tie_key(qid, kv[0])))[:top_k]]


class PairEncoder:
    """Tokenises (query, document) pairs with the model's ``tokenizer.json`` under :class:`TokenCaps`."""

    def __init__(self, tokenizer: str | os.PathLike[str] | Any, caps: TokenCaps):
        """``tokenizer``: a model directory holding ``tokenizer.json``, or a ``tokenizers.Tokenizer`` (copied)."""
        from tokenizers import Tokenizer

        if isinstance(tokenizer, Tokenizer):
            self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        else:
            path = Path(tokenizer) / "tokenizer.json"
            if not path.is_file():
                raise MissingPrerequisiteError(f"{path} not found: the model directory needs a fast tokenizer "
                                               "(save it with a transformers fast tokenizer, "
                                               "which writes tokenizer.json)")
            try:
                self.tokenizer = Tokenizer.from_file(str(path))
            except Exception as exc:  # the Rust side raises plain Exception for a malformed file
                raise MissingPrerequisiteError(f"{path} is not a valid tokenizer file ({exc}); "
                                               "re-export the model") from exc
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.caps = caps
        self.n_special = self.tokenizer.num_special_tokens_to_add(True)
        if caps.max_seq_len <= self.n_special + 2:
            raise ConfigError(f"max_seq_len={caps.max_seq_len} leaves no room for text after "
                              f"{self.n_special} special tokens")
        self.pad_id = self._pad_id()
        #: a document longer than this many characters per token of its budget is tokenised from a prefix cut at
        #: whitespace (None: always whole); see :meth:`_encode_docs`
        self.prefix_chars_per_token: int | None = PREFIX_CHARS_PER_TOKEN

    def _pad_id(self) -> int:
        for name in ("[PAD]", "<pad>"):
            tid = self.tokenizer.token_to_id(name)
            if tid is not None:
                return int(tid)
        return 0

    def encode(self, queries: Sequence[str], docs: Sequence[str]) -> list[tuple[list[int], list[int]]]:
        """(input_ids, token_type_ids) per pair, truncated by the caps, unpadded."""
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries but {len(docs)} documents: pass one query per document")
        caps = self.caps
        room = caps.max_seq_len - self.n_special
        q_cap = room // 2 if caps.max_query_tokens is None else min(caps.max_query_tokens, room // 2)
        unique_q = list(dict.fromkeys(queries))
        q_enc = dict(zip(unique_q, self.tokenizer.encode_batch(unique_q, add_special_tokens=False), strict=True))
        d_budget = room if caps.max_doc_tokens is None else min(room, caps.max_doc_tokens)
        d_enc = self._encode_docs(docs, d_budget)
        out: list[tuple[list[int], list[int]]] = []
        for q, d in zip(queries, d_enc, strict=True):
            qe = q_enc[q]
            q_len = min(len(qe.ids), q_cap)
            d_cap = room - q_len
            if caps.max_doc_tokens is not None:
                d_cap = min(d_cap, caps.max_doc_tokens)
            qe_t = _truncated(qe, q_len)
            de_t = _truncated(d, d_cap)
            pair = self.tokenizer.post_process(qe_t, de_t, add_special_tokens=True)
            out.append((pair.ids, pair.type_ids))
        return out

    def _encode_docs(self, docs: Sequence[str], budget: int) -> list[Any]:
        """Each document's tokens, of which at most ``budget`` are kept. A long document is tokenised from a
        prefix cut at whitespace: the normaliser works per character and the pre-tokeniser splits at whitespace,
        so the prefix's tokens are the whole text's first tokens; where the prefix gives no more than ``budget``
        tokens (very long words, say) the whole text is tokenised instead. The same tokens either way, at a
        fraction of the cost for a 20,000-character document (which would otherwise hold up the batch it is in)."""
        limit = None if self.prefix_chars_per_token is None else self.prefix_chars_per_token * budget
        heads = [_head(d, limit) for d in docs]
        encs = self.tokenizer.encode_batch(heads, add_special_tokens=False)
        short = [i for i, (d, h, e) in enumerate(zip(docs, heads, encs, strict=True))
                 if h is not d and len(e.ids) <= budget]
        if short:
            for i, enc in zip(short, self.tokenizer.encode_batch([docs[i] for i in short], add_special_tokens=False),
                              strict=True):
                encs[i] = enc
        return encs

    def pad(self, rows: Sequence[tuple[list[int], list[int]]]) -> dict[str, np.ndarray]:
        """Right-pad rows to their longest one (int64 arrays, as BERT exports expect)."""
        width = max(len(ids) for ids, _ in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for r, (ids, tt) in enumerate(rows):
            input_ids[r, : len(ids)] = ids
            mask[r, : len(ids)] = 1
            types[r, : len(tt)] = tt
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}

    def batch(self, queries: Sequence[str], docs: Sequence[str]) -> dict[str, np.ndarray]:
        return self.pad(self.encode(queries, docs))


#: characters per budget token beyond which a document is tokenised from a prefix (English runs 4-6 per token)
PREFIX_CHARS_PER_TOKEN = 16


#: whitespace every tokeniser splits at (Python's isspace also matches control characters some normalisers drop)
_CUT = re.compile(r"[ \t\n\r]")


def _head(text: str, limit: int | None) -> str:
    """``text`` cut at the first space, tab or line break after ``limit`` characters (``text`` itself, the same
    object, when it is no longer or has none there)."""
    if limit is None or len(text) <= limit:
        return text
    m = _CUT.search(text, limit)
    return text[: m.start()] if m else text


def _truncated(enc: Any, n: int) -> Any:
    if len(enc.ids) <= n:
        return enc
    enc.truncate(max(n, 0))
    return enc


class TorchBackend:
    """A PyTorch ``*ForSequenceClassification`` with one label (the student while it trains, or a saved one)."""

    def __init__(self, model: Any):
        import torch

        self._torch = torch
        self.model = model

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], device: str | None = None) -> TorchBackend:
        try:
            import torch
            from transformers import AutoModelForSequenceClassification
        except ImportError as exc:
            raise MissingExtraError("the torch backend needs the training stack: "
                                    "pip install 'distilrank[train]' (or [export])", name=exc.name) from exc
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        if device:
            model.to(device)
        return cls(model)

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        model = self.model
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                feed = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
                logits = model(**feed).logits
        finally:
            model.train(was_training)
        return logits.view(len(batch["input_ids"]), -1)[:, 0].float().cpu().numpy()


#: an unset session count never opens more single-thread sessions than this (each holds a copy of the weights)
MAX_AUTO_SESSIONS = 8


def session_layout(pairs_per_call: int | None, threads: int | None = None, sessions: int | None = None,
                   cores: int | None = None) -> tuple[int, int]:
    """How many ONNX Runtime sessions to open over one model, and the intra-op threads of each.

    ``sessions`` unset: when the model is scored one pair per call (``pairs_per_call == 1``: dynamic
    int8, whose activation scales span the call) and ``threads`` is unset too, one single-thread
    session per core (at most :data:`MAX_AUTO_SESSIONS`, the cores shared among them), whose calls run
    in parallel. A call of one pair is too small for one session's intra-op threads to share well: on
    the 2-core bench machine (``bench/results/session_pool.md``) two single-thread sessions scored 98
    pairs/s where one 2-thread session scored 93, and two concurrent requests of 20 passages took 344
    instead of 434 ms (p50), with equal scores; for batches of 16 the pool was 0.74x. Otherwise one
    session with ``threads`` (default all cores). ``sessions`` given: that many, with ``threads`` each
    (default the cores shared among them).
    """
    cores = cores or os.cpu_count() or 1
    if sessions is not None and sessions < 1:
        raise ConfigError(f"sessions={sessions}: use a positive number of ONNX Runtime sessions "
                          "or leave it unset (auto)")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads={threads}: use a positive number of threads or leave it unset (all cores)")
    if sessions is None:
        if pairs_per_call == 1 and threads is None:
            sessions = min(cores, MAX_AUTO_SESSIONS)
        else:
            return 1, threads or cores
    return sessions, threads or max(1, cores // sessions)


class OnnxBackend:
    """An ONNX Runtime session over one ``.onnx`` cross-encoder (inputs named as the Optimum export names them)."""

    def __init__(self, session: Any):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]

    @classmethod
    def load(cls, onnx_path: str | os.PathLike[str], threads: int | None = None, providers: Sequence[str] | None = None,
             spin: bool = True) -> OnnxBackend:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingExtraError("ONNX scoring needs onnxruntime: pip install 'distilrank[serve]'",
                                    name=exc.name) from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            session = ort.InferenceSession(str(onnx_path), sess_options=opts,
                                           providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            from distill.core.errors import DataError

            raise DataError(f"onnxruntime cannot load the model ({type(exc).__name__}: {str(exc)[:200]}); re-export it",
                            path=onnx_path) from exc
        return cls(session)

    @classmethod
    def load_pool(cls, onnx_path: str | os.PathLike[str], sessions: int, threads: int | None = None,
                  providers: Sequence[str] | None = None, spin: bool = True) -> list[OnnxBackend]:
        """``sessions`` independent sessions over one file (see :func:`session_layout`)."""
        return [cls.load(onnx_path, threads, providers, spin) for _ in range(sessions)]

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        logits = self.session.run(None, {name: batch[name] for name in self.input_names})[0]
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim == 2 and logits.shape[1] == 1:
            return logits[:, 0]
        if logits.ndim == 1:
            return logits
        raise ConfigError(f"the model outputs logits of shape {logits.shape}; "
                          "a cross-encoder scorer needs one logit per pair")


def __getattr__(name: str) -> Any:
    """``OpenVinoBackend`` beside the torch and ONNX Runtime backends, without importing its module until used."""
    if name == "OpenVinoBackend":
        from distill.core.openvino_backend import OpenVinoBackend

        return OpenVinoBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CrossEncoderScorer:
    """``score(queries, docs)`` -> raw logits, float32, in input order (see the module docstring)."""

    def __init__(self, encoder: PairEncoder, backend: Backend, pairs_per_call: int = 32,
                 replicas: Sequence[Backend] = ()):
        """``pairs_per_call``: pairs scored in one backend call. ``replicas``: more backends over the same model;
        with any, the batches of a call are spread over all of them in parallel threads (each backend runs one batch
        at a time)."""
        if pairs_per_call < 1:
            raise ConfigError(f"pairs_per_call must be >= 1, got {pairs_per_call}")
        self.encoder = encoder
        self.backend = backend
        self.backends: list[Backend] = [backend, *replicas]
        self.pairs_per_call = pairs_per_call
        self._free: queue.SimpleQueue[Backend] = queue.SimpleQueue()
        for b in self.backends:
            self._free.put(b)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def caps(self) -> TokenCaps:
        return self.encoder.caps

    @classmethod
    def from_torch_dir(cls, model_dir: str | os.PathLike[str], caps: TokenCaps | None = None, pairs_per_call: int = 32,
                       device: str | None = None) -> CrossEncoderScorer:
        caps = caps or load_caps(model_dir)
        return cls(PairEncoder(model_dir, caps), TorchBackend.load(model_dir, device), pairs_per_call)

    def score(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        n = len(docs)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        rows = self.encoder.encode(queries, docs)
        # longest first, and among equal lengths by token ids: which pairs share a padded batch (which moves a
        # bf16 or int8 score slightly) depends on the set of pairs only, never on the order they came in
        order = sorted(range(n), key=lambda i: (-len(rows[i][0]), rows[i][0]))
        out = np.empty(n, dtype=np.float32)
        batches = [order[start:start + self.pairs_per_call] for start in range(0, n, self.pairs_per_call)]
        if len(self.backends) == 1:  # the backend itself may be shared by threads (an ORT session may)
            for idx in batches:
                out[idx] = self.backend(self.encoder.pad([rows[i] for i in idx]))
            return out
        if len(batches) == 1:
            out[batches[0]] = self._run(batches[0], rows)
            return out
        pool = self._executor()
        futures = [(idx, pool.submit(self._run, idx, rows)) for idx in batches]
        for idx, fut in futures:
            out[idx] = fut.result()
        return out

    def _run(self, idx: list[int], rows: Sequence[tuple[list[int], list[int]]]) -> np.ndarray:
        """One batch on a backend nobody else is using (several score() calls may share the backends)."""
        backend = self._free.get()
        try:
            return backend(self.encoder.pad([rows[i] for i in idx]))
        finally:
            self._free.put(backend)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(len(self.backends), thread_name_prefix="scorer")
            return self._pool

    def warmup(self, queries: Sequence[str], docs: Sequence[str]) -> None:
        """Score the pairs on every backend in turn (batches as :meth:`score` cuts them), so that each one has
        allocated its buffers before the first real call; the scores are discarded."""
        rows = self.encoder.encode(queries, docs)
        for backend in self.backends:
            for start in range(0, len(rows), self.pairs_per_call):
                backend(self.encoder.pad(rows[start:start + self.pairs_per_call]))

    def with_pairs_per_call(self, pairs_per_call: int) -> CrossEncoderScorer:
        """The same tokeniser and backends, another number of pairs per call."""
        return CrossEncoderScorer(self.encoder, self.backend, pairs_per_call, self.backends[1:])

    def close(self) -> None:
        """Stop the worker threads of a pooled scorer (idempotent; a later call starts them again)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        return self.score([q for q, _ in pairs], [d for _, d in pairs])

    def rerank(self, corpus: Mapping[str, Any], queries: Mapping[str, Any], run: Mapping[str, Mapping[str, float]],
               top_k: int, per_query: bool = False) -> dict[str, dict[str, float]]:
        """Rescore each query's top ``top_k`` first-stage candidates (``corpus[d].full_text``, ``queries[q].text``);
        which candidates make the cut when scores tie there is :func:`top_candidates`' rule.

        ``per_query`` scores each query's window in calls of its own, as the ranker scores one rescore request,
        so that a score never depends on other queries' pairs: in bf16 and int8 a pair's score moves with the
        shape of the batch it is padded into (by about 1e-3 in bf16), enough to swap two near-tied hits.
        Otherwise the pairs of all queries are batched together, which is faster."""
        windows = [[(qid, doc_id) for doc_id in top_candidates(qid, docs, top_k) if doc_id in corpus]
                   for qid, docs in run.items() if qid in queries]
        if not per_query:
            windows = [[key for window in windows for key in window]]
        out: dict[str, dict[str, float]] = {}
        for keys in windows:
            scores = self.score([queries[q].text for q, _ in keys], [corpus[d].full_text for _, d in keys])
            for (qid, doc_id), s in zip(keys, scores.tolist(), strict=True):
                out.setdefault(qid, {})[doc_id] = float(s)
        return out
