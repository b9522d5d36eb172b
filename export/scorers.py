"""Scorers for the export gates and the compression report: the shared :mod:`distill.core.cross_encoder`
scorer over the PyTorch student, an ONNX file (ONNX Runtime) or an OpenVINO model, with the student's own token caps.

There is no export-specific tokenisation or batching: gates score exactly as training evaluated and
as the ranker serves.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from distill.core.cross_encoder import (
    CrossEncoderScorer,
    OnnxBackend,
    PairEncoder,
    TokenCaps,
    TorchBackend,
    load_caps,
    session_layout,
)

__all__ = ["Pair", "export_caps", "onnx_scorer", "openvino_scorer", "torch_scorer"]

logger = logging.getLogger(__name__)

Pair = tuple[str, str]


def export_caps(model_dir: str | os.PathLike[str], max_seq_len: int | None, max_query_tokens: int | None = None,
                max_doc_tokens: int | None = None) -> TokenCaps:
    """The student's caps (``scoring.json``), each overridden when given."""
    caps = load_caps(model_dir)
    return TokenCaps(max_seq_len or caps.max_seq_len, max_query_tokens or caps.max_query_tokens,
                     max_doc_tokens or caps.max_doc_tokens)


def onnx_scorer(onnx_path: str | os.PathLike[str], tokenizer_dir: str | os.PathLike[str], caps: TokenCaps,
                pairs_per_call: int = 16, threads: int | None = None,
                sessions: int | None = None) -> CrossEncoderScorer:
    """Scores ``pairs_per_call`` pairs per ONNX call, over the sessions :func:`session_layout` gives for that (the
    ranker's rule, so gates and latency are measured as the export will be served)."""
    n, per_session = session_layout(pairs_per_call, threads, sessions)
    first, *more = OnnxBackend.load_pool(onnx_path, n, per_session)
    return CrossEncoderScorer(PairEncoder(Path(tokenizer_dir), caps), first, pairs_per_call, more)


def torch_scorer(model_dir: str | os.PathLike[str], caps: TokenCaps, pairs_per_call: int = 16) -> CrossEncoderScorer:
    return CrossEncoderScorer(PairEncoder(Path(model_dir), caps), TorchBackend.load(model_dir), pairs_per_call)


def openvino_scorer(model_path: str | os.PathLike[str], tokenizer_dir: str | os.PathLike[str], caps: TokenCaps,
                    precision: str = "fp32", pairs_per_call: int = 16, threads: int | None = None,
                    sessions: int | None = None) -> CrossEncoderScorer:
    """The OpenVINO backend (``.onnx`` or IR ``.xml``) at ``precision``, with :func:`session_layout`'s streams and
    threads for ``pairs_per_call`` pairs per call (the ranker's rule)."""
    from distill.core.openvino_backend import OpenVinoBackend

    n, per_stream = session_layout(pairs_per_call, threads, sessions)
    first, *more = OpenVinoBackend.load_pool(model_path, n, per_stream, precision)
    return CrossEncoderScorer(PairEncoder(Path(tokenizer_dir), caps), first, pairs_per_call, more)
