"""ONNX Runtime scoring for the service: the shared :mod:`distill.core.cross_encoder` scorer over an export.

Tokenisation, truncation (the token caps recorded in the model card) and length-bucketed batching are
exactly those of training evaluation and of the export gates, so a pair scores the same here as in
the gate that passed the model. This module imports neither torch nor transformers: the fast
tokenizer is read with the Rust ``tokenizers`` library.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from distill.core.atomic_io import sha256_file
from distill.core.cross_encoder import CrossEncoderScorer, OnnxBackend, PairEncoder, session_layout
from distill.core.errors import ConfigError, DataError, MissingExtraError, MissingPrerequisiteError
from distill.core.model_card import MODEL_CARD, ModelCard, ModelCardError, load_model_card
from ranker._recipe import openvino_scorer, served_card

__all__ = ["NonFiniteScoreError", "RerankRuntime", "RuntimeConfig", "sigmoid"]

logger = logging.getLogger(__name__)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (float64 in, float64 out)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


#: the inputs a cross-encoder export may take (int64, [batch, sequence]); input_ids and attention_mask are required
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_REQUIRED_INPUTS = ("input_ids", "attention_mask")
_FLOAT_TYPES = frozenset({"tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"})
_EXPECTED_SIGNATURE = ("inputs input_ids and attention_mask (and optionally token_type_ids), int64 of shape "
                       "[batch, sequence], and a float output of shape [batch, 1] or [batch] (one logit per pair)")


class NonFiniteScoreError(ValueError):
    """The model answered NaN or infinity for some pairs: a broken export, never a score to serve."""

    #: the message says nothing private (no input text), so it may be shown to the caller
    public_message = True

    def __init__(self, bad: int, total: int):
        super().__init__(self.describe(bad, total))
        self.bad = bad

    @staticmethod
    def describe(bad: int, total: int) -> str:
        return f"the model produced NaN or infinity for {bad} of {total} pair(s)"


@dataclass(frozen=True)
class RuntimeConfig:
    """``threads``: ORT intra-op threads per session; ``sessions``: how many ORT sessions over the model
    (both None = auto, :func:`~distill.core.cross_encoder.session_layout`: one single-thread session per core
    when the card scores one pair per call, else one session with all cores, which was the best setting
    for batches on 2 cores). ``pairs_per_call``: pairs per ORT call after length sorting.
    ``provider``: "auto" serves the card's recipe (on CUDA when it is an ONNX Runtime one and onnxruntime-gpu and
    a GPU are present) or, where this machine cannot run it, the card's runner-up; "cpu"/"cuda" an ONNX Runtime
    recipe; "openvino" the card's OpenVINO recipe (see :mod:`ranker._recipe`). ``spin``: ORT's
    busy-waiting intra-op threads (its default); turn off on a machine shared with other busy processes,
    where spinning threads take cores the event loop and the tokenizer need."""

    threads: int | None = None
    sessions: int | None = None
    pairs_per_call: int = 16
    provider: Literal["auto", "cpu", "cuda", "openvino"] = "auto"
    verify_checksums: bool = True
    spin: bool = True

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads}: use a positive number of threads or leave it unset for all "
                              "cores")
        if self.sessions is not None and self.sessions < 1:
            raise ConfigError(f"sessions={self.sessions}: use a positive number of sessions or leave it unset (auto)")
        if self.pairs_per_call < 1:
            raise ConfigError(f"pairs_per_call={self.pairs_per_call}: must be >= 1 pairs per ONNX call")
        if self.provider not in {"auto", "cpu", "cuda", "openvino"}:
            raise ConfigError(f"provider={self.provider!r}: choose auto, cpu, cuda or openvino")


class RerankRuntime:
    """Scores (query, document) pairs with an exported cross-encoder. Thread-compatible, not
    thread-safe: call :meth:`score_pairs` from one thread at a time (the batcher's worker)."""

    def __init__(self, model_dir: Path, card: ModelCard, scorer: CrossEncoderScorer, config: RuntimeConfig,
                 warnings: Sequence[str] = ()):
        """``card``: the card as served (its runner-up's view where the recipe could not run here, see
        :mod:`ranker._recipe`); ``warnings``: why it fell back."""
        self.model_dir = model_dir
        self.card = card
        self.warnings = list(warnings)
        self.scorer = scorer
        self.session = getattr(scorer.backend, "session", None)  # None for OpenVINO
        self.n_sessions = len(scorer.backends)
        self.config = config
        self.caps = scorer.caps
        self.max_seq_len = self.caps.max_seq_len
        self.model_sha256: str = card.onnx_sha256
        self.card_sha256: str = sha256_file(model_dir / MODEL_CARD)
        self.warmed = False

    @property
    def name(self) -> str:
        return self.card.display_name(self.model_dir)

    @property
    def providers(self) -> list[str]:
        if self.session is None:
            return list(self.scorer.backend.providers)  # type: ignore[attr-defined]
        return list(self.session.get_providers())

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], config: RuntimeConfig | None = None) -> RerankRuntime:
        """Verify the model card checksums, then open the ONNX session and tokenizer.

        Raises MissingPrerequisiteError (no card / no onnxruntime) or ModelCardError (checksum, bad card)."""
        config = config or RuntimeConfig()
        root = Path(model_dir)
        if not root.is_dir():
            raise MissingPrerequisiteError(f"model directory {root} does not exist; export one with distilrank export")
        card, warnings = served_card(load_model_card(root, verify=config.verify_checksums), config.provider)
        caps, per_call = card.token_caps, card.pairs_per_call
        chunk = min(config.pairs_per_call, per_call or config.pairs_per_call)
        if chunk < config.pairs_per_call:
            logger.info("scoring %d pair(s) per ONNX call, as the model card requires (%d asked for)", chunk,
                        config.pairs_per_call)
        try:
            encoder = PairEncoder(root, caps)
        except MissingPrerequisiteError as exc:
            raise ModelCardError(str(exc), path=root) from exc
        if card.runtime == "openvino":
            scorer = openvino_scorer(root, card, encoder, chunk, config.threads, config.sessions)
            return cls(root, card, scorer, config, warnings)
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MissingExtraError("onnxruntime is not installed: pip install 'distilrank[serve]' (or [gpu])",
                                    name=exc.name) from exc
        available = ort.get_available_providers()
        if config.provider == "cuda" and "CUDAExecutionProvider" not in available:
            raise MissingPrerequisiteError("provider=cuda but onnxruntime has no CUDAExecutionProvider: pip install "
                                           "'distilrank[gpu]'")
        use_cuda = config.provider in ("auto", "cuda") and "CUDAExecutionProvider" in available
        providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        # one device: a pool of sessions only pays on CPU cores
        n_sessions, threads = (config.sessions or 1, config.threads) if use_cuda else \
            session_layout(chunk, config.threads, config.sessions)
        first, *more = OnnxBackend.load_pool(root / card.onnx_file, n_sessions, threads, providers, config.spin)
        check_signature(first.session, root / card.onnx_file)
        logger.info("loaded %s (%s, %s, caps %s) on %s: %d session(s) x %s intra-op thread(s), %d pair(s) per call",
                    card.onnx_file, card.precision, card.onnx_sha256[:12], caps.to_dict(),
                    providers[0], n_sessions, threads or "all", chunk)
        return cls(root, card, CrossEncoderScorer(encoder, first, chunk, more), config, warnings)

    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        """Raw logits (float32, shape ``(n,)``) for ``(queries[i], docs[i])``, in input order."""
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries but {len(docs)} documents: pass one query per document")
        logits = self.scorer.score(queries, docs)
        bad = int(np.count_nonzero(~np.isfinite(logits)))
        if bad:
            raise NonFiniteScoreError(bad, len(logits))
        return logits

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        """Raw logits for one query against many documents, in document order."""
        return self.score_pairs([query] * len(docs), docs)

    def warmup(self) -> None:
        """One short and one full-length pair on every session, so the first real request does not pay for
        allocation; then a check that the model's scores are finite.

        Raises DataError (exit 4) when the model answers NaN or infinity: such a model is refused at start,
        not served as ``null`` scores."""
        queries, docs = ["warm up"] * 2, ["short", "long " * self.max_seq_len]
        self.scorer.warmup(queries, docs)
        try:
            self.score_pairs(queries, docs)
        except NonFiniteScoreError as exc:
            raise DataError(f"{exc} at warm-up; the export is broken: re-export the model",
                            path=self.model_dir / self.card.onnx_file) from exc
        self.warmed = True

    def close(self) -> None:
        """Stop the scoring threads of a pool of sessions (a later call starts them again)."""
        self.scorer.close()


def check_signature(session: object, path: Path) -> None:
    """Refuse an ONNX graph whose inputs or outputs are not a cross-encoder's (DataError, exit 4), instead of
    a KeyError or a shape error at the first request."""
    inputs = {i.name: i for i in session.get_inputs()}  # type: ignore[attr-defined]
    outputs = list(session.get_outputs())  # type: ignore[attr-defined]
    problems = [f"unknown input {name!r}" for name in inputs if name not in MODEL_INPUTS]
    problems += [f"no input {name!r}" for name in _REQUIRED_INPUTS if name not in inputs]
    problems += [f"input {i.name!r} is {i.type} {_dims(i.shape)}" for i in inputs.values()
                 if i.name in MODEL_INPUTS and (i.type != "tensor(int64)" or len(i.shape) != 2)]
    if not outputs:
        problems.append("no output")
    else:
        out = outputs[0]
        last = out.shape[-1] if len(out.shape) == 2 else 1
        if out.type not in _FLOAT_TYPES or len(out.shape) not in (1, 2) or (isinstance(last, int) and last != 1):
            problems.append(f"output {out.name!r} is {out.type} {_dims(out.shape)}")
    if problems:
        raise DataError(f"not a cross-encoder the ranker can serve: {'; '.join(problems)}. Expected "
                        f"{_EXPECTED_SIGNATURE}; re-export it with distilrank export", path=path)


def _dims(shape: Sequence[object]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
